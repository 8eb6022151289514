"""The book's correlation functions: worked examples, == reference == scipy, grads, vmap."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnjax import ops
from cnnjax.ops import reference as ref
from tests.ops import helpers as h

# --- D2L 6.2 / 6.4 worked examples, with the numbers the book prints. ---


def test_book_corr2d_example():
    X = jnp.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]])
    K = jnp.array([[0.0, 1.0], [2.0, 3.0]])
    np.testing.assert_array_equal(ops.corr2d(X, K), [[19.0, 25.0], [37.0, 43.0]])
    np.testing.assert_array_equal(ref.corr2d(X, K), [[19.0, 25.0], [37.0, 43.0]])


def test_book_edge_detection():
    X = jnp.ones((6, 8)).at[:, 2:6].set(0.0)
    K = jnp.array([[1.0, -1.0]])
    expected_row = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0]
    np.testing.assert_array_equal(ops.corr2d(X, K), np.tile(expected_row, (6, 1)))
    # The horizontal-difference kernel cannot see horizontal edges.
    np.testing.assert_array_equal(ops.corr2d(X.T, K), np.zeros((8, 5)))


def _book_multi_channel():
    X = jnp.array(
        [
            [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]],
            [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]],
        ]
    )
    K = jnp.array([[[0.0, 1.0], [2.0, 3.0]], [[1.0, 2.0], [3.0, 4.0]]])
    return X, K


def test_book_multi_input_example():
    X, K = _book_multi_channel()
    np.testing.assert_array_equal(ops.corr2d_multi_in(X, K), [[56.0, 72.0], [104.0, 120.0]])


def test_book_multi_output_example():
    X, K = _book_multi_channel()
    K3 = jnp.stack([K, K + 1, K + 2])
    Y = ops.corr2d_multi_in_out(X, K3)
    chex.assert_shape(Y, (3, 2, 2))
    np.testing.assert_array_equal(Y[0], [[56.0, 72.0], [104.0, 120.0]])
    # Adding 1 to every tap adds the 2x2x2 window sums of X.
    window_sums = ops.corr2d_multi_in(X, jnp.ones_like(K))
    np.testing.assert_allclose(Y[1], Y[0] + window_sums)
    np.testing.assert_allclose(Y[2], Y[0] + 2 * window_sums)


def test_book_1x1_equals_general_conv():
    rng = np.random.default_rng(0)
    X, K = h.random(rng, (3, 3, 3)), h.random(rng, (2, 3, 1, 1))
    Y1 = ops.corr2d_multi_in_out_1x1(X, K)
    h.close(Y1, ops.corr2d_multi_in_out(X, K))
    h.close(Y1, ref.corr2d_multi_in_out_1x1(X, K))


# --- Properties over random shapes and dtypes. ---


@st.composite
def image_and_kernel(draw, channels: bool = False):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    H, W = draw(st.integers(kh, kh + 6)), draw(st.integers(kw, kw + 6))
    ci = draw(st.integers(1, 3)) if channels else None
    return (H, W), (kh, kw), ci, draw(st.integers(0, 2**16))


_corr2d = jax.jit(ops.corr2d)
_convolve2d = jax.jit(ops.convolve2d, static_argnames="mode")


def _check_single_channel(dtype, case):
    (H, W), (kh, kw), _, seed = case
    rng = np.random.default_rng(seed)
    X, K = h.random(rng, (H, W), dtype), h.random(rng, (kh, kw), dtype)
    X64, K64 = np.asarray(X, np.float64), np.asarray(K, np.float64)
    aX, aK = np.abs(X64), np.abs(K64)

    y = _corr2d(X, K)
    chex.assert_type(y, dtype)
    h.assert_close_to_reference(y, ref.corr2d(X, K), ref.corr2d(aX, aK), dtype)
    np.testing.assert_allclose(
        ref.corr2d(X, K), scipy.signal.correlate2d(X64, K64, "valid"), atol=1e-10
    )

    for mode in ("valid", "full"):
        y = _convolve2d(X, K, mode=mode)
        h.assert_close_to_reference(
            y, ref.convolve2d(X, K, mode), ref.convolve2d(aX, aK, mode), dtype
        )
        np.testing.assert_allclose(
            ref.convolve2d(X, K, mode), scipy.signal.convolve2d(X64, K64, mode), atol=1e-10
        )
    # "full" convolution is commutative; here K may be the larger one.
    h.assert_close_to_reference(
        _convolve2d(K, X, mode="full"),
        ref.convolve2d(X, K, "full"),
        ref.convolve2d(aX, aK, "full"),
        dtype,
    )


@h.FAST
@given(case=image_and_kernel())
def test_corr2d_and_convolve2d_equal_reference_and_scipy(case):
    _check_single_channel(jnp.float32, case)


@h.FEW
@given(case=image_and_kernel())
def test_corr2d_and_convolve2d_bfloat16_within_looser_tolerance(case):
    _check_single_channel(jnp.bfloat16, case)


def _check_multi_channel(dtype, case, co):
    (H, W), (kh, kw), ci, seed = case
    rng = np.random.default_rng(seed)
    X, K = h.random(rng, (ci, H, W), dtype), h.random(rng, (co, ci, kh, kw), dtype)
    aX, aK = np.abs(np.asarray(X, np.float64)), np.abs(np.asarray(K, np.float64))
    K1, aK1 = K[:, :, :1, :1], aK[:, :, :1, :1]
    for name, k, ak in [
        ("corr2d_multi_in", K[0], aK[0]),
        ("corr2d_multi_in_out", K, aK),
        ("corr2d_multi_in_out_1x1", K1, aK1),
    ]:
        y = jax.jit(getattr(ops, name))(X, k)
        chex.assert_type(y, dtype)
        r = getattr(ref, name)
        h.assert_close_to_reference(y, r(X, k), r(aX, ak), dtype)


@settings(h.FAST, max_examples=8)
@given(case=image_and_kernel(channels=True), co=st.integers(1, 3))
def test_multi_channel_equal_reference(case, co):
    _check_multi_channel(jnp.float32, case, co)


@settings(h.FEW, max_examples=3)
@given(case=image_and_kernel(channels=True), co=st.integers(1, 3))
def test_multi_channel_bfloat16_within_looser_tolerance(case, co):
    _check_multi_channel(jnp.bfloat16, case, co)


@settings(h.FAST, max_examples=8)
@given(case=image_and_kernel())
def test_corr2d_as_matmul_equals_corr2d(case):
    (H, W), (kh, kw), _, seed = case
    rng = np.random.default_rng(seed)
    X, K = h.random(rng, (H, W)), h.random(rng, (kh, kw))
    as_matmul = jax.jit(ops.corr2d_as_matmul, static_argnames="method")
    for method in ("toeplitz", "im2col"):
        h.close(as_matmul(X, K, method=method), _corr2d(X, K))


def test_kernel_matrix_structure():
    K = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    M = np.asarray(ops.corr2d_kernel_matrix(K, (3, 4)))
    chex.assert_shape(M, (2 * 3, 3 * 4))
    # Every row holds each tap exactly once and nothing else.
    np.testing.assert_array_equal(np.sort(M, axis=1)[:, -4:], np.tile([1.0, 2.0, 3.0, 4.0], (6, 1)))
    assert np.count_nonzero(M) == 6 * 4
    # Multiplying the one-hot image of pixel (1, 2) reads the column of that pixel.
    e = np.zeros((3, 4))
    e[1, 2] = 1.0
    np.testing.assert_array_equal(M @ e.ravel(), M[:, 1 * 4 + 2])
    np.testing.assert_array_equal((M @ e.ravel()).reshape(2, 3), ref.corr2d(e, K))


# --- Gradients, vmap, jit. ---

BOOK_OPS = [
    ("corr2d", (5, 6), (2, 3)),
    ("convolve2d", (5, 6), (3, 2)),
    ("corr2d_multi_in", (2, 5, 4), (2, 2, 2)),
    ("corr2d_multi_in_out", (2, 5, 4), (3, 2, 2, 2)),
    ("corr2d_multi_in_out_1x1", (2, 5, 4), (3, 2, 1, 1)),
]


@pytest.mark.parametrize("name, x_shape, k_shape", BOOK_OPS)
def test_grad_matches_finite_differences(name, x_shape, k_shape):
    rng = np.random.default_rng(7)
    h.assert_grad_matches_fd(
        getattr(ops, name), getattr(ref, name), (h.random(rng, x_shape), h.random(rng, k_shape))
    )


def test_convolve2d_full_and_matmul_grads_match_finite_differences():
    rng = np.random.default_rng(8)
    X, K = h.random(rng, (4, 5)), h.random(rng, (2, 3))
    h.assert_grad_matches_fd(
        lambda x, k: ops.convolve2d(x, k, "full"), lambda x, k: ref.convolve2d(x, k, "full"), (X, K)
    )
    for method in ("toeplitz", "im2col"):
        h.assert_grad_matches_fd(
            lambda x, k, method=method: ops.corr2d_as_matmul(x, k, method=method),
            ref.corr2d,
            (X, K),
        )


@pytest.mark.parametrize("name, x_shape, k_shape", BOOK_OPS)
def test_vmap_over_images_equals_loop(name, x_shape, k_shape):
    rng = np.random.default_rng(9)
    Xs, K = h.random(rng, (3, *x_shape)), h.random(rng, k_shape)
    f = getattr(ops, name)
    batched = jax.vmap(f, in_axes=(0, None))(Xs, K)
    for i in range(Xs.shape[0]):
        h.close(batched[i], f(Xs[i], K))
    h.close(jax.jit(f)(Xs[0], K), f(Xs[0], K))


def test_integer_input_is_promoted_to_float():
    y = ops.corr2d(jnp.arange(9).reshape(3, 3), jnp.array([[0, 1], [2, 3]]))
    chex.assert_type(y, jnp.float32)
    np.testing.assert_array_equal(y, [[19.0, 25.0], [37.0, 43.0]])
