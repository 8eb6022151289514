"""Shared test setup: real Fashion-MNIST from ../shared when present, fast XLA on 2 cores."""

import os
import pathlib

_SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fashion_mnist"
if "CNNJAX_DATA_DIR" not in os.environ and _SHARED.is_dir():
    os.environ["CNNJAX_DATA_DIR"] = str(_SHARED)

# The CLI keeps compiled programs in a persistent cache (cnnjax.train.cli); the suite's CLI runs
# share one that lives and dies with the test session, never the user's.
if "CNNJAX_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["CNNJAX_CACHE_DIR"] = tempfile.mkdtemp(prefix="cnnjax-test-jax-cache-")
