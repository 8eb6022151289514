"""cnnjax.nn: Flax's parameter layout and names, the ops' numerics, torch's pooling defaults."""

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
