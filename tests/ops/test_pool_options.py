"""torch's pooling options: ceil_mode, dilation, return_indices, divisor_override, max_unpool.

Each property holds the fast op to the loop reference (torch's CPU loops, in float64) and, where
one applies, to scipy.ndimage; plus hand-worked examples of torch's ceil-mode and divisor rules.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
from hypothesis import given
from hypothesis import strategies as st

from cnnjax import ops
from cnnjax.ops import reference as ref
from tests.ops import helpers as h


@st.composite
def option_cases(draw, rank: int = 2):
    """(x_shape, kwargs shared by max/avg pooling, dilation, seed): torch-valid combinations."""
    window = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(rank))
    stride = draw(st.one_of(st.none(), st.tuples(*[st.integers(1, 3)] * rank)))
    padding = tuple(draw(st.integers(0, k // 2)) for k in window)
    ceil_mode = draw(st.booleans())
    k_eff = [d * (k - 1) + 1 for k, d in zip(window, dilation)]
    spatial = tuple(draw(st.integers(max(1, k - 2 * p), k + 4)) for k, p in zip(k_eff, padding))
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    kw = dict(window=window, stride=stride, padding=padding, ceil_mode=ceil_mode)
    return (n, *spatial, c), kw, dilation, draw(st.integers(0, 2**16))


def _scipy_max(x, window, stride, padding, dilation, out) -> np.ndarray:
    """Dilated max pooling from scipy.ndimage.maximum_filter over a -inf-padded input."""
    x = np.asarray(x, np.float64)
    r = x.ndim - 2
    stride = window if stride is None else stride
    k_eff = [d * (k - 1) + 1 for k, d in zip(window, dilation)]
    # Pad after enough for the last (ceil-mode) window too.
    hi = [
        max(p, (o - 1) * s + k - n - p)
        for o, s, k, n, p in zip(out, stride, k_eff, x.shape[1:-1], padding)
    ]
    xp = np.pad(x, ((0, 0), *zip(padding, hi), (0, 0)), constant_values=-np.inf)
    footprint = np.zeros(k_eff, bool)
    footprint[tuple(slice(None, None, d) for d in dilation)] = True
    full = np.zeros((1, *k_eff, 1), bool)
    full[0, ..., 0] = footprint
    filtered = scipy.ndimage.maximum_filter(xp, footprint=full, mode="constant", cval=-np.inf)
    # The footprint is centred at k_eff // 2: the window starting at a is read at a + k_eff // 2.
    at = tuple(slice(k // 2, k // 2 + (o - 1) * s + 1, s) for k, o, s in zip(k_eff, out, stride))
    return filtered[(slice(None), *at, slice(None))][..., : x.shape[-1]][: x.shape[0]][
        (slice(None),) * (r + 2)
    ]


@h.FAST
@given(data=st.data(), rank=st.sampled_from([2, 1, 3]))
def test_max_pool_options_equal_reference_values_and_indices(data, rank):
    x_shape, kw, dilation, seed = data.draw(option_cases(rank))
    x = h.random(np.random.default_rng(seed), x_shape)
    f = jax.jit(functools.partial(ops.max_pool, dilation=dilation, return_indices=True, **kw))
    y, idx = f(x)
    want, want_idx = ref.max_pool(x, dilation=dilation, return_indices=True, **kw)
    # Max pooling only selects: values and indices are exact.
    np.testing.assert_array_equal(np.asarray(y, np.float64), want)
    np.testing.assert_array_equal(idx, want_idx)
    assert idx.dtype == jnp.int32
    # Without indices the op takes another path (reduce_window, or taps when dilated).
    plain = jax.jit(functools.partial(ops.max_pool, dilation=dilation, **kw))
    np.testing.assert_array_equal(np.asarray(plain(x), np.float64), want)
    # The indices point at the values they claim, in each example's and channel's plane.
    flat_x = np.moveaxis(np.asarray(x), -1, 1).reshape(x.shape[0], x.shape[-1], -1)
    flat_i = np.moveaxis(np.asarray(idx), -1, 1).reshape(x.shape[0], x.shape[-1], -1)
    picked = np.take_along_axis(flat_x, flat_i, axis=-1)
    np.testing.assert_array_equal(picked, np.moveaxis(np.asarray(y), -1, 1).reshape(picked.shape))
    if rank == 2:
        s = _scipy_max(x, kw["window"], kw["stride"], kw["padding"], dilation, y.shape[1:-1])
        np.testing.assert_array_equal(want, s)


@h.FAST
@given(
    data=st.data(),
    rank=st.sampled_from([2, 1, 3]),
    include=st.booleans(),
    divisor=st.sampled_from([None, 1, 3, -2]),
)
def test_avg_pool_options_equal_reference(data, rank, include, divisor):
    x_shape, kw, _, seed = data.draw(option_cases(rank))
    if rank == 3:  # torch's avg_pool3d needs the unpadded input to hold the window
        x_shape = (x_shape[0], *map(max, x_shape[1:-1], kw["window"]), x_shape[-1])
    x = h.random(np.random.default_rng(seed), x_shape)
    f = functools.partial(ops.avg_pool, count_include_pad=include, divisor_override=divisor, **kw)
    want = ref.avg_pool(x, count_include_pad=include, divisor_override=divisor, **kw)
    bound = ref.avg_pool(np.abs(np.asarray(x)), count_include_pad=include, **kw)
    if divisor is not None:
        bound = ref.avg_pool(np.abs(np.asarray(x)), divisor_override=abs(divisor), **kw)
    h.assert_close_to_reference(jax.jit(f)(x), want, bound, jnp.float32)
    if divisor == 1:
        # Window sums, independently: scipy's correlation with a box, read at window starts.
        box = np.ones((1, *kw["window"], 1))
        stride = kw["window"] if kw["stride"] is None else kw["stride"]
        out = want.shape[1:-1]
        xp = np.pad(
            np.asarray(x, np.float64),
            ((0, 0), *((p, p + k + s * o) for p, k, s, o in zip(kw["padding"], kw["window"],
                                                                 stride, out)), (0, 0)),
        )  # fmt: skip
        sums = scipy.ndimage.correlate(xp, box, mode="constant", origin=0)
        at = tuple(
            slice(k // 2, k // 2 + (o - 1) * s + 1, s) for k, o, s in zip(kw["window"], out, stride)
        )
        np.testing.assert_allclose(want, sums[(slice(None), *at, slice(None))], atol=1e-12)


# --- torch's rules, worked by hand. ---


def test_ceil_mode_keeps_a_last_window_that_starts_inside_the_input():
    x = jnp.arange(5.0).reshape(1, 5, 1)
    # Floor: 2 windows [0,1] [2,3]; ceil: a third [4] that overhangs the end.
    np.testing.assert_array_equal(ops.max_pool1d(x, 2)[0, :, 0], [1.0, 3.0])
    np.testing.assert_array_equal(ops.max_pool1d(x, 2, ceil_mode=True)[0, :, 0], [1.0, 3.0, 4.0])
    np.testing.assert_array_equal(ops.avg_pool1d(x, 2, ceil_mode=True)[0, :, 0], [0.5, 2.5, 4.0])
    # n = 4, window 3, stride 2, padding 1: windows start at -1, 1, 3; the last is clipped to
    # input + padding (size 2) for count_include_pad, to the input (size 1) otherwise.
    x = jnp.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 4, 1)
    avg = functools.partial(ops.avg_pool1d, window=3, stride=2, padding=1, ceil_mode=True)
    np.testing.assert_allclose(avg(x)[0, :, 0], [1.0, 3.0, 2.0])
    np.testing.assert_allclose(avg(x, count_include_pad=False)[0, :, 0], [1.5, 3.0, 4.0])
    # A window that would start in the right padding is dropped: n = 4, window 2, stride 2,
    # padding 1 gives ceil((4 + 2 - 2) / 2) + 1 = 3 windows starting at -1, 1, 3 (the 4th,
    # at 5, would start past the input and left padding).
    assert ops.max_pool1d(x, 2, stride=2, padding=1, ceil_mode=True).shape == (1, 3, 1)
    # A window wider than the input still gives one output in ceil mode, as in torch.
    assert ops.max_pool1d(jnp.ones((1, 2, 1)), 3, stride=2, ceil_mode=True).shape == (1, 1, 1)
    with pytest.raises(ValueError, match="window"):
        ops.max_pool1d(jnp.ones((1, 2, 1)), 3, stride=2)


def test_dilation_spaces_the_taps():
    x = (
        jnp.arange(6.0).reshape(1, 6, 1)
        * jnp.array([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])[None, :, None]
    )
    # Window 2 with dilation 2 compares x[i] and x[i + 2]: 0 vs 2, -1 vs -3, 2 vs 4, -3 vs -5.
    y, i = ops.max_pool1d(x, 2, stride=1, dilation=2, return_indices=True)
    np.testing.assert_array_equal(y[0, :, 0], [2.0, -1.0, 4.0, -3.0])
    np.testing.assert_array_equal(i[0, :, 0], [2, 1, 4, 3])


def test_ties_go_to_the_first_maximum_and_nan_wins():
    x = jnp.array([[1.0, 1.0], [1.0, 0.0]]).reshape(1, 2, 2, 1)
    y, i = ops.max_pool2d(x, 2, return_indices=True)
    assert (float(y[0, 0, 0, 0]), int(i[0, 0, 0, 0])) == (1.0, 0)
    x = jnp.array([[1.0, jnp.nan], [jnp.nan, 5.0]]).reshape(1, 2, 2, 1)
    for impl in ("auto", "lax"):
        assert np.isnan(ops.max_pool2d(x, 2, impl=impl)[0, 0, 0, 0])
    y, i = ops.max_pool2d(x, 2, return_indices=True)
    assert np.isnan(y[0, 0, 0, 0]) and int(i[0, 0, 0, 0]) == 2  # torch: the last NaN


def test_all_minus_inf_window_indexes_a_real_element_not_padding():
    x = jnp.full((1, 3, 1), -jnp.inf)
    y, i = ops.max_pool1d(x, 3, stride=1, padding=1, return_indices=True)
    np.testing.assert_array_equal(y[0, :, 0], [-np.inf] * 3)
    np.testing.assert_array_equal(i[0, :, 0], [0, 0, 1])


def test_avg_pool3d_needs_the_input_to_hold_the_window_as_torch_does():
    # torch's avg_pool3d refuses an input smaller than the window in some dim even where the
    # padding would make room (its 1-D/2-D forms and max_pool3d accept it).
    x = jnp.ones((1, 1, 5, 5, 2))
    with pytest.raises(ValueError, match=r"avg_pool3d: a 3-D average pool needs the input"):
        ops.avg_pool3d(x, (3, 3, 3), 1, 1)
    with pytest.raises(ValueError, match="at least the window"):
        ops.avg_pool(x, 2, 1, 1, layout="NHWC")
    assert ops.max_pool3d(x, (3, 3, 3), 1, 1).shape == (1, 1, 5, 5, 2)
    assert ops.avg_pool2d(x[:, 0, :1], (3, 3), 1, 1).shape == (1, 1, 5, 2)
    np.testing.assert_allclose(ops.avg_pool3d(x[:, :, :, :, :1], 1, padding=0), x[..., :1])


# --- max_unpool. ---


@h.FEW
@given(data=st.data(), rank=st.sampled_from([2, 1, 3]))
def test_max_unpool_scatters_the_pooled_maxima_back(data, rank):
    window = tuple(data.draw(st.integers(1, 3)) for _ in range(rank))
    stride = tuple(data.draw(st.integers(1, 3)) for _ in range(rank))
    padding = tuple(data.draw(st.integers(0, k // 2)) for k in window)
    spatial = tuple(data.draw(st.integers(k, k + 4)) for k in window)
    x = h.random(np.random.default_rng(data.draw(st.integers(0, 99))), (2, *spatial, 2))

    @jax.jit
    def pool_unpool(x):
        y, idx = ops.max_pool(x, window, stride, padding, return_indices=True)
        out = ops.max_unpool(y, idx, window, stride, padding, output_size=spatial)
        return y, idx, out, ops.max_unpool(y, idx, window, stride, padding)

    y, idx, out, default = pool_unpool(x)
    want = ref.max_unpool(y, idx, window, stride, padding, output_size=spatial)
    np.testing.assert_array_equal(np.asarray(out, np.float64), want)
    # Every nonzero of the unpooled array is an input value at its own position.
    nz = np.asarray(out) != 0
    np.testing.assert_array_equal(np.asarray(out)[nz], np.asarray(x)[nz])
    assert default.shape[1:-1] == tuple(
        (o - 1) * s + k - 2 * p for o, s, k, p in zip(y.shape[1:-1], stride, window, padding)
    )


def test_max_unpool_output_size_range_and_gradient():
    x = h.random(np.random.default_rng(4), (1, 5, 5, 2))
    y, idx = ops.max_pool2d(x, 2, return_indices=True)  # (1, 2, 2, 2); default unpool size 4
    assert ops.max_unpool2d(y, idx, 2, output_size=(5, 5)).shape == (1, 5, 5, 2)
    assert ops.max_unpool2d(y, idx, 2, output_size=(1, 5, 5, 2)).shape == (1, 5, 5, 2)
    with pytest.raises(ValueError, match="output_size must be within stride of the default"):
        ops.max_unpool2d(y, idx, 2, output_size=(6, 6))
    # d/dy sum(g * unpool(y)) = g at the indices.
    g = h.random(np.random.default_rng(5), (1, 5, 5, 2))
    grad = jax.jit(jax.grad(lambda v: jnp.sum(g * ops.max_unpool2d(v, idx, 2, output_size=5))))(y)
    gf = np.moveaxis(np.asarray(g), -1, 1).reshape(1, 2, -1)
    fi = np.moveaxis(np.asarray(idx), -1, 1).reshape(1, 2, -1)
    np.testing.assert_array_equal(
        np.moveaxis(np.asarray(grad), -1, 1).reshape(1, 2, -1), np.take_along_axis(gf, fi, -1)
    )


def test_max_unpool_gradient_reaches_every_entry_sharing_an_index():
    # Overlapping windows pick the same maximum twice: x = [1, 5, 2, 0], window 3, stride 1
    # gives values [5, 5] with indices [1, 1]. torch's gradient of unpooling is the output
    # gradient gathered at each entry's index, so both entries get g[1] (a scatter's own
    # derivative would give it to one of them only).
    x = jnp.array([1.0, 5.0, 2.0, 0.0]).reshape(1, 4, 1)
    g = jnp.array([0.0, 10.0, 0.0, 0.0]).reshape(1, 4, 1)

    @jax.jit
    def run(x):
        y, idx = ops.max_pool1d(x, 3, 1, return_indices=True)
        unpool = functools.partial(ops.max_unpool1d, indices=idx, window=3, stride=1)
        grad = jax.grad(lambda v: jnp.sum(g * unpool(v)))(y)
        # Forward mode: the tangent is that gradient's transpose, a scatter-add.
        tangent = jax.jvp(unpool, (y,), (jnp.ones_like(y),))[1]
        return idx, unpool(y), grad, tangent

    idx, out, grad, tangent = run(x)
    np.testing.assert_array_equal(idx[0, :, 0], [1, 1])
    np.testing.assert_array_equal(out[0, :, 0], [0, 5, 0, 0])
    np.testing.assert_array_equal(grad[0, :, 0], [10.0, 10.0])
    np.testing.assert_array_equal(tangent[0, :, 0], [0.0, 2.0, 0.0, 0.0])


def test_max_unpool_checks_concrete_indices_and_takes_an_empty_batch():
    # Window 2, stride 3, padding 1 over 5 positions: windows [-1, 0] and [2, 3]; a maximum at 3
    # lies outside the default unpooled size (2 - 1) * 3 + 2 - 2 = 3.
    y = jnp.ones((1, 2, 2))
    idx = np.array([[[0, 0], [3, 3]]])
    with pytest.raises(ValueError, match=r"max_unpool1d: indices must lie in \[0, 3\)"):
        ops.max_unpool1d(y, idx, 2, 3, padding=1)
    assert ops.max_unpool1d(y, idx, 2, 3, padding=1, output_size=5).shape == (1, 5, 2)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 5\)"):
        ops.max_unpool1d(y, idx - 1, 2, 3, padding=1, output_size=5)
    # Under jit the values are not known: out-of-range entries are dropped.
    dropped = jax.jit(lambda v, i: ops.max_unpool1d(v, i, 2, 3, padding=1))(y, idx)
    np.testing.assert_array_equal(dropped[0, :, 0], [1, 0, 0])
    # N = 0 (a one-element plane, stride larger than the plane).
    empty = ops.max_unpool1d(jnp.ones((0, 1, 2)), jnp.zeros((0, 1, 2), jnp.int32), 1, 3)
    assert empty.shape == (0, 1, 2)


# --- Gradients. ---

GRAD_CASES = [
    ("max_pool2d", dict(window=2, stride=1, dilation=2, padding=1)),
    ("max_pool2d", dict(window=3, stride=2, padding=1, ceil_mode=True)),
    ("avg_pool2d", dict(window=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    ("avg_pool2d", dict(window=2, stride=2, ceil_mode=True, divisor_override=3)),
]


@pytest.mark.parametrize("name, kw", GRAD_CASES)
def test_option_grads_match_finite_differences(name, kw):
    x = h.random(np.random.default_rng(1), (1, 5, 6, 2))
    h.assert_grad_matches_fd(
        functools.partial(getattr(ops, name), **kw),
        functools.partial(getattr(ref, name), **kw),
        (x,),
    )


def test_values_with_indices_have_torchs_gradient():
    x = h.random(np.random.default_rng(2), (1, 5, 5, 2))
    kw = dict(window=3, stride=2, padding=1, ceil_mode=True)
    h.assert_grad_matches_fd(
        lambda v: ops.max_pool2d(v, return_indices=True, **kw)[0],
        functools.partial(ref.max_pool2d, **kw),
        (x,),
    )


def test_pool_output_shape_matches_the_ops_in_both_modes():
    cases = [(5, 2, 2, 0, 1, True), (4, 3, 2, 1, 1, True), (7, 3, 1, 1, 2, False),
             (8, 2, 3, 1, 2, True), (2, 3, 2, 0, 1, True)]  # fmt: skip
    for n, k, s, p, d, ceil in cases:
        want = ops.max_pool1d(jnp.ones((1, n, 1)), k, s, p, d, ceil).shape[1:2]
        assert ops.pool_output_shape((n,), k, s, p, dilation=d, ceil_mode=ceil) == want
    assert ops.pool_output_shape((5, 5), 2, ceil_mode=True) == (3, 3)
    assert ops.pool_output_shape((5, 5), 2) == (2, 2)
