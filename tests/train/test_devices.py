"""The trainer on many devices: 8 forced CPU devices in subprocesses, and two real processes.

What reorders: along "data", each device sums its slice of the batch and the slices are
all-reduced (another order of the float32 additions than one device's); along "pop", members
never interact, but XLA:CPU may vectorise a step compiled for P/p members differently. Both
change results by float32 rounding, so N devices == 1 device to ``_TOL``; the same mesh repeats
bit for bit.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from cnnjax.train import RunDir, restore_model
from tests.train.tiny import read_metrics, subprocess_env, tiny_cli_args

ROOT = pathlib.Path(__file__).resolve().parents[2]
_TOL = dict(rtol=2e-4, atol=2e-5)
POPULATION = ("--config.population.size=8", "--config.num_epochs=2")


def _env(devices: int | None = 8) -> dict[str, str]:
    env = subprocess_env()
    env.pop("XLA_FLAGS", None)
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _cli(workdir, *extra, devices=8, check=True):
    proc = subprocess.run(
        [sys.executable, "scripts/train.py", *tiny_cli_args(workdir), *extra],
        cwd=ROOT,
        env=_env(devices),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _close(actual, expected):
    for a, b in zip(actual, expected, strict=True):
        for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "param_norm"):
            np.testing.assert_allclose(a[key], b[key], **_TOL, err_msg=key)


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    """The population of 8 trained on one device."""
    workdir = tmp_path_factory.mktemp("one") / "run"
    _cli(workdir, *POPULATION, devices=None)
    return workdir


_SHARDINGS = """
import json, sys
import jax
from cnnjax.models import LeNet
from cnnjax.train import create_population, make_train_epoch, parallel, resolve_config
from cnnjax import data
import numpy as np
from tests.train.tiny import tiny_config

size, p, d = (int(a) for a in sys.argv[1:])
config = resolve_config(tiny_config(population__size=size, mesh__population=p, mesh__data=d))
mesh = parallel.make_mesh(jax.devices(), size, config.batch_size, population=p, data=d)
state = create_population(config, LeNet.from_config(config.model), (28, 28, 1),
                          sharding=parallel.state_sharding(mesh))
rng = np.random.default_rng(0)
train = data.to_device(rng.integers(0, 256, (64, 28, 28, 1), dtype=np.uint8),
                       rng.integers(0, 10, 64))
train = jax.device_put(train, parallel.replicated(mesh))
state, _ = make_train_epoch(config, mesh=mesh)(state, train, data.epoch_key(0, 1))
specs = {leaf.sharding.spec == jax.sharding.PartitionSpec("pop") for leaf in jax.tree.leaves(state)}
shards = {len(leaf.addressable_shards) for leaf in jax.tree.leaves(state)}
print(json.dumps({"along_pop": sorted(specs), "shards": sorted(shards)}))
"""


@pytest.mark.parametrize("size, p, d", [(8, 8, 1), (1, 1, 8)])
def test_the_state_is_sharded_along_the_member_axis(size, p, d):
    proc = subprocess.run(
        [sys.executable, "-c", _SHARDINGS, str(size), str(p), str(d)],
        cwd=ROOT,
        env=_env(8),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["along_pop"] == [True]  # every leaf, after a sharded epoch
    assert out["shards"] == [8]


def test_a_population_on_8_devices_equals_one_device(one_device, tmp_path):
    workdir = tmp_path / "run"
    _cli(workdir, *POPULATION)  # automatic mesh: all 8 devices along "pop"
    with RunDir(workdir, read_only=True) as rundir:
        run, summary = rundir.read_info(), rundir.read_summary()
    assert run.devices["num_devices"] == 8 and run.devices["mesh"] == {"population": 8, "data": 1}
    assert run.strategy == "vmap"  # members split over devices: map would gather them
    _close(read_metrics(workdir), read_metrics(one_device))
    assert summary["mesh"] == {"population": 8, "data": 1}
    # The same mesh again: bit for bit.
    _cli(tmp_path / "again", *POPULATION)
    assert read_metrics(tmp_path / "again") == read_metrics(workdir)


def test_one_model_split_along_the_batch_equals_one_device(tmp_path):
    _cli(tmp_path / "one", "--config.num_epochs=1", devices=None)
    _cli(tmp_path / "eight", "--config.num_epochs=1")
    with RunDir(tmp_path / "eight", read_only=True) as rundir:
        assert rundir.read_info().devices["mesh"] == {"population": 1, "data": 8}
    _close(read_metrics(tmp_path / "eight"), read_metrics(tmp_path / "one"))


def test_a_run_resumes_on_another_mesh(one_device, tmp_path):
    workdir = tmp_path / "run"
    _cli(workdir, "--config.population.size=8", "--config.num_epochs=1")
    resumed = _cli(workdir, *POPULATION, devices=None)
    assert "resuming after epoch 1" in resumed.stdout
    _close(read_metrics(workdir), read_metrics(one_device))


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (
            ("--config.population.size=3", "--config.mesh.population=2"),
            "population 3 does not divide over 2 devices",
        ),
        (("--config.batch_size=30", "--config.mesh.data=8"), "batch 30 does not divide"),
        (("--config.platform=tpu",), "config.platform='tpu' but JAX cannot use a TPU"),
    ],
)
def test_device_errors_are_one_line(tmp_path, extra, fragment):
    proc = _cli(tmp_path / "run", *extra, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines


def test_bfloat16_computes_with_float32_params(tmp_path):
    _cli(tmp_path / "f32", "--config.num_epochs=1", devices=None)
    _cli(tmp_path / "bf16", "--config.num_epochs=1", "--config.model.dtype=bfloat16", devices=None)
    f32, bf16 = read_metrics(tmp_path / "f32")[0], read_metrics(tmp_path / "bf16")[0]
    # Computed in bfloat16 (8 bits of mantissa), so not equal, but close: loss and optimizer in
    # float32.
    assert bf16["train_loss"] != f32["train_loss"]
    np.testing.assert_allclose(bf16["train_loss"], f32["train_loss"], rtol=2e-2)
    _, params, *_ = restore_model(tmp_path / "bf16")
    assert {str(leaf.dtype) for leaf in jax.tree.leaves(params)} == {"float32"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_together_like_one_with_8_devices(one_device, tmp_path):
    workdir = tmp_path / "run"
    port = _free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "scripts/train.py",
                *tiny_cli_args(workdir),
                *POPULATION,
                f"--config.distributed.coordinator_address=127.0.0.1:{port}",
                "--config.distributed.num_processes=2",
                f"--config.distributed.process_id={i}",
            ],
            cwd=ROOT,
            env=_env(4),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        outs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    # Only process 0 reports (gloo prints its own connection lines from both, interleaved).
    assert "epoch 2/2" in outs[0][0]
    assert "epoch" not in outs[1][0] and "example" not in outs[1][0], outs[1][0]
    with RunDir(workdir, read_only=True) as rundir:
        devices = rundir.read_info().devices
    assert devices["num_processes"] == 2 and devices["num_devices"] == 8
    _close(read_metrics(workdir), read_metrics(one_device))
    assert not any(p.name.startswith(".metrics") for p in workdir.iterdir())
    assert os.path.isdir(workdir / "checkpoints" / "2")
