"""Flax modules for convolution and pooling (D2L 6.2-6.5 as layers), over :mod:`cnnjax.ops`.

Each module validates its attributes when called and otherwise defers to the op of the same
numerics: :func:`cnnjax.ops.conv`, ``max_pool``/``avg_pool`` and their adaptive forms, so the
errors, layouts and torch semantics are the ops'.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax import ops

__all__ = [
    "Conv",
    "ConvTranspose",
    "MaxPool",
    "AvgPool",
    "AdaptiveAvgPool",
    "AdaptiveMaxPool",
    "GlobalAvgPool",
]

Initializer = Any


def _kernel_size(name: str, kernel_size: Any) -> tuple[int, ...]:
    """``kernel_size`` as a tuple of ints >= 1; its length is the layer's spatial rank."""
    if (
        not isinstance(kernel_size, Sequence)
        or isinstance(kernel_size, str)
        or len(kernel_size) == 0
        or not all(isinstance(k, Integral) and not isinstance(k, bool) for k in kernel_size)
    ):
        raise TypeError(
            f"{name}: kernel_size must be a tuple of ints, one per spatial dim (e.g. (3, 3)),"
            f" got {kernel_size!r}"
        )
    if any(k < 1 for k in kernel_size):
        raise ValueError(f"{name}: kernel_size must be >= 1 in every dim, got {tuple(kernel_size)}")
    return tuple(int(k) for k in kernel_size)


def _check_param_dtype(name: str, param_dtype: Any) -> None:
    """Parameters are trained by gradients and initialised by random draws: a float dtype."""
    try:
        dtype = None if param_dtype is None else jnp.dtype(param_dtype)
    except TypeError:
        dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        got = repr(param_dtype) if dtype is None else dtype.name
        raise TypeError(
            f"{name}: param_dtype must be a floating-point dtype (e.g. jnp.float32 or"
            f" jnp.bfloat16), got {got}"
        )


def _check_ndim(x: jax.Array, name: str, rank: int) -> None:
    """Raises ValueError unless x is (N, *spatial, C) or (*spatial, C), ``rank`` spatial dims."""
    if x.ndim not in (rank + 1, rank + 2):
        raise ValueError(
            f"{name}: x must be (N, *spatial, C) or unbatched (*spatial, C) with {rank} spatial"
            f" dims (len(kernel_size)), got shape {tuple(x.shape)}"
        )


def _existing_shape(module: nn.Module, param: str) -> tuple[int, ...] | None:
    """The shape of ``param`` in the variables being applied, or None while initialising."""
    if not module.has_variable("params", param):
        return None
    return tuple(jnp.shape(nn.meta.unbox(module.get_variable("params", param))))


def _check_kernel_fits(
    module: nn.Module, name: str, expected: tuple[int, ...], channel_axis_in: int, per: int
) -> None:
    """Raises ValueError naming the mismatch when the stored kernel is not ``expected``.

    Without this, applying a layer to input with other channels than at ``init`` (or to another
    layer's parameters) ends in Flax's ScopeParamShapeError. ``channel_axis_in`` is the kernel
    axis holding the input channels, ``per`` the input channels each of its entries stands for
    (``groups`` for Conv's Ci/groups axis, 1 for ConvTranspose's Ci axis).
    """
    got = _existing_shape(module, "kernel")
    if got is None or got == expected:
        return
    ci = expected[channel_axis_in] * per
    others = [i for i in range(len(expected)) if i != channel_axis_in]
    if len(got) == len(expected) and all(got[i] == expected[i] for i in others):
        built = got[channel_axis_in]
        if per == 1:
            raise ValueError(
                f"{name}: input has {ci} channels but the kernel was built for {built} (kernel"
                f" shape {got}); feed {built}-channel input, or init the layer again on"
                f" {ci}-channel input"
            )
        raise ValueError(
            f"{name}: input has {ci} channels, {ci // per} per group (groups={per}), but the"
            f" kernel was built for {built} per group (kernel shape {got}); feed"
            f" {built * per}-channel input, check groups, or init the layer again"
        )
    raise ValueError(
        f"{name}: the 'kernel' parameter has shape {got}, but kernel_size, features, groups and"
        f" the {ci}-channel input need {expected}; pass the parameters this layer was"
        " initialised with, or init it again"
    )


def _check_bias_fits(module: nn.Module, name: str, features: int) -> None:
    got = _existing_shape(module, "bias")
    if got is not None and got != (features,):
        raise ValueError(
            f"{name}: the 'bias' parameter has shape {got}, but features={features} needs"
            f" ({features},); pass the parameters the layer was initialised with, or init it again"
        )


class Conv(nn.Module):
    """N-d convolution layer: ``y = ops.conv(x, kernel, bias, ...)`` (torch's ``Conv{1,2,3}d``).

    The spatial rank is ``len(kernel_size)``.

    Attributes:
      features: output channels Co.
      kernel_size: one int per spatial dim, e.g. (3, 3).
      stride, padding, dilation, groups, padding_mode: as :func:`cnnjax.ops.conv` (torch's
        meanings; padding also "SAME"/"VALID" and (lo, hi) pairs).
      use_bias: add the ``"bias"`` parameter.
      kernel_init, bias_init: Flax initialisers (defaults: Flax's ``lecun_normal``, zeros).
      param_dtype: floating-point dtype of the parameters (default float32); computation is in
        the promoted dtype of x and them.
      impl: passed to :func:`cnnjax.ops.conv` ("auto", "lax", "toeplitz").

    Parameters: ``"kernel"`` (*kernel_size, Ci/groups, features) and ``"bias"`` (features,),
    Flax's ``nn.Conv`` layout and names.

    Call: ``x`` (N, *spatial, Ci) or one unbatched (*spatial, Ci) -> (N, *out, features).

    Raises:
      TypeError: kernel_size not a tuple of ints, features not an int, param_dtype not a
        floating-point dtype.
      ValueError: a kernel size or features < 1, x without len(kernel_size) spatial dims, Ci
        not divisible by groups, parameters (from ``init`` or elsewhere) whose shape does not
        fit this layer and x (e.g. x has other channels than at ``init``), and whatever
        :func:`cnnjax.ops.conv` raises.

    Example:
      >>> layer = Conv(16, (3, 3), padding=1)
      >>> params = layer.init(jax.random.key(0), jnp.ones((1, 28, 28, 1)))
      >>> params["params"]["kernel"].shape
      (3, 3, 1, 16)
    """

    features: int
    kernel_size: Sequence[int]
    stride: Any = 1
    padding: Any = 0
    dilation: Any = 1
    groups: int = 1
    padding_mode: str = "zeros"
    use_bias: bool = True
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros_init()
    param_dtype: Any = jnp.float32
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel_size = _kernel_size("Conv", self.kernel_size)
        if isinstance(self.features, bool) or not isinstance(self.features, Integral):
            raise TypeError(f"Conv: features must be an int, got {self.features!r}")
        if self.features < 1:
            raise ValueError(f"Conv: features must be >= 1, got {self.features}")
        _check_param_dtype("Conv", self.param_dtype)
        _check_ndim(x, "Conv", len(kernel_size))
        ci = x.shape[-1]
        if isinstance(self.groups, Integral) and self.groups >= 1 and ci % self.groups:
            raise ValueError(f"Conv: groups={self.groups} must divide the input channels ({ci})")
        # A bad groups (0, 1.5) is left to ops.conv's message; 1 only sizes the kernel here.
        groups = self.groups if isinstance(self.groups, Integral) and self.groups >= 1 else 1
        shape = (*kernel_size, ci // groups, self.features)
        _check_kernel_fits(self, "Conv", shape, len(kernel_size), groups)
        if self.use_bias:
            _check_bias_fits(self, "Conv", self.features)
        kernel = self.param("kernel", self.kernel_init, shape, self.param_dtype)
        bias = (
            self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        return ops.conv(
            x,
            kernel,
            bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            padding_mode=self.padding_mode,
            layout="NHWC",
            impl=self.impl,
        )


class ConvTranspose(nn.Module):
    """N-d transposed convolution layer: :func:`cnnjax.ops.conv_transpose` (torch's
    ``ConvTranspose{1,2,3}d``), e.g. a UNet decoder's 2x upsampling.

    Attributes:
      features: output channels Co (divisible by ``groups``).
      kernel_size: one int per spatial dim.
      stride, padding, output_padding, dilation, groups: as :func:`cnnjax.ops.conv_transpose`.
      use_bias, kernel_init, bias_init, param_dtype: as :class:`Conv`.

    Parameters: ``"kernel"`` (*kernel_size, Ci, features/groups) (the op's JAX layout, Flax's
    ``nn.ConvTranspose`` names) and ``"bias"`` (features,).

    Call: ``x`` (N, *spatial, Ci) or unbatched -> (N, *out, features), ``out = (n - 1) * stride
    - lo - hi + dilation * (k - 1) + output_padding + 1``.

    Raises:
      TypeError: kernel_size not a tuple of ints, features not an int, param_dtype not a
        floating-point dtype.
      ValueError: a kernel size < 1, features < 1 or not divisible by groups, x without
        len(kernel_size) spatial dims, parameters whose shape does not fit this layer and x,
        and whatever :func:`cnnjax.ops.conv_transpose` raises.

    Example:
      >>> up = ConvTranspose(8, (2, 2), stride=2)
      >>> x = jnp.ones((1, 7, 7, 16))
      >>> up.apply(up.init(jax.random.key(0), x), x).shape
      (1, 14, 14, 8)
    """

    features: int
    kernel_size: Sequence[int]
    stride: Any = 1
    padding: Any = 0
    output_padding: Any = 0
    dilation: Any = 1
    groups: int = 1
    use_bias: bool = True
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros_init()
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel_size = _kernel_size("ConvTranspose", self.kernel_size)
        groups = self.groups if isinstance(self.groups, Integral) and self.groups >= 1 else 1
        if isinstance(self.features, bool) or not isinstance(self.features, Integral):
            raise TypeError(f"ConvTranspose: features must be an int, got {self.features!r}")
        if self.features < 1 or self.features % groups:
            raise ValueError(
                f"ConvTranspose: features must be >= 1 and divisible by groups={groups},"
                f" got {self.features}"
            )
        _check_param_dtype("ConvTranspose", self.param_dtype)
        _check_ndim(x, "ConvTranspose", len(kernel_size))
        shape = (*kernel_size, x.shape[-1], self.features // groups)
        _check_kernel_fits(self, "ConvTranspose", shape, len(kernel_size), 1)
        if self.use_bias:
            _check_bias_fits(self, "ConvTranspose", self.features)
        kernel = self.param("kernel", self.kernel_init, shape, self.param_dtype)
        bias = (
            self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        return ops.conv_transpose(
            x,
            kernel,
            bias,
            stride=self.stride,
            padding=self.padding,
            output_padding=self.output_padding,
            dilation=self.dilation,
            groups=self.groups,
        )


def _pool_op(name: str, kind: str, window: Any):
    """The rank-specific op when the window says the rank (unbatched input works), else N-d."""
    if isinstance(window, Sequence) and not isinstance(window, str) and 1 <= len(window) <= 3:
        return getattr(ops, f"{kind}_pool{len(window)}d")
    return getattr(ops, f"{kind}_pool")


class MaxPool(nn.Module):
    """Max pooling layer: :func:`cnnjax.ops.max_pool` (torch's ``MaxPool{1,2,3}d``).

    ``stride=None`` (default) means stride = window, as in torch; Flax's ``nn.max_pool`` defaults
    to stride 1, so a port from Flax passes ``stride=1``.

    Attributes:
      window: int (every spatial dim; input must then be batched) or one int per spatial dim.
      stride, padding, dilation, ceil_mode: as :func:`cnnjax.ops.max_pool`.

    Call: ``x`` (N, *spatial, C), or unbatched when ``window`` is a tuple -> pooled array.

    Example:
      >>> MaxPool((2, 2)).apply({}, jnp.ones((1, 28, 28, 6))).shape
      (1, 14, 14, 6)
    """

    window: Any
    stride: Any = None
    padding: Any = 0
    dilation: Any = 1
    ceil_mode: bool = False

    def __call__(self, x: jax.Array) -> jax.Array:
        op = _pool_op("MaxPool", "max", self.window)
        return op(x, self.window, self.stride, self.padding, self.dilation, self.ceil_mode)


class AvgPool(nn.Module):
    """Average pooling layer: :func:`cnnjax.ops.avg_pool` (torch's ``AvgPool{1,2,3}d``).

    ``stride=None`` (default) means stride = window (Flax's ``nn.avg_pool`` defaults to 1).

    Attributes:
      window: int (batched input) or one int per spatial dim.
      stride, padding, ceil_mode, count_include_pad, divisor_override: as
        :func:`cnnjax.ops.avg_pool`.

    Example:
      >>> AvgPool((2, 2)).apply({}, jnp.ones((1, 28, 28, 6))).shape
      (1, 14, 14, 6)
    """

    window: Any
    stride: Any = None
    padding: Any = 0
    ceil_mode: bool = False
    count_include_pad: bool = True
    divisor_override: int | None = None

    def __call__(self, x: jax.Array) -> jax.Array:
        op = _pool_op("AvgPool", "avg", self.window)
        return op(
            x,
            self.window,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
        )


class AdaptiveAvgPool(nn.Module):
    """Adaptive average pooling to ``output_size`` (torch's ``AdaptiveAvgPool{1,2,3}d``).

    Attributes:
      output_size: int (batched input) or one int/None per spatial dim (None keeps that size).

    Example:
      >>> AdaptiveAvgPool((1, 1)).apply({}, jnp.ones((2, 7, 7, 512))).shape
      (2, 1, 1, 512)
    """

    output_size: Any

    def __call__(self, x: jax.Array) -> jax.Array:
        size = self.output_size
        if isinstance(size, Sequence) and not isinstance(size, str) and 1 <= len(size) <= 3:
            return getattr(ops, f"adaptive_avg_pool{len(size)}d")(x, size)
        return ops.adaptive_avg_pool(x, size)


class AdaptiveMaxPool(nn.Module):
    """Adaptive max pooling to ``output_size`` (torch's ``AdaptiveMaxPool{1,2,3}d``); attributes
    as :class:`AdaptiveAvgPool`."""

    output_size: Any

    def __call__(self, x: jax.Array) -> jax.Array:
        size = self.output_size
        if isinstance(size, Sequence) and not isinstance(size, str) and 1 <= len(size) <= 3:
            return getattr(ops, f"adaptive_max_pool{len(size)}d")(x, size)
        return ops.adaptive_max_pool(x, size)


class GlobalAvgPool(nn.Module):
    """Mean over the spatial axes: (N, *spatial, C) -> (N, C) (``keepdims``: (N, 1, .., 1, C)).

    Example:
      >>> GlobalAvgPool().apply({}, jnp.ones((2, 7, 7, 512))).shape
      (2, 512)
    """

    keepdims: bool = False

    def __call__(self, x: jax.Array) -> jax.Array:
        return ops.global_avg_pool(x, self.keepdims)
