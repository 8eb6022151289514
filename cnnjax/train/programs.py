"""The compiled programs: a population's training step, a whole training epoch, and evaluation.

D2L 6.6's ``train_ch6`` loops over minibatches in Python. Here the host hands the device the whole
(device-resident) training split and a key, and one ``lax.scan`` runs every step of the epoch:
batches are gathered on the device by index, and only per-epoch metrics come back. The per-step
variant (a jitted step called from a Python loop, the Flax-examples way) exists for progress bars
and for benchmarks that compare the two. Both use the same step, so they train identically.

All three compiled functions work on a population (leading member axis P, see
:mod:`cnnjax.train.state`) through :func:`cnnjax.train.population.population_map`; the train state
argument is donated, so its buffers are reused for the result and must not be used again.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from cnnjax import data
from cnnjax.train.population import population_map
from cnnjax.train.state import TrainState
from cnnjax.train.steps import Metrics, eval_step, reduce_steps, train_step

__all__ = ["LOOPS", "make_eval_fn", "make_train_epoch", "make_train_step"]

# How an epoch is driven: one compiled lax.scan, or a jitted step called from Python.
LOOPS = ("scan", "step")


def _population_step(
    config: Any, strategy: str | None
) -> Callable[..., tuple[TrainState, Metrics]]:
    step = functools.partial(
        train_step,
        per_example_grads=config.per_example_grads,
        freeze_diverged=config.population.freeze_diverged,
    )
    return population_map(step, strategy or config.population.strategy)


def make_train_step(config: Any, *, strategy: str | None = None):
    """A jitted population step for a per-step Python loop.

    Args:
      config: the resolved training config (``per_example_grads``,
        ``population.freeze_diverged`` and ``population.strategy`` are read).
      strategy: overrides ``config.population.strategy`` ("vmap" | "map" | "auto").

    Returns:
      ``step(state, x, y) -> (state, metrics)``: ``state`` a population :class:`TrainState`
      (donated); x: (B, H, W, C) float32 and y: (B,) int32, shared by all members; ``metrics``
      maps each name of :func:`cnnjax.train.steps.train_step`'s metrics to a (P,) array.
    """
    step = _population_step(config, strategy)

    @functools.partial(jax.jit, donate_argnums=0)
    def population_step(state: TrainState, x: jax.Array, y: jax.Array):
        return step(state, (x, y))

    return population_step


def make_train_epoch(config: Any, *, strategy: str | None = None):
    """A jitted function that trains a population for one epoch as a single ``lax.scan``.

    Args:
      config: the resolved training config (``batch_size``, ``per_example_grads``,
        ``population.freeze_diverged`` and ``population.strategy`` are read).
      strategy: overrides ``config.population.strategy`` ("vmap" | "map" | "auto").

    Returns:
      ``train_epoch(state, train, key) -> (state, metrics)``:

      * ``state``: a population :class:`TrainState` (donated);
      * ``train``: a :class:`cnnjax.data.DeviceSplit` (images (N, H, W, C) float32, labels (N,)
        int32) on the device;
      * ``key``: the epoch's PRNG key (:func:`cnnjax.data.epoch_key`); it fixes the permutation,
        ``N // batch_size`` full batches (the last partial batch is dropped);
      * ``metrics``: per-epoch (P,) arrays, see :func:`cnnjax.train.steps.reduce_steps`.

      One compilation per training-split shape.
    """
    step = _population_step(config, strategy)
    batch_size = config.batch_size

    @functools.partial(jax.jit, donate_argnums=0)
    def train_epoch(state: TrainState, train: data.DeviceSplit, key: jax.Array):
        indices = data.epoch_indices(key, train.images.shape[0], batch_size)

        def body(state: TrainState, idx: jax.Array):
            return step(state, data.gather(train, idx))

        state, metrics = jax.lax.scan(body, state, indices)
        return state, reduce_steps(metrics)

    return train_epoch


def make_eval_fn(config: Any, *, strategy: str | None = None):
    """A jitted masked evaluation of a population over a whole split.

    Args:
      config: the resolved training config (``eval_batch_size`` and ``population.strategy``
        are read).
      strategy: overrides ``config.population.strategy``.

    Returns:
      ``evaluate(state, split) -> metrics``: ``split`` a :class:`cnnjax.data.DeviceSplit` with N
      examples, padded to whole batches of ``min(eval_batch_size, N)`` and masked so every
      example counts exactly once; ``metrics`` maps ``loss`` (mean cross-entropy) and
      ``accuracy`` to (P,) float32 arrays. ``state`` is not donated.
    """
    evaluate_one = population_map(eval_step, strategy or config.population.strategy)
    batch_size = config.eval_batch_size

    @jax.jit
    def evaluate(state: TrainState, split: data.DeviceSplit) -> Metrics:
        # Never pad a small split up to a large eval batch.
        num = split.images.shape[0]
        indices, masks = data.eval_indices(num, min(batch_size, num))

        def body(totals: Metrics, batch: tuple[jax.Array, jax.Array]):
            idx, mask = batch
            x, y = data.gather(split, idx)
            sums = evaluate_one(state, (x, y, mask))
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

    return evaluate
