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
from cnnjax.train.config import resolve_config
from cnnjax.train.population import population_map
from cnnjax.train.state import TrainState
from cnnjax.train.steps import Metrics, eval_step, train_step

__all__ = ["make_eval_fn", "make_train_epoch", "make_train_step", "summarize_steps"]


def _population_step(
    config: Any, strategy: str | None
) -> Callable[..., tuple[TrainState, Metrics]]:
    step = functools.partial(
        train_step,
        per_example_grads=config.per_example_grads,
        freeze_diverged=config.population.freeze_diverged,
    )
    return population_map(step, strategy or config.population.strategy)


def summarize_steps(metrics: Metrics) -> Metrics:
    """Per-epoch metrics from per-step ones: each (S, P) -> (P,).

    Means over the steps, except ``param_norm`` (its last value), ``example_grad_norm_max``
    (the maximum) and ``finite`` (True only if every step was finite).
    """
    out = {}
    for name, value in metrics.items():
        if name == "param_norm":
            out[name] = value[-1]
        elif name == "example_grad_norm_max":
            out[name] = jnp.max(value, axis=0)
        elif name == "finite":
            out[name] = jnp.all(value, axis=0)
        else:
            out[name] = jnp.mean(value.astype(jnp.float32), axis=0)
    return out


def make_train_step(config: Any, *, strategy: str | None = None):
    """A jitted population step for a per-step Python loop.

    Args:
      config: the training config (``per_example_grads``, ``population.freeze_diverged`` and
        ``population.strategy`` are read).
      strategy: overrides ``config.population.strategy`` ("vmap" | "map" | "auto").

    Returns:
      ``step(state, x, y) -> (state, metrics)``: ``state`` a population :class:`TrainState`
      (donated); x: (B, H, W, C) float32 and y: (B,) int32, shared by all members; ``metrics``
      maps each name of :func:`cnnjax.train.steps.train_step`'s metrics to a (P,) array.
    """
    config = resolve_config(config)
    step = _population_step(config, strategy)

    @functools.partial(jax.jit, donate_argnums=0)
    def population_step(state: TrainState, x: jax.Array, y: jax.Array):
        return step(state, (x, y))

    return population_step


def make_train_epoch(config: Any, *, strategy: str | None = None):
    """A jitted function that trains a population for one epoch as a single ``lax.scan``.

    Args:
      config: the training config (``batch_size``, ``per_example_grads``,
        ``population.freeze_diverged`` and ``population.strategy`` are read).
      strategy: overrides ``config.population.strategy`` ("vmap" | "map" | "auto").

    Returns:
      ``train_epoch(state, train, key) -> (state, metrics)``:

      * ``state``: a population :class:`TrainState` (donated);
      * ``train``: a :class:`cnnjax.data.DeviceSplit` (images (N, H, W, C) float32, labels (N,)
        int32) on the device;
      * ``key``: the epoch's PRNG key (:func:`cnnjax.data.epoch_key`); it fixes the permutation,
        ``N // batch_size`` full batches (the last partial batch is dropped);
      * ``metrics``: per-epoch (P,) arrays, see :func:`summarize_steps`.

      One compilation per training-split shape.
    """
    config = resolve_config(config)
    step = _population_step(config, strategy)
    batch_size = config.batch_size

    @functools.partial(jax.jit, donate_argnums=0)
    def train_epoch(state: TrainState, train: data.DeviceSplit, key: jax.Array):
        indices = data.epoch_indices(key, train.images.shape[0], batch_size)

        def body(state: TrainState, idx: jax.Array):
            return step(state, data.gather(train, idx))

        state, metrics = jax.lax.scan(body, state, indices)
        return state, summarize_steps(metrics)

    return train_epoch


def make_eval_fn(config: Any, *, strategy: str | None = None):
    """A jitted masked evaluation of a population over a whole split.

    Args:
      config: the training config (``eval_batch_size`` and ``population.strategy`` are read).
      strategy: overrides ``config.population.strategy``.

    Returns:
      ``evaluate(state, split) -> metrics``: ``split`` a :class:`cnnjax.data.DeviceSplit` with N
      examples, padded to whole batches of ``eval_batch_size`` and masked so every example counts
      exactly once; ``metrics`` maps ``loss`` (mean cross-entropy) and ``accuracy`` to (P,)
      float32 arrays. ``state`` is not donated.
    """
    config = resolve_config(config)
    evaluate_one = population_map(eval_step, strategy or config.population.strategy)
    batch_size = config.eval_batch_size

    @jax.jit
    def evaluate(state: TrainState, split: data.DeviceSplit) -> Metrics:
        indices, masks = data.eval_indices(split.images.shape[0], batch_size)

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
