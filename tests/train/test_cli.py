"""scripts/train.py end to end in subprocesses: all outputs; SIGKILL, resume == uninterrupted."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from cnnjax.train import restore_model
from tests.train.tiny import (
    RUN_OUTPUTS,
    assert_identical,
    read_metrics,
    subprocess_env,
    tiny_cli_args,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]
# Long enough epochs (64 steps) that a kill lands mid-run, still a few seconds in all.
ARGS = ("--config.num_epochs=4", "--config.data.train_limit=2048")


def _command(workdir):
    return [sys.executable, "scripts/train.py", *tiny_cli_args(workdir), *ARGS]


def _train(workdir) -> str:
    """Runs the CLI to completion; returns its stdout."""
    proc = subprocess.run(
        _command(workdir),
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cli") / "run"
    return workdir, _train(workdir)


def test_cli_trains_and_writes_all_outputs(uninterrupted):
    workdir, stdout = uninterrupted
    for name in RUN_OUTPUTS:
        assert (workdir / name).is_file(), name
    assert (
        sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())[-1] == "4"
    )
    lines = stdout.splitlines()
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert len(epoch_lines) == 4 and "loss" in epoch_lines[0] and "test acc" in epoch_lines[0]
    assert any("examples/s on cpu" in line for line in lines)
    with open(workdir / "config.json") as f:
        assert json.load(f)["num_epochs"] == 4
    assert len(read_metrics(workdir)) == 4


def test_sigkilled_run_resumes_to_identical_params_and_metrics(uninterrupted, tmp_path):
    reference, _ = uninterrupted
    workdir = tmp_path / "run"
    proc = subprocess.Popen(
        _command(workdir),
        cwd=ROOT,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first = workdir / "checkpoints" / "1"
    deadline = time.monotonic() + 240
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL, "the run ended before it could be killed"
    done = [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
    assert 1 <= max(done) < 4

    assert f"resuming after epoch {max(done)}" in _train(workdir)
    assert_identical(read_metrics(workdir), read_metrics(reference))
    assert_identical(restore_model(workdir)[1], restore_model(reference)[1])
