"""The training loop's parts: the epoch runner, the epoch record, the divergence policy and
successive halving.

:func:`train_epochs` trains a :class:`~cnnjax.train.setup.Setup`'s population epoch by epoch and
yields each epoch's state and :class:`~cnnjax.train.runfiles.EpochRecord`; what to do with them
(report, checkpoint, stop) is the caller's: :func:`cnnjax.train.trainer.train_and_evaluate`, a
benchmark, a sweep. The data order of epoch ``e`` is ``fold_in(key(seed), e)``, so a loop started
after epoch ``k`` replays an uninterrupted run exactly.

With ``population.halving.rungs``, :func:`train_epochs` also applies successive halving
(:func:`halving`) after each rung epoch's evaluation: the members of the points ranked out are
stopped in the state it yields, so the checkpoint of that epoch holds the stops.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax import data
from cnnjax.train import parallel
from cnnjax.train.config import member_hyperparams
from cnnjax.train.programs import make_batch_fn, make_eval_fn, make_train_epoch, make_train_step
from cnnjax.train.runfiles import EpochRecord
from cnnjax.train.setup import Setup
from cnnjax.train.state import TrainState
from cnnjax.train.steps import Metrics, reduce_steps

__all__ = [
    "Divergence",
    "Halving",
    "divergence",
    "epoch_record",
    "evaluate_split",
    "halving",
    "halving_line",
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


def _point_keys(config: Any) -> list[tuple[tuple[str, Hashable], ...]]:
    """Each member's *point* for successive halving: its per-member values but the seed.

    Members with equal keys are seeds of one point and are ranked, kept or stopped together.
    The one place that says what a point is (every per-member value of
    :func:`cnnjax.train.config.member_hyperparams`: learning rate, momentum, weight decay; and
    in a packed population the member's widths, ``population.channels`` / ``.dense``).
    """
    values: dict[str, Any] = dict(member_hyperparams(config))
    for key in ("channels", "dense"):
        if config.population[key]:
            values[key] = tuple(config.population[key])
    return [
        tuple((name, per_member[i]) for name, per_member in values.items())
        for i in range(config.population.size)
    ]


class Halving(NamedTuple):
    """What :func:`halving` decided at a rung: ``stopped`` (P,) bool, every member stopped so
    far; ``active`` the points that were still active before the rung; ``kept`` those of them
    that continue."""

    stopped: np.ndarray
    active: int
    kept: int


def halving(
    accuracy: Any, diverged: Any, stopped: Any, points: Sequence[Hashable], keep: float
) -> Halving:
    """The successive-halving rule at one rung.

    Args:
      accuracy: (P,) each member's evaluation accuracy after the rung epoch.
      diverged: (P,) bool; a diverged member counts as accuracy -inf (so does a NaN accuracy),
        which makes its point's mean -inf: a point with a diverged seed ranks below every point
        without one.
      stopped: (P,) bool, the members stopped at earlier rungs (their points are not active).
      points: each member's point (:func:`_point_keys`); members of one point are its seeds.
      keep: the fraction of active points that continue, in (0, 1).

    Returns:
      The active points ranked by their members' mean accuracy (ties: the point whose first
      member comes first wins); the best ``max(1, ceil(keep * active))`` continue, the
      members of the others are added to ``stopped``.
    """
    stopped = np.asarray(stopped, bool)
    acc = np.asarray(accuracy, np.float64)
    acc = np.where(np.asarray(diverged, bool) | np.isnan(acc), -np.inf, acc)
    members: dict[Hashable, list[int]] = {}
    for i, point in enumerate(points):
        members.setdefault(point, []).append(i)
    active = [p for p, idx in members.items() if not stopped[idx].any()]
    ranked = sorted(active, key=lambda p: -np.mean(acc[members[p]]))  # stable on ties
    # round: keep * active is a float product (0.3 * 10 = 3.0000000000000004).
    kept = max(1, math.ceil(round(keep * len(active), 9)))
    out = stopped.copy()
    for point in ranked[kept:]:
        out[members[point]] = True
    return Halving(out, len(active), min(kept, len(active)))


def halving_line(config: Any, record: EpochRecord) -> str | None:
    """``"halving at epoch 2: 3 of 6 points continue"`` for a record of a rung epoch
    (:func:`train_epochs`), else None."""
    if record.epoch not in config.population.halving.rungs:
        return None
    stopped_epoch = np.asarray(record.metrics["stopped_epoch"])
    points = _point_keys(config)
    active = {p for p, e in zip(points, stopped_epoch, strict=True) if e in (0, record.epoch)}
    kept = {p for p, e in zip(points, stopped_epoch, strict=True) if e == 0}
    return f"halving at epoch {record.epoch}: {len(kept)} of {len(active)} points continue"


def _with_stopped(state: TrainState, stopped: np.ndarray) -> TrainState:
    """``state`` with its ``stopped`` flags set to the host's ``stopped``, placed as before
    (built from this host's copy, so it also works when the state spans processes)."""
    sharding = state.stopped.sharding
    flags = jax.make_array_from_callback(stopped.shape, sharding, lambda index: stopped[index])
    return state.replace(stopped=flags)


def _carried(record: EpochRecord, previous: EpochRecord, stopped: np.ndarray) -> EpochRecord:
    """``record`` with every metric but ``diverged`` of the ``stopped`` members taken from
    ``previous``: a stopped member trained no further, so its row stays that of the epoch it
    stopped after."""
    if not stopped.any():
        return record
    metrics = dict(record.metrics)
    for name, values in metrics.items():
        if name != "diverged":
            metrics[name] = np.where(stopped, np.asarray(previous.metrics[name]), values)
    return dataclasses.replace(record, metrics=metrics)


def train_epochs(
    setup: Setup,
    state: TrainState,
    start_epoch: int = 0,
    *,
    previous: EpochRecord | None = None,
    bar: Any = None,
    on_compiled: Callable[[float], None] | None = None,
) -> Iterator[tuple[TrainState, EpochRecord]]:
    """Trains epochs ``start_epoch + 1 .. config.num_epochs`` and yields ``(state, record)``
    after each, evaluated on the validation split if there is one, else the test split.

    With ``population.halving.rungs``, after a rung epoch's evaluation the points ranked out
    (:func:`halving`) are stopped in the yielded state (:func:`halving_line` says so). Every
    record then has ``stopped_epoch`` (P,) int: the epoch after which the member stopped, 0 for
    one never stopped; a stopped member's other metrics (but ``diverged``) are those of that
    epoch in every later record.

    Args:
      setup: the run's :class:`~cnnjax.train.setup.Setup`.
      state: the population's state after ``start_epoch`` (donated to the first epoch).
      start_epoch: the epochs already trained.
      previous: the record of epoch ``start_epoch`` (where the stops so far are recorded);
        needed with halving when ``start_epoch`` > 0.
      bar: see :func:`make_epoch_runner`.
      on_compiled: called with the compile time (s) once the epoch program is compiled, before
        the first epoch runs.

    Raises:
      ValueError: halving resumed (``start_epoch`` > 0) without ``previous``.
    """
    config, mesh = setup.config, setup.mesh
    rungs = config.population.halving.rungs
    if rungs:
        if start_epoch and previous is None:
            raise ValueError(
                "train_epochs: previous (the record of epoch start_epoch) is needed to resume "
                "a run with population.halving"
            )
        points = _point_keys(config)
        size = config.population.size
        stopped_epoch = (
            np.zeros(size, np.int64)
            if previous is None
            else np.asarray(previous.metrics["stopped_epoch"]).astype(np.int64)
        )
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
        record = epoch_record(epoch, seconds, metrics, evaluated, diverged_now(state))
        if rungs:
            record = _carried(record, previous, stopped_epoch > 0)
            if epoch in rungs:
                verdict = halving(
                    record.metrics[f"{setup.eval_split}_accuracy"],
                    record.metrics["diverged"],
                    stopped_epoch > 0,
                    points,
                    config.population.halving.keep,
                )
                newly = verdict.stopped & (stopped_epoch == 0)
                stopped_epoch = np.where(newly, epoch, stopped_epoch)
                state = _with_stopped(state, verdict.stopped)
            metrics = {**record.metrics, "stopped_epoch": stopped_epoch.copy()}
            previous = record = dataclasses.replace(record, metrics=metrics)
        yield state, record


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
