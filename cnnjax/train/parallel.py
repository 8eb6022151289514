"""Devices: the platform, the processes, and the mesh that shards a population and its batches.

D2L 6.6 trains on one device (``try_gpu()``). Here training uses every device JAX offers, through
JAX's own machinery only: a 2-D :class:`jax.sharding.Mesh` with axes ``("pop", "data")``,
:class:`~jax.sharding.NamedSharding` s given to ``jax.jit``, and :func:`jax.distributed.initialize`
for several processes (hosts). Nothing here runs a step; the compiled programs get shardings.

The layout, for a population of P members, each trained on a global batch of B examples, on a mesh
of ``p x d`` devices (``p`` along ``"pop"``, ``d`` along ``"data"``):

* train state (params, optimizer state, per-member hyper-parameters; every leaf ``(P, ...)``):
  ``P("pop")`` -- each device holds ``P / p`` members, replicated over the ``d`` data devices;
* a batch (every leaf ``(B, ...)``): ``P("data")`` -- each device holds ``B / d`` examples;
* anything else (step counters, keys, scalars): replicated, ``P()``.

Results depend on the mesh only through float reassociation, and are bit-identical on repeat with
the same mesh. Along ``"data"``, a reduction over the batch (the mean loss and its gradient) is
summed per shard and then across the ``d`` shards (an all-reduce), in another order than on one
device. Along ``"pop"`` members never interact, but each device compiles the step for ``P / p``
members instead of ``P``, and XLA may vectorise (hence accumulate) the batched matmuls of a
different member count differently; both give differences of a few float32 ulps per step.

Order of calls (the trainer's): :func:`initialize_distributed` (before any computation), then
:func:`select_platform`, :func:`make_mesh`, the shardings, and :func:`describe` for the records::

    initialize_distributed("", 1, 0)                    # one process: a no-op
    devices = select_platform("auto")                   # e.g. 8 TPU cores
    mesh = make_mesh(devices, population_size=12, batch_size=256)   # (4, 2): 4 | 12, 256 % 2 == 0
    state = jax.device_put(state, state_sharding(mesh))
    step = jax.jit(step_fn, in_shardings=(state_sharding(mesh), batch_sharding(mesh)),
                   out_shardings=state_sharding(mesh))
    describe(mesh)   # {"platform": "tpu", ..., "mesh": {"population": 4, "data": 2}}
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import jax
import jax.extend.backend
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from cnnjax.train.population import resolve_strategy

__all__ = [
    "COLLECTIVES",
    "MESH_AXES",
    "PLATFORMS",
    "DeviceError",
    "batch_sharding",
    "count_collectives",
    "describe",
    "initialize_distributed",
    "make_mesh",
    "population_strategy",
    "replicated",
    "select_platform",
    "state_sharding",
    "valid_meshes",
]

PLATFORMS = ("auto", "cpu", "gpu", "tpu")
MESH_AXES = ("pop", "data")
# The cross-device operations XLA inserts into a sharded program, as named in its HLO text.
COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "collective-permute", "all-to-all")

_INSTALL_HINT = {
    "gpu": " (NVIDIA: pip install -e '.[cuda]', or '.[cuda12]' for CUDA 12 drivers)",
    "tpu": " (needs a TPU VM or Colab TPU runtime, and pip install -e '.[tpu]')",
    "cpu": "",
}


class DeviceError(ValueError):
    """A platform, process or mesh setting that cannot work here; the message is one line."""


# ----------------------------------------------------------------------------------- platform


def select_platform(platform: str) -> list[jax.Device]:
    """The devices to train on: all global devices of ``platform``.

    ``"cpu"`` and ``"tpu"`` are applied through ``jax.config`` ``jax_platforms`` (``"cpu"``;
    ``"tpu,cpu"``, the CPU kept for host callbacks), which takes effect only while JAX has not yet
    initialised a backend and the user has not pinned ``JAX_PLATFORMS``; then JAX initialises only
    that platform (so ``"cpu"`` on a GPU machine does not reserve GPU memory). ``"gpu"`` and
    ``"auto"`` leave JAX's choice alone (``"gpu"`` is an alias of CUDA/ROCm plugins, which JAX
    initialises by itself when present). If a backend is already initialised the setting is moot
    and the platform's devices are still returned when JAX has them; computations that are not
    placed by the mesh then run on JAX's default backend.

    Args:
      platform: one of :data:`PLATFORMS`; ``"auto"`` is JAX's default backend (TPU, else GPU,
        else CPU).

    Returns:
      ``jax.devices(platform)``: every device of that platform in every process, in JAX's order.

    Raises:
      DeviceError: ``platform`` is not in :data:`PLATFORMS`, or JAX cannot use it here; the
        message names it, lists the platforms present and how to get the one asked for.

    Example::

        select_platform("cpu")   # [CpuDevice(id=0), ...]
        select_platform("tpu")   # on a CPU machine: DeviceError("config.platform='tpu' but ...")
    """
    if platform not in PLATFORMS:
        raise DeviceError(f"config.platform={platform!r} is not one of {list(PLATFORMS)}")
    user_pin = jax.config.jax_platforms
    pinned = False
    if platform in ("cpu", "tpu") and not user_pin:
        jax.config.update("jax_platforms", "cpu" if platform == "cpu" else "tpu,cpu")
        pinned = True
    try:
        devices = jax.devices() if platform == "auto" else jax.devices(platform)
    except RuntimeError as err:
        if pinned:
            # The pinned platform failed before any backend was kept: let JAX choose again.
            jax.config.update("jax_platforms", None)
        pin = jax.config.jax_platforms
        if platform == "auto" and pin:
            raise DeviceError(
                f"JAX cannot start any of jax_platforms={pin!r} (set by JAX_PLATFORMS or an "
                f"earlier choice): {str(err).splitlines()[0]}. Unset JAX_PLATFORMS, or set it "
                f"to platforms this machine has (cpu; cuda or rocm for a GPU; tpu)"
            ) from err
        pin = (
            f"; jax_platforms={pin!r} (JAX_PLATFORMS or an earlier choice) limits JAX"
            if pin
            else ""
        )
        raise DeviceError(
            f"config.platform={platform!r} but JAX cannot use a {platform.upper()} on this "
            f"machine{_INSTALL_HINT.get(platform, '')}; present: {_present_platforms()}{pin}. "
            "Use --config.platform=auto or one of those present"
        ) from err
    return list(devices)


def _present_platforms() -> str:
    """``"cpu (8 devices)"``: the platforms JAX can initialise here, or ``"none"``."""
    try:
        names = list(jax.extend.backend.backends())
    except RuntimeError:
        return "none"
    parts = []
    for name in names:
        devices = jax.devices(name)
        count = len(devices)
        parts.append(f"{devices[0].platform} ({count} device{'s' if count != 1 else ''})")
    return ", ".join(parts) or "none"


# ------------------------------------------------------------------------------- processes

_HOST_PORT = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\s]+):(?P<port>\d{1,5})$")


def initialize_distributed(
    coordinator_address: str,
    num_processes: int,
    process_id: int,
    *,
    timeout_s: int = 300,
) -> None:
    """Joins this process to a multi-process run with :func:`jax.distributed.initialize`.

    Afterwards ``jax.devices()`` lists the devices of every process (global) and
    ``jax.local_devices()`` this process's own. JAX's default CPU collectives are set to
    ``"gloo"`` when they are off, so that several CPU processes can run one sharded program.

    Args:
      coordinator_address: ``""``: one process, nothing to do. ``"auto"``: JAX detects the
        cluster (Cloud TPU pods, SLURM, Open MPI, ...); ``num_processes``/``process_id`` are passed
        on only when ``num_processes > 1``. Otherwise ``"HOST:PORT"`` of process 0 (which serves
        there), with ``num_processes`` and ``process_id`` required.
      num_processes: how many processes take part (>= 1; 1 with ``""``).
      process_id: this process's rank, ``0 <= process_id < num_processes`` (0 with ``""``).
      timeout_s: how long to wait for all processes to join, in seconds.

    Raises:
      DeviceError: a malformed address, an out-of-range count or rank, a second call, a call
        after JAX has already initialised a backend (it must come first), or a failure to reach
        the coordinator; one line each.

    Example::

        # on host A and host B, the same command but for the rank:
        initialize_distributed("10.0.0.1:1234", num_processes=2, process_id=0)   # (1 on B)
    """
    where = "config.distributed"
    if not isinstance(coordinator_address, str):
        raise DeviceError(
            f"{where}.coordinator_address must be a string, got {coordinator_address!r}"
        )
    for name, value in (("num_processes", num_processes), ("process_id", process_id)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise DeviceError(f"{where}.{name} must be an int, got {value!r}")
    if coordinator_address == "":
        if num_processes != 1 or process_id != 0:
            raise DeviceError(
                f"{where}.num_processes={num_processes}, process_id={process_id} need "
                f"{where}.coordinator_address: 'HOST:PORT' of process 0, or 'auto' on a TPU pod "
                "or SLURM; leave all three at their defaults for one process"
            )
        return
    kwargs: dict[str, Any] = {"initialization_timeout": int(timeout_s)}
    if coordinator_address == "auto":
        if num_processes > 1:
            kwargs.update(num_processes=num_processes, process_id=process_id)
    else:
        match = _HOST_PORT.match(coordinator_address)
        if match is None or not 1 <= int(match["port"]) <= 65535:
            raise DeviceError(
                f"{where}.coordinator_address={coordinator_address!r} must be '' (one process), "
                "'auto' (detected on TPU pods and SLURM) or HOST:PORT of process 0, "
                "e.g. '10.0.0.1:1234'"
            )
        kwargs.update(coordinator_address=coordinator_address, num_processes=num_processes)
        kwargs.update(process_id=process_id)
    if num_processes < 1:
        raise DeviceError(f"{where}.num_processes must be >= 1, got {num_processes}")
    if "process_id" in kwargs and not 0 <= process_id < num_processes:
        raise DeviceError(
            f"{where}.process_id={process_id} must be in [0, {num_processes - 1}] "
            f"for num_processes={num_processes}"
        )
    if jax.distributed.is_initialized():
        raise DeviceError("jax.distributed is already initialised in this process; call once")
    if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(**kwargs)
    except (RuntimeError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if coordinator_address == "auto":
            raise DeviceError(
                f"{where}.coordinator_address='auto' found no cluster to join ({reason}); 'auto' "
                "works on Cloud TPU pods, SLURM and Open MPI, elsewhere give HOST:PORT of "
                "process 0, or '' for one process"
            ) from err
        raise DeviceError(
            f"could not join the distributed run ({where}.coordinator_address="
            f"{coordinator_address!r}, process {process_id} of {num_processes}): {reason}"
        ) from err


# ------------------------------------------------------------------------------------ mesh


def valid_meshes(num_devices: int, population_size: int, batch_size: int) -> list[tuple[int, int]]:
    """Every ``(population, data)`` mesh that fits: ``p * d == num_devices``, ``p`` divides
    ``population_size`` and ``d`` divides ``batch_size``; largest ``p`` first.

    Example::

        valid_meshes(8, 12, 256)   # [(4, 2), (2, 4), (1, 8)]
    """
    return [
        (p, num_devices // p)
        for p in range(num_devices, 0, -1)
        if num_devices % p == 0
        and population_size % p == 0
        and batch_size % (num_devices // p) == 0
    ]


def make_mesh(
    devices: Sequence[jax.Device],
    population_size: int,
    batch_size: int,
    *,
    population: int = 0,
    data: int = 0,
) -> Mesh:
    """The ``(population, data)`` device mesh, axis names :data:`MESH_AXES` = ``("pop", "data")``.

    With ``population == data == 0`` (automatic) every device is used: the member axis takes
    ``p = gcd(len(devices), population_size)`` devices (the largest divisor of the population that
    divides the device count) and the batch axis the rest, ``d = len(devices) // p``. One given
    size fixes the other; both given must multiply to ``len(devices)``. Devices are laid out by
    :func:`jax.make_mesh` (topology-aware on TPUs), with ``AxisType.Auto`` axes, so ``jax.jit``
    propagates the shardings of its inputs.

    Args:
      devices: the devices to use (e.g. :func:`select_platform`'s), all of one platform.
      population_size: P, the members in the train state (leading axis of every state leaf).
      batch_size: B, the global batch (leading axis of every batch leaf).
      population: ``p``, devices along ``"pop"``; 0 = automatic.
      data: ``d``, devices along ``"data"``; 0 = automatic.

    Returns:
      A :class:`jax.sharding.Mesh` of shape ``(p, d)``, ``p * d == len(devices)``,
      ``population_size % p == 0`` and ``batch_size % d == 0``.

    Raises:
      DeviceError: sizes that are not non-negative ints, devices of mixed platforms, a product
        other than the device count, or a population/batch that does not divide; the one line
        lists the meshes that would work (:func:`valid_meshes`) or how to change the sizes.

    Example::

        mesh = make_mesh(jax.devices(), population_size=8, batch_size=256)  # 8 CPUs: (8, 1)
        mesh.shape   # {'pop': 8, 'data': 1}
    """
    devices = list(devices)
    n = len(devices)
    if n == 0:
        raise DeviceError("make_mesh needs at least one device, got an empty list")
    platforms = sorted({d.platform for d in devices})
    if len(platforms) > 1:
        raise DeviceError(f"make_mesh: devices must share one platform, got {platforms}")
    for name, value, low in (
        ("population_size", population_size, 1),
        ("batch_size", batch_size, 1),
        ("config.mesh.population", population, 0),
        ("config.mesh.data", data, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            auto = " (0 = automatic)" if low == 0 else ""
            raise DeviceError(f"{name} must be an int >= {low}{auto}, got {value!r}")

    fits = valid_meshes(n, population_size, batch_size)
    if fits:
        choices = f"meshes that fit: {', '.join(f'population={p} data={d}' for p, d in fits)}"
    else:
        step = n // math.gcd(n, population_size)
        choices = (
            f"no mesh fits; make the batch size a multiple of {step} "
            f"(e.g. {-(-batch_size // step) * step}) or the population a multiple of {n}"
        )
    context = f"{n} devices, population {population_size}, batch {batch_size}"

    if population == 0 and data == 0:
        p = math.gcd(n, population_size)
    elif data == 0:
        if n % population:
            raise DeviceError(
                f"config.mesh.population={population} does not divide the {n} devices "
                f"({context}); {choices}"
            )
        p = population
    elif population == 0:
        if n % data:
            raise DeviceError(
                f"config.mesh.data={data} does not divide the {n} devices ({context}); {choices}"
            )
        p = n // data
    else:
        if population * data != n:
            raise DeviceError(
                f"config.mesh.population={population} x config.mesh.data={data} = "
                f"{population * data} devices, but {n} are in use ({context}); {choices}"
            )
        p = population
    d = n // p
    if population_size % p:
        raise DeviceError(
            f"population {population_size} does not divide over {p} devices along 'pop' "
            f"({context}); {choices}"
        )
    if batch_size % d:
        raise DeviceError(
            f"batch {batch_size} does not divide over {d} devices along 'data' "
            f"({context}); {choices}"
        )
    return jax.make_mesh((p, d), MESH_AXES, axis_types=(AxisType.Auto,) * 2, devices=devices)


def state_sharding(mesh: Mesh) -> NamedSharding:
    """``P("pop")``: leaves ``(P, ...)`` split along the member axis, replicated along data."""
    return NamedSharding(mesh, P("pop"))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """``P("data")``: leaves ``(B, ...)`` split along the batch axis, replicated along pop."""
    return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
    """``P()``: the whole value on every device of the mesh."""
    return NamedSharding(mesh, P())


def describe(mesh: Mesh) -> dict[str, Any]:
    """What a run records about its devices (``run.json``, ``summary.json``, the first line).

    Returns:
      ``{"platform": "cpu" | "gpu" | "tpu", "device_kind": str, "num_devices": int,
      "num_processes": int, "mesh": {"population": p, "data": d}}``; ``num_processes`` counts the
      processes whose devices are in the mesh.

    Example::

        describe(make_mesh(jax.devices(), 8, 256))
        # {'platform': 'cpu', 'device_kind': 'cpu', 'num_devices': 8, 'num_processes': 1,
        #  'mesh': {'population': 8, 'data': 1}}
    """
    devices = list(mesh.devices.flat)
    return {
        "platform": devices[0].platform,
        "device_kind": devices[0].device_kind,
        "num_devices": len(devices),
        "num_processes": len({d.process_index for d in devices}),
        "mesh": {"population": int(mesh.shape["pop"]), "data": int(mesh.shape["data"])},
    }


# ------------------------------------------------------------------------- population strategy


def population_strategy(strategy: str, mesh: Mesh) -> str:
    """``"vmap"`` or ``"map"``: how the step runs the members, given how they are sharded.

    ``"auto"`` is ``"vmap"`` whenever the member axis is split over devices (``p > 1``):
    ``jax.lax.map`` iterates over that axis, so XLA gathers the sharded state onto every device
    (all-gather collectives in the compiled program), while ``jax.vmap`` keeps each device on its
    own members (no collectives). With ``p == 1`` it is the single-device rule of
    :func:`cnnjax.train.population.resolve_strategy`. ``"vmap"`` and ``"map"`` are returned as
    asked.

    Raises:
      ValueError: an unknown ``strategy`` (from ``resolve_strategy``).
    """
    resolved = resolve_strategy(strategy)
    if strategy == "auto" and mesh.shape["pop"] > 1:
        return "vmap"
    return resolved


def count_collectives(compiled_text: str) -> dict[str, int]:
    """How many of each :data:`COLLECTIVES` op a compiled program's HLO text contains.

    Args:
      compiled_text: ``jax.jit(f).lower(*args).compile().as_text()``.

    Returns:
      ``{"all-gather": n, ...}`` for every name in :data:`COLLECTIVES` (async ``-start`` forms
      counted once; 0 when absent).

    Example::

        count_collectives(jax.jit(f, in_shardings=...).lower(x).compile().as_text())
    """
    counts = {}
    for name in COLLECTIVES:
        # An instruction reads `%name.3 = f32[..] all-gather(...)`; its name is followed by ` =`.
        counts[name] = len(re.findall(rf"\s{re.escape(name)}(?:-start)?\(", compiled_text))
    return counts
