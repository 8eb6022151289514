"""Pooling (D2L 6.5): the book's ``pool2d``, batched N-d max/average pooling and max unpooling.

The batched functions follow PyTorch's ``max_pool{1,2,3}d`` / ``avg_pool{1,2,3}d`` /
``max_unpool{1,2,3}d`` in names, argument order and numerics:

  - ``stride=None`` means stride = window. (Flax's ``nn.max_pool``/``nn.avg_pool`` default to
    stride 1: code ported from Flax must pass ``stride=1`` explicitly.)
  - Max pooling pads with -inf, so padding never wins; average pooling divides by the window
    clipped to input + padding (``count_include_pad=True``), by the number of real elements
    (``False``), or by ``divisor_override``.
  - ``ceil_mode=True`` rounds the output size up, keeping a last window that overhangs the
    padded input as long as it starts on real input or left padding.
  - ``dilation`` (max pooling) spaces the window's taps; the effective window is
    ``dilation*(window-1) + 1``.
  - ``return_indices=True`` (max pooling) also returns, per output element, the flat index of
    its maximum within that example's and channel's spatial plane of the unpadded input
    (``h * W + w`` in 2-D), which :func:`max_unpool` takes back. Ties go to the first maximum in
    row-major window order; a window holding NaN returns NaN and its last NaN, as torch's CPU
    kernels do.
  - Padding is at most half the (undilated) window.

Input conventions, also torch's: ``layout="NHWC"`` (default; channels last, (N, L, C) in 1-D and
(N, D, H, W, C) in 3-D) or ``"NCHW"`` (channels first, torch's tensors unchanged); the 1d/2d/3d
functions also take one unbatched example ((H, W, C), or (C, H, W) in "NCHW") and return it
unbatched; a batch of N = 0 gives an empty result once every hyper-parameter has been checked.
An int or a one-element tuple (``3``, ``(3,)``) as window, stride, padding, dilation or
output_size applies to every spatial dim. Hyper-parameters must be static Python values: under
``jax.jit`` bind them with ``functools.partial`` or ``static_argnames``.

Arguments are validated while tracing (so also under ``jit``); everything is jit-, grad- and
vmap-safe.

The ``impl`` argument picks how. Max pooling's values are the same with every choice, bit for
bit (a maximum is exact; NaN/inf included); average pooling's values and gradients agree to the
rounding of the window sum (bit for bit on XLA:CPU in our checks); max pooling's gradients
differ at ties, see "reshape":
  - "lax": ``jax.lax.reduce_window``; for dilated max pooling or ``return_indices``, one strided
    slice per window tap and a choice among the taps (reduce_window's max has no reverse-mode
    derivative with dilation, and no argmax).
  - "reshape": only for non-overlapping windows (stride == window, no padding or dilation, no
    ceil-mode overhang, no indices, no ``divisor_override``): reshape to ``(N, H/k, k, W/k, k,
    C)`` and reduce the k axes (trailing rows/columns that fill no window are dropped, as floor
    mode does). Much faster than ``reduce_window`` on XLA:CPU, backward too. Max pooling's
    gradient is ``jnp.max``'s: where a window's maximum is tied (an all-zero window after a
    ReLU) it is split evenly among the tied entries, where "lax" and torch give it all to one;
    a window holding NaN passes NaN gradients to all its entries.
  - "auto" (default): "reshape" where it applies, else "lax".
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

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
    "max_unpool",
    "max_unpool1d",
    "max_unpool2d",
    "max_unpool3d",
]

POOL_IMPLS = ("lax", "reshape")

Pads = tuple[tuple[int, int], ...]

INDEX_DTYPE = jnp.int32


class _Geometry(NamedTuple):
    """Normalised, validated hyper-parameters of one pooling call (spatial dims only)."""

    window: tuple[int, ...]
    strides: tuple[int, ...]
    dilation: tuple[int, ...]
    pads: Pads  # the user's padding
    out: tuple[int, ...]
    extra: tuple[int, ...]  # ceil mode: padding added after ``pads`` so the last window fits

    @property
    def k_eff(self) -> tuple[int, ...]:
        return tuple(d * (k - 1) + 1 for k, d in zip(self.window, self.dilation))

    @property
    def full_pads(self) -> Pads:
        return tuple((lo, hi + e) for (lo, hi), e in zip(self.pads, self.extra))


def _geometry(op: str, in_spatial, window, stride, padding, dilation, ceil_mode: bool) -> _Geometry:
    r = len(in_spatial)
    window = _checks.int_tuple(op, "window", window, r, minimum=1)
    strides = window if stride is None else _checks.int_tuple(op, "stride", stride, r, minimum=1)
    dilation = _checks.int_tuple(op, "dilation", dilation, r, minimum=1)
    k_eff = tuple(d * (k - 1) + 1 for k, d in zip(window, dilation))
    pads = _checks.padding_pairs(op, padding, in_spatial, k_eff, strides)
    # PyTorch's rule: a window made only of padding would have no value (max) or divide by
    # zero (average without the padding).
    if any(max(lo, hi) > k // 2 for (lo, hi), k in zip(pads, window)):
        raise ValueError(f"{op}: padding must be at most half the window {window}, got {pads}")
    return _Geometry(window, strides, dilation, pads, (), ())


def _finish_geometry(op: str, in_spatial, g: _Geometry, ceil_mode: bool) -> _Geometry:
    """Output sizes (needs a non-empty input); raises if a dim has no output."""
    k_eff = g.k_eff
    if not ceil_mode:
        _checks.check_window_fits(op, "window", in_spatial, k_eff, g.pads)
    out = tuple(
        _checks.pool_output_size(n, k, s, p, ceil_mode)
        for n, k, s, p in zip(in_spatial, k_eff, g.strides, g.pads)
    )
    if any(o < 1 for o in out):
        padded = tuple(n + lo + hi for n, (lo, hi) in zip(in_spatial, g.pads))
        raise ValueError(
            f"{op}: window {tuple(k_eff)} (dilated) leaves no output for the padded input"
            f" {padded} even with ceil_mode=True (input {tuple(in_spatial)}, padding {g.pads})"
        )
    extra = tuple(
        max(0, (o - 1) * s + k - (n + lo + hi))
        for o, s, k, n, (lo, hi) in zip(out, g.strides, k_eff, in_spatial, g.pads)
    )
    return g._replace(out=out, extra=extra)


def _prepare(op: str, x, rank, layout):
    """x as a float (N, *spatial, C) array, plus what restores the caller's convention."""
    first = _checks.channels_first(op, layout)
    x = _checks.as_real_array(op, "x", x)
    x, unbatched = _checks.batched_channels_last(op, "x", x, rank, first)
    return x, unbatched, first


# --- Implementations (hyper-parameters already valid). ---


def _tap_table(in_spatial, g: _Geometry) -> tuple[np.ndarray, np.ndarray]:
    """For every window tap t and output position: the flat input index, and whether it is real.

    Returns (index, valid), each of shape (*out, T) with T = prod(window), taps in row-major
    window order.
    """
    r = len(in_spatial)
    flat = np.zeros((1,) * (2 * r), np.int64)
    real = np.ones((1,) * (2 * r), bool)
    for axis, (n, o, s, d, k, (lo, _)) in enumerate(
        zip(in_spatial, g.out, g.strides, g.dilation, g.window, g.pads)
    ):
        # On a (*out, *window) grid: coordinate of tap j at output p along this axis.
        shape = [1] * (2 * r)
        shape[axis], shape[r + axis] = o, k
        coord = (np.arange(o)[:, None] * s - lo + np.arange(k)[None, :] * d).reshape(shape)
        flat = flat + coord * math.prod(in_spatial[axis + 1 :])
        real = real & (coord >= 0) & (coord < n)
    t = math.prod(g.window)
    index = np.broadcast_to(flat, (*g.out, *g.window)).reshape(*g.out, t)
    real = np.broadcast_to(real, (*g.out, *g.window)).reshape(*g.out, t)
    return index, real


def choose(t: jax.Array, valid) -> jax.Array:
    """Index along the last axis of ``t`` of torch's max: first maximum, or last NaN if any.

    ``valid`` (broadcastable to ``t``) excludes entries (padding) from the choice unless nothing
    else is left.
    """
    m = jnp.max(jnp.where(valid, t, -jnp.inf), axis=-1, keepdims=True)
    hit = valid & (t == m)
    nan = valid & jnp.isnan(t)
    first = jnp.argmax(hit, axis=-1)
    last = t.shape[-1] - 1 - jnp.argmax(nan[..., ::-1], axis=-1)
    return jnp.where(jnp.any(nan, axis=-1), last, first)


def _max_taps(x: jax.Array, g: _Geometry, want_indices: bool):
    """Max pooling as one strided slice per tap; returns (values, indices or None)."""
    n, c = x.shape[0], x.shape[-1]
    in_spatial = tuple(x.shape[1:-1])
    xp = jnp.pad(x, ((0, 0), *g.full_pads, (0, 0)), constant_values=-np.inf)
    taps = []
    for offs in np.ndindex(*g.window):
        start = (0, *(j * d for j, d in zip(offs, g.dilation)), 0)
        limit = (n, *(st + (o - 1) * s + 1 for st, o, s in zip(start[1:-1], g.out, g.strides)), c)
        taps.append(lax.slice(xp, start, limit, (1, *g.strides, 1)))
    t = jnp.stack(taps, axis=-1)  # (N, *out, C, T)
    index, real = _tap_table(in_spatial, g)
    index = np.expand_dims(index, -2)  # (*out, 1, T), broadcast over N and C
    real = np.expand_dims(real, -2)
    j = choose(t, real)[..., None]
    values = jnp.take_along_axis(t, j, axis=-1)[..., 0]
    if not want_indices:
        return values, None
    table = jnp.asarray(index, INDEX_DTYPE)
    idx = jnp.take_along_axis(jnp.broadcast_to(table, t.shape), j, axis=-1)[..., 0]
    return values, idx


def _lax_max(x: jax.Array, g: _Geometry) -> jax.Array:
    dims, steps = (1, *g.window, 1), (1, *g.strides, 1)
    # The init value must be concrete (NumPy, not traced) so that JAX recognises a max window
    # and uses the reduction it can differentiate in reverse mode.
    init = np.array(-np.inf, x.dtype)
    return lax.reduce_window(x, init, lax.max, dims, steps, ((0, 0), *g.full_pads, (0, 0)))


def _lax_avg(
    x: jax.Array, g: _Geometry, count_include_pad: bool, divisor_override: int | None
) -> jax.Array:
    dims, steps = (1, *g.window, 1), (1, *g.strides, 1)
    total = lax.reduce_window(
        x, np.array(0, x.dtype), lax.add, dims, steps, ((0, 0), *g.full_pads, (0, 0))
    )
    if divisor_override is not None:
        return total / np.array(divisor_override, x.dtype)
    padded = any(lo or hi for lo, hi in g.pads) or any(g.extra)
    if not padded:
        return total / np.array(math.prod(g.window), x.dtype)
    # Elements counted under each window: separable, so an outer product of per-dim counts,
    # fixed at trace time. torch clips a window to input + padding (count_include_pad) or to
    # the input alone; a ceil-mode overhang past the padding never counts.
    counts = np.ones((), np.float64)
    for n, k, s, (lo, hi), o in zip(x.shape[1:-1], g.window, g.strides, g.pads, g.out):
        start = np.arange(o) * s - lo
        if count_include_pad:
            per_dim = np.minimum(start + k, n + hi) - start
        else:
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


# --- The public ops. ---


def _pool(
    op: str,
    kind: str,
    x,
    window,
    stride,
    padding,
    dilation,
    ceil_mode,
    return_indices,
    count_include_pad,
    divisor_override,
    impl,
    layout,
    rank,
):
    _checks.check_static(op, "impl", impl)
    _checks.check_choice(op, "impl", impl, ("auto", *POOL_IMPLS))
    x, unbatched, first = _prepare(op, x, rank, layout)
    ceil_mode = _checks.check_bool(op, "ceil_mode", ceil_mode)
    return_indices = _checks.check_bool(op, "return_indices", return_indices)
    count_include_pad = _checks.check_bool(op, "count_include_pad", count_include_pad)
    if divisor_override is not None:
        _checks.check_static(op, "divisor_override", divisor_override)
        if isinstance(divisor_override, bool) or not isinstance(
            divisor_override, (int, np.integer)
        ):
            raise TypeError(
                f"{op}: divisor_override must be an int or None, got {divisor_override!r}"
            )
        if divisor_override == 0:
            raise ValueError(f"{op}: divisor_override must not be 0 (None divides by the window)")
        divisor_override = int(divisor_override)
    in_spatial = tuple(x.shape[1:-1])
    g = _geometry(op, in_spatial, window, stride, padding, dilation, ceil_mode)
    _checks.check_nonempty_but_batch(op, "x", x)
    g = _finish_geometry(op, in_spatial, g, ceil_mode)
    if kind == "avg" and len(in_spatial) == 3 and any(n < k for n, k in zip(in_spatial, g.window)):
        # torch's avg_pool3d (unlike its 1-D/2-D forms and max_pool3d) requires the unpadded
        # input to hold the window; follow it rather than return what torch refuses.
        raise ValueError(
            f"{op}: a 3-D average pool needs the input {in_spatial} (D, H, W) to be at least the"
            f" window {g.window} in every dim, padding aside (torch's avg_pool3d rule)"
        )

    reshape_ok = (
        g.strides == g.window
        and not any(lo or hi for lo, hi in g.pads)
        and not any(g.extra)
        and all(d == 1 for d in g.dilation)
        and not return_indices
        and divisor_override is None
    )
    if impl == "reshape" and not reshape_ok:
        raise ValueError(
            f"{op}: impl='reshape' needs stride == window and no padding, dilation, ceil-mode"
            f" overhang, indices or divisor_override, got window {g.window}, stride {g.strides},"
            f" padding {g.pads}, dilation {g.dilation}; use impl='lax'"
        )
    x = x.astype(_checks.common_float_dtype(x))
    indices = None
    if x.shape[0] == 0:
        y = jnp.zeros((0, *g.out, x.shape[-1]), x.dtype)
        indices = jnp.zeros(y.shape, INDEX_DTYPE)
    elif impl == "reshape" or (impl == "auto" and reshape_ok):
        y = _reshape_pool(x, kind, g.window)
    elif kind == "avg":
        y = _lax_avg(x, g, count_include_pad, divisor_override)
    elif return_indices or any(d > 1 for d in g.dilation):
        y, indices = _max_taps(x, g, return_indices)
    else:
        y = _lax_max(x, g)
    y = _checks.restore_layout(y, unbatched, first)
    if return_indices:
        return y, _checks.restore_layout(indices, unbatched, first)
    return y


_MAX_DOC_ARGS = """
    Args:
      x: (N, *spatial, C) in "NHWC" layout, (N, C, *spatial) in "NCHW"; the 1d/2d/3d forms also
        take one unbatched example (no N axis) and return it unbatched.
      window: int, (int,) or r ints, each >= 1 (torch's ``kernel_size``).
      stride: int, (int,) or r ints, each >= 1; None (default) means ``window`` (torch's
        default; Flax's pooling defaults to 1).
      padding: int, (int,), r ints, r (lo, hi) pairs or "SAME"/"VALID" (as in
        :func:`cnnjax.ops.conv`), at most half the window; padded positions never win (-inf).
      dilation: int, (int,) or r ints, each >= 1: taps ``dilation`` apart.
      ceil_mode: round the output size up (torch's rule, see the module docstring).
      return_indices: also return the flat index of each maximum (see the module docstring).
      impl: "auto", "lax" or "reshape" (non-overlapping windows only).
      layout: "NHWC" (default, channels last) or "NCHW" (channels first, torch's layout).

    Returns:
      (N, *out, C) (or the "NCHW"/unbatched equivalent), with ``out = floor((n + lo + hi -
      dilation*(window-1) - 1) / stride) + 1`` per dim (``ceil`` in ceil mode, less a window that
      would start past the input and left padding); integer input becomes JAX's default float.
      With ``return_indices``, a pair (values, indices), indices int32 of the same shape.

    Raises:
      TypeError: non-numeric x, non-int or non-bool hyper-parameters, or a hyper-parameter that
        is a traced value (it must be static: ``functools.partial`` or ``static_argnames``).
      ValueError: wrong ndim, an empty spatial or channel axis (an empty batch is fine),
        window/stride/dilation < 1, negative padding or more than half the window, a window
        leaving no output, unknown impl or layout, or an impl that does not apply.
"""

_AVG_DOC_ARGS = """
    Args:
      x: (N, *spatial, C) in "NHWC" layout, (N, C, *spatial) in "NCHW"; the 1d/2d/3d forms also
        take one unbatched example (no N axis) and return it unbatched.
      window: int, (int,) or r ints, each >= 1 (torch's ``kernel_size``).
      stride: int, (int,) or r ints, each >= 1; None (default) means ``window`` (torch's
        default; Flax's pooling defaults to 1).
      padding: int, (int,), r ints, r (lo, hi) pairs or "SAME"/"VALID", at most half the window.
      ceil_mode: round the output size up (torch's rule, see the module docstring).
      count_include_pad: True divides each window sum by the window clipped to input + padding
        (padding counts as zeros); False by the number of real input elements in the window.
      divisor_override: a nonzero int dividing every window sum instead; None (default) uses
        ``count_include_pad``.
      impl: "auto", "lax" or "reshape" (non-overlapping windows only).
      layout: "NHWC" (default, channels last) or "NCHW" (channels first, torch's layout).

    Returns:
      (N, *out, C) (or the "NCHW"/unbatched equivalent), ``out`` as in :func:`max_pool` with
      dilation 1; integer input becomes JAX's default float.

    Raises:
      TypeError: non-numeric x, non-int or non-bool hyper-parameters, or a traced
        hyper-parameter (it must be static: ``functools.partial`` or ``static_argnames``).
      ValueError: as :func:`max_pool`, and ``divisor_override == 0``; in 3-D, also an input
        smaller than the window in some dim (before padding), as torch's avg_pool3d refuses.
"""


def max_pool(
    x,
    window,
    stride=None,
    padding: Any = 0,
    dilation=1,
    ceil_mode: bool = False,
    return_indices: bool = False,
    *,
    impl: str = "auto",
    layout: str = "NHWC",
):
    """N-d max pooling over the spatial axes; torch's ``max_pool{1,2,3}d`` for any rank.

    The spatial rank is ``x.ndim - 2`` (no unbatched form: use max_pool1d/2d/3d for that).
    """
    return _pool(
        "max_pool", "max", x, window, stride, padding, dilation, ceil_mode, return_indices,
        True, None, impl, layout, None,
    )  # fmt: skip


def avg_pool(
    x,
    window,
    stride=None,
    padding: Any = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
    *,
    impl: str = "auto",
    layout: str = "NHWC",
) -> jax.Array:
    """N-d average pooling over the spatial axes; torch's ``avg_pool{1,2,3}d`` for any rank.

    The spatial rank is ``x.ndim - 2`` (no unbatched form: use avg_pool1d/2d/3d for that).
    """
    return _pool(
        "avg_pool", "avg", x, window, stride, padding, 1, ceil_mode, False,
        count_include_pad, divisor_override, impl, layout, None,
    )  # fmt: skip


max_pool.__doc__ += (
    _MAX_DOC_ARGS
    + """
    Example:
      >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
      >>> max_pool(x, 3, stride=2, ceil_mode=True)[0, :, :, 0]   # 2x2, not 1x1
      Array([[10., 11.],
             [14., 15.]], dtype=float32)
"""
)
avg_pool.__doc__ += (
    _AVG_DOC_ARGS
    + """
    Example:
      >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
      >>> avg_pool(x, 2, divisor_override=1)[0, :, :, 0]   # window sums
      Array([[10., 18.],
             [42., 50.]], dtype=float32)
"""
)


def _max_rank(op: str, rank: int):
    def f(
        x,
        window,
        stride=None,
        padding: Any = 0,
        dilation=1,
        ceil_mode: bool = False,
        return_indices: bool = False,
        *,
        impl: str = "auto",
        layout: str = "NHWC",
    ):
        return _pool(
            op, "max", x, window, stride, padding, dilation, ceil_mode, return_indices,
            True, None, impl, layout, rank,
        )  # fmt: skip

    f.__name__ = f.__qualname__ = op
    lay, lay_first = _checks.example_layout(rank, False), _checks.example_layout(rank, True)
    f.__doc__ = (
        f':func:`max_pool` for x {lay} ("NCHW": {lay_first}), or one unbatched example;'
        f" torch's ``{op}``.\n" + _MAX_DOC_ARGS
    )
    return f


def _avg_rank(op: str, rank: int):
    def f(
        x,
        window,
        stride=None,
        padding: Any = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
        *,
        impl: str = "auto",
        layout: str = "NHWC",
    ) -> jax.Array:
        return _pool(
            op, "avg", x, window, stride, padding, 1, ceil_mode, False, count_include_pad,
            divisor_override, impl, layout, rank,
        )  # fmt: skip

    f.__name__ = f.__qualname__ = op
    lay, lay_first = _checks.example_layout(rank, False), _checks.example_layout(rank, True)
    f.__doc__ = (
        f':func:`avg_pool` for x {lay} ("NCHW": {lay_first}), or one unbatched example;'
        f" torch's ``{op}``.\n" + _AVG_DOC_ARGS
    )
    return f


max_pool1d = _max_rank("max_pool1d", 1)
max_pool2d = _max_rank("max_pool2d", 2)
max_pool3d = _max_rank("max_pool3d", 3)
avg_pool1d = _avg_rank("avg_pool1d", 1)
avg_pool2d = _avg_rank("avg_pool2d", 2)
avg_pool3d = _avg_rank("avg_pool3d", 3)


# --- Max unpooling. ---


def _unpool(op: str, x, indices, window, stride, padding, output_size, layout, rank):
    x, unbatched, first = _prepare(op, x, rank, layout)
    if not hasattr(indices, "dtype"):
        indices = np.asarray(indices)
    if not jnp.issubdtype(indices.dtype, jnp.integer):
        raise TypeError(f"{op}: indices must be an integer array, got dtype {indices.dtype}")
    idx, _, _ = _prepare(op, indices, rank, layout)
    if idx.shape != x.shape:
        raise ValueError(
            f"{op}: indices must have x's shape (as max_pool returns them),"
            f" got {tuple(indices.shape)} for x of shape {tuple(np.shape(x))}"
        )
    r = x.ndim - 2
    in_spatial = tuple(x.shape[1:-1])
    win = _checks.int_tuple(op, "window", window, r, minimum=1)
    strides = win if stride is None else _checks.int_tuple(op, "stride", stride, r, minimum=1)
    _checks.check_static(op, "padding", padding)
    if isinstance(padding, str):
        raise ValueError(f"{op}: padding must be an int, {r} ints or {r} (lo, hi) pairs,"
                         f" got {padding!r}")  # fmt: skip
    pads = _checks.padding_pairs(op, padding, in_spatial, win, strides)
    default = tuple(
        (n - 1) * s + k - lo - hi for n, s, k, (lo, hi) in zip(in_spatial, strides, win, pads)
    )
    if output_size is None:
        out = default
    else:
        _checks.check_static(op, "output_size", output_size)
        sizes = _checks._plain(output_size)
        if isinstance(sizes, (list, tuple)):
            if len(sizes) == r + 2:
                # torch also takes the full shape, batch and channel axes included.
                sizes = sizes[2:] if first else sizes[1:-1]
            elif len(sizes) not in (1, r):
                raise ValueError(
                    f"{op}: output_size must be an int, {r} ints (one per spatial dim) or the"
                    f" full {r + 2}-D shape, got {output_size!r}"
                )
        out = _checks.int_tuple(op, "output_size", sizes, r, minimum=1)
        for o, d, s in zip(out, default, strides):
            if not d - s < o < d + s:
                raise ValueError(
                    f"{op}: output_size must be within stride of the default {default} (strictly"
                    f" between default - stride and default + stride), got {out}"
                )
    if any(o < 1 for o in out):
        raise ValueError(f"{op}: the unpooled size {out} is empty; pass output_size")
    _checks.check_nonempty_but_batch(op, "x", x)
    n, c = x.shape[0], x.shape[-1]
    plane = math.prod(out)
    if not isinstance(indices, jax.core.Tracer) and np.size(indices):
        # Concrete indices (an eager call) are checked, as torch does; traced ones cannot be.
        lo_i, hi_i = int(np.min(np.asarray(indices))), int(np.max(np.asarray(indices)))
        if lo_i < 0 or hi_i >= plane:
            raise ValueError(
                f"{op}: indices must lie in [0, {plane}) (the unpooled plane {out}), got values"
                f" in [{lo_i}, {hi_i}]; pass the output_size of the pooled input"
            )
    x = x.astype(_checks.common_float_dtype(x))
    # (N, *in, C) -> (N*C, L): one row per example and channel, scattered into its plane.
    length = math.prod(in_spatial)
    vals = jnp.moveaxis(x, -1, 1).reshape(n * c, length)
    flat = jnp.moveaxis(idx, -1, 1).reshape(n * c, length).astype(INDEX_DTYPE)
    flat = jnp.where(flat < 0, plane, flat)  # negative indices are dropped, not wrapped
    y = _scatter_rows(vals, flat, plane)
    y = jnp.moveaxis(y.reshape(n, c, *out), 1, -1)
    return _checks.restore_layout(y, unbatched, first)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _scatter_rows(vals: jax.Array, flat: jax.Array, plane: int) -> jax.Array:
    """(R, L) values written at columns ``flat`` (R, L) of R zero rows of length ``plane``.

    Out-of-range columns are dropped. Where a row's columns repeat, one of the values is written
    (in max unpooling they are copies of one input element).
    """
    rows = jnp.arange(vals.shape[0], dtype=INDEX_DTYPE)[:, None]
    return jnp.zeros((vals.shape[0], plane), vals.dtype).at[rows, flat].set(vals, mode="drop")


@_scatter_rows.defjvp
def _scatter_rows_jvp(plane, primals, tangents):
    # torch's derivative: the gradient of every entry is the output gradient at its index (a
    # gather), also where indices repeat (overlapping windows). Its transpose is a scatter-add,
    # so the tangent adds where the value only writes; both agree wherever indices are unique.
    vals, flat = primals
    dvals = tangents[0]
    rows = jnp.arange(vals.shape[0], dtype=INDEX_DTYPE)[:, None]
    dy = jnp.zeros((vals.shape[0], plane), dvals.dtype).at[rows, flat].add(dvals, mode="drop")
    return _scatter_rows(vals, flat, plane), dy


_UNPOOL_DOC = """
    Scatters each value of ``x`` to position ``indices`` of its example's and channel's output
    plane (flattened, as :func:`max_pool` returns them with ``return_indices=True``) and leaves
    zeros elsewhere: torch's ``max_unpool{1,2,3}d``. A partial inverse of max pooling.

    Args:
      x: pooled values, (N, *in, C) in "NHWC", (N, C, *in) in "NCHW"; the 1d/2d/3d forms also
        take one unbatched example.
      indices: integer array of x's shape: flat positions in the output plane, each in
        ``[0, prod(output_size))``. Concrete indices are checked (ValueError, as torch raises);
        traced ones (under jit) cannot be, and entries outside the range are dropped. Where
        two entries share an index (overlapping windows), one value is written and, as in
        torch, the gradient of each entry is the output gradient at its index.
      window, stride, padding: those of the max pooling being undone: an int, (int,) or r ints
        (stride None = window; padding also r (lo, hi) pairs).
      output_size: None for the default ``(in - 1) * stride + window - lo - hi`` per dim, or an
        int, (int,), r sizes or the full r + 2 shape (in the layout's order), each strictly
        between default - stride and default + stride, to recover an input size floor-mode
        pooling rounded down.
      layout: "NHWC" (default) or "NCHW".

    Returns:
      (N, *output_size, C) (or the "NCHW"/unbatched equivalent), x's dtype (integers become
      JAX's default float).

    Raises:
      TypeError: non-numeric x, non-integer indices, non-int hyper-parameters, traced
        hyper-parameters.
      ValueError: wrong ndim, indices not of x's shape, output_size out of range, concrete
        indices outside the output plane, an empty spatial or channel axis.

    Example:
      >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
      >>> y, i = max_pool2d(x, 2, return_indices=True)
      >>> max_unpool2d(y, i, 2)[0, :, :, 0]
      Array([[ 0.,  0.,  0.,  0.],
             [ 0.,  5.,  0.,  7.],
             [ 0.,  0.,  0.,  0.],
             [ 0., 13.,  0., 15.]], dtype=float32)
"""


def max_unpool(
    x, indices, window, stride=None, padding: Any = 0, output_size=None, *, layout: str = "NHWC"
) -> jax.Array:
    """N-d max unpooling, spatial rank ``x.ndim - 2``."""
    return _unpool("max_unpool", x, indices, window, stride, padding, output_size, layout, None)


max_unpool.__doc__ += _UNPOOL_DOC


def _unpool_rank(op: str, rank: int):
    def f(
        x, indices, window, stride=None, padding: Any = 0, output_size=None, *, layout="NHWC"
    ) -> jax.Array:
        return _unpool(op, x, indices, window, stride, padding, output_size, layout, rank)

    f.__name__ = f.__qualname__ = op
    f.__doc__ = f":func:`max_unpool` for spatial rank {rank}; torch's ``{op}``.\n" + _UNPOOL_DOC
    return f


max_unpool1d = _unpool_rank("max_unpool1d", 1)
max_unpool2d = _unpool_rank("max_unpool2d", 2)
max_unpool3d = _unpool_rank("max_unpool3d", 3)


# --- The book's single-image pooling. ---


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
    out = (X.shape[0] - window[0] + 1, X.shape[1] - window[1] + 1)
    g = _Geometry(window, (1, 1), (1, 1), ((0, 0), (0, 0)), out, (0, 0))
    xb = X[None, :, :, None]
    y = _lax_max(xb, g) if mode == "max" else _lax_avg(xb, g, True, None)
    return y[0, :, :, 0]
