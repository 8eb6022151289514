"""Pooling: book examples, every impl == loop reference == sliding-window oracle, grads, vmap."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnnjax import ops
from cnnjax.ops import reference as ref
from tests.ops import helpers as h

# --- D2L 6.5 worked examples. ---


def test_book_pool2d_example():
    X = jnp.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]])
    np.testing.assert_array_equal(ops.pool2d(X, (2, 2)), [[4.0, 5.0], [7.0, 8.0]])
    np.testing.assert_array_equal(ops.pool2d(X, (2, 2), "avg"), [[2.0, 3.0], [5.0, 6.0]])


def _book_grid():
    return jnp.arange(16, dtype=jnp.float32).reshape(1, 4, 4, 1)


@pytest.mark.parametrize("impl", ["auto", "lax"])
def test_book_padding_and_stride_examples(impl):
    X = _book_grid()
    # A 3x3 window, stride 3 by default: one window over the top-left 3x3 block.
    np.testing.assert_array_equal(ops.max_pool2d(X, 3, impl=impl)[0, :, :, 0], [[10.0]])
    np.testing.assert_array_equal(
        ops.max_pool2d(X, 3, padding=1, stride=2)[0, :, :, 0], [[5.0, 7.0], [13.0, 15.0]]
    )
    np.testing.assert_array_equal(
        ops.max_pool2d(X, (2, 3), stride=(2, 3), padding=(0, 1))[0, :, :, 0],
        [[5.0, 7.0], [13.0, 15.0]],
    )


def test_book_multi_channel_example():
    X = _book_grid()
    X2 = jnp.concatenate([X, X + 1], axis=-1)
    Y = ops.max_pool2d(X2, 3, padding=1, stride=2)
    chex.assert_shape(Y, (1, 2, 2, 2))
    np.testing.assert_array_equal(Y[..., 1], Y[..., 0] + 1)
    np.testing.assert_array_equal(Y[0, :, :, 0], [[5.0, 7.0], [13.0, 15.0]])


# --- Properties. ---


def _check_pools(case, impl, dtype):
    x_shape, window, stride, padding, pads, seed = case
    x = h.random(np.random.default_rng(seed), x_shape, dtype)
    ax = np.abs(np.asarray(x, np.float64))
    s = window if stride is None else stride
    y = jax.jit(
        functools.partial(ops.max_pool, window=window, stride=stride, padding=padding, impl=impl)
    )(x)
    chex.assert_type(y, dtype)
    expected = ref.max_pool(x, window, stride, padding)
    # Max pooling only selects: exact in every dtype.
    np.testing.assert_array_equal(np.asarray(y, np.float64), expected)
    for include in (True, False):
        f = functools.partial(
            ops.avg_pool,
            window=window,
            stride=stride,
            padding=padding,
            count_include_pad=include,
            impl=impl,
        )
        expected = ref.avg_pool(x, window, stride, padding, count_include_pad=include)
        h.assert_close_to_reference(
            jax.jit(f)(x),
            expected,
            ref.avg_pool(ax, window, stride, padding, count_include_pad=include),
            dtype,
        )
        if len(window) == 2:
            oracle = h.window_view_pool(x, window, s, pads, "avg", include)
            np.testing.assert_allclose(expected, oracle, rtol=1e-12, atol=1e-12)
    if len(window) == 2:
        np.testing.assert_array_equal(
            ref.max_pool(x, window, stride, padding), h.window_view_pool(x, window, s, pads, "max")
        )


@h.FAST
@given(case=h.pool_cases())
def test_pool2d_lax_equals_reference_and_oracle(case):
    _check_pools(case, "lax", jnp.float32)


@h.FEW
@given(case=h.pool_cases())
def test_pool2d_bfloat16_within_looser_tolerance(case):
    _check_pools(case, "lax", jnp.bfloat16)


@pytest.mark.parametrize("impl", ["reshape", "auto"])
@h.FEW
@given(case=h.pool_cases(reshape_only=True))
def test_non_overlapping_pool2d_every_impl_equals_reference(impl, case):
    _check_pools(case, impl, jnp.float32)


@pytest.mark.parametrize("rank", [1, 3])
@h.FEW
@given(data=st.data())
def test_pool1d_pool3d_equal_reference(rank, data):
    _check_pools(data.draw(h.pool_cases(rank=rank)), "lax", jnp.float32)
    _check_pools(data.draw(h.pool_cases(rank=rank, reshape_only=True)), "reshape", jnp.float32)


@h.FEW
@given(
    H=st.integers(2, 7),
    W=st.integers(2, 7),
    ph=st.integers(1, 2),
    pw=st.integers(1, 2),
    seed=st.integers(0, 2**16),
)
def test_book_pool2d_equals_reference(H, W, ph, pw, seed):
    X = h.random(np.random.default_rng(seed), (H, W))
    pool2d = jax.jit(ops.pool2d, static_argnames=("pool_size", "mode"))
    for mode in ("max", "avg"):
        np.testing.assert_allclose(
            pool2d(X, (ph, pw), mode), ref.pool2d(X, (ph, pw), mode), rtol=1e-6
        )
    # pool2d is the batched op with stride 1 on a single-channel image.
    max_pool2d = jax.jit(ops.max_pool2d, static_argnames=("window", "stride"))
    np.testing.assert_array_equal(
        pool2d(X, (ph, pw)), max_pool2d(X[None, :, :, None], (ph, pw), stride=1)[0, :, :, 0]
    )


def test_reshape_impl_drops_the_incomplete_last_window():
    x = h.random(np.random.default_rng(0), (2, 7, 5, 3))
    for pool, r in ((ops.max_pool2d, ref.max_pool2d), (ops.avg_pool2d, ref.avg_pool2d)):
        y = pool(x, (2, 2), impl="reshape")
        chex.assert_shape(y, (2, 3, 2, 3))
        np.testing.assert_allclose(y, r(x, (2, 2)), rtol=1e-6)
        # Max pooling selects, so its impls agree exactly; a mean may round differently.
        np.testing.assert_allclose(y, pool(x, (2, 2), impl="lax"), rtol=1e-6, atol=1e-7)


def test_integer_input_is_promoted_to_float():
    x = jnp.arange(16).reshape(1, 4, 4, 1)
    y = ops.avg_pool2d(x, 2)
    chex.assert_type(y, jnp.float32)
    np.testing.assert_array_equal(y[0, :, :, 0], [[2.5, 4.5], [10.5, 12.5]])


# --- Gradients, vmap, jit. ---

GRAD_CASES = [
    ("max_pool2d", dict(window=2, impl="reshape")),
    ("max_pool2d", dict(window=3, stride=2, padding=1, impl="lax")),
    ("avg_pool2d", dict(window=2, impl="reshape")),
    (
        "avg_pool2d",
        dict(
            window=3, stride=(1, 2), padding=((1, 0), (0, 1)), count_include_pad=False, impl="lax"
        ),
    ),
    ("avg_pool2d", dict(window=(2, 3), stride=1, padding=1, impl="lax")),
]


@pytest.mark.parametrize("name, kw", GRAD_CASES)
def test_grad_matches_finite_differences(name, kw):
    x = h.random(np.random.default_rng(1), (2, 6, 6, 2))
    ref_kw = {k: v for k, v in kw.items() if k != "impl"}
    h.assert_grad_matches_fd(
        functools.partial(getattr(ops, name), **kw),
        functools.partial(getattr(ref, name), **ref_kw),
        (x,),
    )


def test_book_pool2d_grad_matches_finite_differences():
    X = h.random(np.random.default_rng(2), (5, 6))
    for mode in ("max", "avg"):
        h.assert_grad_matches_fd(
            lambda x, mode=mode: ops.pool2d(x, (2, 3), mode),
            lambda x, mode=mode: ref.pool2d(x, (2, 3), mode),
            (X,),
        )


@pytest.mark.parametrize("name, kw", GRAD_CASES)
def test_vmap_over_images_equals_batched_call(name, kw):
    x = h.random(np.random.default_rng(3), (3, 6, 6, 2))
    f = functools.partial(getattr(ops, name), **kw)
    np.testing.assert_allclose(jax.vmap(lambda img: f(img[None])[0])(x), f(x), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(f)(x), f(x), rtol=1e-6)
