"""``train_and_evaluate``: the one training loop (D2L 6.6's ``train_ch6``), driven by a config.

It reads top to bottom: resolve the config, lay out the devices, open the run directory, set up
(data, model, initial state: :mod:`cnnjax.train.setup`), restore or start, loop over epochs
(:func:`cnnjax.train.loop.train_epochs`) -- report, apply the divergence policy, checkpoint --
and evaluate the final state. Files go through :class:`~cnnjax.train.rundir.RunDir`, console
lines, metric files and TensorBoard through :class:`~cnnjax.train.report.Reporter`.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
from flax import traverse_util

from cnnjax import data
from cnnjax.models import LeNet
from cnnjax.models.packing import unpad_params
from cnnjax.train.config import default_config, member_model, resolve_config
from cnnjax.train.errors import RunDirError, TrainingDiverged
from cnnjax.train.loop import (
    divergence,
    evaluate_split,
    halving_line,
    profile_steps,
    train_epochs,
)
from cnnjax.train.programs import make_eval_fn
from cnnjax.train.report import Reporter
from cnnjax.train.rundir import RunDir
from cnnjax.train.runfiles import CheckpointMeta, EpochRecord, Identity, Summary, to_json
from cnnjax.train.setup import Setup, device_name, make_run_mesh, set_up
from cnnjax.train.state import PackedState, TrainState, create_population

__all__ = ["RestoredModel", "restore_model", "train_and_evaluate"]

# Config keys that may change when a run is resumed: they change how, or on what devices, the
# same computation runs, not its result (the devices only reorder float sums; Orbax restores a
# checkpoint into the new mesh's shardings; the data is identified by its fingerprint, not by
# where it was read from).
_RESUMABLE_CHANGES = (
    "num_epochs",
    "progress",
    "platform",
    "loop",
    "eval_batch_size",
    "per_example_grads",
    "evaluate_test",
    "profile_steps",
    "data.dir",
    "model.conv_impl",
    "mesh.population",
    "mesh.data",
    "distributed.coordinator_address",
    "distributed.num_processes",
    "distributed.process_id",
)


def _flat(tree: dict[str, Any]) -> dict[str, Any]:
    return traverse_util.flatten_dict(tree, sep=".")


def _check_same_run(saved: Identity, current: Identity, schedule: str) -> None:
    """Raises RunDirError naming what differs if ``current`` would not continue ``saved``."""
    allowed = set(_RESUMABLE_CHANGES)
    if schedule != "constant":
        allowed.discard("num_epochs")  # the schedule's length depends on it
    new = _flat(current.to_json())
    # A key added to the schema after the checkpoint was written had its default then.
    defaults = _flat({"config": to_json(default_config().to_dict())})
    old = {**{k: v for k, v in defaults.items() if k in new}, **_flat(saved.to_json())}
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


def _meta(setup: Setup, history: list[EpochRecord]) -> CheckpointMeta:
    epoch = history[-1].epoch if history else 0
    return CheckpointMeta(epoch, tuple(history), setup.identity, setup.shapes)


def _restore_or_start(rundir: RunDir, setup: Setup) -> tuple[TrainState, list[EpochRecord]]:
    """The newest intact checkpoint of this run, or the initial state (saved as checkpoint 0)."""
    schedule = setup.config.optimizer.schedule
    restored = rundir.restore(
        setup.state, check_identity=lambda saved: _check_same_run(saved, setup.identity, schedule)
    )
    if restored is None:
        rundir.save(0, setup.state, _meta(setup, []))
        return setup.state, []
    return restored.state, list(restored.meta.history)


def _stop_or_freeze(setup, record, was_diverged, history, report, rundir, log) -> None:
    """Reports members that diverged this epoch; raises TrainingDiverged when the run must stop
    (``population.freeze_diverged`` off, or nobody left), otherwise they stay frozen."""
    config = setup.config
    verdict = divergence(record, was_diverged, freeze=config.population.freeze_diverged)
    if not verdict.newly.size:
        return
    who = ", ".join(report.member_name(i) for i in verdict.newly)
    message = (
        f"epoch {record.epoch}: {who} diverged (loss or gradient non-finite, or loss above "
        f"{config.max_loss_factor:g}x its initial value)"
    )
    if verdict.stop:
        report.figure(history)
        raise TrainingDiverged(
            f"{message}; training stopped, the last good checkpoint is epoch "
            f"{rundir.epochs()[0]} in {rundir.checkpoint_dir}"
        )
    log(f"warning: {message}; frozen, the other members continue")


def _final_eval(setup: Setup, state: TrainState, history: list[EpochRecord]) -> dict:
    """The final state's test metrics: the last epoch's evaluation when it was on the test set,
    else one pass over the test set (the only one of a run with a validation split), or none
    with ``evaluate_test=False``."""
    if not setup.config.evaluate_test:
        return {}
    if setup.eval_split == "test":
        return {k: history[-1].metrics[k] for k in ("test_loss", "test_accuracy")}
    evaluate = make_eval_fn(setup.config, strategy=setup.strategy, mesh=setup.mesh)
    return evaluate_split(evaluate, state, setup.inputs.test, "test")


def _members_trained(record: EpochRecord, size: int) -> int:
    """How many members trained in ``record``'s epoch: all but those that successive halving
    stopped after an earlier epoch (their steps were not taken)."""
    if "stopped_epoch" not in record.metrics:
        return size
    stopped_epoch = np.asarray(record.metrics["stopped_epoch"])
    return int(np.sum((stopped_epoch == 0) | (stopped_epoch >= record.epoch)))


def _timing(setup: Setup, trained: list[EpochRecord], compiled: dict[str, float]) -> dict:
    config, seconds = setup.config, sum(r.seconds for r in trained)
    per_member = setup.shapes.steps_per_epoch * config.batch_size  # examples in one epoch
    size = config.population.size
    examples = per_member * sum(_members_trained(r, size) for r in trained)
    return {
        "trained_epochs": len(trained),
        "train_seconds": seconds,
        "compile_seconds": compiled.get("compile_seconds", 0.0),
        "first_step_seconds": compiled.get("first_step_seconds"),
        "examples_per_second": examples / seconds if seconds else float("nan"),
        "device": device_name(setup.devices),
        **setup.devices,
    }


def _first_step(compiled: dict, started: float, log, seconds: float) -> None:
    """Notes the compile time and the start-up (process start to first step) and says them."""
    compiled.update(compile_seconds=seconds, first_step_seconds=time.perf_counter() - started)
    log(f"first step after {compiled['first_step_seconds']:.2f} s (compile {seconds:.2f} s)")


def train_and_evaluate(
    config: Any,
    workdir: str | os.PathLike,
    *,
    log: Callable[[str], None] | None = None,
    started: float | None = None,
) -> Summary:
    """Trains and evaluates the population ``config`` describes, writing everything to ``workdir``.

    If ``workdir`` holds checkpoints of the same run (same config, same data), training resumes
    after the newest intact one (``num_epochs`` may be raised when the schedule is "constant");
    the data order of epoch ``e`` is ``fold_in(key(seed), e)``, so a resumed run replays an
    uninterrupted one exactly. A member diverges when a minibatch loss is non-finite or exceeds
    ``max_loss_factor`` x its initial loss; it is then frozen (``population.freeze_diverged``)
    or the run stops. With ``population.halving.rungs`` the members of the points ranked out at
    a rung stop (:func:`cnnjax.train.loop.train_epochs`; the stops are checkpointed, so a
    resumed run keeps them) and the summary's ``stopped_epoch`` says after which epoch each
    member stopped (0: never), i.e. which epoch its final metrics are from. Prints one line per
    epoch and a final report; TensorBoard event files go
    to ``workdir/tensorboard`` (one run per member) and, with ``profile_steps``, a profile.

    Args:
      config: a ``ConfigDict`` or mapping (see :mod:`cnnjax.train.config`); resolved here, once.
      workdir: the run's directory (see :mod:`cnnjax.train.rundir` for its files).
      log: receives one-line notices (default: the reporter's console line).
      started: ``time.perf_counter()`` when the process started (the CLI passes it), for the
        start-up line ``first step after X s``; default: when this function was called.

    Returns:
      The summary (:data:`cnnjax.train.runfiles.Summary`, also written to ``summary.json``).

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
    mesh = make_run_mesh(config)
    with RunDir(workdir, log=log or print) as rundir:
        setup = set_up(config, mesh, log or print)
        with Reporter(rundir, setup) as report:
            log = rundir.log = log or report.line
            state, history = _restore_or_start(rundir, setup)
            report.start(history)
            if setup.config.profile_steps:
                profile_steps(setup, state, rundir.file("tensorboard"), setup.config.profile_steps)
            compiled: dict[str, float] = {}
            on_compiled = functools.partial(_first_step, compiled, started, log)
            trained: list[EpochRecord] = []
            size = setup.config.population.size
            was_diverged = history[-1].metrics["diverged"] if history else np.zeros(size, bool)
            epochs = train_epochs(
                setup,
                state,
                len(history),
                previous=history[-1] if history else None,
                bar=report.step_bar,
                on_compiled=on_compiled,
            )
            for state, record in epochs:  # noqa: B007 -- the last state is evaluated below
                history.append(record)
                trained.append(record)
                report.epoch(record)
                if (line := halving_line(setup.config, record)) is not None:
                    log(line)
                _stop_or_freeze(setup, record, was_diverged, history, report, rundir, log)
                was_diverged = record.metrics["diverged"]
                rundir.save(record.epoch, state, _meta(setup, history))
            report.figure(history)
            return report.summary(
                history, _final_eval(setup, state, history), _timing(setup, trained, compiled)
            )


class RestoredModel(NamedTuple):
    """A trained member: ``model``, its ``params`` (no member axis), ``preprocess``, the
    function that turns uint8 images (N, H, W, C) into the float32 inputs it was trained on, and
    the run's resolved ``config``."""

    model: LeNet
    params: Any
    preprocess: Callable[[Any], jax.Array]
    config: ml_collections.ConfigDict


def restore_model(workdir: str | os.PathLike, member: int = 0) -> RestoredModel:
    """The model, trained parameters, preprocessing and config of one member of the run in
    ``workdir``.

    A member of a packed population (``population.channels`` / ``population.dense``) comes back
    as its own LeNet with its own parameters (:func:`cnnjax.models.packing.unpad_params`).

    Everything comes from the newest checkpoint (its record holds the resolved config, the input
    shape and the normalisation the run used); no statistics are recomputed.

    Example::

        model, params, preprocess, config = restore_model("runs/lenet")
        logits = model.apply({"params": params}, preprocess(uint8_images))

    Raises:
      RunDirError: ``workdir`` holds no run, or its newest checkpoint is damaged.
      ValueError: ``member`` is not in ``[0, population.size)``; ``preprocess`` raises it for
        images of another shape than the run's.
    """
    with RunDir(workdir, read_only=True) as rundir:
        epochs = rundir.epochs()
        if not epochs:
            raise RunDirError(f"{rundir.path} holds no checkpoint")
        meta = rundir.read_meta(epochs[0])
        config = resolve_config(meta.identity.config)
        size = config.population.size
        if isinstance(member, bool) or not isinstance(member, int) or not 0 <= member < size:
            raise ValueError(f"restore_model: member must be an int in [0, {size}), got {member!r}")
        model = LeNet.from_config(config.model)
        shapes = meta.shapes
        target = create_population(
            config, model, shapes.input_shape, steps_per_epoch=shapes.steps_per_epoch
        )
        checkpoint = rundir.restore(target)
        if checkpoint is None:
            raise RunDirError(f"{rundir.path} holds no checkpoint")
        params = jax.tree.map(lambda x: x[member], checkpoint.state.params)
        if isinstance(checkpoint.state, PackedState):
            # A packed member: its own, narrower LeNet, cut out of the padded parameters.
            wide, model = model, LeNet.from_config(member_model(config, member))
            params = unpad_params(wide, params, model)

    prep, expected = shapes.preprocess, shapes.input_shape

    def preprocess(images: Any) -> jax.Array:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(
                f"restore_model's preprocess: images must be (N, {', '.join(map(str, expected))})"
                f" uint8, the input the run trained on; got shape {images.shape}"
            )
        return data.to_device(
            images,
            np.zeros(len(images), np.int32),
            normalize=prep["normalize"],
            **{k: prep[k] for k in ("mean", "std") if k in prep},
        ).images

    return RestoredModel(model, params, preprocess, config)
