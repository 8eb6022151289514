"""``train_and_evaluate``: the one training loop (D2L 6.6's ``train_ch6``), driven by a config.

It reads top to bottom: resolve the config, open the run directory, load the data, build the
model and state (or resume them), then loop over epochs -- train, evaluate, record, checkpoint --
and write the summary. The computation is the pure step of :mod:`cnnjax.train.steps`, compiled
for a whole population by :mod:`cnnjax.train.programs`; files go through
:class:`~cnnjax.train.rundir.RunDir` and console lines through
:class:`~cnnjax.train.report.Reporter`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cnnjax import data
from cnnjax.models import LeNet
from cnnjax.train import parallel
from cnnjax.train.config import default_config, resolve_config
from cnnjax.train.errors import ConfigError, RunDirError, TrainingDiverged
from cnnjax.train.inputs import Inputs, fallback_epochs, load_inputs
from cnnjax.train.programs import make_batch_fn, make_eval_fn, make_train_epoch, make_train_step
from cnnjax.train.report import Reporter
from cnnjax.train.rundir import RunDir, to_json
from cnnjax.train.state import TrainState, create_population
from cnnjax.train.steps import reduce_steps

__all__ = ["RestoredModel", "restore_model", "train_and_evaluate"]

# Config keys that may change when a run is resumed: they do not change what is computed (the
# devices only reorder float sums; Orbax restores a checkpoint into the new mesh's shardings).
_RESUMABLE_CHANGES = (
    "num_epochs",
    "progress",
    "platform",
    "mesh.population",
    "mesh.data",
    "distributed.coordinator_address",
    "distributed.num_processes",
    "distributed.process_id",
)


def _device_name(devices: dict[str, Any]) -> str:
    kind = devices["device_kind"]
    if devices["platform"] == "cpu":
        kind = f"{os.cpu_count()} cores"
    mesh = devices["mesh"]
    where = f"{devices['num_devices']} device(s)" + (
        f" in {devices['num_processes']} processes" if devices["num_processes"] > 1 else ""
    )
    return (
        f"{devices['platform']} ({kind}); {where}, mesh population={mesh['population']} "
        f"data={mesh['data']}"
    )


def _devices(config: ml_collections.ConfigDict):
    """Joins the processes, picks the platform and lays out the mesh (before anything else
    touches a device)."""
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


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _identity(config: ml_collections.ConfigDict, inputs: Inputs) -> dict[str, Any]:
    """What defines a run: its resolved config and the data it trains on."""
    return {"config": to_json(config.to_dict()), "data": inputs.fingerprint}


def _check_same_run(saved: dict[str, Any], current: dict[str, Any], schedule: str) -> None:
    """Raises RunDirError naming what differs if ``current`` would not continue ``saved``."""
    allowed = set(_RESUMABLE_CHANGES)
    if schedule != "constant":
        allowed.discard("num_epochs")  # the schedule's length depends on it
    new = _flatten(current)
    # A key added to the schema after the checkpoint was written had its default then.
    defaults = _flatten({"config": to_json(default_config().to_dict())})
    old = {
        **{k: v for k, v in defaults.items() if k in new},
        **_flatten({"config": saved["config"], "data": saved["data"]}),
    }
    changed = sorted(
        k
        for k in old.keys() | new.keys()
        if old.get(k) != new.get(k) and k.removeprefix("config.") not in allowed
    )
    if changed:
        diffs = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:4])
        more = f" (and {len(changed) - 4} more)" if len(changed) > 4 else ""
        raise RunDirError(
            f"the workdir holds checkpoints of a different run ({diffs}{more}); resume with "
            f"the same config and data, or use a new --workdir"
        )


def _check_shift_fits(shift: int, input_shape: tuple[int, ...]) -> None:
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


def _initial_state(config, input_shape, steps_per_epoch: int, sharding) -> TrainState:
    """The population's initial state; a model that does not fit the data is a ConfigError."""
    model = LeNet.from_config(config.model)
    try:
        return create_population(
            config, model, input_shape, steps_per_epoch=steps_per_epoch, sharding=sharding
        )
    except (TypeError, ValueError):
        # Diagnosed only on failure: tracing the model twice would cost every start-up.
        _check_model_fits(model, input_shape)
        raise


def _start_line(inputs: Inputs, members: int, strategy: str, devices, start_epoch: int) -> str:
    """The run's first console line: the data, the population, the devices, a resume."""
    fp = inputs.fingerprint
    return (
        f"{inputs.name} ({inputs.source}): {fp['num_train']} train"
        + (f" / {fp['num_validation']} validation" if fp["num_validation"] else "")
        + f" / {fp['num_test']} test images; {members} member(s), strategy {strategy}, on "
        + _device_name(devices)
        + (f"; resuming after epoch {start_epoch}" if start_epoch else "")
    )


def _epoch_runner(config, state: TrainState, inputs: Inputs, key, bar, mesh) -> tuple:
    """``run(state, key) -> (state, metrics)`` for ``config.loop``, and its compile time (s)."""
    start = time.perf_counter()
    train = inputs.train
    if config.loop == "scan":
        epoch_fn = make_train_epoch(config, mesh=mesh, fill=inputs.black)
        epoch_fn = epoch_fn.lower(state, train, key).compile()
        return (lambda state, key: epoch_fn(state, train, key)), time.perf_counter() - start

    batches = jax.jit(make_batch_fn(config, fill=inputs.black))
    num_train = train.images.shape[0]
    x, y = batches(train, data.epoch_indices(key, num_train, config.batch_size)[0], key)
    step = make_train_step(config, mesh=mesh).lower(state, x, y).compile()

    def run(state: TrainState, key: jax.Array):
        steps = []
        indices = data.epoch_indices(key, num_train, config.batch_size)
        keys = data.step_keys(key, indices.shape[0])
        if bar is not None:
            bar.reset(total=indices.shape[0])
        for idx, step_key in zip(indices, keys, strict=True):
            state, metrics = step(state, *batches(train, idx, step_key))
            steps.append(metrics)
            if bar is not None:
                bar.update()
        return state, reduce_steps(jax.tree.map(lambda *xs: jnp.stack(xs), *steps))

    return run, time.perf_counter() - start


def _apply_fallback(config: ml_collections.ConfigDict, inputs: Inputs, log) -> None:
    """Sets the epochs (and warmup) to train after a fallback to a smaller data set, if
    ``data.fallback_epochs`` asks for it; the config written to the workdir records them."""
    epochs = fallback_epochs(
        config.data, inputs, num_epochs=config.num_epochs, batch_size=config.batch_size
    )
    if epochs is None:
        return
    log(
        f"fallback data: {inputs.name} has {inputs.fingerprint['num_train']} training images, "
        f"not those of {config.data.name}; training {epochs} epochs instead of "
        f"{config.num_epochs} so the run takes as many SGD steps "
        f"(config.data.fallback_epochs='as_configured' keeps {config.num_epochs})"
    )
    factor = epochs / config.num_epochs
    config.optimizer.warmup_epochs = round(config.optimizer.warmup_epochs * factor)
    config.num_epochs = epochs


def _epoch_record(epoch: int, seconds: float, train: dict, evaluated: dict, diverged) -> dict:
    """One epoch of the history: ``{"epoch", "seconds", "metrics": {name: (P,)}}``."""
    train = dict(train)
    train.pop("finite")  # already folded into ``diverged``
    return {
        "epoch": epoch,
        "seconds": seconds,
        "metrics": {
            "train_loss": train.pop("loss"),
            "train_accuracy": train.pop("accuracy"),
            **evaluated,
            **train,
            "diverged": diverged,
        },
    }


def _stop_or_freeze(config, record, was_diverged, history, report: Reporter, rundir, log) -> None:
    """Reports members that diverged this epoch; raises TrainingDiverged when the run must stop
    (``population.freeze_diverged`` off, or nobody left), otherwise they stay frozen."""
    diverged = np.asarray(record["metrics"]["diverged"])
    newly = np.flatnonzero(diverged & ~was_diverged)
    if not newly.size:
        return
    who = ", ".join(report.member_name(i) for i in newly)
    message = (
        f"epoch {record['epoch']}: {who} diverged (loss or gradient non-finite, or loss above "
        f"{config.max_loss_factor:g}x its initial value)"
    )
    if not config.population.freeze_diverged or diverged.all():
        report.write_history(history, figure=True)
        raise TrainingDiverged(
            f"{message}; training stopped, the last good checkpoint is epoch "
            f"{rundir.epochs()[0]} in {rundir.checkpoint_dir}"
        )
    log(f"warning: {message}; frozen, the other members continue")


def _evaluate_named(evaluate, state: TrainState, split: data.DeviceSplit, name: str) -> dict:
    return {f"{name}_{k}": np.asarray(v) for k, v in jax.device_get(evaluate(state, split)).items()}


def train_and_evaluate(
    config: Any,
    workdir: str | os.PathLike,
    *,
    log: Callable[[str], None] | None = None,
    started: float | None = None,
) -> dict[str, Any]:
    """Trains and evaluates the population ``config`` describes, writing everything to ``workdir``.

    If ``workdir`` holds checkpoints of the same run (same config, same data), training resumes
    after the newest intact one (``num_epochs`` may be raised when the schedule is "constant");
    the data order of epoch ``e`` is ``fold_in(key(seed), e)``, so a resumed run replays an
    uninterrupted one exactly. A member diverges when a minibatch loss is non-finite or exceeds
    ``max_loss_factor`` x its initial loss; it is then frozen (``population.freeze_diverged``)
    or the run stops. Prints one line per epoch and a final report.

    Args:
      config: a ``ConfigDict`` or mapping (see :mod:`cnnjax.train.config`); resolved here, once.
      workdir: the run's directory (see :mod:`cnnjax.train.rundir` for its files).
      log: receives one-line notices (default: the reporter's console line).
      started: ``time.perf_counter()`` when the process started (the CLI passes it), for the
        start-up line ``first step after X s``; default: when this function was called.

    Returns:
      The summary: final per-member metrics as (P,) arrays -- ``train_loss``,
      ``train_accuracy``, ``test_loss``, ``test_accuracy`` (and ``val_*`` with a validation
      split), ``diverged`` and the other per-epoch metrics of the last epoch -- plus ``epochs``,
      ``diverged_epoch``, ``best_member`` (None if all diverged), ``examples_per_second``,
      ``compile_seconds``, ``train_seconds``, ``trained_epochs`` and ``device``.

    Raises:
      ConfigError: a bad config, or a model that does not fit the data.
      DataError: the data cannot be loaded.
      RunDirError: the workdir is unusable, in use, or holds a different run.
      WriteError: a file could not be written (the last good checkpoint stays).
      DeviceError: the platform, processes or mesh cannot work here.
      TrainingDiverged: a member diverged and ``population.freeze_diverged`` is False, or every
        member has diverged. That epoch is not checkpointed.
    """
    started = time.perf_counter() if started is None else started
    config = resolve_config(config)
    pop = config.population
    mesh = _devices(config)
    devices = parallel.describe(mesh)
    state_sharding, replicated = parallel.state_sharding(mesh), parallel.replicated(mesh)
    with RunDir(workdir, log=log or print) as rundir:
        inputs = load_inputs(
            config.data,
            batch_size=config.batch_size,
            num_classes=config.model.num_classes,
            sharding=replicated,
        )
        _apply_fallback(config, inputs, log or print)
        eval_split = "val" if inputs.validation is not None else "test"
        report = Reporter(
            rundir,
            seeds=pop.seeds,
            learning_rates=pop.learning_rates,
            dataset=inputs.name,
            eval_split=eval_split,
            progress=config.progress,
        )
        log = rundir.log = log or report.line

        _check_shift_fits(config.data.random_shift, inputs.input_shape)
        steps_per_epoch = inputs.fingerprint["num_train"] // config.batch_size
        state = _initial_state(config, inputs.input_shape, steps_per_epoch, state_sharding)
        evaluate = make_eval_fn(config, mesh=mesh)
        # Read on the host from a replicated copy (a sharded state may span processes).
        diverged_now = jax.jit(lambda s: s.diverged, out_shardings=replicated)
        identity = _identity(config, inputs)
        restored = rundir.restore(
            state,
            check_meta=lambda meta: _check_same_run(
                meta["run"], identity, config.optimizer.schedule
            ),
        )
        # How to rebuild the state and feed the model: what restore_model needs.
        shapes = {
            "input_shape": list(inputs.input_shape),
            "steps_per_epoch": steps_per_epoch,
            "preprocess": inputs.preprocess,
        }

        def meta(epoch: int) -> dict[str, Any]:
            return {"epoch": epoch, "history": history, "run": identity, "shapes": shapes}

        if restored is None:
            start_epoch, history = 0, []
            rundir.save(0, state, meta(0))
        else:
            start_epoch, state, history = restored.epoch, restored.state, restored.meta["history"]

        run_info = {
            "data": inputs.fingerprint,
            **shapes,
            "strategy": parallel.population_strategy(pop.strategy, mesh),
            **devices,
        }
        rundir.write_json("config.json", config.to_dict())
        rundir.write_json("run.json", run_info)
        # Rebuilds metric files lost since the last checkpoint.
        report.write_history(history, figure=False)
        log(_start_line(inputs, pop.size, run_info["strategy"], devices, start_epoch))

        eval_data = inputs.validation if inputs.validation is not None else inputs.test
        run_epoch, compile_seconds, train_seconds, trained = None, 0.0, 0.0, 0
        was_diverged = np.asarray(diverged_now(state))
        report.open_bars(config.num_epochs, start_epoch)
        step_bar = report.step_bar() if config.loop == "step" else None
        try:
            for epoch in range(start_epoch + 1, config.num_epochs + 1):
                key = data.epoch_key(config.seed, epoch)
                if run_epoch is None:
                    run_epoch, compile_seconds = _epoch_runner(
                        config, state, inputs, key, step_bar, mesh
                    )
                    log(
                        f"first step after {time.perf_counter() - started:.2f} s "
                        f"(compile {compile_seconds:.2f} s)"
                    )
                start = time.perf_counter()
                state, metrics = run_epoch(state, key)
                metrics = jax.device_get(metrics)
                seconds = time.perf_counter() - start
                train_seconds, trained = train_seconds + seconds, trained + 1

                evaluated = _evaluate_named(evaluate, state, eval_data, eval_split)
                record = _epoch_record(
                    epoch, seconds, metrics, evaluated, np.asarray(diverged_now(state))
                )
                history.append(to_json(record))
                report.epoch_line(record, config.num_epochs)
                _stop_or_freeze(config, record, was_diverged, history, report, rundir, log)
                was_diverged = record["metrics"]["diverged"]
                rundir.save(epoch, state, meta(epoch))
                report.write_history(history, figure=False)
        finally:
            report.close_bars()
            if step_bar is not None:
                step_bar.close()

        if not history:
            return {"epochs": 0}
        report.write_history(history, figure=True)
        # Without a validation split the last epoch already evaluated this state on the test set.
        if trained and eval_split == "test":
            final_eval = evaluated
        else:
            final_eval = _evaluate_named(evaluate, state, inputs.test, "test")
        examples = trained * steps_per_epoch * config.batch_size * pop.size
        timing = {
            "trained_epochs": trained,
            "train_seconds": train_seconds,
            "compile_seconds": compile_seconds,
            "examples_per_second": examples / train_seconds if train_seconds else float("nan"),
            "device": _device_name(devices),
            **devices,
        }
        return report.summary(history, final_eval, timing)


class RestoredModel(NamedTuple):
    """A trained member: ``model``, its ``params`` (no member axis) and ``preprocess``, the
    function that turns uint8 images (N, H, W, C) into the float32 inputs it was trained on."""

    model: LeNet
    params: Any
    preprocess: Callable[[Any], jax.Array]


def restore_model(workdir: str | os.PathLike, member: int = 0) -> RestoredModel:
    """The model, trained parameters and preprocessing of one member of the run in ``workdir``.

    Everything comes from the newest checkpoint (its record holds the resolved config, the input
    shape and the normalisation the run used); no statistics are recomputed.

    Example::

        model, params, preprocess = restore_model("runs/lenet")
        logits = model.apply({"params": params}, preprocess(uint8_images))

    Raises:
      RunDirError: ``workdir`` holds no run, or its newest checkpoint is damaged.
      ValueError: ``member`` is not in ``[0, population.size)``.
    """
    with RunDir(workdir, read_only=True) as rundir:
        epochs = rundir.epochs()
        if not epochs:
            raise RunDirError(f"{rundir.path} holds no checkpoint")
        meta = rundir.read_meta(epochs[0])
        config = resolve_config(meta["run"]["config"])
        size = config.population.size
        if isinstance(member, bool) or not isinstance(member, int) or not 0 <= member < size:
            raise ValueError(f"restore_model: member must be an int in [0, {size}), got {member!r}")
        model = LeNet.from_config(config.model)
        shapes = meta["shapes"]
        target = create_population(
            config, model, tuple(shapes["input_shape"]), steps_per_epoch=shapes["steps_per_epoch"]
        )
        checkpoint = rundir.restore(target)
        if checkpoint is None:
            raise RunDirError(f"{rundir.path} holds no checkpoint")
        params = jax.tree.map(lambda x: x[member], checkpoint.state.params)
        prep = shapes["preprocess"]

    def preprocess(images: Any) -> jax.Array:
        return data.to_device(
            np.asarray(images),
            np.zeros(len(images), np.int32),
            normalize=prep["normalize"],
            **{k: prep[k] for k in ("mean", "std") if k in prep},
        ).images

    return RestoredModel(model, params, preprocess)
