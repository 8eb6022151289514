"""scripts/train.py end to end in subprocesses: all outputs; SIGKILL, resume == uninterrupted."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from cnnjax.train import RunDir, restore_model
from tests.train.tiny import (
    RUN_OUTPUTS,
    assert_identical,
    assert_one_line_errors,
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


def _start_until_first_checkpoint(workdir, output) -> subprocess.Popen:
    """Starts the CLI and returns once epoch 1 is checkpointed (or the process ended)."""
    proc = subprocess.Popen(
        _command(workdir),
        cwd=ROOT,
        env=subprocess_env(),
        stdout=output,
        stderr=output,
        text=True,
    )
    first = workdir / "checkpoints" / "1"
    deadline = time.monotonic() + 240
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    return proc


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
    with RunDir(workdir, read_only=True) as run:
        assert run.read_config().num_epochs == 4
    assert len(read_metrics(workdir)) == 4


def test_sigkilled_run_resumes_to_identical_params_and_metrics(uninterrupted, tmp_path):
    reference, _ = uninterrupted
    workdir = tmp_path / "run"
    proc = _start_until_first_checkpoint(workdir, subprocess.DEVNULL)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL, "the run ended before it could be killed"
    done = [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
    assert 1 <= max(done) < 4

    assert f"resuming after epoch {max(done)}" in _train(workdir)
    assert_identical(read_metrics(workdir), read_metrics(reference))
    assert_identical(restore_model(workdir)[1], restore_model(reference)[1])


# --------------------------------------------------------------------------------------------
# Every user error is one line, exit status 2, no traceback.


def _bad_config_file(tmp_path, name, text):
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    return f"--config={path}"


def _error_cases(tmp_path):
    corrupt = tmp_path / "corrupt_idx"
    corrupt.mkdir()
    for name in (
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ):
        (corrupt / name).write_bytes(b"not an idx file")
    (tmp_path / "a_file").write_text("x")
    runs = iter(range(100))

    def good():  # a workdir of its own: the cases run at once, and a workdir is locked
        return tiny_cli_args(tmp_path / f"run{next(runs)}")

    return {
        "unknown data set": (good() + ["--config.data.name=cifar10"], "config.data: "),
        "damaged IDX files": (
            good()
            + [
                "--config.data.source=idx",
                "--config.data.name=fashion_mnist",
                f"--config.data.dir={corrupt}",
            ],
            "train-images-idx3-ubyte.gz",
        ),
        "model too large for the input": (
            good() + ["--config.model.kernel_sizes=(40,5)"],
            "config.model does not fit the 28x28x1 input",
        ),
        "missing config file": (
            ["--config=configs/no_such.py", f"--workdir={tmp_path / 'run'}"],
            "no such file",
        ),
        "config with a syntax error": (
            [_bad_config_file(tmp_path, "syntax", "def get_config(:\n"), "--workdir=x"],
            "syntax error on line 1",
        ),
        "config without get_config": (
            [_bad_config_file(tmp_path, "empty", "X = 1\n"), "--workdir=x"],
            "defines no get_config()",
        ),
        "config returning None": (
            [
                _bad_config_file(tmp_path, "none", "def get_config():\n    return None\n"),
                "--workdir=x",
            ],
            "get_config() returned NoneType",
        ),
        "empty workdir": (good() + ["--workdir="], "the workdir is empty"),
        "workdir is a file": (good() + [f"--workdir={tmp_path / 'a_file'}"], "is a file"),
        "workdir cannot be created": (
            good() + ["--workdir=/proc/cnnjax-run"],
            "cannot use workdir",
        ),
        "seed out of range": (good() + ["--config.seed=4294967296"], "config.seed must be in"),
        "config whose get_config raises": (
            [
                _bad_config_file(tmp_path, "raises", "def get_config():\n    raise OSError('x')\n"),
                "--workdir=x",
            ],
            "get_config() raised OSError: x",
        ),
        "override that does not parse": (good() + ["--config.num_epochs=abc"], "num_epochs=abc"),
        "non-boolean override": (good() + ["--config.progress=yes"], "config.progress=yes"),
        "no workdir": (["--config=configs/lenet.py"], "--workdir is required"),
        "seeds as a bare number": (
            good() + ["--config.population.seeds=3"],
            "config.population.seeds must be a sequence",
        ),
        "infinite weight decay": (
            good() + ["--config.optimizer.weight_decay=inf"],
            "weight_decay must be finite",
        ),
        "a population that cannot fit": (
            good() + ["--config.population.size=1000000"],
            "config.population.size=1000000: training needs",
        ),
        "data dir that is a file": (
            good()
            + [
                "--config.data.source=idx",
                "--config.data.name=fashion_mnist",
                f"--config.data.dir={tmp_path / 'a_file'}",
            ],
            "is a file, not a directory",
        ),
    }


def test_user_errors_are_one_line_with_exit_status_2(tmp_path):
    cases = _error_cases(tmp_path)
    # All at once: each is a Python start-up and no training.
    assert_one_line_errors("scripts/train.py", cases)


def test_a_second_trainer_on_the_workdir_is_refused(tmp_path):
    from cnnjax.train import RunDir

    with RunDir(tmp_path / "run"):
        proc = subprocess.run(
            [sys.executable, "scripts/train.py", *tiny_cli_args(tmp_path / "run")],
            cwd=ROOT,
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"in use by another trainer (pid {os.getpid()})" in proc.stderr


def test_ctrl_c_exits_130_in_one_line_and_the_run_resumes_identically(uninterrupted, tmp_path):
    reference, _ = uninterrupted
    workdir = tmp_path / "run"
    proc = _start_until_first_checkpoint(workdir, subprocess.PIPE)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # impatient: a second Ctrl-C during the clean-up
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (proc.returncode, out[-2000:], err[-3000:])
    assert "Traceback" not in out + err
    assert "interrupted: the last completed epoch is checkpointed" in err
    assert "resuming after epoch" in _train(workdir)
    assert_identical(read_metrics(workdir), read_metrics(reference))
    assert_identical(restore_model(workdir)[1], restore_model(reference)[1])


def test_ctrl_c_during_start_up_is_one_line(tmp_path):
    proc = subprocess.Popen(
        _command(tmp_path / "run"),
        cwd=ROOT,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)  # inside the imports of JAX and the trainer
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (proc.returncode, err[-3000:])
    assert "Traceback" not in out + err, err[-3000:]
    assert "interrupted" in err
