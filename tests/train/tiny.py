"""A tiny, fast training config shared by the training tests."""

import os
import pathlib
import subprocess
import sys

import chex
import jax
import ml_collections

from cnnjax.train import RunDir, default_config

ROOT = pathlib.Path(__file__).resolve().parents[2]


def tiny_config(**overrides) -> ml_collections.ConfigDict:
    """The book's LeNet on 256 bundled MNIST images (8 steps of 32), 2 epochs, no progress bar.

    ``overrides`` are dotted keys with ``__`` for dots, e.g. ``optimizer__learning_rate=0.1``.
    """
    config = default_config()
    config.num_epochs = 2
    config.batch_size = 32
    config.eval_batch_size = 64  # 100 test images -> 2 batches, the second padded and masked
    config.data.source = "bundled"
    config.data.name = "mnist_5k"
    config.data.train_limit = 256
    config.data.test_limit = 100
    config.optimizer.learning_rate = 0.5
    config.progress = False
    for key, value in overrides.items():
        *parents, leaf = key.split("__")
        node = config
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def tiny_cli_args(workdir, *extra: str) -> list[str]:
    """Command-line overrides equal to :func:`tiny_config` for ``scripts/train.py``."""
    return [
        "--config=configs/lenet.py",
        f"--workdir={workdir}",
        "--config.num_epochs=2",
        "--config.batch_size=32",
        "--config.eval_batch_size=64",
        "--config.data.source=bundled",
        "--config.data.name=mnist_5k",
        "--config.data.train_limit=256",
        "--config.data.test_limit=100",
        "--config.optimizer.learning_rate=0.5",
        "--config.progress=False",
        *extra,
    ]


# Every file a finished run leaves in its workdir, besides checkpoints/.
RUN_OUTPUTS = (
    "config.json",
    "run.json",
    "metrics.jsonl",
    "metrics.csv",
    "learning_curves.png",
    "summary.json",
)


def read_metrics(workdir) -> list[dict]:
    """A run's ``metrics.jsonl`` records, less the wall-clock field (it never repeats)."""
    with RunDir(workdir, read_only=True) as run:
        records = run.read_metrics()
    for r in records:
        r.pop("epoch_time_s")
    return records


def assert_one_line_errors(script: str, cases: dict[str, tuple[list[str], str]]) -> None:
    """Runs ``script`` (relative to the repository) once per case, all at once (each is a Python
    start-up and no training), and asserts each ends in exit status 2 with one line
    ``error: ...`` holding the case's fragment and no traceback.

    ``cases``: name -> (command-line arguments, the fragment the error line must contain).
    """
    procs = {
        name: subprocess.Popen(
            [sys.executable, script, *args],
            cwd=ROOT,
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (args, _) in cases.items()
    }
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        fragment = cases[name][1]
        assert proc.returncode == 2, (name, err[-2000:])
        assert "Traceback" not in out + err, (name, err[-2000:])
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, err)
        assert fragment in lines[0], (name, lines[0])


def subprocess_env() -> dict[str, str]:
    """The environment for a training subprocess: this one's, compiling as the tests do."""
    env = dict(os.environ)
    env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
    env["JAX_DEFAULT_MATMUL_PRECISION"] = "highest"
    return env


def assert_identical(actual, expected) -> None:
    """Bit-identical on CPU (what the trainer promises there); on a GPU/TPU, whose reductions
    need not be deterministic, equal to float tolerance. Works on pytrees and metric records."""
    if jax.default_backend() == "cpu":
        chex.assert_trees_all_equal(actual, expected)
    else:
        chex.assert_trees_all_close(actual, expected, rtol=1e-4, atol=1e-6)
