"""Executing one step definition over a population of models: ``vmap`` or members in turn.

D2L trains one LeNet at a time; a hyper-parameter or seed study trains many. All members share the
model and the update, so one compiled step can advance them all. How it does so is an execution
strategy, not a second step definition:

* ``"vmap"``: ``jax.vmap`` over the member axis, the batch shared (``in_axes=None``). Each layer
  becomes a batched (grouped) GEMM/conv: the way to fill a GPU/TPU that one small LeNet leaves idle.
* ``"map"``: ``jax.lax.map`` over the member axis: members run one after another inside the same
  compiled program. On a CPU one LeNet's GEMMs already run near the machine's peak, so batching
  members cannot win there (BENCHMARKS.md has the measurements).
* ``"auto"``: ``"map"`` on CPU, ``"vmap"`` on GPU/TPU (by ``jax.default_backend()``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import jax

__all__ = ["STRATEGIES", "population_map", "resolve_strategy"]

STRATEGIES = ("auto", "vmap", "map")

F = TypeVar("F", bound=Callable[..., Any])


def resolve_strategy(strategy: str) -> str:
    """``"vmap"`` or ``"map"``; ``"auto"`` is resolved by the default backend.

    Raises:
      ValueError: ``strategy`` is not one of ``"auto"``, ``"vmap"``, ``"map"``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"population strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
    if strategy == "auto":
        return "map" if jax.default_backend() == "cpu" else "vmap"
    return strategy


def population_map(fn: Callable[..., Any], strategy: str) -> Callable[..., Any]:
    """Maps ``fn(member, *shared)`` over the leading axis of ``member``.

    Args:
      fn: a function of one member's pytree (e.g. a :class:`~cnnjax.train.state.TrainState`
        without member axis) followed by arguments shared by all members (e.g. the batch).
      strategy: "vmap", "map" or "auto" (see the module docstring).

    Returns:
      ``g(members, *shared)``: ``members`` has a leading axis P on every leaf; the outputs of
      ``fn`` come back stacked along a new leading axis P. Both strategies compute the same
      function; "map" gives each member exactly what ``fn`` alone gives it.

    Raises:
      ValueError: an unknown ``strategy``.
    """
    strategy = resolve_strategy(strategy)

    def mapped(members: Any, *shared: Any) -> Any:
        if strategy == "vmap":
            return jax.vmap(fn, in_axes=(0,) + (None,) * len(shared))(members, *shared)
        return jax.lax.map(lambda m: fn(m, *shared), members)

    return mapped
