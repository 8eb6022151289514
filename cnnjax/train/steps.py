"""One model's training and evaluation step: the pure functions behind D2L 6.6's ``train_ch6``.

The book's loop computes the cross-entropy loss of a minibatch, backpropagates and takes an SGD
step, and counts correct predictions. Here that is :func:`train_step` and :func:`eval_step`: pure
functions of one member's state (no member axis) and a batch, which
:mod:`cnnjax.train.population` maps over a population and :mod:`cnnjax.train.epoch` compiles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from cnnjax.train.state import TrainState

__all__ = ["cross_entropy", "eval_step", "train_step"]

Batch = tuple[jax.Array, jax.Array]
Metrics = dict[str, jax.Array]


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy. logits: (B, K) float; labels: (B,) int -> (B,) float32."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def _loss(
    params: Any, apply_fn: Callable[..., jax.Array], x: jax.Array, y: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Mean cross-entropy of a batch and its logits (B, K)."""
    logits = apply_fn({"params": params}, x)
    return jnp.mean(cross_entropy(logits, y)), logits


def _per_example_grads(
    state: TrainState, x: jax.Array, y: jax.Array
) -> tuple[jax.Array, jax.Array, Any, jax.Array]:
    """Per-example gradients by ``vmap(grad)``.

    Returns (mean loss, logits (B, K), the mean of the gradients, their norms (B,)).
    """

    def one(xi: jax.Array, yi: jax.Array):
        return jax.value_and_grad(_loss, has_aux=True)(
            state.params, state.apply_fn, xi[None], yi[None]
        )

    (losses, logits), grads = jax.vmap(one)(x, y)
    norms = jax.vmap(optax.tree.norm)(grads)
    mean_grads = jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)
    return jnp.mean(losses), logits[:, 0], mean_grads, norms


def train_step(
    state: TrainState,
    batch: Batch,
    *,
    per_example_grads: bool = False,
    freeze_diverged: bool = True,
) -> tuple[TrainState, Metrics]:
    """One minibatch gradient step of one model.

    Args:
      state: one member's state (no member axis).
      batch: ``(x, y)``; x: (B, H, W, C) float32, y: (B,) int32.
      per_example_grads: compute the gradient as the mean of per-example gradients
        (``vmap(grad)``) and report their norms. Same update up to float rounding.
      freeze_diverged: once the loss or gradient is non-finite, keep the last finite state
        (``jnp.where`` on a finite flag) instead of writing NaNs into it.

    Returns:
      The new state and scalar metrics: ``loss`` (mean cross-entropy before the update),
      ``accuracy``, ``grad_norm``, ``update_norm``, ``param_norm`` (after the update),
      ``finite`` (this step's loss and gradient were finite) and, with ``per_example_grads``,
      ``example_grad_norm_mean`` / ``example_grad_norm_max``.
    """
    x, y = batch
    metrics: Metrics = {}
    if per_example_grads:
        loss, logits, grads, norms = _per_example_grads(state, x, y)
        metrics["example_grad_norm_mean"] = jnp.mean(norms)
        metrics["example_grad_norm_max"] = jnp.max(norms)
    else:
        (loss, logits), grads = jax.value_and_grad(_loss, has_aux=True)(
            state.params, state.apply_fn, x, y
        )
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new_state = state.apply_gradients(grads=grads)
    diverged = state.diverged | ~finite
    if freeze_diverged:
        new_state = jax.tree.map(lambda old, new: jnp.where(diverged, old, new), state, new_state)
    new_state = new_state.replace(diverged=diverged)
    metrics.update(
        loss=loss,
        accuracy=jnp.mean(jnp.argmax(logits, axis=-1) == y),
        grad_norm=grad_norm,
        update_norm=optax.tree.norm(jax.tree.map(jnp.subtract, new_state.params, state.params)),
        param_norm=optax.tree.norm(new_state.params),
        finite=finite,
    )
    return new_state, metrics


def eval_step(state: TrainState, batch: tuple[jax.Array, jax.Array, jax.Array]) -> Metrics:
    """Sums for masked evaluation of one model on a (possibly padded) batch.

    Args:
      state: one member's state (no member axis).
      batch: ``(x, y, mask)``; x: (B, H, W, C) float32, y: (B,) int32, mask: (B,) bool marking
        the real examples (padding rows are ignored).

    Returns:
      ``loss_sum`` (summed cross-entropy), ``correct`` (number of correct predictions) and
      ``count`` (number of real examples), all float32 scalars.
    """
    x, y, mask = batch
    logits = state.apply_fn({"params": state.params}, x)
    # where, not a product with the mask: a non-finite loss on a padding row times 0 is NaN.
    losses = jnp.where(mask, cross_entropy(logits, y), 0.0)
    correct = mask & (jnp.argmax(logits, axis=-1) == y)
    return {
        "loss_sum": jnp.sum(losses),
        "correct": jnp.sum(correct.astype(jnp.float32)),
        "count": jnp.sum(mask.astype(jnp.float32)),
    }
