"""Convolutions whose input is dilated, in a form XLA:CPU compiles without aborting.

XLA:CPU (jaxlib 0.10.2 and 0.12.0.1 measured) aborts the whole process, with a failed CHECK in
the algebraic simplifier's convolution operand swap ("Window dimensions do not match RHS
shape"), while compiling some convolutions that dilate their input (``lhs_dilation``) when the
input is small next to the kernel. JAX emits such convolutions for a transposed convolution and,
through ``lax.conv_general_dilated``'s transpose rule (the cotangent dilated by the stride), for
the input gradient of every strided convolution. A Python exception could be caught; an abort
cannot, so the ops must never hand XLA:CPU that form.

On CPU this module dilates the input explicitly instead, with ``lax.pad``'s interior padding,
and convolves the result at stride 1 with no ``lhs_dilation``: the same numbers, since the
zeros it inserts are the ones ``lhs_dilation`` means. An optimisation barrier separates the pad
from the convolution, because the same simplifier otherwise folds an interior pad that feeds a
convolution back into its input dilation, and then aborts on it as before.

Other backends keep lax's native form, which their convolution libraries run without
materialising the zeros. The choice is made by :func:`jax.lax.platform_dependent` when the
program is lowered, not by ``jax.default_backend()`` while tracing: a program traced on one
platform and compiled for another (``jit(...).lower(...)`` for an explicit device, export) still
gets the form its compiler needs, and no compiler sees the other platform's branch.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

Pads = tuple[tuple[int, int], ...]


def dimension_numbers(rank: int) -> lax.ConvDimensionNumbers:
    """Channels-last input/output and (*kernel, I, O) weights, for any spatial rank."""
    spatial = tuple(range(1, rank + 1))
    return lax.ConvDimensionNumbers(
        lhs_spec=(0, rank + 1) + spatial,
        rhs_spec=(rank + 1, rank) + tuple(range(rank)),
        out_spec=(0, rank + 1) + spatial,
    )


def _lax_conv(x, w, strides, pads, lhs_dilation, rhs_dilation, groups) -> jax.Array:
    return lax.conv_general_dilated(
        x,
        w,
        window_strides=strides,
        padding=pads,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers(x.ndim - 2),
        feature_group_count=groups,
    )


def _dilate_and_pad(x, factors, pads) -> jax.Array:
    """(N, *spatial, C) ``x`` with ``factor - 1`` zeros between neighbours, then ``pads`` added.

    A negative pad crops, as a negative convolution padding does.
    """
    config = [(0, 0, 0), *((lo, hi, f - 1) for f, (lo, hi) in zip(factors, pads)), (0, 0, 0)]
    return lax.pad(x, jnp.zeros((), x.dtype), config)


def conv_dilated_input(x, w, pads: Pads, lhs_dilation, rhs_dilation, groups: int) -> jax.Array:
    """Stride-1 convolution of ``x`` dilated by ``lhs_dilation``: what a transposed conv computes.

    Equals ``lax.conv_general_dilated(x, w, 1, pads, lhs_dilation, rhs_dilation, ...)`` with
    channels-last ``x`` (N, *spatial, Ci) and ``w`` (*kernel, Ci/groups, Co); ``pads`` may be
    negative. Differentiable, batchable; on CPU, no convolution in it or in its first
    derivatives dilates its input (a second derivative in x, with ``rhs_dilation > 1``, may).
    """
    r = x.ndim - 2
    ones = (1,) * r
    if all(f == 1 for f in lhs_dilation):
        return _lax_conv(x, w, ones, pads, ones, rhs_dilation, groups)

    def explicit(x, w):
        x = lax.optimization_barrier(_dilate_and_pad(x, lhs_dilation, pads))
        return _lax_conv(x, w, ones, ((0, 0),) * r, ones, rhs_dilation, groups)

    def native(x, w):
        return _lax_conv(x, w, ones, pads, lhs_dilation, rhs_dilation, groups)

    return lax.platform_dependent(x, w, cpu=explicit, default=native)


def strided_conv(x, w, strides, pads: Pads, rhs_dilation, groups: int) -> jax.Array:
    """``lax.conv_general_dilated`` with strides, whose input gradient XLA:CPU can compile.

    Same forward values and program as lax's; only differentiation changes, and only on CPU:
    the tangent in ``x`` is a stride-1 convolution subsampled by the stride, which reverse
    mode transposes into interior padding (the explicit dilation) and a stride-1 convolution.
    Forward-mode derivatives in ``x`` on CPU therefore cost the stride-1 convolution (about
    ``prod(strides)`` times the strided one's work); reverse mode costs what lax's does.

    Second derivatives work, built by lax's rules from the convolutions above; those dilate an
    input only by the kernel dilation (never by the stride), so a second derivative of a conv
    with ``rhs_dilation > 1`` is not covered by this workaround. ``jax.linear_transpose`` of the
    conv transposes lax's strided convolution itself and is not covered either.
    """
    if all(s == 1 for s in strides):  # lax's transpose dilates only by the stride
        r = x.ndim - 2
        return _lax_conv(x, w, strides, pads, (1,) * r, rhs_dilation, groups)
    return _strided_conv(x, w, tuple(strides), tuple(pads), tuple(rhs_dilation), groups)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5))
def _strided_conv(x, w, strides, pads, rhs_dilation, groups):
    return _lax_conv(x, w, strides, pads, (1,) * (x.ndim - 2), rhs_dilation, groups)


def _subsampled_conv(strides, pads, rhs_dilation, groups, dx, w):
    """The strided conv as a stride-1 conv then a strided slice: transposes without lhs_dilation."""
    r = dx.ndim - 2
    ones = (1,) * r
    full = lax.optimization_barrier(_lax_conv(dx, w, ones, pads, ones, rhs_dilation, groups))
    return lax.slice(full, (0,) * full.ndim, full.shape, (1, *strides, 1))


def conv_and_tangent(x, w, dx, dw, strides, pads: Pads, rhs_dilation, groups: int):
    """:func:`strided_conv` and its tangent, for a JVP rule that calls the conv on tangents.

    A custom JVP rule of an outer op (conv's "auto") cannot call :func:`strided_conv` on its
    tangents: JAX transposes a ``custom_jvp`` function met on tangents through its forward
    body, lax's strided convolution, not through its rule. This builds the tangent as the rule
    does. ``dx`` or ``dw`` may be None (a zero tangent: its term is skipped).

    Returns:
      (y, ty): the convolution of x and w, and its derivative in the direction (dx, dw).
    """
    strides, pads, rhs_dilation = tuple(strides), tuple(pads), tuple(rhs_dilation)
    r = x.ndim - 2
    conv = functools.partial(
        strided_conv, strides=strides, pads=pads, rhs_dilation=rhs_dilation, groups=groups
    )
    y = conv(x, w)
    terms = []
    if dx is not None:
        native = functools.partial(
            _lax_conv, strides=strides, pads=pads, lhs_dilation=(1,) * r,
            rhs_dilation=rhs_dilation, groups=groups,
        )  # fmt: skip
        if all(s == 1 for s in strides):
            terms.append(native(dx, w))
        else:
            on_cpu = functools.partial(_subsampled_conv, strides, pads, rhs_dilation, groups)
            terms.append(lax.platform_dependent(dx, w, cpu=on_cpu, default=native))
    if dw is not None:
        # lax transposes this term in w with the stride as rhs_dilation: no input dilation.
        terms.append(conv(x, dw))
    ty = functools.reduce(jnp.add, terms) if terms else jnp.zeros_like(y)
    return y, ty


def _strided_conv_jvp(strides, pads, rhs_dilation, groups, primals, tangents):
    # Symbolic zeros (x is a data batch, or w is frozen) skip their term: no work is staged.
    dx, dw = (None if isinstance(t, SymbolicZero) else t for t in tangents)
    return conv_and_tangent(*primals, dx, dw, strides, pads, rhs_dilation, groups)


_strided_conv.defjvp(_strided_conv_jvp, symbolic_zeros=True)
