"""Pooling (D2L 6.5): the book's ``pool2d`` and batched N-d max/average pooling.

The batched functions take channels-last ``x`` of shape ``(N, *spatial, C)`` (NHWC in 2-D) and
follow PyTorch's ``max_pool{1,2,3}d`` / ``avg_pool{1,2,3}d`` (floor mode): ``stride=None`` means
stride = window, max pooling pads with -inf, average pooling divides by the whole window
(``count_include_pad=True``) or by the number of real elements in it (``False``). Arguments are
validated while tracing (so also under ``jit``); everything is jit-, grad- and vmap-safe.

The ``impl`` argument picks how (every choice computes the same function):
  - "lax": ``jax.lax.reduce_window``, any window, stride and padding.
  - "reshape": only for non-overlapping windows (stride == window, no padding): reshape to
    ``(N, H/k, k, W/k, k, C)`` and reduce the k axes (trailing rows/columns that fill no window
    are dropped, as floor mode does). Exact, and much faster than ``reduce_window`` on XLA:CPU,
    in the backward pass too.
  - "auto" (default): "reshape" where it applies, else "lax".
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnnjax.ops import _checks

__all__ = [
    "POOL_IMPLS",
    "pool2d",
    "max_pool",
    "avg_pool",
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
]

POOL_IMPLS = ("lax", "reshape")

Pads = tuple[tuple[int, int], ...]


def _lax_pool(
    x: jax.Array, kind: str, window, strides, pads: Pads, count_include_pad: bool
) -> jax.Array:
    """reduce_window over the spatial axes of (N, *spatial, C); hyper-parameters already valid."""
    dims, steps, full_pads = (1, *window, 1), (1, *strides, 1), ((0, 0), *pads, (0, 0))
    # The init values must be concrete (NumPy, not traced) so that JAX recognises max/add
    # windows and uses the reductions it can differentiate in reverse mode.
    if kind == "max":
        return lax.reduce_window(x, np.array(-np.inf, x.dtype), lax.max, dims, steps, full_pads)
    total = lax.reduce_window(x, np.array(0, x.dtype), lax.add, dims, steps, full_pads)
    if count_include_pad or not any(lo or hi for lo, hi in pads):
        return total / np.prod(window)
    # Real (unpadded) elements under each window: separable, so an outer product of per-dim
    # counts, fixed at trace time.
    counts = np.ones((), np.float32)
    for n, k, s, (lo, _), out in zip(x.shape[1:-1], window, strides, pads, total.shape[1:-1]):
        start = np.arange(out) * s - lo
        per_dim = np.minimum(start + k, n) - np.maximum(start, 0)
        counts = np.multiply.outer(counts, per_dim)
    return total / jnp.asarray(counts[None, ..., None], x.dtype)


def _reshape_pool(x: jax.Array, kind: str, window) -> jax.Array:
    """Non-overlapping pooling by reshape; windows tile the (cropped) input exactly."""
    n, c = x.shape[0], x.shape[-1]
    outs = tuple(d // k for d, k in zip(x.shape[1:-1], window))
    x = x[(slice(None), *(slice(o * k) for o, k in zip(outs, window)), slice(None))]
    x = x.reshape(n, *(v for o, k in zip(outs, window) for v in (o, k)), c)
    window_axes = tuple(range(2, 2 * len(window) + 1, 2))
    return x.max(axis=window_axes) if kind == "max" else x.mean(axis=window_axes)


def _pool(
    op: str, kind: str, x, window, stride, padding, count_include_pad, impl, rank
) -> jax.Array:
    _checks.check_choice(op, "impl", impl, ("auto", *POOL_IMPLS))
    x = _checks.as_real_array(op, "x", x)
    if rank is not None:
        _checks.check_ndim(op, "x", x, rank + 2, _checks.channels_last_layout(rank))
    elif x.ndim < 3:
        raise ValueError(
            f"{op}: x must be (N, *spatial, C) with >= 1 spatial dim, got shape {tuple(x.shape)}"
        )
    _checks.check_nonempty(op, "x", x)
    if not isinstance(count_include_pad, bool):
        raise TypeError(f"{op}: count_include_pad must be a bool, got {count_include_pad!r}")
    r = x.ndim - 2
    window = _checks.int_tuple(op, "window", window, r, minimum=1)
    strides = window if stride is None else _checks.int_tuple(op, "stride", stride, r, minimum=1)
    in_spatial = tuple(x.shape[1:-1])
    pads = _checks.padding_pairs(op, padding, in_spatial, window, strides)
    # PyTorch's rule: a window made only of padding would have no value (max) or divide by
    # zero (average without the padding).
    if any(max(lo, hi) > k // 2 for (lo, hi), k in zip(pads, window)):
        raise ValueError(f"{op}: padding must be at most half the window {window}, got {pads}")
    _checks.check_window_fits(op, "window", in_spatial, window, pads)

    reshape_ok = strides == window and not any(lo or hi for lo, hi in pads)
    if impl == "reshape" and not reshape_ok:
        raise ValueError(
            f"{op}: impl='reshape' needs stride == window and no padding, got window {window},"
            f" stride {strides}, padding {pads}; use impl='lax'"
        )
    x = x.astype(_checks.common_float_dtype(x))
    if impl == "reshape" or (impl == "auto" and reshape_ok):
        return _reshape_pool(x, kind, window)
    return _lax_pool(x, kind, window, strides, pads, count_include_pad)


def max_pool(x, window, stride=None, padding: Any = 0, *, impl: str = "auto") -> jax.Array:
    """N-d max pooling over the spatial axes of channels-last ``x``.

    Args:
      x: (N, *spatial, C), spatial rank r = x.ndim - 2 >= 1.
      window: int or r ints, each >= 1.
      stride: int or r ints, each >= 1; None (default) means ``window``.
      padding: int, r ints, r (lo, hi) pairs or "SAME"/"VALID" (as in :func:`cnnjax.ops.conv`),
        at most half the window; padded positions never win (-inf).
      impl: "auto", "lax" or "reshape" (stride == window and no padding only).

    Returns:
      (N, *out, C), ``out = floor((n + lo + hi - window) / stride) + 1`` per dim; integer input
      becomes JAX's default float.

    Raises:
      TypeError: non-numeric x or non-int hyper-parameters.
      ValueError: wrong ndim, empty x, window/stride < 1, negative padding or more than half the
        window, window larger than the padded input, unknown impl or an impl that does not apply.
    """
    return _pool("max_pool", "max", x, window, stride, padding, True, impl, None)


def avg_pool(
    x, window, stride=None, padding: Any = 0, count_include_pad: bool = True, *, impl: str = "auto"
) -> jax.Array:
    """N-d average pooling over the spatial axes of channels-last ``x``.

    Arguments, result and errors as :func:`max_pool`, plus ``count_include_pad``: True divides
    every window sum by the window size (padding counts as zeros), False by the number of real
    input elements in the window (PyTorch's flag of the same name).
    """
    return _pool("avg_pool", "avg", x, window, stride, padding, count_include_pad, impl, None)


def max_pool1d(x, window, stride=None, padding: Any = 0, *, impl: str = "auto") -> jax.Array:
    """:func:`max_pool` for x (N, L, C)."""
    return _pool("max_pool1d", "max", x, window, stride, padding, True, impl, 1)


def max_pool2d(x, window, stride=None, padding: Any = 0, *, impl: str = "auto") -> jax.Array:
    """:func:`max_pool` for x (N, H, W, C); window/stride an int or (h, w) pair."""
    return _pool("max_pool2d", "max", x, window, stride, padding, True, impl, 2)


def max_pool3d(x, window, stride=None, padding: Any = 0, *, impl: str = "auto") -> jax.Array:
    """:func:`max_pool` for x (N, D, H, W, C)."""
    return _pool("max_pool3d", "max", x, window, stride, padding, True, impl, 3)


def avg_pool1d(
    x, window, stride=None, padding: Any = 0, count_include_pad: bool = True, *, impl: str = "auto"
) -> jax.Array:
    """:func:`avg_pool` for x (N, L, C)."""
    return _pool("avg_pool1d", "avg", x, window, stride, padding, count_include_pad, impl, 1)


def avg_pool2d(
    x, window, stride=None, padding: Any = 0, count_include_pad: bool = True, *, impl: str = "auto"
) -> jax.Array:
    """:func:`avg_pool` for x (N, H, W, C); window/stride an int or (h, w) pair."""
    return _pool("avg_pool2d", "avg", x, window, stride, padding, count_include_pad, impl, 2)


def avg_pool3d(
    x, window, stride=None, padding: Any = 0, count_include_pad: bool = True, *, impl: str = "auto"
) -> jax.Array:
    """:func:`avg_pool` for x (N, D, H, W, C)."""
    return _pool("avg_pool3d", "avg", x, window, stride, padding, count_include_pad, impl, 3)


def pool2d(X, pool_size, mode: str = "max") -> jax.Array:
    """The book's pooling of one (H, W) array: stride 1, no padding (D2L 6.5.1).

    Args:
      X: (H, W) input.
      pool_size: int or (ph, pw) pair, at most (H, W).
      mode: "max" or "avg".

    Returns:
      (H - ph + 1, W - pw + 1): the max or mean of every ph x pw window.

    Raises:
      TypeError: non-numeric X or non-int pool_size.
      ValueError: X not 2-D or empty, pool_size < 1 or larger than X, unknown mode.
    """
    op = "pool2d"
    mode = _checks.check_choice(op, "mode", mode, ("max", "avg"))
    X = _checks.as_real_array(op, "X", X)
    _checks.check_ndim(op, "X", X, 2, "(H, W)")
    _checks.check_nonempty(op, "X", X)
    window = _checks.int_tuple(op, "pool_size", pool_size, 2, minimum=1)
    if window[0] > X.shape[0] or window[1] > X.shape[1]:
        raise ValueError(f"{op}: pool_size {window} must fit in X (H, W) = {tuple(X.shape)}")
    X = X.astype(_checks.common_float_dtype(X))
    y = _lax_pool(X[None, :, :, None], mode, window, (1, 1), ((0, 0), (0, 0)), True)
    return y[0, :, :, 0]
