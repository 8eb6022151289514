"""The compiled programs: a population's training step, a whole training epoch, and evaluation.

D2L 6.6's ``train_ch6`` loops over minibatches in Python. Here the host hands the device the whole
(device-resident) training split and a key, and one ``lax.scan`` runs every step of the epoch:
batches are gathered on the device by index, and only per-epoch metrics come back. The per-step
variant (a jitted step called from a Python loop, the Flax-examples way) exists for progress bars
and for benchmarks that compare the two. Both use the same step, so they train identically.

All three compiled functions work on a population (leading member axis P, see
:mod:`cnnjax.train.state`) through :func:`cnnjax.train.population.population_map`; the train state
argument is donated, so its buffers are reused for the result and must not be used again. With
successive halving (a :class:`~cnnjax.train.state.HalvingState`), a stopped member's step is
skipped under ``"map"`` (see :func:`_unless_stopped`).

Given a ``mesh`` (:func:`cnnjax.train.parallel.make_mesh`), the same programs run sharded: the
state stays split along ``"pop"``, every gathered batch is constrained to ``P("data")`` (so each
device computes on its slice and XLA all-reduces the batch means), and metrics come back
replicated. Nothing else changes: a single device is the mesh (1, 1).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from cnnjax import data
from cnnjax.train import parallel
from cnnjax.train.population import population_map, resolve_strategy
from cnnjax.train.state import TrainState, stopped_flags
from cnnjax.train.steps import Metrics, eval_step, reduce_steps, skipped_metrics, train_step

__all__ = ["make_batch_fn", "make_eval_fn", "make_train_epoch", "make_train_step"]


def _strategy(config: Any, strategy: str | None, mesh: Mesh | None) -> str:
    strategy = strategy or config.population.strategy
    return strategy if mesh is None else parallel.population_strategy(strategy, mesh)


def _population_step(
    config: Any, strategy: str | None, mesh: Mesh | None
) -> Callable[..., tuple[TrainState, Metrics]]:
    step = functools.partial(
        train_step,
        per_example_grads=config.per_example_grads,
        freeze_diverged=config.population.freeze_diverged,
        max_loss_factor=config.max_loss_factor,
    )
    strategy = resolve_strategy(_strategy(config, strategy, mesh))
    mapped = population_map(_unless_stopped(step) if strategy == "map" else step, strategy)

    def sharded(state: TrainState, batch: Any) -> tuple[TrainState, Metrics]:
        return mapped(state, _on_data_axis(batch, mesh))

    return sharded


def _unless_stopped(step: Callable[..., tuple[TrainState, Metrics]]):
    """``step`` for one member, not computed for a member stopped by successive halving.

    A ``lax.cond`` on the member's ``stopped`` flag returns its state unchanged and
    :func:`~cnnjax.train.steps.skipped_metrics`, exactly what ``step`` itself gives it (see
    :func:`~cnnjax.train.steps.train_step`). For the ``"map"`` strategy only, where the flag is
    a scalar and only the taken branch runs: a stopped member costs no training compute. Under
    ``"vmap"`` the batched flag would make the cond a select of both branches, which saves
    nothing and, as a second select on the new state, changes how XLA compiles (and rounds) the
    members that still train; there ``train_step``'s own ``jnp.where`` freezes the stopped ones.
    Without halving (a plain :class:`~cnnjax.train.state.TrainState`) it is ``step`` itself.
    """

    def member_step(state: TrainState, batch: Any) -> tuple[TrainState, Metrics]:
        if stopped_flags(state) is None:
            return step(state, batch)
        like = jax.eval_shape(step, state, batch)[1]

        def skip(state: TrainState, batch: Any) -> tuple[TrainState, Metrics]:
            return state, skipped_metrics(state, like)

        return jax.lax.cond(state.stopped, skip, step, state, batch)

    return member_step


def _on_data_axis(batch: Any, mesh: Mesh | None) -> Any:
    """The batch split along the mesh's ``"data"`` axis (as is without a mesh)."""
    if mesh is None:
        return batch
    return jax.lax.with_sharding_constraint(batch, parallel.batch_sharding(mesh))


def _jit(fn: Callable, mesh: Mesh | None, *, train: bool) -> Callable:
    """``jax.jit`` with the state donated (training) and, on a mesh, the outputs placed: the
    state along ``"pop"``, metrics replicated (every process can read them)."""
    kwargs: dict[str, Any] = {"donate_argnums": 0} if train else {}
    if mesh is not None:
        metrics = parallel.replicated(mesh)
        kwargs["out_shardings"] = (parallel.state_sharding(mesh), metrics) if train else metrics
    return jax.jit(fn, **kwargs)


def make_batch_fn(config: Any, *, fill: float | tuple[float, ...] = 0.0):
    """The training batch of one step: gathered by index, then augmented as the config says.

    Args:
      config: the resolved training config (``data.random_flip`` and ``data.random_shift`` are
        read).
      fill: the shifted-in border's value, scalar or per channel (the normalised black pixel,
        :attr:`cnnjax.train.inputs.Inputs.black`).

    Returns:
      ``batch(train, idx, key) -> (x, y)`` (not jitted): ``train`` a
      :class:`cnnjax.data.DeviceSplit`, ``idx`` (B,) int32 indices, ``key`` the step's key
      (:func:`cnnjax.data.step_keys`; unused without augmentation); x (B, H, W, C), y (B,).
    """
    flip, shift = config.data.random_flip, config.data.random_shift

    def batch(train: data.DeviceSplit, idx: jax.Array, key: jax.Array):
        x, y = data.gather(train, idx)
        return data.augment(key, x, flip=flip, max_shift=shift, fill=fill), y

    return batch


def make_train_step(config: Any, *, strategy: str | None = None, mesh: Mesh | None = None):
    """A jitted population step for a per-step Python loop.

    Args:
      config: the resolved training config (``per_example_grads``, ``max_loss_factor``,
        ``population.freeze_diverged`` and ``population.strategy`` are read).
      strategy: overrides ``config.population.strategy`` ("vmap" | "map" | "auto").
      mesh: run sharded on this mesh (see the module docstring); None for one device.

    Returns:
      ``step(state, x, y) -> (state, metrics)``: ``state`` a population :class:`TrainState`
      (donated); x: (B, H, W, C) float32 and y: (B,) int32, shared by all members; ``metrics``
      maps each name of :func:`cnnjax.train.steps.train_step`'s metrics to a (P,) array.
    """
    step = _population_step(config, strategy, mesh)

    def population_step(state: TrainState, x: jax.Array, y: jax.Array):
        return step(state, (x, y))

    return _jit(population_step, mesh, train=True)


def make_train_epoch(
    config: Any,
    *,
    strategy: str | None = None,
    mesh: Mesh | None = None,
    fill: float | tuple[float, ...] = 0.0,
):
    """A jitted function that trains a population for one epoch as a single ``lax.scan``.

    Args:
      config: the resolved training config (``batch_size``, ``per_example_grads``,
        ``max_loss_factor``, ``population.freeze_diverged``, ``population.strategy`` and the
        augmentation keys of :func:`make_batch_fn` are read).
      strategy: overrides ``config.population.strategy`` ("vmap" | "map" | "auto").
      mesh: run sharded on this mesh (see the module docstring); None for one device.
      fill: see :func:`make_batch_fn`.

    Returns:
      ``train_epoch(state, train, key) -> (state, metrics)``:

      * ``state``: a population :class:`TrainState` (donated);
      * ``train``: a :class:`cnnjax.data.DeviceSplit` (images (N, H, W, C) float32, labels (N,)
        int32) on the device;
      * ``key``: the epoch's PRNG key (:func:`cnnjax.data.epoch_key`); it fixes the permutation,
        ``N // batch_size`` full batches (the last partial batch is dropped), and the
        augmentation (:func:`cnnjax.data.step_keys`);
      * ``metrics``: per-epoch (P,) arrays, see :func:`cnnjax.train.steps.reduce_steps`.

      One compilation per training-split shape.
    """
    step = _population_step(config, strategy, mesh)
    batch = make_batch_fn(config, fill=fill)
    batch_size = config.batch_size

    def train_epoch(state: TrainState, train: data.DeviceSplit, key: jax.Array):
        indices = data.epoch_indices(key, train.images.shape[0], batch_size)
        keys = data.step_keys(key, indices.shape[0])

        def body(state: TrainState, xs: tuple[jax.Array, jax.Array]):
            return step(state, batch(train, *xs))

        state, metrics = jax.lax.scan(body, state, (indices, keys))
        return state, reduce_steps(metrics)

    return _jit(train_epoch, mesh, train=True)


def make_eval_fn(config: Any, *, strategy: str | None = None, mesh: Mesh | None = None):
    """A jitted masked evaluation of a population over a whole split.

    Args:
      config: the resolved training config (``eval_batch_size`` and ``population.strategy``
        are read).
      strategy: overrides ``config.population.strategy``.
      mesh: run sharded on this mesh; None for one device.

    Returns:
      ``evaluate(state, split) -> metrics``: ``split`` a :class:`cnnjax.data.DeviceSplit` with N
      examples, in batches of ``min(eval_batch_size, N)`` (rounded up to a multiple of the
      mesh's data axis), the last padded and masked so every example counts exactly once;
      ``metrics`` maps ``loss`` (mean cross-entropy) and ``accuracy`` to (P,) float32 arrays;
      ``state`` is not donated.
    """
    evaluate_one = population_map(eval_step, _strategy(config, strategy, mesh))
    batch_size = config.eval_batch_size
    shards = 1 if mesh is None else int(mesh.shape["data"])

    def evaluate(state: TrainState, split: data.DeviceSplit) -> Metrics:
        # Never pad a small split up to a large eval batch.
        num = split.images.shape[0]
        size = -(-min(batch_size, num) // shards) * shards
        indices, masks = data.eval_indices(num, size)

        def body(totals: Metrics, batch: tuple[jax.Array, jax.Array]):
            idx, mask = batch
            x, y = data.gather(split, idx)
            sums = evaluate_one(state, _on_data_axis((x, y, mask), mesh))
            return jax.tree.map(jnp.add, totals, sums), None

        num_members = state.diverged.shape[0]
        zeros = {
            k: jnp.zeros((num_members,), jnp.float32) for k in ("loss_sum", "correct", "count")
        }
        totals, _ = jax.lax.scan(body, zeros, (indices, masks))
        return {
            "loss": totals["loss_sum"] / totals["count"],
            "accuracy": totals["correct"] / totals["count"],
        }

    return _jit(evaluate, mesh, train=False)
