"""Conv2D, the book's learnable single-channel layer (D2L 6.2.3-6.2.4)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal

from cnnjax.models import Conv2D

LR, STEPS = 3e-2, 10


def edge_data():
    X = np.ones((6, 8), np.float32)
    X[:, 2:6] = 0.0
    Y = X[:, :-1] - X[:, 1:]  # the [1, -1] kernel, written out
    return jnp.asarray(X), jnp.asarray(Y)


def descend(conv, params, X, Y, lr=LR, steps=STEPS):
    """The book's loop: plain gradient descent on the summed squared error."""

    def loss_fn(p):
        return jnp.sum((conv.apply({"params": p}, X) - Y) ** 2)

    value_and_grad = jax.jit(jax.value_and_grad(loss_fn))
    losses = []
    for _ in range(steps):
        loss, grads = value_and_grad(params)
        params = jax.tree.map(lambda w, g: w - lr * g, params, grads)
        losses.append(float(loss))
    return params, losses, float(loss_fn(params))


def test_params_and_forward_match_scipy():
    x = jax.random.normal(jax.random.key(0), (7, 9))
    conv = Conv2D((2, 3))
    params = conv.init(jax.random.key(1), x)["params"]
    chex.assert_shape(params["weight"], (2, 3))
    chex.assert_shape(params["bias"], ())
    w = np.asarray(params["weight"])
    assert (w >= 0).all() and (w < 1).all(), "book init is torch.rand: uniform on [0, 1)"
    params = {"weight": params["weight"], "bias": jnp.float32(0.5)}
    y = conv.apply({"params": params}, x)
    expected = signal.correlate2d(np.asarray(x), w, mode="valid") + 0.5
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_without_bias_has_only_weight():
    params = Conv2D((1, 2), use_bias=False).init(jax.random.key(0), jnp.ones((3, 3)))["params"]
    assert set(params) == {"weight"}


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_learns_edge_kernel_in_ten_steps(seed):
    X, Y = edge_data()
    conv = Conv2D((1, 2), use_bias=False)
    params = conv.init(jax.random.key(seed), X)["params"]
    params, losses, final_loss = descend(conv, params, X, Y)
    # Tolerance from the exact dynamics: the Hessian of the loss is 12 * [[3, 2], [2, 3]]
    # (eigenvalues 60 along (1, 1), 12 along (1, -1)), so each step shrinks the error by
    # |1 - 0.03 * 60| = 0.8 and |1 - 0.03 * 12| = 0.64. Ten steps from the worst init in
    # [0, 1)^2, (1, 1), leave (+0.096, +0.119) and loss 0.693; over 2,000 random inits the
    # largest error measured was 0.117. So 0.12 and 0.7 hold for every init the layer can draw.
    np.testing.assert_allclose(params["weight"], [[1.0, -1.0]], atol=0.12)
    assert final_loss < 0.7
    assert all(b < a for a, b in zip(losses, losses[1:])), losses


def test_worst_init_bound_is_tight():
    X, Y = edge_data()
    conv = Conv2D((1, 2), use_bias=False)
    params, _, final_loss = descend(conv, {"weight": jnp.ones((1, 2))}, X, Y)
    err = np.abs(np.asarray(params["weight"]) - [[1.0, -1.0]]).max()
    assert 0.11 < err < 0.12 and 0.6 < final_loss < 0.7


def test_with_bias_diverges_at_book_lr():
    # With a bias the largest curvature is ~124, so lr 3e-2 overshoots (|1 - 3.7| > 1).
    X, Y = edge_data()
    conv = Conv2D((1, 2))
    params = conv.init(jax.random.key(0), X)["params"]
    _, losses, final_loss = descend(conv, params, X, Y)
    assert final_loss > 10 * losses[0]


def test_bad_input():
    conv = Conv2D((1, 2))
    with pytest.raises(ValueError, match=r"Conv2D: x must be 2-D \(H, W\), got shape \(1, 6, 8\)"):
        conv.init(jax.random.key(0), jnp.ones((1, 6, 8)))
    with pytest.raises(ValueError, match="Conv2D: kernel_size must be a pair of positive ints"):
        Conv2D((0, 2))
    with pytest.raises(ValueError, match="kernel_size"):
        Conv2D(3)
