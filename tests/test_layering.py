"""The package's layering: no layer imports one above it (ops -> nn -> models -> data/train ->
bench, the benchmarks' yardstick)."""

import subprocess
import sys

import pytest

# Each layer and the layers it must not pull in, directly or indirectly.
FORBIDDEN = {
    "cnnjax.ops": ("cnnjax.nn", "cnnjax.models", "cnnjax.data", "cnnjax.train", "cnnjax.bench"),
    # The Flax layers build on the ops only; models may build on them.
    "cnnjax.nn": ("cnnjax.models", "cnnjax.data", "cnnjax.train", "cnnjax.bench"),
    "cnnjax.models": ("cnnjax.data", "cnnjax.train", "cnnjax.bench"),
    "cnnjax.data": ("cnnjax.models", "cnnjax.train", "cnnjax.bench"),
    "cnnjax.train": ("cnnjax.bench",),
}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_above_it(layer):
    code = (
        f"import sys, {layer}; "
        f"print(sorted(m for m in sys.modules if m.startswith({FORBIDDEN[layer]!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "[]", f"{layer} imports {out.stdout.strip()}"
