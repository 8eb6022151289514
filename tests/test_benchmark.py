"""scripts/benchmark.py end to end: one tiny real run, its printed table against its JSON record.

The run is as small as the script allows (2 steps per timed epoch, one repeat, a population of
2, no conv-implementation comparison) and compiles without XLA's optimisations: it checks that the
script runs the trainer's epoch programs and reports them consistently, not how fast they are.
PyTorch's rows are there when the optional ``bench`` extra is installed.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from cnnjax import bench

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "benchmark.py"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(stdout, JSON record) of one tiny run."""
    out = tmp_path_factory.mktemp("benchmark") / "bench.json"
    args = ["--repeats=1", "--steps=2", "--populations=2", "--compare-impl=", "--forward-batch=256"]
    if not bench.torch_available():
        args.append("--no-torch")
    env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS="1")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args, f"--out={out}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


def printed_rows(stdout):
    """{variant: [cells]} of the printed table (the variant name is left-aligned in 46 columns)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("variant "))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        rows[line[:46].strip()] = line[46:].split()
    return rows


def number(cell):
    return float(cell.replace(",", "").removesuffix("s"))


def test_every_variant_runs_and_the_table_shows_the_record(run):
    stdout, record = run
    rows = {row["variant"]: row for row in record["rows"]}
    strategies = sorted(name.split("(")[1].rstrip(")") for name in rows if "population 2" in name)
    cnnjax = ["cnnjax epoch scan", "cnnjax step loop", "cnnjax forward (b=256)"]
    cnnjax += [f"cnnjax population 2 ({s})" for s in strategies]
    # The NCHW yardsticks, which the ratios use (the channels-last rows are extra).
    torch = [name for name in rows if name.startswith(("PyTorch eager (", "PyTorch forward (b="))]
    assert strategies == ["map", "vmap"]  # "auto"'s choice and the other one
    assert set(cnnjax) <= set(rows) and len(torch) == (2 if bench.torch_available() else 0)
    assert (record["torch"] is not None) == bench.torch_available()

    printed = printed_rows(stdout)
    assert list(printed) == [row["variant"] for row in record["rows"]]
    for name, row in rows.items():
        assert row["min"] <= row["median"] <= row["max"] and row["median"] > 0
        assert number(printed[name][0]) == pytest.approx(row["median"], abs=0.5)
        if name.startswith("cnnjax"):  # compiled here, by the trainer's epoch runner or jit
            assert row["compile_s"] > 0 and printed[name][-1].endswith("s")
        else:
            assert row["compile_s"] is None

    single = rows["cnnjax epoch scan"]["median"]
    for name in cnnjax:
        if "population" in name:
            assert rows[name]["vs_single"] == pytest.approx(rows[name]["median"] / single)
        assert rows[name]["peak_fraction"] is None or rows[name]["peak_fraction"] > 0
    for name in torch:
        reference = rows[name]["median"]
        assert rows[name]["vs_torch"] == pytest.approx(1.0)
        for other in cnnjax:
            if ("forward" in other) == ("forward" in name):
                assert rows[other]["vs_torch"] == pytest.approx(rows[other]["median"] / reference)


def test_the_scan_to_step_loop_ratio_is_that_of_the_medians(run):
    stdout, record = run
    assert record["steps"] == 2 and record["batch_size"] == 256
    scan, step = (
        next(r for r in record["rows"] if r["variant"] == v)
        for v in ("cnnjax epoch scan", "cnnjax step loop")
    )
    ratio = float(stdout.split("scan / step loop: ", 1)[1].split(";", 1)[0])
    assert ratio == pytest.approx(scan["median"] / step["median"], abs=0.006)
