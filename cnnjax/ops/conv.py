"""Batched N-d convolution, the research API (D2L 6.3 padding and stride, 6.4 channels).

Layouts are JAX's: ``x`` is channels-last ``(N, *spatial, Ci)`` and ``w`` is ``(*kernel, Ci/groups,
Co)`` (NHWC / HWIO in 2-D); the spatial rank is ``x.ndim - 2``. Numerics are PyTorch's
``torch.nn.functional.conv{1,2,3}d`` on the transposed arrays: cross-correlation, an int padding
pads both sides, ``groups`` splits channels into independent convolutions.

Every argument is validated while tracing, so a bad one raises ``ValueError``/``TypeError`` before
XLA runs, under ``jit`` too. All functions are jit-, grad- and vmap-safe.

The ``impl`` argument picks how (every choice computes the same function):
  - "lax": ``jax.lax.conv_general_dilated``, any rank and ``groups``.
  - "toeplitz": 2-D only, ``groups == 1``: one block-Toeplitz GEMM
    (:mod:`cnnjax.ops.toeplitz`), faster on XLA:CPU for small-channel convs.
  - "auto" (default): the Toeplitz form where :func:`cnnjax.ops.toeplitz.use_toeplitz` says it
    wins on the current backend, else "lax".
"""

from __future__ import annotations

from typing import Any

import jax
from jax import lax

from cnnjax.ops import _checks, toeplitz

__all__ = ["IMPLS", "conv", "conv1d", "conv2d", "conv3d"]

IMPLS = ("lax", "toeplitz")

Padding = Any  # int | Sequence[int] | Sequence[tuple[int, int]] | str; see conv()


def _dimension_numbers(rank: int) -> lax.ConvDimensionNumbers:
    # Channels-last input/output and (*kernel, I, O) weights, for any spatial rank.
    spatial = tuple(range(1, rank + 1))
    return lax.ConvDimensionNumbers(
        lhs_spec=(0, rank + 1) + spatial,
        rhs_spec=(rank + 1, rank) + tuple(range(rank)),
        out_spec=(0, rank + 1) + spatial,
    )


def _conv(op: str, x, w, b, stride, padding, dilation, groups, impl, rank: int | None) -> jax.Array:
    """Validates everything, normalises the hyper-parameters, then dispatches to ``impl``."""
    if impl != "auto" and impl not in IMPLS:
        raise ValueError(f"{op}: impl must be 'auto' or one of {IMPLS}, got {impl!r}")
    x = _checks.as_real_array(op, "x", x)
    w = _checks.as_real_array(op, "w", w)
    if rank is not None:
        _checks.check_ndim(op, "x", x, rank + 2, _checks.channels_last_layout(rank))
    elif x.ndim < 3:
        raise ValueError(
            f"{op}: x must be (N, *spatial, C) with >= 1 spatial dim, got shape {tuple(x.shape)}"
        )
    r = x.ndim - 2
    if w.ndim != x.ndim:
        raise ValueError(
            f"{op}: w must be {x.ndim}-D (*kernel, Ci/groups, Co) to match x,"
            f" got shape {tuple(w.shape)}"
        )
    _checks.check_nonempty(op, "x", x)
    _checks.check_nonempty(op, "w", w)

    groups = _checks.positive_int(op, "groups", groups)
    ci, co, w_ci = x.shape[-1], w.shape[-1], w.shape[-2]
    if ci % groups or co % groups:
        raise ValueError(
            f"{op}: groups={groups} must divide both input channels ({ci})"
            f" and output channels ({co})"
        )
    if w_ci * groups != ci:
        raise ValueError(
            f"{op}: w has {w_ci} input channels per group, expected Ci/groups = {ci}/{groups}"
            f" = {ci // groups} (w shape {tuple(w.shape)}, x shape {tuple(x.shape)})"
        )
    arrays = [x, w]
    if b is not None:
        b = _checks.as_real_array(op, "b", b)
        if b.shape != (co,):
            raise ValueError(f"{op}: b must have shape (Co,) = ({co},), got {tuple(b.shape)}")
        arrays.append(b)

    strides = _checks.int_tuple(op, "stride", stride, r, minimum=1)
    dilations = _checks.int_tuple(op, "dilation", dilation, r, minimum=1)
    kernel = tuple(w.shape[:r])
    k_eff = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilations))
    in_spatial = tuple(x.shape[1:-1])
    pads = _checks.padding_pairs(op, padding, in_spatial, k_eff, strides)
    _checks.check_window_fits(op, "dilated kernel", in_spatial, k_eff, pads)

    if impl == "toeplitz" and (r != 2 or groups != 1):
        raise ValueError(
            f"{op}: impl='toeplitz' needs a 2-D conv with groups=1, got {r}-D with groups={groups};"
            " use impl='lax'"
        )
    dtype = _checks.common_float_dtype(*arrays)
    x, w = x.astype(dtype), w.astype(dtype)

    if impl == "auto":
        use = (
            r == 2
            and groups == 1
            and toeplitz.use_toeplitz(
                tuple(x.shape),
                tuple(w.shape),
                stride=strides,
                padding=pads,
                dilation=dilations,
                groups=groups,
                backend=jax.default_backend(),
            )
        )
        impl = "toeplitz" if use else "lax"
    if impl == "toeplitz":
        y = toeplitz.toeplitz_conv2d(x, w, stride=strides, padding=pads, dilation=dilations)
    else:
        y = lax.conv_general_dilated(
            x,
            w,
            window_strides=strides,
            padding=pads,
            rhs_dilation=dilations,
            dimension_numbers=_dimension_numbers(r),
            feature_group_count=groups,
        )
    if b is not None:
        y = y + b.astype(dtype)
    return y


def conv(
    x, w, b=None, *, stride=1, padding: Padding = 0, dilation=1, groups: int = 1, impl: str = "auto"
) -> jax.Array:
    """N-d cross-correlation with stride, padding, dilation and channel groups.

    Args:
      x: (N, *spatial, Ci) input; the spatial rank r = x.ndim - 2 >= 1.
      w: (*kernel, Ci/groups, Co) weights (r kernel dims).
      b: (Co,) bias, or None.
      stride: int or r ints, each >= 1.
      padding: an int (both sides of every dim), r ints (both sides, per dim), r (lo, hi) pairs,
        or "SAME"/"VALID" (any case; "SAME" gives ceil(n / stride) outputs, extra after).
      dilation: int or r ints, each >= 1 (kernel taps ``dilation`` apart).
      groups: >= 1, dividing Ci and Co: channel group g of x meets only output channels of
        group g (groups == Ci is a depthwise conv).
      impl: "auto", "lax" or "toeplitz" (2-D, groups == 1); see the module docstring.

    Returns:
      (N, *out, Co) with ``out = floor((n + lo + hi - dilation*(k-1) - 1) / stride) + 1`` per dim,
      in the promoted dtype of x, w, b (integers become JAX's default float).

    Raises:
      TypeError: non-numeric arrays, non-int hyper-parameters.
      ValueError: wrong ndim, empty arrays, channel mismatch, groups not dividing channels, bias
        not (Co,), stride/dilation < 1, negative or malformed padding, dilated kernel larger than
        the padded input, unknown impl, or impl="toeplitz" where it does not apply.
    """
    return _conv("conv", x, w, b, stride, padding, dilation, groups, impl, None)


def conv1d(
    x, w, b=None, *, stride=1, padding: Padding = 0, dilation=1, groups: int = 1, impl: str = "auto"
) -> jax.Array:
    """:func:`conv` for x (N, L, Ci) and w (k, Ci/groups, Co): sequences (audio, text)."""
    return _conv("conv1d", x, w, b, stride, padding, dilation, groups, impl, 1)


def conv2d(
    x, w, b=None, *, stride=1, padding: Padding = 0, dilation=1, groups: int = 1, impl: str = "auto"
) -> jax.Array:
    """:func:`conv` for x (N, H, W, Ci) NHWC and w (kh, kw, Ci/groups, Co) HWIO: images.

    Equals ``torch.nn.functional.conv2d`` on the NCHW/OIHW transposes. ``padding`` may be an int,
    (ph, pw), ((top, bottom), (left, right)) or "SAME"/"VALID".
    """
    return _conv("conv2d", x, w, b, stride, padding, dilation, groups, impl, 2)


def conv3d(
    x, w, b=None, *, stride=1, padding: Padding = 0, dilation=1, groups: int = 1, impl: str = "auto"
) -> jax.Array:
    """:func:`conv` for x (N, D, H, W, Ci) and w (kd, kh, kw, Ci/groups, Co): video, volumes."""
    return _conv("conv3d", x, w, b, stride, padding, dilation, groups, impl, 3)
