"""Argument validation and normalisation shared by every public op.

Everything here is plain Python over static shapes and hyper-parameters, so it runs while JAX
traces a function: a bad argument raises before XLA sees anything, under ``jit`` too. Messages
follow one pattern, ``"<op>: <argument> must be <expected>, got <received>"``.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Pad = tuple[int, int]


def as_real_array(op: str, name: str, value: Any) -> jax.Array:
    """``value`` as a JAX array of a real dtype (floating point or integer).

    Raises:
      TypeError: ``value`` is not array-like, or its dtype is bool, complex or non-numeric.
    """
    if not hasattr(value, "dtype"):
        try:
            value = np.asarray(value)
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"{op}: {name} must be a numeric array, got {type(value).__name__}"
            ) from e
    dtype = value.dtype
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise TypeError(f"{op}: {name} must have a real numeric dtype, got {dtype}")
    return jnp.asarray(value)


def common_float_dtype(*arrays: jax.Array) -> Any:
    """The promoted dtype of ``arrays``, with integers promoted to JAX's default float."""
    dtype = jnp.result_type(*arrays)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    return dtype


def check_ndim(op: str, name: str, x: jax.Array, ndim: int, layout: str) -> None:
    """Raises ValueError unless ``x.ndim == ndim``; ``layout`` names the axes, e.g. "(H, W)"."""
    if x.ndim != ndim:
        raise ValueError(f"{op}: {name} must be {ndim}-D {layout}, got shape {tuple(x.shape)}")


def channels_last_layout(rank: int) -> str:
    """Axis names for messages: (N, L, C), (N, H, W, C), (N, D, H, W, C) for rank 1, 2, 3."""
    spatial = {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}.get(rank, ("*spatial",))
    return "(" + ", ".join(("N", *spatial, "C")) + ")"


def check_nonempty(op: str, name: str, x: jax.Array) -> None:
    """Raises ValueError if ``x`` has a zero-length axis."""
    if x.size == 0:
        raise ValueError(f"{op}: {name} must not be empty, got shape {tuple(x.shape)}")


def check_choice(op: str, name: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``; else ValueError listing them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{op}: {name} must be one of {tuple(choices)}, got {value!r}")
    return value


def _as_int(op: str, name: str, v: Any) -> int:
    check_static(op, name, v)
    # bool is an Integral but True as a stride is almost certainly a bug.
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{op}: {name} must be made of ints, got {v!r}")
    return int(v)


def positive_int(op: str, name: str, value: Any) -> int:
    """``value`` as an int >= 1; TypeError if not an int, ValueError if < 1."""
    check_static(op, name, value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{op}: {name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{op}: {name} must be >= 1, got {value}")
    return int(value)


def _plain(value: Any) -> Any:
    # A NumPy array of hyper-parameters, e.g. np.array([2, 2]), means its nested Python list.
    return value.tolist() if isinstance(value, np.ndarray) else value


def broadcast_one(value: Any, rank: int) -> Any:
    """torch's ``_single``/``_pair``/``_triple`` rule: a one-element sequence means every dim.

    ``(3,)`` and ``[3]`` become ``(3,) * rank``; anything else is returned unchanged, for the
    caller to check. Only a scalar entry is repeated: ``((lo, hi),)`` and ``("same",)`` are
    left alone, so they keep the length error they had (a pair is one dim's padding, not all).
    """
    if (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == 1
        and not isinstance(value[0], Sequence)
    ):
        return tuple(value) * rank
    return value


def int_tuple(
    op: str, name: str, value: Any, rank: int, *, minimum: int, one_means_all: bool = True
) -> tuple[int, ...]:
    """An int, a one-int sequence or ``rank`` ints, as ``rank`` ints each >= ``minimum``.

    An int or a one-element sequence (``3``, ``(3,)``, ``[3]``) applies to every spatial dim,
    as torch's ``_pair``/``_triple`` and its C++ ops read kernel sizes, strides and the like;
    ``rank`` ints are one per dim. ``one_means_all=False`` refuses the one-element sequence
    (for a shape, where ``(4,)`` for (H, W) is more likely a mistake than a square).

    Raises:
      TypeError: an entry is not an int.
      ValueError: any other length, or an entry below ``minimum``.
    """
    given = _plain(value)  # messages show what the caller passed, not its broadcast
    value = broadcast_one(given, rank) if one_means_all else given
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != rank:
            raise ValueError(
                f"{op}: {name} must be an int or {rank} ints (one per spatial dim), got {given!r}"
            )
        out = tuple(_as_int(op, name, v) for v in value)
    else:
        out = (_as_int(op, name, value),) * rank
    if any(v < minimum for v in out):
        raise ValueError(f"{op}: {name} must be >= {minimum} in every dim, got {given!r}")
    return out


def _same_padding(n: int, k_eff: int, s: int) -> Pad:
    # TensorFlow/XLA "SAME": ceil(n / s) outputs, the extra padding (if odd) goes after.
    out = -(-n // s)
    total = max((out - 1) * s + k_eff - n, 0)
    return total // 2, total - total // 2


def padding_pairs(
    op: str,
    padding: Any,
    in_spatial: Sequence[int],
    k_eff: Sequence[int],
    strides: Sequence[int],
) -> tuple[Pad, ...]:
    """Normalises ``padding`` to one ``(lo, hi)`` pair per spatial dim.

    Accepted forms, for spatial rank r:
      - an int p, or one int in a sequence, ``(p,)`` (torch's rule): (p, p) everywhere;
      - r ints: symmetric per dim, e.g. (ph, pw);
      - r pairs: explicit, e.g. ((top, bottom), (left, right)); an int entry means (p, p);
      - "SAME" / "VALID" (any case): XLA's meaning, from the input size ``in_spatial``, the
        effective (dilated) kernel size ``k_eff`` and the strides.

    Raises:
      TypeError: entries are not ints.
      ValueError: unknown string, wrong length, or a negative amount.
    """
    rank = len(in_spatial)
    padding = _plain(padding)
    given = padding  # messages show what the caller passed, not its broadcast
    padding = broadcast_one(padding, rank)
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            return ((0, 0),) * rank
        if mode == "SAME":
            return tuple(_same_padding(n, k, s) for n, k, s in zip(in_spatial, k_eff, strides))
        raise ValueError(f"{op}: padding string must be 'SAME' or 'VALID', got {padding!r}")
    expected = f"an int, {rank} ints, {rank} (lo, hi) pairs, 'SAME' or 'VALID'"
    if isinstance(padding, Sequence):
        if len(padding) != rank:
            raise ValueError(f"{op}: padding must be {expected}, got {given!r}")
        pairs = []
        for p in padding:
            if isinstance(p, Sequence) and not isinstance(p, str):
                if len(p) != 2:
                    raise ValueError(f"{op}: padding must be {expected}, got {given!r}")
                pairs.append((_as_int(op, "padding", p[0]), _as_int(op, "padding", p[1])))
            else:
                v = _as_int(op, "padding", p)
                pairs.append((v, v))
        out = tuple(pairs)
    else:
        v = _as_int(op, "padding", padding)
        out = ((v, v),) * rank
    if any(v < 0 for pair in out for v in pair):
        raise ValueError(f"{op}: padding must be >= 0, got {given!r}")
    return out


def output_size(n: int, k_eff: int, s: int, pad: Pad) -> int:
    """Outputs along one dim: floor((n + lo + hi - k_eff) / s) + 1; <= 0 if k_eff is too big."""
    return (n + pad[0] + pad[1] - k_eff) // s + 1


def check_window_fits(
    op: str,
    what: str,
    in_spatial: Sequence[int],
    k_eff: Sequence[int],
    pads: Sequence[Pad],
) -> None:
    """Raises ValueError if the (dilated) window is larger than the padded input in some dim."""
    padded = tuple(n + lo + hi for n, (lo, hi) in zip(in_spatial, pads))
    if any(k > p for k, p in zip(k_eff, padded)):
        raise ValueError(
            f"{op}: {what} {tuple(k_eff)} must fit in the padded input {padded}"
            f" (input {tuple(in_spatial)}, padding {tuple(pads)})"
        )


# --- Input conventions shared by the batched ops (torch's rules; added with the pooling options).


def check_static(op: str, name: str, value: Any) -> None:
    """Raises TypeError if the hyper-parameter ``value`` (or an entry of it) is a traced value.

    Shapes, strides, windows and flags decide the program XLA compiles, so they must be Python
    values while JAX traces; a jitted argument becomes a tracer. The message shows both fixes.
    """
    entries = value if isinstance(value, (list, tuple)) else (value,)
    for v in entries:
        if isinstance(v, (list, tuple)):
            check_static(op, name, v)
        elif isinstance(v, jax.core.Tracer):
            raise TypeError(
                f"{op}: {name} must be static (Python ints/bools/strings), got a traced value"
                f" {type(v).__name__}; bind it before jit with"
                f" functools.partial(ops.{op}, {name}=...) or mark it static with"
                f" jax.jit(ops.{op}, static_argnames=({name!r},))"
            )


def check_bool(op: str, name: str, value: Any) -> bool:
    """``value`` if it is a Python/NumPy bool; TypeError (static-value hint if traced) if not."""
    check_static(op, name, value)
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be a bool, got {value!r}")
    return bool(value)


LAYOUTS = ("NHWC", "NCHW")


def channels_first(op: str, layout: Any) -> bool:
    """True for ``"NCHW"`` (torch's channels-first), False for ``"NHWC"`` (JAX's channels-last).

    The names stand for every spatial rank: "NHWC" means (N, L, C), (N, H, W, C),
    (N, D, H, W, C); "NCHW" means (N, C, L), (N, C, H, W), (N, C, D, H, W).
    """
    check_static(op, "layout", layout)
    return check_choice(op, "layout", layout, LAYOUTS) == "NCHW"


def example_layout(rank: int | None, first: bool, batched: bool = True) -> str:
    """Axis names for messages, e.g. (N, C, H, W) or unbatched (H, W, C)."""
    spatial = {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}.get(rank, ("*spatial",))
    axes = (*(("C",) if first else ()), *spatial, *(() if first else ("C",)))
    return "(" + ", ".join((("N",) if batched else ()) + axes) + ")"


def batched_channels_last(
    op: str, name: str, x: jax.Array, rank: int | None, first: bool
) -> tuple[jax.Array, bool]:
    """``x`` as (N, *spatial, C), and whether it came unbatched (torch's convention).

    With a fixed spatial ``rank``, ``x`` may be batched (rank + 2 dims) or unbatched (rank + 1
    dims, returned with a batch axis of 1 added); with ``rank=None`` it must be batched with
    >= 1 spatial dim. ``first`` says ``x`` is channels-first; it is moved to channels-last.

    Raises:
      ValueError: any other ndim; the message names both accepted forms.
    """
    if rank is None:
        if x.ndim < 3:
            raise ValueError(
                f"{op}: {name} must be {example_layout(None, first)} with >= 1 spatial dim,"
                f" got shape {tuple(x.shape)}"
            )
        unbatched = False
    else:
        if x.ndim not in (rank + 1, rank + 2):
            raise ValueError(
                f"{op}: {name} must be {rank + 2}-D {example_layout(rank, first)}"
                f" or {rank + 1}-D unbatched {example_layout(rank, first, False)},"
                f" got shape {tuple(x.shape)}"
            )
        unbatched = x.ndim == rank + 1
    if unbatched:
        x = x[None]
    if first:
        x = jnp.moveaxis(x, 1, -1)
    return x, unbatched


def restore_layout(y: jax.Array, unbatched: bool, first: bool) -> jax.Array:
    """Undoes :func:`batched_channels_last` on a (N, *spatial, C) result."""
    if first:
        y = jnp.moveaxis(y, -1, 1)
    return y[0] if unbatched else y


def check_nonempty_but_batch(op: str, name: str, x: jax.Array) -> None:
    """Raises ValueError if a non-batch axis of (N, ...) ``x`` has length 0 (N = 0 is allowed)."""
    if any(d == 0 for d in x.shape[1:]):
        raise ValueError(
            f"{op}: {name} must not be empty (only the batch may be 0), got shape {tuple(x.shape)}"
        )


def pool_output_size(n: int, k_eff: int, s: int, pad: Pad, ceil_mode: bool) -> int:
    """Pooling outputs along one dim, PyTorch's rule; <= 0 when the window leaves no output.

    Floor mode: ``floor((n + lo + hi - k_eff) / s) + 1``. Ceil mode rounds up instead, then drops
    the last window if it would start past the input and the left padding (``(out - 1) * s >=
    n + lo``), so every window starts on real input or left padding.
    """
    span = n + pad[0] + pad[1] - k_eff
    if not ceil_mode:
        return span // s + 1
    out = -(-span // s) + 1
    if (out - 1) * s >= n + pad[0]:
        out -= 1
    return out
