"""scripts/bench_process.py: how it reads the measured processes' numbers, and tiny real runs.

The real runs train 1 epoch on a few hundred images in separate processes (``train.py`` and,
when PyTorch is installed, ``torch_train.py``) and check the printed table and the JSON record
against each other. PyTorch is the optional ``bench`` extra (:mod:`cnnjax.bench` holds its
yardstick), so the two-framework run skips without it; the cnnjax-only run always runs.
"""

import importlib.util
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench_process.py"
TINY = [
    "--epochs=1",
    "--repeats=1",
    "--warmup=0",
    "--train-limit=512",
    "--test-limit=300",
    "--forward-repeats=2",
]
TORCH = importlib.util.find_spec("torch") is not None


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_process", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Real Fashion-MNIST when present (tests/conftest.py), else IDX files of its shapes."""
    real = os.environ.get("CNNJAX_DATA_DIR", "")
    if real and pathlib.Path(real, "train-images-idx3-ubyte.gz").is_file():
        return real
    out = tmp_path_factory.mktemp("idx")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60000), ("t10k", 10000)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (n, 28, 28))
        (out / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.tobytes())
        (out / f"{prefix}-labels-idx1-ubyte").write_bytes(
            bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + labels.tobytes()
        )
    return str(out)


def run_bench(args, tmp_path):
    out = tmp_path / "bench.json"
    # Compiling without XLA's optimisations keeps the tiny runs short (speed is not checked).
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


def table_rows(stdout):
    """{measure label: [cells]} of the printed table."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("measure "))
    rows = {}
    for line in lines[start + 2 :]:
        if " | " not in line:
            break
        cells = [c.strip() for c in line.split(" | ")]
        rows[cells[0]] = cells[1:]
    return rows


MEASURES = {
    "whole": "whole process (s)",
    "first_step": "start to first step (s)",
    "train": "training examples/s (per epoch)",
    "forward": "forward examples/s (batch 1024)",
}


def median_in(cell):
    return float(cell.split(" [", 1)[0].replace(",", ""))


def check_consistent(stdout, record, frameworks):
    """The table shows the JSON's medians, and the JSON's medians are those of its raw runs."""
    rows = table_rows(stdout)
    assert set(rows) == set(MEASURES.values())
    for fw_index, fw in enumerate(frameworks):
        results, summary = record["results"][fw], record["summary"][fw]
        assert len(results["train"]) == 1 and len(results["forward"]) == 1
        run = results["train"][0]
        assert run["num_train"] == 512 and run["num_test"] == 300
        assert 0 < run["first_step_s"] < run["wall_s"]
        assert run["train_rates"] == pytest.approx([512 / s for s in run["epoch_seconds"]])
        raw = {
            "whole": [run["wall_s"]],
            "first_step": [run["first_step_s"]],
            "train": run["train_rates"],
            "forward": results["forward"][0],
        }
        assert len(raw["forward"]) == 2  # --forward-repeats=2
        for key, values in raw.items():
            assert summary[key]["median"] == pytest.approx(statistics.median(values))
            assert summary[key]["min"] == min(values) and summary[key]["max"] == max(values)
            shown = median_in(rows[MEASURES[key]][fw_index])
            assert shown == pytest.approx(summary[key]["median"], rel=0.01, abs=0.1)


def test_a_process_that_left_no_numbers_is_one_clear_error(bench, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = bench.Process("cnnjax", "train", [], 1.0, workdir=str(empty))
    with pytest.raises(bench.BenchError, match=r"cnnjax train: .*holds no run"):
        bench.read_train(proc, 256)
    missing = bench.Process("torch", "train", [], 1.0, record=str(tmp_path / "none.json"))
    with pytest.raises(bench.BenchError, match="torch train: cannot read its numbers from"):
        bench.read_train(missing, 256)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"first_step_seconds": 1.0, "epochs": [{"seconds": 2.0}]}))
    with pytest.raises(bench.BenchError, match="has no 'num_train' entry"):
        bench.read_train(bench.Process("torch", "train", [], 3.0, record=str(partial)), 256)
    partial.write_text(json.dumps({"num_test": 300, "forward_seconds": []}))
    with pytest.raises(bench.BenchError, match="records no timed pass"):
        bench.read_forward(bench.Process("cnnjax", "forward", [], 1.0, record=str(partial)))


def test_ratios_say_how_much_faster_cnnjax_is(bench):
    summary = {
        "cnnjax": {"whole": {"median": 10.0}, "train": {"median": 300.0}},
        "torch": {"whole": {"median": 15.0}, "train": {"median": 100.0}},
    }
    assert bench.ratio("whole", summary) == pytest.approx(1.5)  # time: torch / cnnjax
    assert bench.ratio("train", summary) == pytest.approx(3.0)  # rate: cnnjax / torch
    assert bench.target_met("whole", summary, full_run=True) == "yes"
    assert bench.target_met("train", summary, full_run=True) == "yes"
    assert bench.target_met("train", summary, full_run=False) == ""
    assert bench.ratio("whole", {"cnnjax": summary["cnnjax"]}) is None


def test_missing_data_dir_is_one_clear_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--only=cnnjax", f"--data-dir={tmp_path / 'nowhere'}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "--data-dir" in proc.stderr and "CNNJAX_DATA_DIR" in proc.stderr


def check_times_fit(run):
    """A training run's own start-up and epoch times fit inside its whole process."""
    assert run["first_step_s"] > 0 and all(s > 0 for s in run["epoch_seconds"])
    assert run["first_step_s"] + sum(run["epoch_seconds"]) < run["wall_s"]


def test_cnnjax_alone(data_dir, tmp_path):
    stdout, record = run_bench([*TINY, "--only=cnnjax", f"--data-dir={data_dir}"], tmp_path)
    check_consistent(stdout, record, ["cnnjax"])
    assert list(record["summary"]) == ["cnnjax"]
    check_times_fit(record["results"]["cnnjax"]["train"][0])
    assert all(v is None for v in record["ratios"].values())
    assert "PyTorch" not in table_rows(stdout) and "measure" in stdout
    assert re.search(r"run 1/1 cnnjax: 1 epoch\(s\), whole process [0-9.]+ s", stdout)


@pytest.mark.skipif(not TORCH, reason="PyTorch is not installed (the optional 'bench' extra)")
def test_cnnjax_against_pytorch(data_dir, tmp_path):
    args = [*TINY, f"--data-dir={data_dir}", "--torch-threads=1"]
    stdout, record = run_bench([*args, "--torch-memory-format=channels_last"], tmp_path)
    check_consistent(stdout, record, ["cnnjax", "torch"])
    assert record["results"]["torch"]["train"][0]["threads"] == 1
    for fw in ("cnnjax", "torch"):
        check_times_fit(record["results"][fw]["train"][0])
    assert "PyTorch intra-op threads: 1; memory format: channels_last" in stdout
    assert record["torch_memory_format"] == "channels_last"
    _check_torch_layouts()
    kinds = [(p["framework"], p["kind"]) for p in record["processes"]]
    assert kinds == [
        ("cnnjax", "train"),
        ("torch", "train"),
        ("cnnjax", "forward"),
        ("torch", "forward"),
    ]
    rows = table_rows(stdout)
    for key, label in MEASURES.items():
        ratio = record["ratios"][key]
        assert float(rows[label][2]) == pytest.approx(ratio, abs=0.006)
        c, t = (record["summary"][fw][key]["median"] for fw in ("cnnjax", "torch"))
        assert ratio == pytest.approx(t / c if key in ("whole", "first_step") else c / t)
        assert rows[label][4] == ""  # targets are judged only on the 10-epoch full run


def _check_torch_layouts():
    """The PyTorch yardstick's layout is explicit: a (N, 28, 28, 1) array merely transposed to
    NCHW has channels-last strides (a size-1 channel axis fits both), which would silently pick
    oneDNN's faster kernels."""
    import torch

    from cnnjax.bench import to_nchw

    images = np.zeros((4, 28, 28, 1), np.float32)
    book = to_nchw(images)
    fast = to_nchw(images, "channels_last")
    assert book.shape == fast.shape == (4, 1, 28, 28)
    assert book.stride() == (784, 784, 28, 1)
    assert fast.is_contiguous(memory_format=torch.channels_last) and fast.stride()[1] == 1
    with pytest.raises(ValueError, match="memory_format must be one of"):
        to_nchw(images, "nhwc")


def test_the_yardstick_imports_pytorch_only_when_called():
    """PyTorch is an optional extra: cnnjax.bench, and the layers below the trainer, load without
    importing it even where it is installed."""
    code = (
        "import sys, cnnjax, cnnjax.bench, cnnjax.ops, cnnjax.nn, cnnjax.models, cnnjax.data, "
        "cnnjax.train.config; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "[]"
