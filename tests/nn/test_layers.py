"""cnnjax.nn: Flax's parameter layout and names, the ops' numerics, torch's pooling defaults."""

import re

import flax.linen as flax_nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnjax import nn, ops
from tests.ops import helpers as h


@pytest.mark.parametrize(
    "kernel, x_shape, kw",
    [
        ((3, 3), (2, 9, 8, 4), dict(stride=2, padding=1, groups=2)),
        ((5,), (2, 11, 3), dict(dilation=2, padding="SAME")),
        ((2, 3, 2), (1, 5, 6, 4, 2), dict(padding=((1, 0), (1, 1), (0, 1)))),
        ((3, 3), (7, 6, 3), dict(padding=1, padding_mode="reflect")),
    ],
)
def test_conv_has_flax_params_and_computes_ops_conv(kernel, x_shape, kw):
    x = h.random(np.random.default_rng(0), x_shape)
    layer = nn.Conv(6, kernel, **kw)
    params = layer.init(jax.random.key(0), x)["params"]
    groups = kw.get("groups", 1)
    assert params["kernel"].shape == (*kernel, x_shape[-1] // groups, 6)
    assert params["bias"].shape == (6,)
    y = jax.jit(layer.apply)({"params": params}, x)
    kw_ops = {k: v for k, v in kw.items()}
    want = ops.conv(x, params["kernel"], params["bias"], impl="lax", **kw_ops)
    h.close(y, want)


def test_conv_params_load_into_flax_conv_and_agree():
    # Same names and layout as flax.linen.Conv: its parameters drive ours unchanged.
    x = h.random(np.random.default_rng(1), (2, 10, 10, 3))
    flax_conv = flax_nn.Conv(8, (3, 3), strides=2, padding=((1, 1), (1, 1)))
    params = flax_conv.init(jax.random.key(1), x)
    h.close(nn.Conv(8, (3, 3), stride=2, padding=1).apply(params, x), flax_conv.apply(params, x))


def test_pool_layers_default_stride_is_the_window_as_in_torch():
    x = h.random(np.random.default_rng(2), (2, 8, 8, 3))
    np.testing.assert_array_equal(nn.MaxPool((2, 2)).apply({}, x), ops.max_pool2d(x, 2))
    assert nn.MaxPool((2, 2)).apply({}, x).shape == (2, 4, 4, 3)
    # Flax's own pooling defaults to stride 1.
    assert flax_nn.max_pool(x, (2, 2)).shape == (2, 7, 7, 3)
    h.close(
        nn.AvgPool((3, 3), stride=2, padding=1, ceil_mode=True, count_include_pad=False).apply(
            {}, x
        ),
        ops.avg_pool2d(x, 3, 2, 1, True, False),
    )
    assert nn.MaxPool(2).apply({}, x).shape == (2, 4, 4, 3)
    assert nn.MaxPool((2, 2)).apply({}, x[0]).shape == (4, 4, 3)  # unbatched
    h.close(nn.AdaptiveAvgPool((3, 1)).apply({}, x), ops.adaptive_avg_pool2d(x, (3, 1)))
    np.testing.assert_array_equal(nn.AdaptiveMaxPool(2).apply({}, x), ops.adaptive_max_pool(x, 2))
    h.close(nn.GlobalAvgPool().apply({}, x), x.mean(axis=(1, 2)))


class _SmallCNN(flax_nn.Module):
    """A researcher's model in a few lines."""

    @flax_nn.compact
    def __call__(self, x):
        x = flax_nn.relu(nn.Conv(8, (3, 3), padding=1)(x))
        x = nn.MaxPool((2, 2))(x)
        x = flax_nn.relu(nn.Conv(16, (3, 3), padding=1)(x))
        x = nn.GlobalAvgPool()(x)
        return flax_nn.Dense(10)(x)


def test_a_small_cnn_trains():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((16, 12, 12, 1)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 10, 16))
    model = _SmallCNN()
    params = model.init(jax.random.key(0), x)
    opt = optax.adam(3e-2)
    state = opt.init(params)

    def loss_fn(p):
        logits = model.apply(p, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    @jax.jit
    def step(p, s):
        loss, g = jax.value_and_grad(loss_fn)(p)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s, loss

    first = None
    for _ in range(50):
        params, state, loss = step(params, state)
        first = loss if first is None else first
    # Memorising 16 random labels: the loss falls well below its start.
    assert float(loss) < 0.5 * float(first)


def test_bad_attributes_name_the_attribute():
    x = jnp.ones((1, 8, 8, 2))
    with pytest.raises(TypeError, match="Conv: kernel_size must be a tuple of ints"):
        nn.Conv(4, 3).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"Conv: x must be .* with 1 spatial dims"):
        nn.Conv(4, (3,)).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="Conv: groups=3 must divide the input channels"):
        nn.Conv(6, (3, 3), groups=3).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="max_pool2d: padding must be at most half the window"):
        nn.MaxPool((2, 2), padding=2).apply({}, x)


def test_conv_transpose_has_flax_names_and_computes_ops_conv_transpose():
    x = h.random(np.random.default_rng(4), (2, 5, 6, 4))
    up = nn.ConvTranspose(6, (3, 3), stride=2, padding=1, output_padding=1, groups=2)
    params = up.init(jax.random.key(0), x)["params"]
    assert params["kernel"].shape == (3, 3, 4, 3) and params["bias"].shape == (6,)
    y = up.apply({"params": params}, x)
    assert y.shape == (2, 10, 12, 6)  # (n - 1) * 2 - 2 + 3 + 1
    want = ops.conv_transpose(
        x, params["kernel"], params["bias"], stride=2, padding=1, output_padding=1, groups=2
    )
    h.close(y, want)


@pytest.mark.parametrize("layer", [nn.Conv, nn.ConvTranspose])
def test_conv_layers_refuse_bad_kernel_sizes_and_param_dtypes(layer):
    x, key, name = jnp.ones((1, 8, 8, 2)), jax.random.key(0), layer.__name__
    for kernel_size in ((0, 3), (3, -1)):
        with pytest.raises(
            ValueError,
            match=re.escape(f"{name}: kernel_size must be >= 1 in every dim, got {kernel_size}"),
        ):
            layer(4, kernel_size).init(key, x)
    for dtype, shown in ((jnp.int32, "int32"), (jnp.bool_, "bool"), (None, "None")):
        with pytest.raises(
            TypeError,
            match=re.escape(
                f"{name}: param_dtype must be a floating-point dtype (e.g. jnp.float32 or"
                f" jnp.bfloat16), got {shown}"
            ),
        ):
            layer(4, (3, 3), param_dtype=dtype).init(key, x)
    params = layer(4, (3, 3), param_dtype=jnp.bfloat16).init(key, x)["params"]
    assert params["kernel"].dtype == jnp.bfloat16
    with pytest.raises(ValueError, match=rf"{name}: x must be \(N, \*spatial, C\)"):
        layer(4, (3, 3)).init(key, jnp.ones((8, 8)))


def test_conv_applied_to_other_channels_than_at_init_says_so():
    layer, key = nn.Conv(6, (5, 5), padding=2), jax.random.key(0)
    params = layer.init(key, jnp.ones((1, 28, 28, 1)))
    rgb = jnp.ones((2, 28, 28, 3))
    msg = "Conv: input has 3 channels but the kernel was built for 1 (kernel shape (5, 5, 1, 6))"
    for apply in (layer.apply, jax.jit(layer.apply)):
        with pytest.raises(ValueError, match=re.escape(msg)):
            apply(params, rgb)
    # Grouped: the message counts per group.
    grouped = nn.Conv(4, (3, 3), groups=2)
    params = grouped.init(key, jnp.ones((1, 6, 6, 2)))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "Conv: input has 4 channels, 2 per group (groups=2), but the kernel was built for 1"
            " per group (kernel shape (3, 3, 1, 4))"
        ),
    ):
        grouped.apply(params, jnp.ones((1, 6, 6, 4)))


def test_conv_layers_applied_to_parameters_of_another_shape_say_so():
    key, x = jax.random.key(0), jnp.ones((1, 6, 6, 2))
    params = nn.Conv(4, (3, 3)).init(key, x)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "Conv: the 'kernel' parameter has shape (3, 3, 2, 4), but kernel_size, features,"
            " groups and the 2-channel input need (3, 3, 2, 8)"
        ),
    ):
        nn.Conv(8, (3, 3)).apply(params, x)
    bad_bias = {"params": {**params["params"], "bias": jnp.zeros(5)}}
    with pytest.raises(
        ValueError, match=re.escape("Conv: the 'bias' parameter has shape (5,), but features=4")
    ):
        nn.Conv(4, (3, 3)).apply(bad_bias, x)
    up = nn.ConvTranspose(4, (2, 2), stride=2)
    params = up.init(key, x)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "ConvTranspose: input has 3 channels but the kernel was built for 2 (kernel shape"
            " (2, 2, 2, 4))"
        ),
    ):
        up.apply(params, jnp.ones((1, 6, 6, 3)))
