"""cnnjax.train.parallel on real devices: 8 forced CPU devices, and two processes on loopback.

This test process has already initialised JAX with one CPU device, so every multi-device check runs
in a fresh interpreter with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``: this file run
as a script (``python tests/train/test_parallel.py MODE OUT ...``, see ``_worker``). One 8-device
worker computes everything the 8-device tests look at (one JAX start-up instead of one per test).

The computation is a population of linear regressions trained by SGD, each member with its own
learning rate, all on the same batches: the population step of the trainer in miniature (a vmapped
``value_and_grad`` + update, jitted with the mesh's shardings).

Tolerance: sharding the batch (the "data" axis) computes the mean loss and its gradient as
per-device partial sums followed by an all-reduce, a different summation order than one device's;
sharding members (the "pop" axis) compiles the step for fewer members per device, and XLA:CPU
vectorises the batched matmul of 1 member differently from that of 8. Both reassociate float32
sums, so results agree to ``rtol=1e-5, atol=1e-6`` after 4 steps (measured: <= 5e-7 relative),
not bit for bit; the same mesh twice is bit-identical.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

HERE = pathlib.Path(__file__).resolve()
ROOT = HERE.parents[2]
RTOL, ATOL = 1e-5, 1e-6
WORKER_TIMEOUT_S = 120


# ------------------------------------------------------------------ the worker (a subprocess)


def population_sgd(mesh, strategy="vmap", population=8, batch=64, steps=4):
    """Trains ``population`` linear regressions for ``steps`` SGD steps on ``mesh``.

    Returns (state, losses, shardings_ok, hlo): the final state and the per-step losses as numpy
    arrays, whether every output leaf carried the expected sharding, and the compiled step's HLO.
    """
    import jax
    import jax.numpy as jnp

    from cnnjax.train import parallel

    rng = np.random.default_rng(0)
    features = 5
    xs = rng.normal(size=(steps, batch, features)).astype(np.float32)
    true_w = rng.normal(size=features).astype(np.float32)
    ys = (xs @ true_w + 0.1 * rng.normal(size=(steps, batch))).astype(np.float32)
    state = {
        "w": rng.normal(size=(population, features)).astype(np.float32),
        "b": np.zeros(population, np.float32),
        "lr": np.linspace(0.02, 0.3, population, dtype=np.float32),
    }

    def member_step(m, x, y):
        def loss_fn(params):
            return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)

        loss, g = jax.value_and_grad(loss_fn)({"w": m["w"], "b": m["b"]})
        new = {"w": m["w"] - m["lr"] * g["w"], "b": m["b"] - m["lr"] * g["b"], "lr": m["lr"]}
        return new, loss

    if strategy == "vmap":
        pop_step = jax.vmap(member_step, in_axes=(0, None, None))
    else:

        def pop_step(s, x, y):
            return jax.lax.map(lambda m: member_step(m, x, y), s)

    members, batches = parallel.state_sharding(mesh), parallel.batch_sharding(mesh)
    step = jax.jit(pop_step, in_shardings=(members, batches, batches), out_shardings=members)
    state = jax.device_put(state, members)
    xs, ys = jax.device_put((list(xs), list(ys)), batches)
    hlo = step.lower(state, xs[0], ys[0]).compile().as_text()
    losses = []
    for x, y in zip(xs, ys):
        state, loss = step(state, x, y)
        losses.append(loss)
    leaves = jax.tree.leaves((state, losses))
    shardings_ok = all(leaf.sharding.is_equivalent_to(members, leaf.ndim) for leaf in leaves)
    # Replicated, so every process can read the whole result.
    state, losses = jax.jit(lambda t: t, out_shardings=parallel.replicated(mesh))((state, losses))
    state = {k: np.asarray(v) for k, v in state.items()}
    return state, np.stack([np.asarray(v) for v in losses]), shardings_ok, hlo


def _as_json(state, losses):
    return {"state": {k: v.tolist() for k, v in state.items()}, "losses": losses.tolist()}


def _max_rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b) / (np.abs(b) + ATOL / RTOL)))


def _worker_eight(out):
    """8 devices: platform, meshes, errors, sharded steps against one device, collectives."""
    import jax

    from cnnjax.train import parallel

    r = {}
    devices = parallel.select_platform("cpu")  # before any backend: pins jax_platforms
    r["jax_platforms"] = jax.config.jax_platforms
    r["num_devices"] = len(devices)
    r["auto_mesh"] = {
        f"{p},{b}": dict(parallel.make_mesh(devices, p, b).shape)
        for p, b in [(8, 256), (12, 256), (4, 64), (1, 256), (3, 256), (16, 8)]
    }
    r["errors"] = {}
    for name, kwargs in {
        "batch": dict(population_size=3, batch_size=100),
        "population_axis": dict(population_size=8, batch_size=256, population=3),
        "product": dict(population_size=8, batch_size=256, population=3, data=2),
        "population_divides": dict(population_size=6, batch_size=256, population=4),
        "data_divides": dict(population_size=8, batch_size=100, data=8),
    }.items():
        try:
            parallel.make_mesh(devices, **kwargs)
            r["errors"][name] = None
        except parallel.DeviceError as err:
            r["errors"][name] = str(err)
    r["valid_meshes"] = parallel.valid_meshes(8, 12, 256)

    one = parallel.make_mesh(devices[:1], 8, 64)
    ref_state, ref_losses, _, _ = population_sgd(one)
    r["runs"] = {}
    for pop, data in [(8, 1), (1, 8), (2, 4)]:
        mesh = parallel.make_mesh(devices, 8, 64, population=pop, data=data)
        state, losses, ok, hlo = population_sgd(mesh)
        again, _, _, _ = population_sgd(mesh)
        r["runs"][f"{pop},{data}"] = {
            "shardings_ok": ok,
            "max_rel": max(_max_rel(state[k], ref_state[k]) for k in state),
            "losses_max_rel": _max_rel(losses, ref_losses),
            "bit_identical_repeat": all(np.array_equal(state[k], again[k]) for k in state),
            "exact": all(np.array_equal(state[k], ref_state[k]) for k in state),
            "collectives": parallel.count_collectives(hlo),
            "describe": parallel.describe(mesh),
            "strategy_auto": parallel.population_strategy("auto", mesh),
        }
    members = parallel.make_mesh(devices, 8, 64, population=8, data=1)
    map_state, _, map_ok, map_hlo = population_sgd(members, strategy="map")
    r["map_8x1"] = {
        "collectives": parallel.count_collectives(map_hlo),
        "shardings_ok": map_ok,
        "max_rel": max(_max_rel(map_state[k], ref_state[k]) for k in map_state),
    }
    # One model (a population of 1) on the automatic mesh: every device along the batch.
    single = parallel.make_mesh(devices, 1, 64)
    one_ref = population_sgd(parallel.make_mesh(devices[:1], 1, 64), population=1)
    one_state, one_losses, one_ok, _ = population_sgd(single, population=1)
    r["single"] = {
        "mesh": dict(single.shape),
        "shardings_ok": one_ok,
        "max_rel": max(_max_rel(one_state[k], one_ref[0][k]) for k in one_state),
    }
    # What the two-process test must reproduce: the automatic mesh for 4 members, batch 64.
    dist_mesh = parallel.make_mesh(devices, 4, 64)
    state, losses, _, _ = population_sgd(dist_mesh, population=4)
    r["dist_reference"] = {"mesh": dict(dist_mesh.shape), **_as_json(state, losses)}
    try:
        parallel.select_platform("tpu")  # a backend is initialised by now
        r["tpu_after_init"] = None
    except parallel.DeviceError as err:
        r["tpu_after_init"] = str(err)
    pathlib.Path(out).write_text(json.dumps(r))


def _worker_fresh():
    """Before any backend: 'auto' with no cluster, then an absent platform as the CLI reports it
    (one line on stderr, exit status 2)."""
    import jax

    from cnnjax.train import parallel

    try:
        parallel.initialize_distributed("auto", 1, 0, timeout_s=5)
        print("auto: joined")
    except parallel.DeviceError as err:
        print(f"auto: {err}")
    try:
        parallel.select_platform("tpu")
    except parallel.DeviceError as err:
        print(f"error: {err}", file=sys.stderr)
        # The failed pin is undone: JAX may still choose what is here.
        print(f"jax_platforms={jax.config.jax_platforms!r} cpus={len(jax.devices('cpu'))}")
        sys.exit(2)


def _worker_process(out, port, process_id):
    """One of two processes with 4 CPU devices each, training one population together."""
    import jax

    from cnnjax.train import parallel

    parallel.initialize_distributed(f"127.0.0.1:{port}", 2, process_id, timeout_s=60)
    devices = parallel.select_platform("cpu")
    mesh = parallel.make_mesh(devices, 4, 64)
    state, losses, ok, _ = population_sgd(mesh, population=4)
    result = {
        "process_index": jax.process_index(),
        "local_devices": len(jax.local_devices()),
        "describe": parallel.describe(mesh),
        "shardings_ok": ok,
        **_as_json(state, losses),
    }
    pathlib.Path(out).write_text(json.dumps(result))
    jax.distributed.shutdown()


# ---------------------------------------------------------------------------- test helpers


def _env(num_devices):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count="
    env["XLA_FLAGS"] += str(num_devices)
    env.pop("JAX_PLATFORMS", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(ROOT)]))
    return env


def _run_worker(*args, num_devices=8):
    return subprocess.run(
        [sys.executable, str(HERE), *map(str, args)],
        env=_env(num_devices),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=WORKER_TIMEOUT_S,
    )


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def eight(tmp_path_factory):
    out = tmp_path_factory.mktemp("parallel") / "eight.json"
    proc = _run_worker("eight", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


# --------------------------------------------------------------------------- 8 CPU devices


def test_select_platform_cpu_pins_jax_before_any_backend(eight):
    assert eight["jax_platforms"] == "cpu"
    assert eight["num_devices"] == 8


def test_automatic_mesh_uses_every_device(eight):
    for key, shape in eight["auto_mesh"].items():
        population, batch = map(int, key.split(","))
        p, d = shape["pop"], shape["data"]
        assert p * d == 8, key
        assert population % p == 0 and batch % d == 0, key
        # The member axis takes the largest share that divides the population.
        assert p == np.gcd(8, population), key
    assert eight["auto_mesh"]["8,256"] == {"pop": 8, "data": 1}
    assert eight["auto_mesh"]["1,256"] == {"pop": 1, "data": 8}


@pytest.mark.parametrize(
    "name, says",
    [
        ("batch", ["batch 100", "8 devices along 'data'", "multiple of 8 (e.g. 104)"]),
        ("population_axis", ["config.mesh.population=3", "population=8 data=1"]),
        ("product", ["3 x config.mesh.data=2 = 6 devices, but 8", "population=1 data=8"]),
        ("population_divides", ["population 6", "population=2 data=4"]),
        ("data_divides", ["batch 100", "meshes that fit: population=8 data=1"]),
    ],
)
def test_mesh_that_does_not_fit_is_one_line_saying_what_would(eight, name, says):
    message = eight["errors"][name]
    assert message is not None, f"{name}: no error"
    assert "\n" not in message
    for part in says:
        assert part in message, (part, message)
    if "meshes that fit: " in message:
        listed = message.split("meshes that fit: ")[1]
        for pair in listed.split(", "):
            p, d = (int(x.split("=")[1]) for x in pair.split())
            assert p * d == 8


def test_valid_meshes_lists_every_fit(eight):
    assert [tuple(m) for m in eight["valid_meshes"]] == [(4, 2), (2, 4), (1, 8)]


@pytest.mark.parametrize("mesh", ["8,1", "1,8", "2,4"])
def test_sharded_population_equals_one_device(eight, mesh):
    run = eight["runs"][mesh]
    assert run["shardings_ok"], "a state leaf or a loss lost its P('pop') sharding"
    assert run["max_rel"] <= RTOL, run["max_rel"]
    assert run["losses_max_rel"] <= RTOL, run["losses_max_rel"]
    assert run["bit_identical_repeat"]
    p, d = map(int, mesh.split(","))
    assert run["describe"] == {
        "platform": "cpu",
        "device_kind": "cpu",
        "num_devices": 8,
        "num_processes": 1,
        "mesh": {"population": p, "data": d},
    }


def test_one_model_on_every_device_along_the_batch(eight):
    single = eight["single"]
    assert single["mesh"] == {"pop": 1, "data": 8}
    assert single["shardings_ok"]
    assert single["max_rel"] <= RTOL


def test_collectives_only_where_the_batch_is_split(eight):
    runs = eight["runs"]
    # Members on their own devices: nothing to communicate.
    assert sum(runs["8,1"]["collectives"].values()) == 0, runs["8,1"]["collectives"]
    # The batch split over devices: the mean loss and gradient are all-reduced.
    assert runs["1,8"]["collectives"]["all-reduce"] >= 1, runs["1,8"]["collectives"]


def test_map_over_sharded_members_gathers_and_auto_picks_vmap(eight):
    # lax.map iterates over the sharded member axis: XLA gathers the members onto every device.
    # If a JAX release stops doing this, population_strategy's rule can be relaxed.
    gathered = eight["map_8x1"]["collectives"]
    assert gathered["all-gather"] >= 1, gathered
    assert eight["map_8x1"]["max_rel"] <= RTOL  # same numbers, only slower
    assert eight["runs"]["8,1"]["strategy_auto"] == "vmap"
    assert eight["runs"]["2,4"]["strategy_auto"] == "vmap"
    # No member sharding: the single-device rule (members in turn on a CPU).
    assert eight["runs"]["1,8"]["strategy_auto"] == "map"


def test_select_platform_after_backend_initialised_still_one_line(eight):
    message = eight["tpu_after_init"]
    assert message is not None and "\n" not in message
    # On a GPU machine the list starts with the GPU; the 8 forced CPU devices are always there.
    assert "config.platform='tpu'" in message and "present: " in message
    assert "cpu (8 devices)" in message.split("present: ")[1]


def test_before_any_backend_auto_without_cluster_and_absent_platform_are_one_line():
    proc = _run_worker("fresh", num_devices=8)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: config.platform='tpu' but JAX cannot use a TPU")
    assert "cpu (8 devices)" in lines[0].split("present: ")[1]
    assert "--config.platform=auto" in lines[0]
    assert "Traceback" not in proc.stderr
    auto, platforms = proc.stdout.strip().splitlines()
    assert auto.startswith("auto: config.distributed.coordinator_address='auto' found no cluster")
    assert "give HOST:PORT of process 0" in auto
    assert platforms == "jax_platforms=None cpus=8"


# ------------------------------------------------------------------------- two processes


def test_two_processes_train_together_as_one_process_with_eight_devices(eight, tmp_path):
    reference = eight["dist_reference"]
    assert reference["mesh"] == {"pop": 4, "data": 2}
    for attempt in range(2):  # a free port can be taken between probing and binding
        port = _free_port()
        outs = [tmp_path / f"attempt{attempt}_process{i}.json" for i in range(2)]
        procs = [
            subprocess.Popen(
                [sys.executable, str(HERE), "process", str(outs[i]), str(port), str(i)],
                env=_env(4),
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]
        try:
            logs = [p.communicate(timeout=WORKER_TIMEOUT_S) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        if all(p.returncode == 0 for p in procs):
            break
    for p, (_, err) in zip(procs, logs):
        assert p.returncode == 0, err[-3000:]
    results = [json.loads(out.read_text()) for out in outs]
    assert [r["process_index"] for r in results] == [0, 1]
    for r in results:
        assert r["local_devices"] == 4
        assert r["shardings_ok"]
        assert r["describe"]["num_devices"] == 8 and r["describe"]["num_processes"] == 2
        assert r["describe"]["mesh"] == {"population": 4, "data": 2}
        for key in reference["state"]:
            np.testing.assert_allclose(r["state"][key], reference["state"][key], RTOL, ATOL)
        np.testing.assert_allclose(r["losses"], reference["losses"], RTOL, ATOL)
    # Both processes hold the same replicated result, bit for bit.
    assert results[0]["state"] == results[1]["state"]


# ------------------------------------------------------------- in this process (1 device)


@pytest.fixture
def restore_jax_platforms():
    import jax

    previous = jax.config.jax_platforms
    yield
    jax.config.update("jax_platforms", previous)


def test_select_platform_in_an_initialised_process(restore_jax_platforms):
    import jax

    from cnnjax.train import parallel

    jax.devices()  # a backend is initialised, as in any process that already computed
    assert parallel.select_platform("cpu") == jax.devices("cpu")
    assert parallel.select_platform("auto") == jax.devices()
    with pytest.raises(parallel.DeviceError, match=r"config.platform='metal' is not one of"):
        parallel.select_platform("metal")
    present = {b: _has_backend(b) for b in ("gpu", "tpu")}
    absent = next(b for b, there in present.items() if not there)  # no machine has both
    with pytest.raises(parallel.DeviceError, match=rf"config.platform='{absent}' .*present: "):
        parallel.select_platform(absent)
    for platform, there in present.items():
        if there:
            assert parallel.select_platform(platform) == jax.devices(platform)


def _has_backend(platform):
    import jax

    try:
        return bool(jax.devices(platform))
    except RuntimeError:
        return False


def test_make_mesh_on_one_device():
    import jax

    from cnnjax.train import parallel

    mesh = parallel.make_mesh(jax.devices()[:1], population_size=5, batch_size=7)
    assert dict(mesh.shape) == {"pop": 1, "data": 1}
    assert mesh.axis_names == parallel.MESH_AXES
    assert parallel.state_sharding(mesh).spec == jax.sharding.PartitionSpec("pop")
    assert parallel.batch_sharding(mesh).spec == jax.sharding.PartitionSpec("data")
    assert parallel.replicated(mesh).spec == jax.sharding.PartitionSpec()
    assert parallel.describe(mesh)["mesh"] == {"population": 1, "data": 1}
    assert parallel.population_strategy("auto", mesh) == "map"  # the CPU rule, unsharded
    assert parallel.population_strategy("vmap", mesh) == "vmap"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(population_size=0, batch_size=8), r"population_size must be an int >= 1, got 0"),
        (dict(population_size=2, batch_size=8.0), r"batch_size must be an int >= 1, got 8.0"),
        (dict(population_size=2, batch_size=8, population=-1), r"config.mesh.population .*>= 0"),
        (dict(population_size=2, batch_size=8, data=True), r"config.mesh.data must be an int"),
        (dict(population_size=2, batch_size=8, population=2), r"does not divide the 1 devices"),
    ],
)
def test_make_mesh_rejects_bad_sizes(kwargs, match):
    import jax

    from cnnjax.train import parallel

    with pytest.raises(parallel.DeviceError, match=match):
        parallel.make_mesh(jax.devices()[:1], **kwargs)
    with pytest.raises(parallel.DeviceError, match="at least one device"):
        parallel.make_mesh([], 1, 1)


@pytest.mark.parametrize(
    "args, match",
    [
        (("", 2, 0), r"num_processes=2, process_id=0 need config.distributed.coordinator_address"),
        (("localhost", 2, 0), r"coordinator_address='localhost' must be '' .* HOST:PORT"),
        (("host:99999", 2, 0), r"must be '' \(one process\)"),
        (("10.0.0.1:1234", 2, 2), r"process_id=2 must be in \[0, 1\]"),
        (("10.0.0.1:1234", 0, 0), r"num_processes must be >= 1, got 0"),
        (("10.0.0.1:1234", 2.0, 0), r"num_processes must be an int, got 2.0"),
        ((None, 1, 0), r"coordinator_address must be a string"),
    ],
)
def test_initialize_distributed_rejects_bad_settings(args, match):
    from cnnjax.train import parallel

    with pytest.raises(parallel.DeviceError, match=match):
        parallel.initialize_distributed(*args)


def test_initialize_distributed_single_process_is_a_no_op():
    import jax

    from cnnjax.train import parallel

    parallel.initialize_distributed("", 1, 0)
    assert not jax.distributed.is_initialized()
    # Too late in this process: JAX has initialised its backend; one line says so.
    jax.devices()
    with pytest.raises(parallel.DeviceError, match=r"must be called before any JAX"):
        parallel.initialize_distributed("127.0.0.1:1", 2, 0, timeout_s=1)


def _worker(argv):
    mode, *rest = argv
    if mode == "eight":
        _worker_eight(rest[0])
    elif mode == "fresh":
        _worker_fresh()
    elif mode == "process":
        _worker_process(rest[0], int(rest[1]), int(rest[2]))
    else:
        raise SystemExit(f"unknown worker mode {mode!r}")


if __name__ == "__main__":
    _worker(sys.argv[1:])
