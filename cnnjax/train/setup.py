"""A run's set-up: from a resolved config to devices, data, model and initial state, decided once.

:func:`make_run_mesh` joins the processes and lays out the devices (before anything touches a
device); :func:`set_up` loads the data and builds everything the loop needs into one frozen
:class:`Setup`. What a data fallback changes (the epochs to train) comes back as a *new*
resolved config in :attr:`Setup.config`; the config given is never modified.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
from jax.sharding import Mesh

from cnnjax.models import LeNet
from cnnjax.train import parallel
from cnnjax.train.config import resolve_config
from cnnjax.train.errors import ConfigError
from cnnjax.train.inputs import Inputs, fallback_epochs, load_inputs
from cnnjax.train.runfiles import Identity, RunInfo, Shapes
from cnnjax.train.state import TrainState, create_population

__all__ = ["Setup", "device_name", "make_run_mesh", "set_up"]


@dataclasses.dataclass(frozen=True)
class Setup:
    """Everything a run is built from, decided once.

    Attributes:
      config: the resolved config the run trains with (after a data fallback, if any).
      mesh: the ``("pop", "data")`` device mesh; ``devices`` describes it
        (:func:`cnnjax.train.parallel.describe`).
      strategy: how the step runs the members, "vmap" or "map"
        (:func:`cnnjax.train.parallel.population_strategy`).
      inputs: the device-resident splits (:class:`cnnjax.train.inputs.Inputs`).
      model: the network.
      state: the population's initial :class:`~cnnjax.train.state.TrainState`, sharded over
        the mesh.
      shapes, identity: what the checkpoints record (:mod:`cnnjax.train.runfiles`).
    """

    config: ml_collections.ConfigDict
    mesh: Mesh
    devices: dict[str, Any]
    strategy: str
    inputs: Inputs
    model: LeNet
    state: TrainState
    shapes: Shapes
    identity: Identity

    @property
    def eval_split(self) -> str:
        """``"val"`` when a validation split is evaluated every epoch, else ``"test"``."""
        return "val" if self.inputs.validation is not None else "test"

    @property
    def eval_data(self):
        return self.inputs.validation if self.inputs.validation is not None else self.inputs.test

    @property
    def info(self) -> RunInfo:
        """``run.json``'s record."""
        return RunInfo(self.inputs.fingerprint, self.shapes, self.strategy, self.devices)


def make_run_mesh(config: ml_collections.ConfigDict) -> Mesh:
    """Joins the processes, picks the platform and lays out the mesh for a resolved ``config``
    (before anything else touches a device)."""
    dist = config.distributed
    parallel.initialize_distributed(dist.coordinator_address, dist.num_processes, dist.process_id)
    devices = parallel.select_platform(config.platform)
    return parallel.make_mesh(
        devices,
        config.population.size,
        config.batch_size,
        population=config.mesh.population,
        data=config.mesh.data,
    )


def device_name(devices: dict[str, Any]) -> str:
    """``"cpu (2 cores); 1 device(s), mesh population=1 data=1"``: the devices in words."""
    kind = f"{os.cpu_count()} cores" if devices["platform"] == "cpu" else devices["device_kind"]
    mesh = devices["mesh"]
    where = f"{devices['num_devices']} device(s)" + (
        f" in {devices['num_processes']} processes" if devices["num_processes"] > 1 else ""
    )
    return (
        f"{devices['platform']} ({kind}); {where}, mesh population={mesh['population']} "
        f"data={mesh['data']}"
    )


def _after_fallback(config, inputs: Inputs, log: Callable[[str], None]):
    """The config to train with after a fallback to a smaller data set: a new resolved config
    with more epochs (and warmup) if ``data.fallback_epochs`` asks for it, else ``config``."""
    epochs = fallback_epochs(
        config.data, inputs, num_epochs=config.num_epochs, batch_size=config.batch_size
    )
    if epochs is None:
        return config
    log(
        f"fallback data: {inputs.name} has {inputs.fingerprint['num_train']} training images, "
        f"not those of {config.data.name}; training {epochs} epochs instead of "
        f"{config.num_epochs} so the run takes as many SGD steps "
        f"(config.data.fallback_epochs='as_configured' keeps {config.num_epochs})"
    )
    changed = config.to_dict()
    changed["num_epochs"] = epochs
    opt = changed["optimizer"]
    opt["warmup_epochs"] = round(opt["warmup_epochs"] * epochs / config.num_epochs)
    return resolve_config(changed)


def _check_shift_fits(shift: int, input_shape: tuple[int, ...]) -> None:
    # random_shift checks this too, but only once compiled; here it names the config key.
    if shift >= min(input_shape[:2]):
        raise ConfigError(
            f"config.data.random_shift={shift} would move a "
            f"{'x'.join(map(str, input_shape[:2]))} image out of its frame; use at most "
            f"{min(input_shape[:2]) - 1} (a few pixels is usual)"
        )


def _check_model_fits(model: LeNet, input_shape: tuple[int, ...]) -> None:
    """Traces the model on the input shape (nothing allocated) so a misfit is one clear line."""
    try:
        jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, *input_shape), "f4"))
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"config.model does not fit the {'x'.join(map(str, input_shape))} input of the data: "
            f"{str(e).splitlines()[0]}"
        ) from e


# Training holds the state, its gradients and the updated state at once (the step donates the
# old one, but the gradients and optimizer temporaries live beside both).
_TRAINING_COPIES = 3


def _memory_per_device(device: jax.Device, devices_sharing: int) -> int | None:
    """Bytes one device can hold: its allocator's limit (GPU/TPU), or the host's memory shared
    by the CPU devices of this process; None if unknown."""
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    try:
        host = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None
    return host // max(devices_sharing, 1)


def _check_state_fits(create: Callable[[], TrainState], config, mesh: Mesh) -> None:
    """Refuses a population whose training state cannot fit in the devices' memory, from its
    shapes alone (``jax.eval_shape``: nothing is allocated), instead of failing or swapping
    after minutes of allocating it."""
    shapes = jax.eval_shape(create)
    total = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(shapes))
    pop_devices = int(mesh.shape["pop"])
    # Only this process's devices can be asked (a memory query of another's fails).
    mine = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
    device, local = mine[0], len(mine)
    available = _memory_per_device(device, local if device.platform == "cpu" else 1)
    need = _TRAINING_COPIES * total // pop_devices
    if available is None or need <= available:
        return
    size = config.population.size
    fits = max(size * available // need, 0)
    raise ConfigError(
        f"config.population.size={size}: training needs about {need / 2**30:.1f} GiB per "
        f"device ({total / size / 2**20:.2f} MiB of state per member, x{_TRAINING_COPIES} while "
        f"training, over {pop_devices} device(s) along the population axis), but a "
        f"{device.platform} device here has {available / 2**30:.1f} GiB; use at most about "
        f"{fits} members per run, or more devices"
    )


def _initial_state(config, model, input_shape, steps_per_epoch: int, mesh: Mesh) -> TrainState:
    """The population's initial state; a model that does not fit the data, or a population that
    does not fit in memory, is a ConfigError."""

    def create(sharding=None) -> TrainState:
        return create_population(
            config, model, input_shape, steps_per_epoch=steps_per_epoch, sharding=sharding
        )

    try:
        _check_state_fits(create, config, mesh)
        return create(parallel.state_sharding(mesh))
    except ConfigError:
        raise
    except (TypeError, ValueError):
        # Only on failure: tracing the bare model names the layer that does not fit.
        _check_model_fits(model, input_shape)
        raise


def set_up(
    config: ml_collections.ConfigDict,
    mesh: Mesh,
    log: Callable[[str], None] = print,
    *,
    inputs: Inputs | None = None,
) -> Setup:
    """Loads the data and builds the model and initial state of a resolved ``config`` on ``mesh``.

    Args:
      config: a resolved config (:func:`cnnjax.train.config.resolve_config`).
      mesh: from :func:`make_run_mesh`.
      log: receives the one-line notice of a data fallback.
      inputs: data already on the devices (e.g. a benchmark's arrays) instead of
        ``config.data``'s.

    Returns:
      The :class:`Setup`.

    Raises:
      DataError: the data cannot be loaded.
      ConfigError: the data does not fit the batch, validation size, shift or model.
    """
    if inputs is None:
        inputs = load_inputs(
            config.data,
            batch_size=config.batch_size,
            num_classes=config.model.num_classes,
            sharding=parallel.replicated(mesh),
        )
        config = _after_fallback(config, inputs, log)
    _check_shift_fits(config.data.random_shift, inputs.input_shape)
    steps_per_epoch = inputs.fingerprint["num_train"] // config.batch_size
    model = LeNet.from_config(config.model)
    state = _initial_state(config, model, inputs.input_shape, steps_per_epoch, mesh)
    return Setup(
        config=config,
        mesh=mesh,
        devices=parallel.describe(mesh),
        strategy=parallel.population_strategy(config.population.strategy, mesh),
        inputs=inputs,
        model=model,
        state=state,
        shapes=Shapes(inputs.input_shape, steps_per_epoch, inputs.preprocess),
        identity=Identity(config.to_dict(), inputs.fingerprint),
    )
