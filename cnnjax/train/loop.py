"""The training loop's parts: the epoch runner, the epoch record and the divergence policy.

:func:`train_epochs` trains a :class:`~cnnjax.train.setup.Setup`'s population epoch by epoch and
yields each epoch's state and :class:`~cnnjax.train.runfiles.EpochRecord`; what to do with them
(report, checkpoint, stop) is the caller's: :func:`cnnjax.train.trainer.train_and_evaluate`, a
benchmark, a sweep. The data order of epoch ``e`` is ``fold_in(key(seed), e)``, so a loop started
after epoch ``k`` replays an uninterrupted run exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax import data
from cnnjax.train import parallel
from cnnjax.train.programs import make_batch_fn, make_eval_fn, make_train_epoch, make_train_step
from cnnjax.train.runfiles import EpochRecord
from cnnjax.train.setup import Setup
from cnnjax.train.state import TrainState
from cnnjax.train.steps import Metrics, reduce_steps

__all__ = [
    "Divergence",
    "divergence",
    "epoch_record",
    "evaluate_split",
    "make_epoch_runner",
    "profile_steps",
    "train_epochs",
]

EpochRunner = Callable[[TrainState, jax.Array], tuple[TrainState, Metrics]]


def _first_batch(setup: Setup, key: jax.Array):
    config, train = setup.config, setup.inputs.train
    batches = jax.jit(make_batch_fn(config, fill=setup.inputs.black))
    idx = data.epoch_indices(key, train.images.shape[0], config.batch_size)[0]
    return batches, batches(train, idx, key)


def make_epoch_runner(setup: Setup, state: TrainState, key: jax.Array, *, bar: Any = None):
    """Compiles one epoch of training for ``setup.config.loop`` and returns it with its compile
    time.

    Args:
      setup: the run's :class:`~cnnjax.train.setup.Setup`.
      state: a state of the population's structure and placement (only its shapes are used).
      key: an epoch key (only its type is used).
      bar: a tqdm bar the per-step loop advances (``loop="step"``), or None.

    Returns:
      ``(run, seconds)``: ``run(state, key) -> (state, metrics)`` trains one epoch (``state``
      is donated; ``metrics`` per-epoch (P,) arrays, :func:`cnnjax.train.steps.reduce_steps`).
    """
    start = time.perf_counter()
    config, mesh, strategy = setup.config, setup.mesh, setup.strategy
    train = setup.inputs.train
    if config.loop == "scan":
        epoch_fn = make_train_epoch(config, strategy=strategy, mesh=mesh, fill=setup.inputs.black)
        epoch_fn = epoch_fn.lower(state, train, key).compile()
        return (lambda state, key: epoch_fn(state, train, key)), time.perf_counter() - start

    batches, first = _first_batch(setup, key)
    step = make_train_step(config, strategy=strategy, mesh=mesh).lower(state, *first).compile()

    def run(state: TrainState, key: jax.Array) -> tuple[TrainState, Metrics]:
        steps = []
        indices = data.epoch_indices(key, train.images.shape[0], config.batch_size)
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


def evaluate_split(evaluate, state: TrainState, split: data.DeviceSplit, name: str) -> dict:
    """``{"<name>_loss": (P,), "<name>_accuracy": (P,)}`` on the host, from
    :func:`cnnjax.train.programs.make_eval_fn`'s ``evaluate``."""
    return {f"{name}_{k}": np.asarray(v) for k, v in jax.device_get(evaluate(state, split)).items()}


def epoch_record(
    epoch: int, seconds: float, train: Metrics, evaluated: dict, diverged: Any
) -> EpochRecord:
    """One epoch of the history from the epoch's training metrics (host arrays), its evaluation
    (:func:`evaluate_split`) and the members' divergence flags after it."""
    train = {k: np.asarray(v) for k, v in train.items()}
    train.pop("finite")  # already folded into ``diverged``
    metrics = {
        "train_loss": train.pop("loss"),
        "train_accuracy": train.pop("accuracy"),
        **evaluated,
        **train,
        "diverged": np.asarray(diverged, bool),
    }
    return EpochRecord(epoch=epoch, seconds=seconds, metrics=metrics)


class Divergence(NamedTuple):
    """What :func:`divergence` decided: the members that diverged in this epoch (indices) and
    whether the run must stop."""

    newly: np.ndarray
    stop: bool


def divergence(record: EpochRecord, was_diverged: np.ndarray, *, freeze: bool) -> Divergence:
    """The divergence policy: members newly diverged in ``record``; the run stops when one did
    and ``freeze`` (``population.freeze_diverged``) is off, or when no member is left."""
    diverged = np.asarray(record.metrics["diverged"], bool)
    newly = np.flatnonzero(diverged & ~np.asarray(was_diverged, bool))
    return Divergence(newly, bool(newly.size) and (not freeze or bool(diverged.all())))


def train_epochs(
    setup: Setup,
    state: TrainState,
    start_epoch: int = 0,
    *,
    bar: Any = None,
    on_compiled: Callable[[float], None] | None = None,
) -> Iterator[tuple[TrainState, EpochRecord]]:
    """Trains epochs ``start_epoch + 1 .. config.num_epochs`` and yields ``(state, record)``
    after each, evaluated on the validation split if there is one, else the test split.

    Args:
      setup: the run's :class:`~cnnjax.train.setup.Setup`.
      state: the population's state after ``start_epoch`` (donated to the first epoch).
      start_epoch: the epochs already trained.
      bar: see :func:`make_epoch_runner`.
      on_compiled: called with the compile time (s) once the epoch program is compiled, before
        the first epoch runs.
    """
    config, mesh = setup.config, setup.mesh
    evaluate = make_eval_fn(config, strategy=setup.strategy, mesh=mesh)
    # Read on the host from a replicated copy (a sharded state may span processes).
    diverged_now = jax.jit(lambda s: s.diverged, out_shardings=parallel.replicated(mesh))
    run = None
    for epoch in range(start_epoch + 1, config.num_epochs + 1):
        key = data.epoch_key(config.seed, epoch)
        if run is None:
            run, compile_seconds = make_epoch_runner(setup, state, key, bar=bar)
            if on_compiled is not None:
                on_compiled(compile_seconds)
        start = time.perf_counter()
        state, metrics = run(state, key)
        metrics = jax.device_get(metrics)
        seconds = time.perf_counter() - start
        evaluated = evaluate_split(evaluate, state, setup.eval_data, setup.eval_split)
        yield state, epoch_record(epoch, seconds, metrics, evaluated, diverged_now(state))


def profile_steps(setup: Setup, state: TrainState, logdir: str, num_steps: int) -> None:
    """Writes a ``jax.profiler`` trace of ``num_steps`` training steps to ``logdir`` (viewable in
    TensorBoard's profile tab or Perfetto); the steps run on a copy of ``state``, so training is
    unaffected."""
    from cnnjax.train.tensorboard import profile

    key = data.epoch_key(setup.config.seed, 0)
    _, (x, y) = _first_batch(setup, key)
    step = make_train_step(setup.config, strategy=setup.strategy, mesh=setup.mesh)
    current = [jax.tree.map(jnp.copy, state)]

    def one_step():
        current[0], metrics = step(current[0], x, y)
        return metrics

    profile(logdir, one_step, num_steps)
