"""The train state of a population of models (D2L 6.6's LeNet, trained as one or many).

A single model is a population of one: every array in :class:`TrainState` has a leading member
axis ``P`` -- parameters, optimizer state (including each member's injected learning rate,
momentum and weight decay), step
counter and divergence flag. Members share the model definition and optimizer update, so they can
be trained by one compiled step (see :mod:`cnnjax.train.population`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax.training import train_state

from cnnjax.models import LeNet
from cnnjax.train.config import member_hyperparams
from cnnjax.train.optim import make_optimizer

__all__ = ["HalvingState", "TrainState", "create_population", "member", "stopped_flags"]


class TrainState(train_state.TrainState):
    """Flax's ``TrainState`` (``step``, ``params``, ``opt_state``; static ``apply_fn``, ``tx``)
    plus ``diverged``, set once a step was unhealthy, and ``max_loss``, the loss above which a
    step counts as diverged (see :func:`cnnjax.train.steps.train_step`).

    In a population every field but the static ones carries a leading member axis: ``step``
    (P,) int32, ``diverged`` (P,) bool, ``max_loss`` (P,) float32, parameters (P, ...).
    """

    diverged: jax.Array
    max_loss: jax.Array


class HalvingState(TrainState):
    """The state of a run with successive halving (``population.halving.rungs``): a
    :class:`TrainState` plus ``stopped`` (P,) bool, the members stopped at a rung, whose state
    no step changes any more (see :func:`cnnjax.train.steps.train_step`).

    A class of its own rather than a field that is None without halving: Orbax records a None
    field as a node of the checkpoint's tree, so such a field would change the checkpoints of
    every run, and those written before it existed would no longer restore.
    """

    stopped: jax.Array


def stopped_flags(state: TrainState) -> jax.Array | None:
    """The ``stopped`` flags of a :class:`HalvingState`; None for a state without halving."""
    return state.stopped if isinstance(state, HalvingState) else None


def create_population(
    config: Any,
    model: LeNet,
    input_shape: Sequence[int],
    *,
    steps_per_epoch: int | None = None,
    sharding: jax.sharding.Sharding | None = None,
) -> TrainState:
    """Initialises ``config.population.size`` members of ``model`` with a leading member axis.

    Args:
      config: a resolved training config (:func:`cnnjax.train.config.resolve_config`).
        Member ``i`` is initialised from
        ``PRNGKey(population.seeds[i])`` and carries its own learning rate, momentum and weight
        decay (:func:`cnnjax.train.config.member_hyperparams`) in its optimizer state.
      model: the network; its parameters are created by ``model.init`` on a dummy batch.
      input_shape: one example's shape ``(H, W, C)``, e.g. ``(28, 28, 1)``.
      steps_per_epoch: needed when ``optimizer.schedule`` is not "constant".
      sharding: where the state is created, e.g. split along a mesh's member axis
        (:func:`cnnjax.train.parallel.state_sharding`); default: JAX's default device.

    Returns:
      A :class:`TrainState` whose ``params`` leaves are (P, ...) float32, ``opt_state`` leaves
      (P, ...) (the learning rate at ``opt_state...hyperparams["learning_rate"]`` is (P,), and
      so are ``"momentum"`` and ``"weight_decay"`` where the optimizer has them),
      ``step`` (P,) int32 zeros, ``diverged`` (P,) False and ``max_loss`` (P,) inf (the
      training step sets the divergence bound from the first step's loss; see
      :func:`cnnjax.train.steps.train_step`). With ``population.halving.rungs`` it is a
      :class:`HalvingState` whose ``stopped`` is (P,) False.

    Member ``i`` equals what a population of one with seed ``seeds[i]`` and member ``i``'s
    hyper-parameters gets, bit for bit (``jax.random`` is vmap-invariant). With
    ``population.weight_decays`` given, the coupled L2 term of sgd/momentum/adam is in every
    member's update with its own value (``0 * params`` for a member with 0), so that all share
    one program.

    Raises:
      ValueError: an unresolved config, or ``input_shape`` that is not a sequence of 3 positive
        ints.
    """
    if len(config.population.seeds) != config.population.size:
        raise ValueError(
            "create_population: config must be resolved first (cnnjax.train.resolve_config), "
            "which fills in the per-member seeds and learning rates"
        )
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ValueError(
            f"create_population: input_shape must be (H, W, C) positive ints, got {input_shape!r}"
        )
    hparams = member_hyperparams(config)
    schedule = {"steps_per_epoch": steps_per_epoch, "num_epochs": config.num_epochs}
    # Static: per-member decays are state entries (one program for every value); without them
    # the optimizer's decay stays a constant of the update, the state's structure unchanged from
    # before per-member decays existed, so older run directories resume.
    decays = True if config.population.weight_decays else None
    tx = make_optimizer(config.optimizer, decays=decays, **schedule)
    seeds = jnp.asarray(config.population.seeds, dtype=jnp.uint32)
    values = {k: jnp.asarray(v, dtype=jnp.float32) for k, v in hparams.items()}
    dummy = jnp.zeros((1, *shape), jnp.float32)

    halving = bool(config.population.halving.rungs)

    def init_member(seed: jax.Array, values: dict[str, jax.Array]) -> TrainState:
        params = model.init(jax.random.PRNGKey(seed), dummy)["params"]
        member_tx = make_optimizer(config.optimizer, decays=decays, **schedule, **values)
        cls, stops = (
            (HalvingState, {"stopped": jnp.zeros((), bool)}) if halving else (TrainState, {})
        )
        return cls(
            step=jnp.zeros((), jnp.int32),
            apply_fn=model.apply,
            params=params,
            tx=tx,
            opt_state=member_tx.init(params),
            diverged=jnp.zeros((), bool),
            max_loss=jnp.full((), jnp.inf, jnp.float32),
            **stops,
        )

    return jax.jit(jax.vmap(init_member), out_shardings=sharding)(seeds, values)


def member(state: TrainState, i: int) -> TrainState:
    """Member ``i`` of a population state, without the member axis."""
    return jax.tree.map(lambda x: x[i], state)
