"""One model's training and evaluation step: the pure functions behind D2L 6.6's ``train_ch6``.

The book's loop computes the cross-entropy loss of a minibatch, backpropagates and takes an SGD
step, and counts correct predictions. Here that is :func:`train_step` and :func:`eval_step`: pure
functions of one member's state (no member axis) and a batch, which
:mod:`cnnjax.train.population` maps over a population and :mod:`cnnjax.train.programs` compiles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from cnnjax.train.state import TrainState, grad_mask, stopped_flags

__all__ = [
    "REDUCTIONS",
    "cross_entropy",
    "eval_step",
    "reduce_steps",
    "skipped_metrics",
    "train_step",
]

Batch = tuple[jax.Array, jax.Array]
Metrics = dict[str, jax.Array]

# How each metric of :func:`train_step` becomes a per-epoch value (over the step axis 0).
REDUCTIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "loss": lambda v: jnp.mean(v, axis=0),
    "accuracy": lambda v: jnp.mean(v.astype(jnp.float32), axis=0),
    "grad_norm": lambda v: jnp.mean(v, axis=0),
    "update_norm": lambda v: jnp.mean(v, axis=0),
    "param_norm": lambda v: v[-1],  # where the epoch ended
    "finite": lambda v: jnp.all(v, axis=0),  # every step of the epoch was healthy
    "example_grad_norm_mean": lambda v: jnp.mean(v, axis=0),
    "example_grad_norm_max": lambda v: jnp.max(v, axis=0),
}


def reduce_steps(metrics: Metrics) -> Metrics:
    """Per-epoch metrics from per-step ones, each reduced over axis 0 as :data:`REDUCTIONS`
    declares: (S, ...) -> (...), e.g. (S, P) -> (P,) for a population.

    Raises:
      KeyError: a metric with no declared reduction.
    """
    return {name: REDUCTIONS[name](value) for name, value in metrics.items()}


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy. logits: (B, K) float; labels: (B,) int -> (B,) float32."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def _loss(
    params: Any, apply_fn: Callable[..., jax.Array], x: jax.Array, y: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Mean cross-entropy of a batch and its logits (B, K)."""
    logits = apply_fn({"params": params}, x)
    return jnp.mean(cross_entropy(logits, y)), logits


def _masked(grads: Any, mask: Any) -> Any:
    """A packed member's gradient without its padding (``mask`` broadcasts over leading axes,
    e.g. per-example ones); the gradient itself when there is no mask."""
    return grads if mask is None else jax.tree.map(jnp.multiply, grads, mask)


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
    grads = _masked(grads, grad_mask(state))
    norms = jax.vmap(optax.tree.norm)(grads)
    mean_grads = jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)
    return jnp.mean(losses), logits[:, 0], mean_grads, norms


def train_step(
    state: TrainState,
    batch: Batch,
    *,
    per_example_grads: bool = False,
    freeze_diverged: bool = True,
    max_loss_factor: float = 0.0,
) -> tuple[TrainState, Metrics]:
    """One minibatch gradient step of one model.

    Args:
      state: one member's state (no member axis).
      batch: ``(x, y)``; x: (B, H, W, C) float32, y: (B,) int32.
      per_example_grads: compute the gradient as the mean of per-example gradients
        (``vmap(grad)``) and report their norms. Same update up to float rounding.
      freeze_diverged: once the member has diverged, keep its last healthy state (``jnp.where``
        on the flag) instead of writing NaNs or runaway values into it.
      max_loss_factor: if > 0, the member's first step (``state.step == 0``) sets its
        divergence bound ``max_loss`` to this multiple of that step's loss, i.e. of its loss at
        initialisation on the first minibatch; 0 leaves ``state.max_loss`` as it is.

    In a packed population (a :class:`~cnnjax.train.state.PackedState`) the gradient is
    multiplied by its ``grad_mask`` first, so a member's zero padding stays zero and its own
    entries take the steps its narrower LeNet would; every metric below is then the narrower
    LeNet's, up to float rounding.

    A member whose ``state.stopped`` is set (successive halving, see
    :class:`~cnnjax.train.state.HalvingState`) takes no step: its whole state comes back unchanged
    (``jnp.where`` on the flag, exact under every population strategy) and its metrics are
    :func:`skipped_metrics`. This still computes the step; skipping the computation is the
    caller's (:mod:`cnnjax.train.programs` wraps this step in a ``lax.cond``).

    A step is healthy when its loss and gradient norm are finite and the loss is at most
    ``state.max_loss`` (the member's divergence bound; ``inf`` disables it). A member whose step
    is not healthy is marked ``diverged`` for good.

    Why a bound relative to the initial loss: a classifier at initialisation predicts near
    chance (loss ~ ln K for K classes). A model that is learning goes below that; one whose
    minibatch loss climbs to many times it has left any useful region (its predictions are
    confidently wrong), and a learning rate far too large gets there in a few steps while its
    loss stays finite. Measuring it inside the first step costs nothing at start-up.

    Returns:
      The new state and scalar metrics: ``loss`` (mean cross-entropy before the update),
      ``accuracy``, ``grad_norm``, ``update_norm``, ``param_norm`` (after the update),
      ``finite`` (this step was healthy, see above) and, with ``per_example_grads``,
      ``example_grad_norm_mean`` / ``example_grad_norm_max``.
    """
    x, y = batch
    stopped = stopped_flags(state)  # None without successive halving
    metrics: Metrics = {}
    if per_example_grads:
        loss, logits, grads, norms = _per_example_grads(state, x, y)
        metrics["example_grad_norm_mean"] = jnp.mean(norms)
        metrics["example_grad_norm_max"] = jnp.max(norms)
    else:
        (loss, logits), grads = jax.value_and_grad(_loss, has_aux=True)(
            state.params, state.apply_fn, x, y
        )
        grads = _masked(grads, grad_mask(state))
    grad_norm = optax.tree.norm(grads)
    if max_loss_factor:
        bound = (max_loss_factor * loss).astype(jnp.float32)
        first = state.step == 0 if stopped is None else (state.step == 0) & ~stopped
        state = state.replace(max_loss=jnp.where(first, bound, state.max_loss))
    # NaN compares False, so a NaN loss fails the bound test as well as the finite one.
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & (loss <= state.max_loss)
    if stopped is not None:
        finite = finite | stopped  # a step not taken cannot diverge
    new_state = state.apply_gradients(grads=grads)
    diverged = state.diverged | ~finite
    # One select for both reasons to keep the old state: a second one on the new state changes
    # how XLA compiles the update (float rounding), and a survivor must train exactly as it
    # would without halving.
    frozen = diverged if freeze_diverged else None
    if stopped is not None:
        frozen = stopped if frozen is None else frozen | stopped
    if frozen is not None:
        new_state = jax.tree.map(lambda old, new: jnp.where(frozen, old, new), state, new_state)
    new_state = new_state.replace(diverged=diverged)
    metrics.update(
        loss=loss,
        accuracy=jnp.mean(jnp.argmax(logits, axis=-1) == y),
        grad_norm=grad_norm,
        update_norm=optax.tree.norm(jax.tree.map(jnp.subtract, new_state.params, state.params)),
        param_norm=optax.tree.norm(new_state.params),
        finite=finite,
    )
    if stopped is not None:
        skipped = skipped_metrics(state, metrics)
        metrics = jax.tree.map(lambda s, m: jnp.where(stopped, s, m), skipped, metrics)
    return new_state, metrics


def skipped_metrics(state: TrainState, like: Metrics) -> Metrics:
    """What :func:`train_step` reports for a stopped member's step, which is not taken.

    Args:
      state: the member's (frozen) state, no member axis.
      like: the step's metrics, or their ``jax.ShapeDtypeStruct``s: the names, shapes and dtypes
        to fill.

    Returns:
      ``like``'s names: ``finite`` True (a step not taken cannot diverge), ``update_norm`` 0,
      ``param_norm`` the frozen parameters' norm, and NaN for what was not measured (loss,
      accuracy, gradient norms).
    """
    known = {"finite": True, "update_norm": 0.0, "param_norm": optax.tree.norm(state.params)}
    return {k: jnp.full(v.shape, known.get(k, jnp.nan), v.dtype) for k, v in like.items()}


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
        "loss_sum": jnp.sum(losses).astype(jnp.float32),
        "correct": jnp.sum(correct.astype(jnp.float32)),
        "count": jnp.sum(mask.astype(jnp.float32)),
    }
