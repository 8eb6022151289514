"""Adaptive/global pooling, and torch's input conventions for every pooling op (layout,
unbatched input, empty batches, static hyper-parameters)."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnnjax import ops
from cnnjax.ops import reference as ref
from tests.ops import helpers as h


@h.FEW
@given(data=st.data(), rank=st.sampled_from([2, 1, 3]))
def test_adaptive_pools_equal_reference(data, rank):
    spatial = tuple(data.draw(st.integers(1, 7)) for _ in range(rank))
    out = tuple(data.draw(st.one_of(st.none(), st.integers(1, 8))) for _ in range(rank))
    x = h.random(np.random.default_rng(data.draw(st.integers(0, 99))), (2, *spatial, 2))

    @jax.jit
    def both(x):
        return ops.adaptive_avg_pool(x, out), ops.adaptive_max_pool(x, out, True)

    avg, (mx, idx) = both(x)
    h.assert_close_to_reference(
        avg, ref.adaptive_avg_pool(x, out), ref.adaptive_avg_pool(np.abs(x), out), jnp.float32
    )
    want, want_idx = ref.adaptive_max_pool(x, out, return_indices=True)
    np.testing.assert_array_equal(np.asarray(mx, np.float64), want)
    np.testing.assert_array_equal(idx, want_idx)


def test_adaptive_bins_are_torchs():
    assert ops.adaptive_avg_pool1d  # the 1d/2d/3d forms exist
    from cnnjax.ops.adaptive import adaptive_bins

    assert adaptive_bins(5, 3) == [(0, 2), (1, 4), (3, 5)]
    assert adaptive_bins(3, 5) == [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3)]
    x = jnp.arange(5.0).reshape(1, 5, 1)
    np.testing.assert_allclose(ops.adaptive_avg_pool1d(x, 3)[0, :, 0], [0.5, 2.0, 3.5])


def test_adaptive_equals_fixed_pooling_where_bins_tile_and_global_is_the_mean():
    x = h.random(np.random.default_rng(0), (2, 6, 8, 3))
    h.close(ops.adaptive_avg_pool2d(x, (3, 2)), ops.avg_pool2d(x, (2, 4)))
    np.testing.assert_array_equal(ops.adaptive_max_pool2d(x, (3, 2)), ops.max_pool2d(x, (2, 4)))
    h.close(ops.global_avg_pool(x), x.mean(axis=(1, 2)))
    np.testing.assert_array_equal(ops.global_max_pool(x), x.max(axis=(1, 2)))
    assert ops.global_avg_pool(x, keepdims=True).shape == (2, 1, 1, 3)
    xc = jnp.moveaxis(x, -1, 1)
    assert ops.global_max_pool(xc, keepdims=True, layout="NCHW").shape == (2, 3, 1, 1)
    np.testing.assert_array_equal(ops.global_max_pool(xc, layout="NCHW"), ops.global_max_pool(x))


def test_adaptive_grads_match_finite_differences():
    x = h.random(np.random.default_rng(3), (1, 5, 7, 2))
    for op, r in ((ops.adaptive_avg_pool2d, ref.adaptive_avg_pool),
                  (ops.adaptive_max_pool2d, ref.adaptive_max_pool)):  # fmt: skip
        h.assert_grad_matches_fd(lambda v, op=op: op(v, (3, 4)), lambda v, r=r: r(v, (3, 4)), (x,))


# --- torch's input conventions, for every pooling op. ---

POOLS = [
    ("max_pool2d", dict(window=3, stride=2, padding=1, ceil_mode=True)),
    ("max_pool2d", dict(window=2, dilation=2, return_indices=True)),
    ("avg_pool2d", dict(window=3, stride=2, ceil_mode=True, count_include_pad=False)),
    ("max_pool1d", dict(window=2, return_indices=True)),
    ("avg_pool3d", dict(window=2, divisor_override=3)),
    ("adaptive_avg_pool2d", dict(output_size=(2, 3))),
    ("adaptive_max_pool3d", dict(output_size=2, return_indices=True)),
]


def _rank(name):
    return int(re.search(r"(\d)d$", name).group(1))


@pytest.mark.parametrize("name, kw", POOLS)
def test_nchw_unbatched_and_empty_batch_follow_torch(name, kw):
    f = jax.jit(functools.partial(getattr(ops, name), **kw), static_argnames=("layout",))
    r = _rank(name)
    x = h.random(np.random.default_rng(0), (2, *[5, 6, 4][:r], 3))
    y = f(x)
    # "NCHW": torch's layout in, torch's layout out, same numbers.
    y_first = f(jnp.moveaxis(x, -1, 1), layout="NCHW")
    for a, b in zip(jax.tree.leaves(y), jax.tree.leaves(y_first)):
        np.testing.assert_array_equal(jnp.moveaxis(b, 1, -1), a)
    # Unbatched: one example in, one example out.
    for a, b in zip(jax.tree.leaves(y), jax.tree.leaves(f(x[1]))):
        np.testing.assert_array_equal(b, a[1])
    # An empty batch: an empty result of the right shape.
    for a, b in zip(jax.tree.leaves(y), jax.tree.leaves(f(x[:0]))):
        assert b.shape == (0, *a.shape[1:]) and b.dtype == a.dtype


def test_empty_batch_still_validates_every_hyper_parameter_first():
    empty = jnp.ones((0, 4, 4, 2))
    with pytest.raises(ValueError, match="max_pool2d: padding must be at most half the window"):
        ops.max_pool2d(empty, 2, padding=2)
    with pytest.raises(ValueError, match="avg_pool2d: divisor_override must not be 0"):
        ops.avg_pool2d(empty, 2, divisor_override=0)
    with pytest.raises(ValueError, match="max_pool2d: x must not be empty"):
        ops.max_pool2d(jnp.ones((1, 0, 4, 2)), 2)
    with pytest.raises(ValueError, match=r"or 3-D unbatched \(C, H, W\)"):
        ops.avg_pool2d(jnp.ones((4, 4)), 2, layout="NCHW")
    with pytest.raises(ValueError, match="layout must be one of"):
        ops.max_pool2d(empty, 2, layout="NWHC")


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda x, s: ops.max_pool2d(x, 2, stride=s), "stride"),
        (lambda x, s: ops.avg_pool2d(x, s), "window"),
        (lambda x, s: ops.max_pool2d(x, 2, ceil_mode=s > 1), "ceil_mode"),
        (lambda x, s: ops.adaptive_avg_pool2d(x, s), "output_size"),
        (lambda x, s: ops.avg_pool2d(x, 2, divisor_override=s), "divisor_override"),
    ],
)
def test_traced_hyper_parameters_say_they_must_be_static(call, name):
    x = jnp.ones((1, 4, 4, 1))
    with pytest.raises(TypeError, match=f"{name} must be static") as e:
        jax.jit(call)(x, 2)
    assert "functools.partial" in str(e.value) and "static_argnames" in str(e.value)
    # The fix it shows works.
    assert jax.jit(call, static_argnames=("s",))(x, s=2).ndim == 4


def test_output_size_zero_gives_an_empty_result_and_none_is_not_a_1d_size():
    # torch: output_size 0 in any dim gives an empty result (not an error); its 1-D forms take
    # ints only, so None there is refused rather than read as "keep the input size".
    x = h.random(np.random.default_rng(3), (2, 5, 4, 3))
    assert ops.adaptive_avg_pool2d(x, (0, 2)).shape == (2, 0, 2, 3)
    y, idx = ops.adaptive_max_pool2d(x, 0, return_indices=True)
    assert y.shape == idx.shape == (2, 0, 0, 3)
    assert ops.adaptive_avg_pool1d(x[:, :, 0], 0).shape == (2, 0, 3)
    with pytest.raises(ValueError, match="output_size must be >= 0"):
        ops.adaptive_avg_pool2d(x, (-1, 2))
    with pytest.raises(TypeError, match="output_size must be an int for a 1-D pool"):
        ops.adaptive_max_pool1d(x[:, :, 0], (None,))
    assert ops.adaptive_avg_pool2d(x, (None, 2)).shape == (2, 5, 2, 3)
