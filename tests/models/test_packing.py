"""Packing LeNets of different widths into the widest: the padded network computes the narrow
one's function, and the masked gradient is the narrow one's, embedded."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnjax.models import LeNet
from cnnjax.models.packing import packable, pad_params, padding_mask, unpad_params, widest

X = jax.random.normal(jax.random.key(1), (3, 28, 28, 1))
Y = jnp.array([1, 2, 3])

CASES = {
    "book (sigmoid, avg)": {},
    "relu, max, flax layers": {"activation": "relu", "pooling": "max", "layers": "flax"},
    "three convs, padding 1": {"channels": (4, 6, 8), "kernel_sizes": (3, 3, 3), "padding": 1},
    "no dense hidden layer": {"dense": ()},
}


def _pair(fields):
    """A narrow LeNet and the widest of it and another network (wider somewhere, narrower
    elsewhere), both of ``fields``."""
    narrow = LeNet(**fields)
    other = narrow.clone(
        channels=tuple(c + 1 if i % 2 else max(1, c - 2) for i, c in enumerate(narrow.channels)),
        dense=tuple(d + 7 for d in narrow.dense),
    )
    return narrow, narrow.clone(**widest([narrow, other]))


def _loss(model, params):
    logits = model.apply({"params": params}, X)
    return optax.softmax_cross_entropy_with_integer_labels(logits, Y).mean()


@pytest.mark.parametrize("fields", CASES.values(), ids=CASES.keys())
def test_the_padded_network_computes_the_narrow_ones_logits(fields):
    narrow, wide = _pair(fields)
    params = narrow.init(jax.random.key(0), X)["params"]
    padded = pad_params(narrow, params, wide)
    chex.assert_trees_all_equal_shapes(padded, wide.init(jax.random.key(0), X)["params"])
    np.testing.assert_allclose(
        wide.apply({"params": padded}, X), narrow.apply({"params": params}, X), atol=1e-6
    )
    # Only padding was added: cutting it back out is exact.
    chex.assert_trees_all_equal(unpad_params(wide, padded, narrow), params)


@pytest.mark.parametrize("fields", CASES.values(), ids=CASES.keys())
def test_the_masked_gradient_is_the_narrow_ones_embedded(fields):
    narrow, wide = _pair(fields)
    params = narrow.init(jax.random.key(0), X)["params"]
    padded, mask = pad_params(narrow, params, wide), padding_mask(narrow, params, wide)
    grads = jax.grad(lambda p: _loss(wide, p))(padded)
    masked = jax.tree.map(jnp.multiply, grads, mask)
    expected = pad_params(narrow, jax.grad(lambda p: _loss(narrow, p))(params), wide)
    chex.assert_trees_all_close(masked, expected, atol=1e-6)


def test_without_the_mask_a_sigmoid_networks_padding_would_learn():
    # Why the mask exists: a padded sigmoid unit outputs sigmoid(0) = 0.5, so the (zero) weights
    # reading it get a gradient, and the padding would stop being padding.
    narrow, wide = _pair({})
    params = narrow.init(jax.random.key(0), X)["params"]
    padded, mask = pad_params(narrow, params, wide), padding_mask(narrow, params, wide)
    grads = jax.grad(lambda p: _loss(wide, p))(padded)
    outside = jax.tree.map(lambda g, m: float(jnp.abs(g * (1 - m)).max()), grads, mask)
    assert max(jax.tree.leaves(outside)) > 1e-3


def test_the_first_dense_kernel_is_padded_per_spatial_position():
    # Flattening is (H, W, C): each position's C rows are padded, not the kernel's end.
    narrow = LeNet(channels=(6, 2), dense=(5,))
    wide = narrow.clone(channels=(6, 3))
    params = narrow.init(jax.random.key(0), X)["params"]
    kernel = pad_params(narrow, params, wide)["dense1"]["kernel"]  # (25 * 3, 5)
    by_position = kernel.reshape(25, 3, 5)
    np.testing.assert_array_equal(by_position[:, 2], 0.0)
    np.testing.assert_array_equal(by_position[:, :2], params["dense1"]["kernel"].reshape(25, 2, 5))


def test_networks_that_differ_beyond_widths_do_not_pack():
    assert packable(LeNet(channels=(4, 8)), {"channels": [6, 16], "dense": [10, 20]})
    assert not packable(LeNet(), LeNet(activation="relu"))
    with pytest.raises(ValueError, match="activation differs"):
        widest([LeNet(), LeNet(activation="relu")])
    with pytest.raises(ValueError, match="channels has 2 entries in one and 3"):
        widest([LeNet(), LeNet(channels=(1, 2, 3), kernel_sizes=(3, 3, 3))])
    with pytest.raises(ValueError, match="must not be empty"):
        widest([])
    narrow = LeNet()
    params = narrow.init(jax.random.key(0), X)["params"]
    with pytest.raises(ValueError, match="conv2 has 16 channels, more than the wide network's 8"):
        pad_params(narrow, params, narrow.clone(channels=(6, 8)))
