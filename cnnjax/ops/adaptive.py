"""Adaptive and global pooling: a fixed output size whatever the input size (beyond D2L 6.5).

PyTorch's ``adaptive_avg_pool{1,2,3}d`` / ``adaptive_max_pool{1,2,3}d``: along a spatial dim of
size n pooled to o outputs, output i covers the input bin::

    start_i = floor(i * n / o),   end_i = ceil((i + 1) * n / o)      (end exclusive)

so bins cover the input, have (nearly) equal sizes and may overlap by one element; o > n
repeats elements. Global pooling is the o = 1 case over every spatial dim (ResNet's head).

Layouts and conventions as :mod:`cnnjax.ops.pool`: ``layout="NHWC"`` (default) or ``"NCHW"``,
unbatched input for the 1d/2d/3d forms, N = 0 allowed, hyper-parameters static. Bins are
separable, so each spatial dim is reduced in turn (a reshape where o divides n, else a gather of
every bin padded to the longest); jit-, grad- and vmap-safe.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.ops import _checks
from cnnjax.ops.pool import INDEX_DTYPE, choose

__all__ = [
    "adaptive_bins",
    "adaptive_avg_pool",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "adaptive_max_pool",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
    "global_avg_pool",
    "global_max_pool",
]


def adaptive_bins(n: int, o: int) -> list[tuple[int, int]]:
    """The ``o`` bins ``(start, end)`` (end exclusive) pooling a dim of size ``n``, torch's rule.

    Example: ``adaptive_bins(5, 3) == [(0, 2), (1, 4), (3, 5)]``.
    """
    return [((i * n) // o, -(-((i + 1) * n) // o)) for i in range(o)]


def _output_size(op: str, output_size: Any, in_spatial: tuple[int, ...]) -> tuple[int, ...]:
    r = len(in_spatial)
    _checks.check_static(op, "output_size", output_size)
    # One entry, (o,) or (None,), means every dim, as an int does (torch's _pair/_triple rule).
    value = _checks.broadcast_one(_checks._plain(output_size), r)
    if isinstance(value, (list, tuple)):
        if len(value) != r:
            raise ValueError(
                f"{op}: output_size must be an int or {r} entries (int or None),"
                f" got {output_size!r}"
            )
        if r == 1 and value[0] is None:
            # torch's 1-D forms take ints only; None is a 2-D/3-D convention.
            raise TypeError(
                f"{op}: output_size must be an int for a 1-D pool (None, keep the input size,"
                f" is for 2-D and 3-D as in torch), got {output_size!r}"
            )
        # None keeps that dim's input size (torch's convention).
        value = tuple(n if v is None else v for v, n in zip(value, in_spatial))
    elif value is None:
        raise ValueError(f"{op}: output_size must be an int or {r} entries, got None")
    return _checks.int_tuple(op, "output_size", value, r, minimum=0)


def _bin_table(n: int, o: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(index (o, L), real (o, L), counts (o,)): every bin's input positions, padded with its
    last one to the longest bin length L."""
    bins = adaptive_bins(n, o)
    longest = max(e - s for s, e in bins)
    j = np.arange(longest)
    index = np.array([np.minimum(s + j, e - 1) for s, e in bins])
    real = np.array([s + j < e for s, e in bins])
    return index, real, np.array([e - s for s, e in bins])


def _reduce_dim(v: jax.Array, idx: jax.Array | None, axis: int, o: int, kind: str):
    """Pools axis ``axis`` of (N, *spatial, C) ``v`` to ``o`` bins; carries ``idx`` (max only)."""
    n = v.shape[axis]
    if n % o == 0 and idx is None:
        k = n // o
        shaped = v.reshape(*v.shape[:axis], o, k, *v.shape[axis + 1 :])
        return (shaped.max(axis + 1) if kind == "max" else shaped.mean(axis + 1)), None
    index, real, counts = _bin_table(n, o)
    # Move the axis last, gather its bins: (..., o, L).
    moved = jnp.moveaxis(v, axis, -1)
    gathered = moved[..., index]
    if kind == "avg":
        total = jnp.sum(jnp.where(real, gathered, 0), axis=-1)
        out = total / jnp.asarray(counts, v.dtype)
        return jnp.moveaxis(out, -1, axis), None
    j = choose(gathered, real)[..., None]
    out = jnp.take_along_axis(gathered, j, axis=-1)[..., 0]
    if idx is not None:
        picked = jnp.take_along_axis(jnp.moveaxis(idx, axis, -1)[..., index], j, axis=-1)[..., 0]
        idx = jnp.moveaxis(picked, -1, axis)
    return jnp.moveaxis(out, -1, axis), idx


def _adaptive(op: str, kind: str, x, output_size, return_indices, layout, rank):
    first = _checks.channels_first(op, layout)
    x = _checks.as_real_array(op, "x", x)
    x, unbatched = _checks.batched_channels_last(op, "x", x, rank, first)
    return_indices = _checks.check_bool(op, "return_indices", return_indices)
    in_spatial = tuple(x.shape[1:-1])
    out = _output_size(op, output_size, in_spatial)
    _checks.check_nonempty_but_batch(op, "x", x)
    x = x.astype(_checks.common_float_dtype(x))
    if x.shape[0] == 0 or 0 in out:  # an empty batch or output_size 0: an empty result
        y = jnp.zeros((x.shape[0], *out, x.shape[-1]), x.dtype)
        idx = jnp.zeros(y.shape, INDEX_DTYPE)
    else:
        y = x
        idx = None
        if return_indices:
            plane = jnp.arange(math.prod(in_spatial), dtype=INDEX_DTYPE).reshape(in_spatial)
            idx = jnp.broadcast_to(plane[None, ..., None], x.shape)
        # Last spatial dim first: ties then go to the first maximum in row-major order.
        for axis in reversed(range(1, len(in_spatial) + 1)):
            y, idx = _reduce_dim(y, idx, axis, out[axis - 1], kind)
    y = _checks.restore_layout(y, unbatched, first)
    if return_indices:
        return y, _checks.restore_layout(idx, unbatched, first)
    return y


def adaptive_avg_pool(x, output_size, *, layout: str = "NHWC") -> jax.Array:
    """Adaptive average pooling to ``output_size``; torch's ``adaptive_avg_pool{1,2,3}d``.

    Output i along a dim of size n averages input bin ``[floor(i*n/o), ceil((i+1)*n/o))``.

    Args:
      x: (N, *spatial, C) ("NHWC") or (N, C, *spatial) ("NCHW"); spatial rank x.ndim - 2 here,
        the 1d/2d/3d forms also take one unbatched example.
      output_size: an int or a one-entry sequence (every dim), or one entry per spatial dim;
        each entry an int >= 0 (0 gives an empty result, as in torch) or, for 2-D and 3-D,
        None (keep that dim's input size).
      layout: "NHWC" (default) or "NCHW".

    Returns:
      (N, *output_size, C) (or the "NCHW"/unbatched equivalent), float (integers become JAX's
      default float).

    Raises:
      TypeError: non-numeric x, non-int output_size (None in 1-D), traced output_size.
      ValueError: wrong ndim, output_size of the wrong length or < 0, an empty spatial or
        channel axis (an empty batch is fine), unknown layout.

    Example:
      >>> adaptive_avg_pool(jnp.arange(5.0).reshape(1, 5, 1), 3)[0, :, 0]   # bins [0,2) [1,4) [3,5)
      Array([0.5, 2. , 3.5], dtype=float32)
    """
    return _adaptive("adaptive_avg_pool", "avg", x, output_size, False, layout, None)


def adaptive_max_pool(x, output_size, return_indices: bool = False, *, layout: str = "NHWC"):
    """Adaptive max pooling to ``output_size``; torch's ``adaptive_max_pool{1,2,3}d``.

    Bins, arguments, result and errors as :func:`adaptive_avg_pool`, taking the maximum; with
    ``return_indices`` also the int32 flat index of each maximum in its example's and channel's
    spatial plane (ties: first in row-major order; a bin holding NaN gives NaN), the form
    :func:`cnnjax.ops.max_unpool` takes.

    Example:
      >>> adaptive_max_pool(jnp.array([[3.0, 1.0, 4.0, 1.0, 5.0]]).T[None], 2)[0, :, 0]
      Array([4., 5.], dtype=float32)
    """
    return _adaptive("adaptive_max_pool", "max", x, output_size, return_indices, layout, None)


def _rank_form(op: str, kind: str, rank: int):
    if kind == "avg":

        def f(x, output_size, *, layout: str = "NHWC") -> jax.Array:
            return _adaptive(op, kind, x, output_size, False, layout, rank)

        base = ":func:`adaptive_avg_pool`"
    else:

        def f(x, output_size, return_indices: bool = False, *, layout: str = "NHWC"):
            return _adaptive(op, kind, x, output_size, return_indices, layout, rank)

        base = ":func:`adaptive_max_pool`"
    f.__name__ = f.__qualname__ = op
    f.__doc__ = (
        f'{base} for x {_checks.example_layout(rank, False)} ("NCHW":'
        f" {_checks.example_layout(rank, True)}) or one unbatched example; torch's ``{op}``."
    )
    return f


adaptive_avg_pool1d = _rank_form("adaptive_avg_pool1d", "avg", 1)
adaptive_avg_pool2d = _rank_form("adaptive_avg_pool2d", "avg", 2)
adaptive_avg_pool3d = _rank_form("adaptive_avg_pool3d", "avg", 3)
adaptive_max_pool1d = _rank_form("adaptive_max_pool1d", "max", 1)
adaptive_max_pool2d = _rank_form("adaptive_max_pool2d", "max", 2)
adaptive_max_pool3d = _rank_form("adaptive_max_pool3d", "max", 3)


def _global(op: str, kind: str, x, keepdims, layout) -> jax.Array:
    first = _checks.channels_first(op, layout)
    keepdims = _checks.check_bool(op, "keepdims", keepdims)
    x = _checks.as_real_array(op, "x", x)
    x, _ = _checks.batched_channels_last(op, "x", x, None, first)
    _checks.check_nonempty_but_batch(op, "x", x)
    x = x.astype(_checks.common_float_dtype(x))
    axes = tuple(range(1, x.ndim - 1))
    y = x.max(axis=axes, keepdims=True) if kind == "max" else x.mean(axis=axes, keepdims=True)
    if keepdims:
        return _checks.restore_layout(y, False, first)
    return y.reshape(y.shape[0], y.shape[-1])


def global_avg_pool(x, keepdims: bool = False, *, layout: str = "NHWC") -> jax.Array:
    """Mean over every spatial axis: ``adaptive_avg_pool(x, 1)``, flattened unless ``keepdims``.

    Args:
      x: (N, *spatial, C) ("NHWC") or (N, C, *spatial) ("NCHW"), >= 1 spatial dim.
      keepdims: keep the spatial axes as size 1.
      layout: "NHWC" (default) or "NCHW".

    Returns:
      (N, C), or (N, 1, ..., 1, C) / (N, C, 1, ..., 1) with ``keepdims``.

    Raises:
      TypeError / ValueError: as :func:`adaptive_avg_pool`, and a non-bool keepdims.

    Example:
      >>> global_avg_pool(jnp.ones((8, 7, 7, 512))).shape
      (8, 512)
    """
    return _global("global_avg_pool", "avg", x, keepdims, layout)


def global_max_pool(x, keepdims: bool = False, *, layout: str = "NHWC") -> jax.Array:
    """Maximum over every spatial axis: ``adaptive_max_pool(x, 1)``; as :func:`global_avg_pool`."""
    return _global("global_max_pool", "max", x, keepdims, layout)
