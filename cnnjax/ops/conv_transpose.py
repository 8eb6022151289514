"""Transposed convolution (D2L 14.10 builds on 6.3): the decoder half of a UNet or a GAN.

``conv_transpose(x, w)`` is the adjoint of a convolution: it scatters every input value, times
the kernel, into the output at ``stride`` steps, so a stride-s transposed conv upsamples by s.
Numerics are PyTorch's ``torch.nn.functional.conv_transpose{1,2,3}d``, including ``padding``
(cropped from both sides of the full result), ``output_padding`` (extra rows/columns on the high
side, to pick among the input sizes a strided conv maps to the same output size), ``dilation``
and ``groups``.

Layouts (``layout=``), for spatial rank r:
  - "NHWC" (default): ``x`` is ``(N, *spatial, Ci)``, ``w`` is ``(*kernel, Ci, Co/groups)`` —
    torch's weight with its two leading axes moved to the end, and Flax's ``ConvTranspose``
    kernel ``(*kernel, in, out)`` when groups == 1; the result is ``(N, *out, Co)``.
  - "NCHW": ``x`` is ``(N, Ci, *spatial)`` and ``w`` is torch's ``(Ci, Co/groups, *kernel)``;
    the result is ``(N, Co, *out)``.
Unbatched ``x`` (no N axis) and empty batches are accepted as in :mod:`cnnjax.ops.conv`, and an
int or a one-element tuple as stride, padding, output_padding or dilation means every dim.

Implementation: one stride-1 convolution of the input dilated by ``stride``, with the kernel
flipped and regrouped and padding ``dilation*(k-1) - padding`` (``+ output_padding`` on the high
side); jit-, grad- and vmap-safe. Off CPU that is ``lax.conv_general_dilated``'s
``lhs_dilation``; on CPU the dilation is explicit, since XLA:CPU's compiler aborts the process on
some input-dilated convolutions (:mod:`cnnjax.ops._dilated_input`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from cnnjax.ops import _checks
from cnnjax.ops._dilated_input import conv_dilated_input

__all__ = ["conv_transpose", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"]


def _pairs(op: str, padding: Any, r: int) -> tuple[tuple[int, int], ...]:
    if isinstance(padding, str):
        raise ValueError(
            f"{op}: padding must be an int, {r} ints or {r} (lo, hi) pairs (amounts cropped from"
            f" the full result, as in torch's conv_transpose), got {padding!r}"
        )
    return _checks.padding_pairs(op, padding, (1,) * r, (1,) * r, (1,) * r)


def _conv_transpose(
    op, x, w, b, stride, padding, output_padding, dilation, groups, layout, rank
) -> jax.Array:
    _checks.check_static(op, "padding", padding)
    first = _checks.channels_first(op, layout)
    x = _checks.as_real_array(op, "x", x)
    w = _checks.as_real_array(op, "w", w)
    w_kind = "(Ci, Co/groups, *kernel)" if first else "(*kernel, Ci, Co/groups)"
    if rank is None:
        if w.ndim < 3:
            raise ValueError(
                f"{op}: w must be {w_kind} with >= 1 kernel dim, got shape {tuple(w.shape)}"
            )
        rank = w.ndim - 2
    r = rank
    x_shape = tuple(x.shape)
    x, unbatched = _checks.batched_channels_last(op, "x", x, r, first)
    if w.ndim != r + 2:
        raise ValueError(
            f"{op}: w must be {r + 2}-D {w_kind} for a {r}-D transposed conv,"
            f" got shape {tuple(w.shape)}"
        )
    w_shape = tuple(w.shape)
    if first:  # torch's (Ci, Co/g, *kernel) -> (*kernel, Ci, Co/g)
        w = jnp.transpose(w, (*range(2, r + 2), 0, 1))
    _checks.check_nonempty_but_batch(op, "x", x)
    _checks.check_nonempty(op, "w", w)

    groups = _checks.positive_int(op, "groups", groups)
    ci, co_g = x.shape[-1], w.shape[-1]
    if ci % groups:
        raise ValueError(f"{op}: groups={groups} must divide the input channels ({ci})")
    if w.shape[-2] != ci:
        raise ValueError(
            f"{op}: w has {w.shape[-2]} input channels, expected Ci = {ci} (w shape {w_shape},"
            f" x shape {x_shape}; w is {w_kind})"
        )
    co = co_g * groups
    arrays = [x, w]
    if b is not None:
        b = _checks.as_real_array(op, "b", b)
        if b.shape != (co,):
            raise ValueError(
                f"{op}: b must have shape (Co,) = ({co},) (Co = groups * w's Co/groups),"
                f" got {tuple(b.shape)}"
            )
        arrays.append(b)

    strides = _checks.int_tuple(op, "stride", stride, r, minimum=1)
    dilations = _checks.int_tuple(op, "dilation", dilation, r, minimum=1)
    out_pads = _checks.int_tuple(op, "output_padding", output_padding, r, minimum=0)
    pads = _pairs(op, padding, r)
    if any(p >= s and p >= d for p, s, d in zip(out_pads, strides, dilations)):
        raise ValueError(
            f"{op}: output_padding must be smaller than stride or dilation in every dim,"
            f" got output_padding {out_pads}, stride {strides}, dilation {dilations}"
        )
    kernel = tuple(w.shape[:r])
    in_spatial = tuple(x.shape[1:-1])
    out = tuple(
        (n - 1) * s - lo - hi + d * (k - 1) + op_ + 1
        for n, s, (lo, hi), d, k, op_ in zip(in_spatial, strides, pads, dilations, kernel, out_pads)
    )
    if any(o < 1 for o in out):
        raise ValueError(
            f"{op}: the output size {out} must be >= 1 in every dim: (n - 1)*stride - padding"
            f" + dilation*(k - 1) + output_padding + 1 for input {in_spatial}, kernel {kernel},"
            f" stride {strides}, padding {pads}, dilation {dilations}, output_padding {out_pads}"
        )

    dtype = _checks.common_float_dtype(*arrays)
    x, w = x.astype(dtype), w.astype(dtype)
    if x.shape[0] == 0:
        y = jnp.zeros((0, *out, co), dtype)
    else:
        # (*k, Ci, Co/g) -> the forward conv's (*k, Ci/g, Co), group-major output channels,
        # spatially flipped.
        kg = w.reshape(*kernel, groups, ci // groups, co_g)
        kg = jnp.moveaxis(kg, r, r + 1).reshape(*kernel, ci // groups, co)
        kg = jnp.flip(kg, axis=tuple(range(r)))
        conv_pads = tuple(
            (d * (k - 1) - lo, d * (k - 1) - hi + op_)
            for d, k, (lo, hi), op_ in zip(dilations, kernel, pads, out_pads)
        )
        y = conv_dilated_input(x, kg, conv_pads, strides, dilations, groups)
    if b is not None:
        y = y + b.astype(dtype)
    return _checks.restore_layout(y, unbatched, first)


def conv_transpose(
    x,
    w,
    b=None,
    *,
    stride=1,
    padding=0,
    output_padding=0,
    dilation=1,
    groups: int = 1,
    layout: str = "NHWC",
) -> jax.Array:
    """N-d transposed convolution (PyTorch's ``conv_transpose{1,2,3}d``).

    ``full[n, *(p * stride + k * dilation), g*Co/G + o] += x[n, *p, c] * w[*k, c, o]`` for input
    channel c in group g (channels-last names, G = groups), then ``padding`` is cropped from both
    sides (``lo`` before, ``hi`` after) and ``output_padding`` zeros-or-sums are kept on the high
    side; ``b`` is added. It is the input-gradient of :func:`cnnjax.ops.conv` with the same
    hyper-parameters and the weight's two channel axes swapped.

    Args:
      x: (N, *spatial, Ci) or unbatched (*spatial, Ci); with layout="NCHW", (N, Ci, *spatial)
        or (Ci, *spatial). The spatial rank r is w.ndim - 2 >= 1.
      w: (*kernel, Ci, Co/groups); with layout="NCHW", torch's (Ci, Co/groups, *kernel).
      b: (Co,) bias, or None.
      stride: int, (int,) or r ints, each >= 1 (the upsampling factor).
      padding: int, (int,), r ints or r (lo, hi) pairs, each >= 0: cropped from the full result.
      output_padding: int, (int,) or r ints, >= 0 and smaller than stride or dilation in each dim.
      dilation: int, (int,) or r ints, each >= 1.
      groups: >= 1, dividing Ci.
      layout: "NHWC" (default) or "NCHW".

    Returns:
      (N, *out, Co) (channels first for "NCHW"; unbatched for unbatched x), with
      ``out = (n - 1)*stride - lo - hi + dilation*(k - 1) + output_padding + 1`` per dim, in the
      promoted dtype of x, w, b (integers become JAX's default float).

    Raises:
      TypeError: non-numeric arrays, non-int or traced hyper-parameters.
      ValueError: wrong ndim, empty channel/spatial axes or w, w's Ci not x's channels, groups
        not dividing Ci, bias not (Co,), stride/dilation < 1, negative or string padding,
        output_padding not below stride or dilation, an output size < 1, unknown layout.

    Example:
      >>> x, w = jnp.ones((2, 8, 8, 16)), jnp.ones((4, 4, 16, 8))
      >>> conv_transpose(x, w, stride=2, padding=1).shape  # upsample 8x8 -> 16x16
      (2, 16, 16, 8)
    """
    return _conv_transpose(
        "conv_transpose", x, w, b, stride, padding, output_padding, dilation, groups, layout, None
    )


def conv_transpose1d(
    x, w, b=None, *, stride=1, padding=0, output_padding=0, dilation=1, groups=1, layout="NHWC"
) -> jax.Array:
    """:func:`conv_transpose` for x (N, L, Ci), w (k, Ci, Co/groups); "NCHW": torch's (N, Ci, L),
    (Ci, Co/groups, k)."""
    return _conv_transpose(
        "conv_transpose1d", x, w, b, stride, padding, output_padding, dilation, groups, layout, 1
    )


def conv_transpose2d(
    x, w, b=None, *, stride=1, padding=0, output_padding=0, dilation=1, groups=1, layout="NHWC"
) -> jax.Array:
    """:func:`conv_transpose` for x (N, H, W, Ci), w (kh, kw, Ci, Co/groups); "NCHW": torch's
    (N, Ci, H, W), (Ci, Co/groups, kh, kw)."""
    return _conv_transpose(
        "conv_transpose2d", x, w, b, stride, padding, output_padding, dilation, groups, layout, 2
    )


def conv_transpose3d(
    x, w, b=None, *, stride=1, padding=0, output_padding=0, dilation=1, groups=1, layout="NHWC"
) -> jax.Array:
    """:func:`conv_transpose` for x (N, D, H, W, Ci), w (kd, kh, kw, Ci, Co/groups); "NCHW":
    torch's (N, Ci, D, H, W), (Ci, Co/groups, kd, kh, kw)."""
    return _conv_transpose(
        "conv_transpose3d", x, w, b, stride, padding, output_padding, dilation, groups, layout, 3
    )
