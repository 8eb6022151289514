"""Batched N-d convolution, the research API (D2L 6.3 padding and stride, 6.4 channels).

Numerics are PyTorch's ``torch.nn.functional.conv{1,2,3}d`` (and ``torch.nn.Conv*d``'s
``padding_mode``): cross-correlation, an int padding pads both sides, ``groups`` splits channels
into independent convolutions.

Layouts (``layout=``):
  - "NHWC" (JAX's, the default): ``x`` is channels-last ``(N, *spatial, Ci)``, ``w`` is
    ``(*kernel, Ci/groups, Co)`` (HWIO in 2-D), the result ``(N, *out, Co)``.
  - "NCHW" (PyTorch's): ``x`` is ``(N, Ci, *spatial)``, ``w`` is torch's ``(Co, Ci/groups,
    *kernel)`` (OIHW in 2-D), the result ``(N, Co, *out)``. Code written for
    ``torch.nn.functional`` runs unchanged in shape.
The names stand for every spatial rank (1-D: NLC / NCL, 3-D: NDHWC / NCDHW). As in PyTorch, an
unbatched ``x`` (one example, no N axis) is accepted and the result is unbatched too, and an
empty batch (N = 0) gives an empty result once every other argument has been validated. An int
or a one-element tuple (``2``, ``(2,)``) as stride, padding or dilation applies to every spatial
dim, as in torch.

Every argument is validated while tracing, so a bad one raises ``ValueError``/``TypeError`` before
XLA runs, under ``jit`` too; a hyper-parameter passed as a traced value (``jax.jit(conv2d)(x, w,
stride=2)``) gets an error showing how to make it static. All functions are jit-, grad- and
vmap-safe.

The ``impl`` argument picks how. Every choice computes the same convolution, though not bit for
bit: the Toeplitz GEMM adds the products in another order, so on finite inputs its outputs and
gradients differ from lax's by float rounding (float32 on CPU: within 1e-6 of ``conv(|x|,
|w|)`` per entry, measured up to 4e-7, i.e. ~5e-6 on LeNet conv1's outputs near 25; GPUs that
run float32 GEMMs or convs in TF32 may differ more):
  - "lax": ``jax.lax.conv_general_dilated``, any rank and ``groups``. On CPU a strided conv's
    input gradient is computed without lax's input dilation, which can abort XLA:CPU's compiler
    (:mod:`cnnjax.ops._dilated_input`): same values, and forward-mode derivatives in x cost a
    stride-1 conv there.
  - "toeplitz": 2-D only, ``groups == 1``: one block-Toeplitz GEMM
    (:mod:`cnnjax.ops.toeplitz`), faster on XLA:CPU and for small convs on GPU. Its structural
    zeros meet every input value of a row band, so a NaN/inf input spreads to more outputs than
    with "lax" (0 * inf = NaN): choose it explicitly only for finite data.
  - "auto" (default): "lax", except for a staged (jitted) 2-D conv where
    :func:`cnnjax.ops.toeplitz.use_toeplitz` says the Toeplitz GEMM wins; see :func:`conv` for
    how "auto" keeps lax's NaN/inf, and lax's exact values in eager calls.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_batching import custom_vmap
from jax.custom_derivatives import SymbolicZero

from cnnjax.ops import _checks, _dilated_input, toeplitz

__all__ = ["IMPLS", "PADDING_MODES", "conv", "conv1d", "conv2d", "conv3d"]

IMPLS = ("lax", "toeplitz")
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_NUMPY_PAD_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}

Padding = Any  # int | Sequence[int] | Sequence[tuple[int, int]] | str; see conv()


def _lax_conv(x, w, strides, pads, dilations, groups=1):
    # Not lax.conv_general_dilated itself: its input gradient can abort XLA:CPU's compiler.
    return _dilated_input.strided_conv(x, w, strides, pads, dilations, groups)


# --- "auto": the Toeplitz GEMM where it wins, with lax's results everywhere -------------------


@custom_vmap
def _all_finite(x, w):
    """One bool: every entry of x and w is finite."""
    return jnp.isfinite(x).all() & jnp.isfinite(w).all()


@_all_finite.def_vmap
def _all_finite_vmap(axis_size, in_batched, x, w):
    # Under vmap (a population of models, a batch of images), one answer for all members, so the
    # lax.cond below stays a branch instead of becoming a select that runs both convolutions.
    del axis_size, in_batched
    return jnp.isfinite(x).all() & jnp.isfinite(w).all(), False


def _guarded_toeplitz(x, w, strides, pads, dilations):
    """The Toeplitz GEMM when x and w are finite, else lax: NaN/inf propagate as with lax."""
    return lax.cond(
        _all_finite(x, w),
        functools.partial(
            toeplitz.toeplitz_conv2d, stride=strides, padding=pads, dilation=dilations
        ),
        functools.partial(_lax_conv, strides=strides, pads=pads, dilations=dilations),
        x,
        w,
    )


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5))
def _auto_conv2d(x, w, strides, pads, dilations, forward_toeplitz):
    # Called without differentiation: forward only, where lax often wins.
    if forward_toeplitz:
        return _guarded_toeplitz(x, w, strides, pads, dilations)
    return _lax_conv(x, w, strides, pads, dilations)


def _auto_conv2d_jvp(strides, pads, dilations, forward_toeplitz, primals, tangents):
    # Differentiated (grad, jvp): the Toeplitz GEMM for the output and both tangent terms, so
    # reverse mode transposes it into GEMMs. One cond holds all three: linearising it hands the
    # band matrix built for the output to the weight gradient as a residual, where a cond per
    # term would build it again in each branch (cond branches are not CSE'd with each other).
    del forward_toeplitz
    x, w = primals
    dx, dw = tangents
    # Symbolic zeros (e.g. x is the data batch: no input gradient) are dropped from the terms.
    dx = None if isinstance(dx, SymbolicZero) else dx
    dw = None if isinstance(dw, SymbolicZero) else dw
    toep = functools.partial(
        toeplitz.toeplitz_conv2d, stride=strides, padding=pads, dilation=dilations
    )

    def toeplitz_y_and_tangent(x, w, dx, dw):
        y = toep(x, w)
        terms = ([] if dx is None else [toep(dx, w)]) + ([] if dw is None else [toep(x, dw)])
        ty = functools.reduce(jnp.add, terms) if terms else jnp.zeros_like(y)
        return y, ty

    def lax_y_and_tangent(x, w, dx, dw):
        # Not _lax_conv on the tangents: transposed from there, it would be lax's own strided
        # conv, whose input gradient XLA:CPU can abort on (cnnjax.ops._dilated_input).
        return _dilated_input.conv_and_tangent(x, w, dx, dw, strides, pads, dilations, 1)

    return lax.cond(_all_finite(x, w), toeplitz_y_and_tangent, lax_y_and_tangent, x, w, dx, dw)


_auto_conv2d.defjvp(_auto_conv2d_jvp, symbolic_zeros=True)
# One compiled program per shape for calls that are not staged into an outer jit (e.g. an eager
# jax.grad); inside a jit it is inlined.
_auto_conv2d_jit = jax.jit(_auto_conv2d, static_argnums=(2, 3, 4, 5))


def _staged(*arrays) -> bool:
    """Whether any array is a tracer: the call is being traced (jit, grad, vmap), not eager."""
    return any(isinstance(a, jax.core.Tracer) for a in arrays)


# --- validation and dispatch -------------------------------------------------------------------


def _string_padding(op, padding, r, in_spatial, k_eff, strides, dilations, kernel):
    """(lo, hi) pairs for the string forms PyTorch and XLA name differently."""
    if padding == "causal":
        if r != 1:
            raise ValueError(
                f"{op}: padding='causal' is for 1-D convs (it left-pads the sequence by"
                f" dilation*(k-1)), got a {r}-D conv"
            )
        return ((dilations[0] * (kernel[0] - 1), 0),)
    if padding.upper() == "SAME" and padding != "SAME" and any(s != 1 for s in strides):
        raise ValueError(
            f"{op}: padding={padding!r} is PyTorch's 'same', which needs stride 1, got stride"
            f" {strides}; for XLA's rule (ceil(n / stride) outputs, extra padding after) pass"
            " padding='SAME'"
        )
    return _checks.padding_pairs(op, padding, in_spatial, k_eff, strides)


def _weight_hint(w_shape, r, first, groups, ci) -> str:
    """A sentence pointing at the other layout when ``w`` would fit there."""
    if not first and len(w_shape) == r + 2 and w_shape[1] * groups == ci:
        perm = (*range(2, r + 2), 1, 0)
        return (
            f"; w looks like a PyTorch (Co, Ci/groups, *kernel) weight: pass layout='NCHW'"
            f" (with x channels-first) or transpose it with w.transpose({perm})"
        )
    if first and len(w_shape) == r + 2 and w_shape[r] * groups == ci:
        return "; w looks like a JAX (*kernel, Ci/groups, Co) weight: pass layout='NHWC'"
    return ""


def _check_torch_weight_read_as_hwio(op, w_shape, b, r, groups, ci) -> None:
    """layout=None: refuse a torch (Co, Ci/g, k, k) weight that happens to fit HWIO shapes.

    Detectable when, read as PyTorch's weight, it is consistent (input channels, bias) with a
    square kernel k >= 2 and more output channels than k, while read as HWIO its kernel is not
    square (e.g. (64, 3, 3, 3) on RGB input reads as a 64x3 kernel with 3 -> 3 channels). A
    (3, 3, 3, 3) weight stays ambiguous, and so does every 1-D weight.
    """
    if r < 2 or w_shape[1] * groups != ci or (b is not None and b.shape != (w_shape[0],)):
        return
    hwio_kernel, torch_kernel = w_shape[:r], w_shape[2:]
    k = torch_kernel[0]
    if len(set(torch_kernel)) == 1 and k >= 2 and w_shape[0] > k and len(set(hwio_kernel)) > 1:
        perm = (*range(2, r + 2), 1, 0)
        raise ValueError(
            f"{op}: w {tuple(w_shape)} reads as a {hwio_kernel} HWIO kernel with"
            f" {w_shape[r]} -> {w_shape[r + 1]} channels, but looks like a PyTorch"
            f" (Co, Ci/groups, *kernel) weight ({w_shape[1] * groups} -> {w_shape[0]} channels,"
            f" {torch_kernel} kernel). Pass layout='NCHW' (with x channels-first) or transpose it"
            f" with w.transpose({perm}); if you do mean that HWIO kernel, pass layout='NHWC'"
        )


def _conv(
    op, x, w, b, stride, padding, dilation, groups, padding_mode, layout, impl, rank
) -> jax.Array:
    """Validates everything, normalises the hyper-parameters, then dispatches to ``impl``."""
    for name, value in (("impl", impl), ("padding_mode", padding_mode), ("padding", padding)):
        _checks.check_static(op, name, value)
    if impl != "auto" and impl not in IMPLS:
        raise ValueError(f"{op}: impl must be 'auto' or one of {IMPLS}, got {impl!r}")
    _checks.check_choice(op, "padding_mode", padding_mode, PADDING_MODES)
    guard_torch_weight = layout is None
    first = _checks.channels_first(op, "NHWC" if layout is None else layout)
    x = _checks.as_real_array(op, "x", x)
    w = _checks.as_real_array(op, "w", w)
    if rank is None:  # conv(): the spatial rank comes from the weight
        if w.ndim < 3:
            raise ValueError(
                f"{op}: w must be (*kernel, Ci/groups, Co) (or torch's (Co, Ci/groups, *kernel)"
                f" with layout='NCHW') with >= 1 kernel dim, got shape {tuple(w.shape)}"
            )
        rank = w.ndim - 2
    r = rank
    x_shape = tuple(x.shape)
    x, unbatched = _checks.batched_channels_last(op, "x", x, r, first)
    w_kind = "(Co, Ci/groups, *kernel)" if first else "(*kernel, Ci/groups, Co)"
    if w.ndim != r + 2:
        raise ValueError(
            f"{op}: w must be {r + 2}-D {w_kind} for a {r}-D conv, got shape {tuple(w.shape)}"
        )
    w_shape = tuple(w.shape)
    if first:  # torch's (Co, Ci/g, *kernel) -> (*kernel, Ci/g, Co)
        w = jnp.transpose(w, (*range(2, r + 2), 1, 0))
    _checks.check_nonempty_but_batch(op, "x", x)
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
            f" = {ci // groups} (w shape {w_shape}, x shape {x_shape})"
            + _weight_hint(w_shape, r, first, groups, ci)
        )
    arrays = [x, w]
    if b is not None:
        b = _checks.as_real_array(op, "b", b)
        if b.shape != (co,):
            raise ValueError(f"{op}: b must have shape (Co,) = ({co},), got {tuple(b.shape)}")
        arrays.append(b)
    if guard_torch_weight:
        _check_torch_weight_read_as_hwio(op, w_shape, b, r, groups, ci)

    strides = _checks.int_tuple(op, "stride", stride, r, minimum=1)
    dilations = _checks.int_tuple(op, "dilation", dilation, r, minimum=1)
    kernel = tuple(w.shape[:r])
    k_eff = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilations))
    in_spatial = tuple(x.shape[1:-1])
    if isinstance(padding, str):
        pads = _string_padding(op, padding, r, in_spatial, k_eff, strides, dilations, kernel)
    else:
        pads = _checks.padding_pairs(op, padding, in_spatial, k_eff, strides)
    _check_padding_mode(op, padding_mode, pads, in_spatial)
    _checks.check_window_fits(op, "dilated kernel", in_spatial, k_eff, pads)

    if impl == "toeplitz" and (r != 2 or groups != 1):
        raise ValueError(
            f"{op}: impl='toeplitz' needs a 2-D conv with groups=1, got {r}-D with groups={groups};"
            " use impl='lax'"
        )
    dtype = _checks.common_float_dtype(*arrays)
    x, w = x.astype(dtype), w.astype(dtype)

    if x.shape[0] == 0:  # empty batch, everything else valid: an empty result of the right shape
        out = tuple(
            _checks.output_size(n, k, s, p) for n, k, s, p in zip(in_spatial, k_eff, strides, pads)
        )
        y = jnp.zeros((0, *out, co), dtype)
    else:
        if padding_mode != "zeros":
            x = jnp.pad(x, ((0, 0), *pads, (0, 0)), mode=_NUMPY_PAD_MODE[padding_mode])
            pads = ((0, 0),) * r
        y = _dispatch(x, w, strides, pads, dilations, groups, impl)
    if b is not None:
        y = y + b.astype(dtype)
    return _checks.restore_layout(y, unbatched, first)


def _check_padding_mode(op, padding_mode, pads, in_spatial) -> None:
    """PyTorch's limits: reflect padding < the input size, circular padding <= it."""
    if padding_mode == "reflect" and any(max(p) >= n for p, n in zip(pads, in_spatial)):
        raise ValueError(
            f"{op}: padding_mode='reflect' needs padding < the input size in every dim,"
            f" got padding {pads} for input {in_spatial}"
        )
    if padding_mode == "circular" and any(max(p) > n for p, n in zip(pads, in_spatial)):
        raise ValueError(
            f"{op}: padding_mode='circular' needs padding <= the input size in every dim"
            f" (it wraps around once), got padding {pads} for input {in_spatial}"
        )


def _dispatch(x, w, strides, pads, dilations, groups, impl) -> jax.Array:
    r = x.ndim - 2
    if impl == "toeplitz":
        return toeplitz.toeplitz_conv2d(x, w, stride=strides, padding=pads, dilation=dilations)
    if impl == "auto" and r == 2 and groups == 1 and _staged(x, w):
        backend = jax.default_backend()
        args = (tuple(x.shape), tuple(w.shape))
        kw = dict(stride=strides, padding=pads, dilation=dilations)
        if toeplitz.use_toeplitz(*args, **kw, groups=groups, backend=backend):
            forward = toeplitz.use_toeplitz_forward(*args, **kw, backend=backend)
            return _auto_conv2d_jit(x, w, strides, pads, dilations, forward)
    return _lax_conv(x, w, strides, pads, dilations, groups)


def conv(
    x,
    w,
    b=None,
    *,
    stride=1,
    padding: Padding = 0,
    dilation=1,
    groups: int = 1,
    padding_mode: str = "zeros",
    layout: str | None = None,
    impl: str = "auto",
) -> jax.Array:
    """N-d cross-correlation with stride, padding, dilation and channel groups.

    ``y[n, *p, o] = b[o] + sum_{k, c} xpad[n, *(p * stride + k * dilation), g*Ci/G + c]
    * w[*k, c, o]`` for output channel o in group g (channels-last names; G = groups).

    Args:
      x: (N, *spatial, Ci), or (*spatial, Ci) for one example; with layout="NCHW",
        (N, Ci, *spatial) or (Ci, *spatial). The spatial rank r is w.ndim - 2 >= 1.
      w: (*kernel, Ci/groups, Co); with layout="NCHW", (Co, Ci/groups, *kernel).
      b: (Co,) bias, or None.
      stride: int, (int,) or r ints, each >= 1.
      padding: an int or (int,) (both sides of every dim), r ints (both sides, per dim), r
        (lo, hi) pairs, or a string: "valid"/"VALID" (no padding); "same" (PyTorch's: output
        size = input size, extra padding after; stride must be 1); "SAME" (XLA's: ceil(n /
        stride) outputs, extra padding after, any stride); "causal" (1-D only: dilation*(k-1)
        on the left, so output t sees inputs <= t).
      dilation: int, (int,) or r ints, each >= 1 (kernel taps ``dilation`` apart).
      groups: >= 1, dividing Ci and Co: channel group g of x meets only output channels of
        group g (groups == Ci is a depthwise conv).
      padding_mode: what the padding holds, PyTorch's ``Conv*d(padding_mode=...)``: "zeros"
        (default), "reflect" (mirror without the edge; padding < input size), "replicate" (the
        edge value), "circular" (wrap around; padding <= input size).
      layout: "NHWC" or "NCHW", see the module docstring. The default None is "NHWC" plus a
        guard: a weight that fits HWIO shapes but reads as a PyTorch (Co, Ci/g, k, k) weight
        with a non-square HWIO kernel (e.g. (64, 3, 3, 3) on 3 channels) raises; pass "NHWC"
        explicitly to mean the HWIO reading.
      impl: "auto", "lax" or "toeplitz" (2-D, groups == 1); see the module docstring.

    Returns:
      (N, *out, Co) (or (N, Co, *out) for "NCHW"; no N axis for unbatched x) with
      ``out = floor((n + lo + hi - dilation*(k-1) - 1) / stride) + 1`` per dim, in the promoted
      dtype of x, w, b (integers become JAX's default float). N = 0 gives an empty result.

    Raises:
      TypeError: non-numeric arrays, non-int or traced hyper-parameters.
      ValueError: wrong ndim, empty channel/spatial axes or w, channel mismatch (with a hint when
        the weight fits the other layout), groups not dividing channels, bias not (Co,),
        stride/dilation < 1, negative or malformed padding, "same" with stride > 1, "causal"
        outside 1-D, padding beyond what padding_mode allows, dilated kernel larger than the
        padded input, unknown impl/layout/padding_mode, impl="toeplitz" where it does not apply.

    "auto" changes speed, and results only by float rounding: eager (untraced) calls use lax
    and give its values bit for bit; a traced 2-D conv that
    :func:`~cnnjax.ops.toeplitz.use_toeplitz` picks runs the Toeplitz GEMM only when x and w
    are all finite (one ``lax.cond``; under ``vmap`` one test for all members), else lax, so
    NaN and inf land on exactly the outputs (and gradient entries) they land on with lax, and
    finite values agree with lax's to rounding (see the module docstring for how close); when
    the conv is not differentiated, it uses the Toeplitz GEMM only where
    :func:`~cnnjax.ops.toeplitz.use_toeplitz_forward` says it wins forward.

    Example:
      >>> x, w = jnp.ones((8, 32, 32, 3)), jnp.ones((3, 3, 3, 16))
      >>> conv(x, w, stride=2, padding=1).shape
      (8, 16, 16, 16)
    """
    return _conv(
        "conv", x, w, b, stride, padding, dilation, groups, padding_mode, layout, impl, None
    )


def conv1d(
    x,
    w,
    b=None,
    *,
    stride=1,
    padding: Padding = 0,
    dilation=1,
    groups: int = 1,
    padding_mode: str = "zeros",
    layout: str | None = None,
    impl: str = "auto",
) -> jax.Array:
    """:func:`conv` for x (N, L, Ci) and w (k, Ci/groups, Co): sequences (audio, text).

    With layout="NCHW": x (N, Ci, L), w (Co, Ci/groups, k), as ``torch.nn.functional.conv1d``.
    ``padding="causal"`` left-pads by dilation*(k-1) (WaveNet, TCNs).
    """
    return _conv(
        "conv1d", x, w, b, stride, padding, dilation, groups, padding_mode, layout, impl, 1
    )


def conv2d(
    x,
    w,
    b=None,
    *,
    stride=1,
    padding: Padding = 0,
    dilation=1,
    groups: int = 1,
    padding_mode: str = "zeros",
    layout: str | None = None,
    impl: str = "auto",
) -> jax.Array:
    """:func:`conv` for x (N, H, W, Ci) NHWC and w (kh, kw, Ci/groups, Co) HWIO: images.

    Equals ``torch.nn.functional.conv2d`` on the NCHW/OIHW transposes, or on the arrays
    themselves with layout="NCHW". ``padding`` may be an int, (ph, pw), ((top, bottom),
    (left, right)), "valid", "same" (stride 1) or "SAME"/"VALID" (XLA's).

    Example:
      >>> x, w = jnp.ones((2, 3, 28, 28)), jnp.ones((6, 3, 5, 5))  # torch's NCHW / OIHW
      >>> conv2d(x, w, padding=2, layout="NCHW").shape
      (2, 6, 28, 28)
    """
    return _conv(
        "conv2d", x, w, b, stride, padding, dilation, groups, padding_mode, layout, impl, 2
    )


def conv3d(
    x,
    w,
    b=None,
    *,
    stride=1,
    padding: Padding = 0,
    dilation=1,
    groups: int = 1,
    padding_mode: str = "zeros",
    layout: str | None = None,
    impl: str = "auto",
) -> jax.Array:
    """:func:`conv` for x (N, D, H, W, Ci) and w (kd, kh, kw, Ci/groups, Co): video, volumes.

    With layout="NCHW": x (N, Ci, D, H, W), w (Co, Ci/groups, kd, kh, kw), as torch's conv3d.
    """
    return _conv(
        "conv3d", x, w, b, stride, padding, dilation, groups, padding_mode, layout, impl, 3
    )
