"""The optimizer: minibatch SGD as in D2L 3.4/6.6, or a modern alternative, as one optax chain.

The learning rate, the momentum and the weight decay are *injected hyper-parameters*
(``optax.inject_hyperparams``): they live in the optimizer state, so every member of a population
can carry its own values along the population axis while all members share one update function.
A schedule is applied as a shared multiplicative factor after the base optimizer
(``optax.scale_by_schedule``), which equals scheduling the learning rate itself because every base
optimizer here is linear in its learning rate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import optax

__all__ = ["OPTIMIZERS", "SCHEDULES", "make_optimizer", "schedule_factor"]

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "warmup_cosine")


def _base(name: str, coupled: bool, l2: float = 0.0) -> Callable[..., optax.GradientTransformation]:
    """The factory ``inject_hyperparams`` wraps: each of its float arguments becomes a state entry.

    A numeric hyper-parameter given as an argument is read from the state, so one compiled update
    serves members with different values. ``coupled`` (static) adds classic L2 regularisation,
    the book's 3.7 weight decay, to the gradient with ``weight_decay`` such an argument.
    Otherwise ``l2`` > 0 adds it as a constant -- the structure of the state before per-member
    decays existed, so that those runs' checkpoints still restore -- and 0 leaves the book's
    plain update untouched.
    """

    def constant(tx: optax.GradientTransformation) -> optax.GradientTransformation:
        return optax.chain(optax.add_decayed_weights(l2), tx) if l2 else tx

    def l2_term(weight_decay: float) -> optax.GradientTransformation:
        return optax.add_decayed_weights(weight_decay)

    def sgd(learning_rate: float) -> optax.GradientTransformation:
        return constant(optax.sgd(learning_rate))

    def sgd_l2(learning_rate: float, weight_decay: float) -> optax.GradientTransformation:
        return optax.chain(l2_term(weight_decay), optax.sgd(learning_rate))

    def momentum(learning_rate: float, momentum: float) -> optax.GradientTransformation:
        return constant(optax.sgd(learning_rate, momentum=momentum))

    def momentum_l2(
        learning_rate: float, momentum: float, weight_decay: float
    ) -> optax.GradientTransformation:
        return optax.chain(l2_term(weight_decay), optax.sgd(learning_rate, momentum=momentum))

    def adam(learning_rate: float) -> optax.GradientTransformation:
        return constant(optax.adam(learning_rate))

    def adam_l2(learning_rate: float, weight_decay: float) -> optax.GradientTransformation:
        return optax.chain(l2_term(weight_decay), optax.adam(learning_rate))

    def adamw(learning_rate: float, weight_decay: float) -> optax.GradientTransformation:
        # Decoupled weight decay (Loshchilov & Hutter), always present: it is adamw's point.
        return optax.adamw(learning_rate, weight_decay=weight_decay)

    factories = {
        ("sgd", False): sgd,
        ("sgd", True): sgd_l2,
        ("momentum", False): momentum,
        ("momentum", True): momentum_l2,
        ("adam", False): adam,
        ("adam", True): adam_l2,
        ("adamw", False): adamw,
        ("adamw", True): adamw,
    }
    if (name, coupled) not in factories:
        raise ValueError(f"make_optimizer: unknown optimizer name {name!r}; expected {OPTIMIZERS}")
    return factories[name, coupled]


def schedule_factor(schedule: str, total_steps: int, warmup_steps: int) -> optax.Schedule | None:
    """The learning-rate multiplier at each step, in [0, 1], or None for a constant rate."""
    if schedule == "constant":
        return None
    if schedule == "cosine":
        return optax.cosine_decay_schedule(1.0, decay_steps=total_steps)
    if schedule == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, 1.0, warmup_steps=warmup_steps, decay_steps=total_steps, end_value=0.0
        )
    raise ValueError(f"schedule_factor: unknown schedule {schedule!r}")


def make_optimizer(
    optimizer: Mapping[str, Any],
    *,
    steps_per_epoch: int | None = None,
    num_epochs: int | None = None,
    learning_rate: float | None = None,
    momentum: float | None = None,
    weight_decay: float | None = None,
    decays: bool | None = None,
) -> optax.GradientTransformation:
    """The optax transformation for ``config.optimizer`` (a resolved sub-config).

    Args:
      optimizer: ``name`` (sgd | momentum | adam | adamw), ``learning_rate``, ``momentum``,
        ``weight_decay``, ``schedule`` (constant | cosine | warmup_cosine), ``warmup_epochs``.
      steps_per_epoch, num_epochs: needed by every schedule except "constant".
      learning_rate, momentum, weight_decay: the values ``init`` stores in the state; each
        defaults to ``optimizer``'s. ``update`` always reads them from the state, so one
        transformation serves members initialised with different values. ``momentum`` is a
        state entry of "momentum" only; ``weight_decay`` of "adamw" always (decoupled decay) and of
        the others when ``decays`` (coupled L2: ``weight_decay * params`` added to the gradient).
      decays: for sgd/momentum/adam (static: it changes the program and the state's structure).
        True: the L2 term is in every update, its value a state entry (a member with decay 0
        adds ``0 * params``), what a population with per-member decays needs. None (default):
        ``optimizer["weight_decay"]`` is a constant of the update (none if 0), as before
        per-member decays existed, so that older checkpoints restore. False: no L2 term.

    Returns:
      An ``optax.GradientTransformation`` whose state holds ``hyperparams`` (learning_rate, and
      momentum / weight_decay as above) -- behind ``scale_by_schedule`` for a non-constant one.

    Raises:
      ValueError: an unknown name, or a schedule other than "constant" without
        ``steps_per_epoch`` / ``num_epochs``.
    """
    name = optimizer["name"]
    hparams: dict[str, float] = {
        "learning_rate": optimizer["learning_rate"] if learning_rate is None else learning_rate
    }
    if name == "momentum":
        hparams["momentum"] = optimizer["momentum"] if momentum is None else momentum
    if name == "adamw" or decays:
        hparams["weight_decay"] = (
            optimizer["weight_decay"] if weight_decay is None else weight_decay
        )
    l2 = optimizer["weight_decay"] if decays is None and name != "adamw" else 0.0
    tx = optax.inject_hyperparams(_base(name, name != "adamw" and bool(decays), l2))(**hparams)

    schedule = optimizer["schedule"]
    if schedule == "constant":
        return tx
    if not steps_per_epoch or not num_epochs:
        raise ValueError(
            f"make_optimizer: schedule {schedule!r} needs steps_per_epoch and num_epochs, "
            f"got {steps_per_epoch!r} and {num_epochs!r}"
        )
    factor = schedule_factor(
        schedule, steps_per_epoch * num_epochs, steps_per_epoch * optimizer["warmup_epochs"]
    )
    return optax.chain(tx, optax.scale_by_schedule(factor))
