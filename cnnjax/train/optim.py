"""The optimizer: minibatch SGD as in D2L 3.4/6.6, or a modern alternative, as one optax chain.

The learning rate is an *injected hyper-parameter* (``optax.inject_hyperparams``): it lives in the
optimizer state, so every member of a population can carry its own value along the population axis
while all members share one update function. A schedule is applied as a shared multiplicative factor
after the base optimizer (``optax.scale_by_schedule``), which equals scheduling the learning rate
itself because every base optimizer here is linear in its learning rate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import optax

__all__ = ["OPTIMIZERS", "SCHEDULES", "make_optimizer", "schedule_factor"]

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "warmup_cosine")


def _base(name: str, l2: float) -> Callable[..., optax.GradientTransformation]:
    """The factory ``inject_hyperparams`` wraps: its float arguments become state entries.

    ``l2`` (classic L2 regularisation, the book's 3.7 weight decay, added to the gradient) is
    static: with 0 the book's plain SGD update is left untouched.
    """

    def coupled(tx: optax.GradientTransformation) -> optax.GradientTransformation:
        return optax.chain(optax.add_decayed_weights(l2), tx) if l2 else tx

    def sgd(learning_rate: float) -> optax.GradientTransformation:
        return coupled(optax.sgd(learning_rate))

    def momentum(learning_rate: float, momentum: float) -> optax.GradientTransformation:
        return coupled(optax.sgd(learning_rate, momentum=momentum))

    def adam(learning_rate: float) -> optax.GradientTransformation:
        return coupled(optax.adam(learning_rate))

    def adamw(learning_rate: float, weight_decay: float) -> optax.GradientTransformation:
        # Decoupled weight decay (Loshchilov & Hutter); the rate is an injected hyper-parameter.
        return optax.adamw(learning_rate, weight_decay=weight_decay)

    factories = {"sgd": sgd, "momentum": momentum, "adam": adam, "adamw": adamw}
    if name not in factories:
        raise ValueError(
            f"make_optimizer: unknown optimizer name {name!r}; expected {list(factories)}"
        )
    return factories[name]


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
) -> optax.GradientTransformation:
    """The optax transformation for ``config.optimizer`` (a resolved sub-config).

    Args:
      optimizer: ``name`` (sgd | momentum | adam | adamw), ``learning_rate``, ``momentum``,
        ``weight_decay``, ``schedule`` (constant | cosine | warmup_cosine), ``warmup_epochs``.
      steps_per_epoch, num_epochs: needed by every schedule except "constant".
      learning_rate: the value stored in the state by ``init``; defaults to
        ``optimizer.learning_rate``. ``update`` always reads the rate from the state, so one
        transformation serves members initialised with different rates.

    Raises:
      ValueError: a schedule other than "constant" without ``steps_per_epoch`` / ``num_epochs``.
    """
    name = optimizer["name"]
    hparams: dict[str, float] = {
        "learning_rate": optimizer["learning_rate"] if learning_rate is None else learning_rate
    }
    if name == "momentum":
        hparams["momentum"] = optimizer["momentum"]
    if name == "adamw":
        hparams["weight_decay"] = optimizer["weight_decay"]
    decay = 0.0 if name == "adamw" else optimizer["weight_decay"]
    tx = optax.inject_hyperparams(_base(name, decay))(**hparams)

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
