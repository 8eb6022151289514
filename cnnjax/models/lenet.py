"""LeNet-5 as in D2L 6.6, configurable, on ``cnnjax.ops`` or on Flax's own layers.

The book's network (channels-first shapes for a 1x28x28 image)::

    conv 5x5, 6 channels, padding 2 -> sigmoid -> avg pool 2x2/2      6x28x28 -> 6x14x14
    conv 5x5, 16 channels            -> sigmoid -> avg pool 2x2/2     16x10x10 -> 16x5x5
    flatten 400 -> dense 120 -> sigmoid -> dense 84 -> sigmoid -> dense 10

61,706 parameters. Every choice the chapter's exercises vary (channels, kernel sizes, activation,
pooling, dense widths, initialisation) is a field, so a config dict describes a variant.

Two implementations behind one parameter tree (``layers``):

* ``"cnnjax"`` (default): convolutions are :func:`cnnjax.ops.conv2d` (``impl=conv_impl``, so
  the block-Toeplitz GEMM can be chosen on CPU) and pooling is
  :func:`cnnjax.ops.avg_pool2d` / :func:`cnnjax.ops.max_pool2d`.
* ``"flax"``: ``flax.linen.Conv``, ``flax.linen.avg_pool`` / ``flax.linen.max_pool``.

Both store each conv as ``{"kernel": (kh, kw, C_in, C_out), "bias": (C_out,)}`` under the same
names, so one set of params runs in either. Dense layers are ``flax.linen.Dense`` in both.

Layout is NHWC throughout. Flattening is therefore in (H, W, C) order, not PyTorch's (C, H, W):
a checkpoint ported from the book's PyTorch model needs the first dense kernel permuted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from numbers import Integral
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax import ops

__all__ = ["ACTIVATIONS", "KERNEL_INITS", "LeNet", "Stage"]

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "sigmoid": jax.nn.sigmoid,
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "elu": jax.nn.elu,
    "selu": jax.nn.selu,
    "celu": jax.nn.celu,
    "leaky_relu": jax.nn.leaky_relu,
    "relu6": jax.nn.relu6,
    "softplus": jax.nn.softplus,
    "mish": jax.nn.mish,
    "hard_tanh": jax.nn.hard_tanh,
    "identity": lambda x: x,
}

KERNEL_INITS: dict[str, Callable[[], nn.initializers.Initializer]] = {
    "xavier_uniform": nn.initializers.xavier_uniform,
    "xavier_normal": nn.initializers.xavier_normal,
    "he_uniform": nn.initializers.he_uniform,
    "he_normal": nn.initializers.he_normal,
    "lecun_uniform": nn.initializers.lecun_uniform,
    "lecun_normal": nn.initializers.lecun_normal,
}

_POOLINGS = ("avg", "max")
_LAYERS = ("cnnjax", "flax")
_CONV_IMPLS = ("auto", "lax", "toeplitz")


class Stage(NamedTuple):
    """One step of the network, as :meth:`LeNet.stages` lists them.

    kind is "conv", "act", "pool", "flatten" or "dense". ``size`` is the output channels/units
    (conv, dense); ``kernel`` the conv kernel or pooling window; ``padding`` the conv padding.
    """

    name: str
    kind: str
    size: int = 0
    kernel: int = 0
    padding: int = 0


def _is_int(v: Any) -> bool:
    return isinstance(v, Integral) and not isinstance(v, bool)


def _check_int(name: str, v: Any, minimum: int) -> None:
    if not _is_int(v):
        raise TypeError(f"LeNet: {name} must be an int, got {type(v).__name__} {v!r}")
    if v < minimum:
        raise ValueError(f"LeNet: {name} must be >= {minimum}, got {v}")


def _check_ints(name: str, v: Any) -> None:
    if isinstance(v, (str, bytes)) or not isinstance(v, Sequence):
        raise TypeError(f"LeNet: {name} must be a sequence of ints, got {type(v).__name__} {v!r}")
    for i, item in enumerate(v):
        _check_int(f"{name}[{i}]", item, 1)


def _check_choice(name: str, v: Any, choices: Sequence[str]) -> None:
    if not isinstance(v, str):
        raise TypeError(f"LeNet: {name} must be a str, got {type(v).__name__} {v!r}")
    if v not in choices:
        raise ValueError(f"LeNet: unknown {name} {v!r}; expected one of {sorted(choices)}")


class _OpsConv(nn.Module):
    """NHWC conv on :func:`cnnjax.ops.conv2d` with ``flax.linen.Conv``'s parameter layout."""

    features: int
    kernel_size: int
    padding: int
    kernel_init: nn.initializers.Initializer
    impl: str
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        # The dtype is explicit: an initializer's default (jnp.float_) is float64 under x64.
        kernel = self.param(
            "kernel", self.kernel_init, (k, k, x.shape[-1], self.features), self.param_dtype
        )
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), self.param_dtype)
        return ops.conv2d(
            x.astype(self.dtype),
            kernel.astype(self.dtype),
            bias.astype(self.dtype),
            padding=self.padding,
            impl=self.impl,
        )


class LeNet(nn.Module):
    """LeNet (D2L 6.6), every architectural choice a field.

    Attributes:
      channels: output channels of each conv layer, book (6, 16).
      kernel_sizes: square kernel size of each conv layer, same length as ``channels``.
      padding: zero padding of the first conv (the book pads 2 so a 28x28 input stays 28x28);
        later convs are unpadded.
      activation: a key of :data:`ACTIVATIONS`, after every conv and hidden dense layer.
      pooling: "avg" (book) or "max"; after every conv's activation.
      pool_size: pooling window, stride equal to it (non-overlapping, book 2).
      dense: widths of the hidden dense layers, book (120, 84).
      num_classes: width of the output layer.
      kernel_init: a key of :data:`KERNEL_INITS` for conv and dense kernels (biases start at 0).
        The book uses Xavier uniform.
      conv_impl: ``impl`` passed to :func:`cnnjax.ops.conv2d` ("auto", "lax", "toeplitz");
        only used when ``layers == "cnnjax"``.
      layers: "cnnjax" or "flax", see the module docstring.
      dtype: compute dtype (e.g. ``jnp.bfloat16``). Parameters and the returned logits are
        float32 (so bfloat16 is mixed precision), except for ``float64``, where they are
        float64 too. ``float64`` needs JAX's 64-bit mode (``JAX_ENABLE_X64=1``); without it
        the module refuses it rather than silently compute in float32.

    Invalid fields raise TypeError (wrong type) or ValueError (bad value, unknown name) when the
    module is constructed.
    """

    channels: Sequence[int] = (6, 16)
    kernel_sizes: Sequence[int] = (5, 5)
    padding: int = 2
    activation: str = "sigmoid"
    pooling: str = "avg"
    pool_size: int = 2
    dense: Sequence[int] = (120, 84)
    num_classes: int = 10
    kernel_init: str = "xavier_uniform"
    conv_impl: str = "auto"
    layers: str = "cnnjax"
    dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        _check_ints("channels", self.channels)
        _check_ints("kernel_sizes", self.kernel_sizes)
        if len(self.kernel_sizes) != len(self.channels):
            raise ValueError(
                f"LeNet: kernel_sizes must have one entry per conv layer "
                f"(len(channels) = {len(self.channels)}), got {tuple(self.kernel_sizes)}"
            )
        _check_int("padding", self.padding, 0)
        _check_choice("activation", self.activation, tuple(ACTIVATIONS))
        _check_choice("pooling", self.pooling, _POOLINGS)
        _check_int("pool_size", self.pool_size, 1)
        _check_ints("dense", self.dense)
        _check_int("num_classes", self.num_classes, 1)
        _check_choice("kernel_init", self.kernel_init, tuple(KERNEL_INITS))
        _check_choice("conv_impl", self.conv_impl, _CONV_IMPLS)
        _check_choice("layers", self.layers, _LAYERS)
        try:
            dt = jnp.dtype(self.dtype)
        except TypeError as e:
            raise TypeError(f"LeNet: dtype must be a floating dtype, got {self.dtype!r}") from e
        if not jnp.issubdtype(dt, jnp.floating):
            raise ValueError(f"LeNet: dtype must be a floating dtype, got {dt}")
        if jax.dtypes.canonicalize_dtype(dt) != dt:
            # Without 64-bit mode JAX truncates float64 to float32 with only a warning, so the
            # model would not compute in the dtype its config names.
            raise ValueError(
                f"LeNet: dtype {dt.name} needs JAX's 64-bit mode, which is off (JAX would "
                f"compute in {jax.dtypes.canonicalize_dtype(dt).name}); set JAX_ENABLE_X64=1 "
                f"or call jax.config.update('jax_enable_x64', True) at start-up, or use "
                f"float32 or bfloat16"
            )
        super().__post_init__()

    @property
    def param_dtype(self) -> jnp.dtype:
        """Dtype of the parameters and the logits: float32, or float64 when ``dtype`` is."""
        return jnp.promote_types(self.dtype, jnp.float32)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The configurable fields, in declaration order (the keys of :meth:`default_config`)."""
        return tuple(
            f.name for f in dataclasses.fields(cls) if f.init and f.name not in ("parent", "name")
        )

    @staticmethod
    def default_config() -> dict[str, Any]:
        """The book's LeNet as a plain dict of the fields (dtype as its name, e.g. "float32")."""
        defaults = {f.name: f.default for f in dataclasses.fields(LeNet)}
        cfg = {name: defaults[name] for name in LeNet.field_names()}
        cfg["dtype"] = jnp.dtype(cfg["dtype"]).name
        return cfg

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> LeNet:
        """Builds a LeNet from a mapping of field names (or an ``ml_collections.ConfigDict``).

        Missing keys take the book's defaults; lists become tuples; ``dtype`` may be a name.
        Raises TypeError if ``cfg`` is not a mapping or a value has the wrong type, ValueError on
        an unknown key (the message lists the valid ones) or a bad value.
        """
        if hasattr(cfg, "to_dict") and not isinstance(cfg, Mapping):
            cfg = cfg.to_dict()
        if not isinstance(cfg, Mapping):
            raise TypeError(f"LeNet.from_config: cfg must be a mapping, got {type(cfg).__name__}")
        valid = cls.field_names()
        unknown = [k for k in cfg if k not in valid]
        if unknown:
            raise ValueError(
                f"LeNet.from_config: unknown key(s) {unknown}; valid keys: {list(valid)}"
            )
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}
        if isinstance(kwargs.get("dtype"), str):
            try:
                kwargs["dtype"] = jnp.dtype(kwargs["dtype"])
            except TypeError as e:
                raise ValueError(f"LeNet.from_config: unknown dtype {kwargs['dtype']!r}") from e
        return cls(**kwargs)

    def stages(self) -> tuple[Stage, ...]:
        """The network as an ordered list of stages; the names key params and :func:`features`."""
        out: list[Stage] = []
        for i, (c, k) in enumerate(zip(self.channels, self.kernel_sizes), start=1):
            out.append(Stage(f"conv{i}", "conv", c, k, self.padding if i == 1 else 0))
            out.append(Stage(f"act{i}", "act"))
            out.append(Stage(f"pool{i}", "pool", kernel=self.pool_size))
        out.append(Stage("flatten", "flatten"))
        n_conv = len(self.channels)
        for i, width in enumerate(self.dense, start=1):
            out.append(Stage(f"dense{i}", "dense", width))
            out.append(Stage(f"act{n_conv + i}", "act"))
        out.append(Stage("output", "dense", self.num_classes))
        return tuple(out)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (N, H, W, C) floating -> logits (N, num_classes) in ``param_dtype`` (float32,
        or float64 for a float64 model).

        When the "intermediates" collection is mutable, ``{stage name: output}`` for every stage
        is sown into it under "stages" (see :func:`cnnjax.models.features`); ``init`` does not
        create it. Raises ValueError if ``x`` is not 4-D, TypeError if it is not floating; an
        input too small for the kernels fails in :mod:`cnnjax.ops` with a ValueError.
        """
        if x.ndim != 4:
            raise ValueError(f"LeNet: x must be 4-D (N, H, W, C), got shape {tuple(x.shape)}")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"LeNet: x must be floating, got dtype {x.dtype}")
        init = KERNEL_INITS[self.kernel_init]()
        act = ACTIVATIONS[self.activation]
        x = x.astype(self.dtype)
        acts: dict[str, jax.Array] = {}
        for s in self.stages():
            if s.kind == "conv":
                if self.layers == "cnnjax":
                    x = _OpsConv(
                        s.size,
                        s.kernel,
                        s.padding,
                        init,
                        self.conv_impl,
                        self.dtype,
                        self.param_dtype,
                        name=s.name,
                    )(x)
                else:
                    x = nn.Conv(
                        s.size,
                        (s.kernel, s.kernel),
                        padding=s.padding,
                        kernel_init=init,
                        dtype=self.dtype,
                        param_dtype=self.param_dtype,
                        name=s.name,
                    )(x)
            elif s.kind == "act":
                x = act(x)
            elif s.kind == "pool":
                x = self._pool(x, s.kernel)
            elif s.kind == "flatten":
                x = x.reshape(x.shape[0], -1)
            else:
                x = nn.Dense(
                    s.size,
                    kernel_init=init,
                    dtype=self.dtype,
                    param_dtype=self.param_dtype,
                    name=s.name,
                )(x)
            acts[s.name] = x
        # One sow of the whole dict: a per-stage sow would clash with the submodule names.
        if self.is_mutable_collection("intermediates") and not self.is_initializing():
            self.sow("intermediates", "stages", acts)
        return x.astype(self.param_dtype)

    def _pool(self, x: jax.Array, p: int) -> jax.Array:
        if self.layers == "cnnjax":
            pool = ops.avg_pool2d if self.pooling == "avg" else ops.max_pool2d
            return pool(x, p)
        pool = nn.avg_pool if self.pooling == "avg" else nn.max_pool
        return pool(x, (p, p), strides=(p, p))
