"""Shape, receptive-field and cost formulas (D2L 6.3, 6.2.6, exercise 6.4.5.2) as code.

Pure Python over ints: usable for model summaries and planning without tracing anything.
Hyper-parameters take the same forms as the ops (an int, one int per spatial dim, (lo, hi) pairs,
"SAME"/"VALID") and are validated the same way.

Output size per spatial dim, with effective kernel ``d*(k-1) + 1``::

    out = floor((n + p_lo + p_hi - d*(k-1) - 1) / s) + 1
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax.numpy as jnp

from cnnjax.ops import _checks

__all__ = [
    "conv_output_shape",
    "pool_output_shape",
    "ReceptiveField",
    "receptive_field",
    "ConvCost",
    "conv_cost",
    "PoolCost",
    "pool_cost",
]


def _spatial(op: str, in_shape: Any) -> tuple[int, ...]:
    if isinstance(in_shape, Sequence) and not isinstance(in_shape, str) and len(in_shape) == 0:
        raise ValueError(f"{op}: in_shape must hold at least one spatial size, got {in_shape!r}")
    rank = len(in_shape) if isinstance(in_shape, Sequence) and not isinstance(in_shape, str) else 1
    return _checks.int_tuple(op, "in_shape", in_shape, rank, minimum=1)


def _output_shape(
    op, in_shape, kernel, stride, padding, dilation, what
) -> tuple[tuple[int, ...], tuple]:
    n = _spatial(op, in_shape)
    r = len(n)
    k = _checks.int_tuple(op, what, kernel, r, minimum=1)
    s = _checks.int_tuple(op, "stride", stride, r, minimum=1)
    d = _checks.int_tuple(op, "dilation", dilation, r, minimum=1)
    k_eff = tuple(di * (ki - 1) + 1 for ki, di in zip(k, d))
    pads = _checks.padding_pairs(op, padding, n, k_eff, s)
    _checks.check_window_fits(op, what, n, k_eff, pads)
    return tuple(_checks.output_size(*a) for a in zip(n, k_eff, s, pads)), pads


def conv_output_shape(in_shape, kernel, stride=1, padding=0, dilation=1) -> tuple[int, ...]:
    """Spatial output shape of :func:`cnnjax.ops.conv` (D2L 6.3).

    Args:
      in_shape: spatial input sizes, e.g. (H, W); an int means 1-D.
      kernel, stride, dilation: an int or one int per spatial dim (kernel, stride, dilation >= 1).
      padding: an int, one int per dim, (lo, hi) pairs, or "SAME"/"VALID".

    Returns:
      One output size per dim: ``floor((n + lo + hi - d*(k-1) - 1) / s) + 1``.

    Raises:
      TypeError / ValueError: as :func:`cnnjax.ops.conv` for the same hyper-parameters, including
      a dilated kernel larger than the padded input.
    """
    return _output_shape(
        "conv_output_shape", in_shape, kernel, stride, padding, dilation, "kernel"
    )[0]


def pool_output_shape(
    in_shape, window, stride=None, padding=0, dilation=1, ceil_mode: bool = False
) -> tuple[int, ...]:
    """Spatial output shape of :func:`cnnjax.ops.max_pool` / ``avg_pool`` (torch's rule).

    Arguments as :func:`conv_output_shape`, with ``window`` for the kernel; ``stride=None``
    means ``window``. ``ceil_mode`` rounds up instead of down, dropping a last window that would
    start past the input and the left padding (``(out - 1) * stride >= n + lo``).

    Example: ``pool_output_shape((5, 5), 2, ceil_mode=True) == (3, 3)``.
    """
    op = "pool_output_shape"
    if not isinstance(ceil_mode, bool):
        raise TypeError(f"{op}: ceil_mode must be a bool, got {ceil_mode!r}")
    stride = window if stride is None else stride
    if not ceil_mode:
        return _output_shape(op, in_shape, window, stride, padding, dilation, "window")[0]
    n = _spatial(op, in_shape)
    r = len(n)
    k = _checks.int_tuple(op, "window", window, r, minimum=1)
    s = _checks.int_tuple(op, "stride", stride, r, minimum=1)
    d = _checks.int_tuple(op, "dilation", dilation, r, minimum=1)
    k_eff = tuple(di * (ki - 1) + 1 for ki, di in zip(k, d))
    pads = _checks.padding_pairs(op, padding, n, k_eff, s)
    out = tuple(_checks.pool_output_size(*a, True) for a in zip(n, k_eff, s, pads))
    if any(o < 1 for o in out):
        raise ValueError(f"{op}: window {k_eff} (dilated) leaves no output for input {n}")
    return out


class ReceptiveField(NamedTuple):
    """What one output element of a layer stack sees, per spatial dim, in input pixels.

    Attributes:
      size: side of the input region that can influence one output element.
      jump: distance in input pixels between neighbouring output elements (product of strides).
      start: input coordinate where output element 0's region begins (negative when it reaches
        into padding).
    """

    size: tuple[int, ...]
    jump: tuple[int, ...]
    start: tuple[int, ...]


def _layer_params(i: int, layer: Any) -> tuple[Any, Any, Any, Any]:
    if isinstance(layer, Mapping):
        unknown = set(layer) - {"kernel", "stride", "dilation", "padding"}
        if "kernel" not in layer or unknown:
            raise ValueError(
                f"receptive_field: layers[{i}] must have key 'kernel' and optionally 'stride',"
                f" 'dilation', 'padding', got keys {sorted(layer)}"
            )
        return (
            layer["kernel"],
            layer.get("stride", 1),
            layer.get("dilation", 1),
            layer.get("padding", 0),
        )
    if isinstance(layer, Sequence) and not isinstance(layer, str) and len(layer) in (2, 3):
        return layer[0], layer[1], layer[2] if len(layer) == 3 else 1, 0
    raise ValueError(
        f"receptive_field: layers[{i}] must be (kernel, stride[, dilation]) or a dict,"
        f" got {layer!r}"
    )


def receptive_field(layers: Sequence[Any], ndim: int | None = None) -> ReceptiveField:
    """Receptive field of a stack of conv/pool layers, first layer first (D2L 6.2.6).

    Each layer is ``(kernel, stride)``, ``(kernel, stride, dilation)`` or a dict with key
    ``kernel`` and optional ``stride``, ``dilation``, ``padding`` (defaults 1, 1, 0); every value an
    int or one entry per spatial dim (padding also (lo, hi) pairs). Going up the stack with
    effective kernel ``k' = d*(k-1) + 1``::

        size  += (k' - 1) * jump
        start -= p_lo * jump
        jump  *= s

    starting from size 1, jump 1, start 0 at the input.

    Args:
      layers: the stack, possibly empty (the input itself: size 1).
      ndim: spatial rank; None infers it from per-dim entries, or 2 (images) if all are ints.

    Returns:
      :class:`ReceptiveField` of per-dim tuples.

    Raises:
      TypeError: non-int entries.
      ValueError: malformed layer, per-dim entries of inconsistent length, kernel/stride/dilation
        < 1 or negative padding.
    """
    op = "receptive_field"
    if isinstance(layers, (str, Mapping)) or not isinstance(layers, Sequence):
        raise TypeError(f"{op}: layers must be a sequence of layers, got {type(layers).__name__}")
    params = [_layer_params(i, layer) for i, layer in enumerate(layers)]
    if ndim is None:
        lengths = {
            len(v)
            for p in params
            for v in p[:3]
            if isinstance(v, Sequence) and not isinstance(v, str)
        }
        lengths |= {
            len(p[3]) for p in params if isinstance(p[3], Sequence) and not isinstance(p[3], str)
        }
        if len(lengths) > 1:
            raise ValueError(
                f"{op}: per-dim entries disagree on the spatial rank: lengths {sorted(lengths)}"
            )
        ndim = lengths.pop() if lengths else 2
    size, jump, start = [1] * ndim, [1] * ndim, [0] * ndim
    for kernel, stride, dilation, padding in params:
        k = _checks.int_tuple(op, "kernel", kernel, ndim, minimum=1)
        s = _checks.int_tuple(op, "stride", stride, ndim, minimum=1)
        d = _checks.int_tuple(op, "dilation", dilation, ndim, minimum=1)
        if isinstance(padding, str):
            raise ValueError(f"{op}: padding must be ints or (lo, hi) pairs, got {padding!r}")
        pads = _checks.padding_pairs(op, padding, [1] * ndim, k, s)
        for a in range(ndim):
            size[a] += d[a] * (k[a] - 1) * jump[a]
            start[a] -= pads[a][0] * jump[a]
            jump[a] *= s[a]
    return ReceptiveField(tuple(size), tuple(jump), tuple(start))


class ConvCost(NamedTuple):
    """Work and memory of one convolution layer over a batch (see :func:`conv_cost`)."""

    output_shape: tuple[int, ...]
    forward_macs: int
    backward_input_macs: int
    backward_weight_macs: int
    backward_macs: int
    params: int
    activation_bytes: int
    input_bytes: int


def _itemsize(op: str, dtype: Any) -> int:
    try:
        return jnp.dtype(dtype).itemsize
    except TypeError as e:
        raise TypeError(f"{op}: dtype must be a dtype such as 'float32', got {dtype!r}") from e


def conv_cost(
    in_shape,
    in_channels: int,
    out_channels: int,
    kernel,
    *,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    batch_size: int = 1,
    bias: bool = True,
    dtype: Any = "float32",
) -> ConvCost:
    """Multiply-adds, parameters and memory of a conv layer, forward and backward (ex. 6.4.5.2).

    With batch B, output positions P = prod(output_shape), kernel taps K = prod(kernel),
    input channels per group Cg = in_channels / groups and Co = out_channels:

      - forward_macs = B * P * Co * Cg * K: each output element is a dot product of length Cg*K.
      - backward_input_macs = B * P * Co * Cg * K: the gradient w.r.t. the input is the transposed
        convolution, the same products in the other direction (only nonzero products are
        counted; strided ones skip the zeros a dilated implementation would multiply).
      - backward_weight_macs = B * P * Co * Cg * K: each weight gradient sums its products over
        every output position and example.
      - backward_macs = the sum of the two (the first layer of a network may skip the input part).
      - params = K * Cg * Co (+ Co with bias). Bias adds (B * P * Co, forward and backward) are
        not multiply-adds and are not counted.
      - activation_bytes = B * P * Co * itemsize: the output, kept for the next layer's backward.
      - input_bytes = B * prod(in_shape) * in_channels * itemsize: the input, which the backward
        pass must keep to form the weight gradient.

    Args:
      in_shape: spatial input sizes, e.g. (H, W).
      in_channels, out_channels: channel counts, each divisible by ``groups``.
      kernel, stride, padding, dilation: as :func:`cnnjax.ops.conv`.
      groups: channel groups.
      batch_size: examples per batch B >= 1.
      bias: whether the layer has a bias.
      dtype: element type of activations and parameters (its itemsize sizes the memory).

    Returns:
      :class:`ConvCost`.

    Raises:
      TypeError / ValueError: malformed or inconsistent arguments, as the ops raise them.
    """
    op = "conv_cost"
    out_shape, _ = _output_shape(op, in_shape, kernel, stride, padding, dilation, "kernel")
    ci = _checks.positive_int(op, "in_channels", in_channels)
    co = _checks.positive_int(op, "out_channels", out_channels)
    g = _checks.positive_int(op, "groups", groups)
    b = _checks.positive_int(op, "batch_size", batch_size)
    if ci % g or co % g:
        raise ValueError(f"{op}: groups={g} must divide in_channels ({ci}) and out_channels ({co})")
    item = _itemsize(op, dtype)
    taps = math.prod(_checks.int_tuple(op, "kernel", kernel, len(out_shape), minimum=1))
    positions = math.prod(out_shape)
    macs = b * positions * co * (ci // g) * taps
    return ConvCost(
        output_shape=out_shape,
        forward_macs=macs,
        backward_input_macs=macs,
        backward_weight_macs=macs,
        backward_macs=2 * macs,
        params=taps * (ci // g) * co + (co if bias else 0),
        activation_bytes=b * positions * co * item,
        input_bytes=b * math.prod(_spatial(op, in_shape)) * ci * item,
    )


class PoolCost(NamedTuple):
    """Work and memory of one pooling layer over a batch (see :func:`pool_cost`)."""

    output_shape: tuple[int, ...]
    forward_ops: int
    backward_ops: int
    params: int
    activation_bytes: int
    input_bytes: int


def pool_cost(
    in_shape,
    channels: int,
    window,
    *,
    stride=None,
    padding=0,
    batch_size: int = 1,
    dtype: Any = "float32",
) -> PoolCost:
    """Operations and memory of a pooling layer, the analogue of :func:`conv_cost`.

    With B, P = prod(output_shape), K = prod(window), C channels:

      - forward_ops = B * P * C * K: one comparison (max) or addition (average) per window element
        (the average's final division per output, B * P * C, is not counted).
      - backward_ops = B * P * C * K: max routes each output gradient to its window's argmax
        (a comparison per element), average spreads it over the window (an add per element).
      - params = 0.
      - activation_bytes = B * P * C * itemsize; input_bytes = B * prod(in_shape) * C * itemsize
        (max pooling's backward needs the input or the argmax).

    Args:
      in_shape, window, stride, padding: as :func:`pool_output_shape`.
      channels: C >= 1.
      batch_size: B >= 1.
      dtype: element type (its itemsize sizes the memory).

    Returns:
      :class:`PoolCost`.
    """
    op = "pool_cost"
    stride = window if stride is None else stride
    out_shape, _ = _output_shape(op, in_shape, window, stride, padding, 1, "window")
    c = _checks.positive_int(op, "channels", channels)
    b = _checks.positive_int(op, "batch_size", batch_size)
    item = _itemsize(op, dtype)
    taps = math.prod(_checks.int_tuple(op, "window", window, len(out_shape), minimum=1))
    positions = math.prod(out_shape)
    ops = b * positions * c * taps
    return PoolCost(
        output_shape=out_shape,
        forward_ops=ops,
        backward_ops=ops,
        params=0,
        activation_bytes=b * positions * c * item,
        input_bytes=b * math.prod(_spatial(op, in_shape)) * c * item,
    )
