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
from cnnjax.models.packing import pad_params, padding_mask
from cnnjax.train.config import member_hyperparams, member_model
from cnnjax.train.optim import make_optimizer

__all__ = [
    "HalvingState",
    "PackedHalvingState",
    "PackedState",
    "TrainState",
    "create_population",
    "grad_mask",
    "member",
    "stopped_flags",
]


class TrainState(train_state.TrainState):
    """Flax's ``TrainState`` (``step``, ``params``, ``opt_state``; static ``apply_fn``, ``tx``)
    plus ``diverged``, set once a step was unhealthy, and ``max_loss``, the loss above which a
    step counts as diverged (see :func:`cnnjax.train.steps.train_step`).

    In a population every field but the static ones carries a leading member axis: ``step``
    (P,) int32, ``diverged`` (P,) bool, ``max_loss`` (P,) float32, parameters (P, ...).
    """

    diverged: jax.Array
    max_loss: jax.Array


class PackedState(TrainState):
    """The state of a *packed* population (members of different widths, see
    ``population.channels`` / ``population.dense`` in :mod:`cnnjax.train.config`): a
    :class:`TrainState` plus ``grad_mask``, a tree like ``params`` that is 1 on each member's own
    entries and 0 on its zero padding (:func:`cnnjax.models.packing.padding_mask`); the training
    step multiplies the gradient by it.

    A class of its own rather than a field that is None when unpacked: Orbax records a None
    field as a node of the checkpoint's tree, so such a field would change every run's
    checkpoints, and those written before it existed would no longer restore.
    """

    grad_mask: Any


def grad_mask(state: TrainState) -> Any:
    """The ``grad_mask`` of a :class:`PackedState`; None for any other state."""
    return state.grad_mask if isinstance(state, PackedState) else None


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
    return state.stopped if isinstance(state, (HalvingState, PackedHalvingState)) else None


class PackedHalvingState(PackedState):
    """A packed population with successive halving: :class:`PackedState`'s ``grad_mask`` and
    :class:`HalvingState`'s ``stopped``."""

    stopped: jax.Array


def _state_class(mask: Any, halving: bool) -> tuple[type, dict[str, Any]]:
    """The state class for a member and its extra fields: each feature adds its field only when
    it is on, so the checkpoints of runs without it keep their tree."""
    extra: dict[str, Any] = {}
    if mask is not None:
        extra["grad_mask"] = mask
    if halving:
        extra["stopped"] = jnp.zeros((), bool)
    classes = {
        (False, False): TrainState,
        (True, False): PackedState,
        (False, True): HalvingState,
        (True, True): PackedHalvingState,
    }
    return classes[mask is not None, halving], extra


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
    hyper-parameters gets, bit for bit (``jax.random`` is vmap-invariant). In a packed
    population (``population.channels`` / ``population.dense`` given) member ``i`` is
    initialised as its own LeNet (:func:`cnnjax.train.config.member_model`) and embedded in
    ``model``, the widest, with zeros (:func:`cnnjax.models.packing.pad_params`), and the state
    is a :class:`PackedState` whose ``grad_mask`` marks each member's own entries; ``model``
    must be ``LeNet.from_config(config.model)``. With
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

    packed = _packed_params(config, model, dummy)
    halving = bool(config.population.halving.rungs)

    def init_member(seed: jax.Array, values: dict[str, jax.Array], packed: Any) -> TrainState:
        if packed is None:
            params, mask = model.init(jax.random.PRNGKey(seed), dummy)["params"], None
        else:
            params, mask = packed
        member_tx = make_optimizer(config.optimizer, decays=decays, **schedule, **values)
        cls, extra = _state_class(mask, halving)
        return cls(
            step=jnp.zeros((), jnp.int32),
            apply_fn=model.apply,
            params=params,
            tx=tx,
            opt_state=member_tx.init(params),
            diverged=jnp.zeros((), bool),
            max_loss=jnp.full((), jnp.inf, jnp.float32),
            **extra,
        )

    return jax.jit(jax.vmap(init_member), out_shardings=sharding)(seeds, values, packed)


def _packed_params(config: Any, model: LeNet, dummy: jax.Array) -> tuple[Any, Any] | None:
    """Each member's own LeNet initialised from its seed and padded to ``model``, and the padding
    masks, stacked along the member axis; None for a population of one shape."""
    pop = config.population
    if not (pop.channels or pop.dense):
        return None
    by_shape: dict[str, Any] = {}

    def init(narrow: LeNet, seed: int) -> tuple[Any, Any]:
        params = narrow.init(jax.random.PRNGKey(seed), dummy)["params"]
        return pad_params(narrow, params, model), padding_mask(narrow, params, model)

    members = []
    for i, seed in enumerate(pop.seeds):
        narrow = LeNet.from_config(member_model(config, i))
        key = repr((narrow.channels, narrow.dense))
        # One compiled initialiser per distinct member shape.
        fn = by_shape.setdefault(key, jax.jit(lambda s, narrow=narrow: init(narrow, s)))
        members.append(fn(jnp.uint32(seed)))
    return jax.tree.map(lambda *xs: jnp.stack(xs), *members)


def member(state: TrainState, i: int) -> TrainState:
    """Member ``i`` of a population state, without the member axis."""
    return jax.tree.map(lambda x: x[i], state)
