"""conv / conv1d / conv2d / conv3d: every impl == loop reference == scipy, grads, vmap, jit."""

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


def _abs_reference(x, w, b, **kw):
    """The reference applied to |x|, |w|, |b|: bounds the rounding error of each output."""
    return ref.conv(
        np.abs(np.asarray(x, np.float64)),
        np.abs(np.asarray(w, np.float64)),
        None if b is None else np.abs(np.asarray(b, np.float64)),
        **kw,
    )


def _check_case(case, impl, dtype):
    x_shape, w_shape, kw, pads, with_bias, seed = case
    rng = np.random.default_rng(seed)
    x, w = h.random(rng, x_shape, dtype), h.random(rng, w_shape, dtype)
    b = h.random(rng, w_shape[-1:], dtype) if with_bias else None
    # One compilation per example instead of one per primitive (eager dispatch is slower here).
    # layout="NHWC" spelled out: a random HWIO kernel may look like a torch weight to the guard.
    y = jax.jit(functools.partial(ops.conv, impl=impl, layout="NHWC", **kw))(x, w, b)
    chex.assert_type(y, dtype)
    expected = ref.conv(x, w, b, **kw)
    h.assert_close_to_reference(y, expected, _abs_reference(x, w, b, **kw), dtype)
    return x, w, b, pads, expected


def _max_groups(impl):
    return 3 if impl == "lax" else 1  # toeplitz is defined for groups == 1


@pytest.mark.parametrize("impl", ops.IMPLS)
@h.FAST
@given(data=st.data())
def test_conv2d_equals_reference_and_scipy(impl, data):
    case = data.draw(h.conv_cases(rank=2, max_groups=_max_groups(impl)))
    kw = case[2]
    x, w, b, pads, expected = _check_case(case, impl, jnp.float32)
    oracle = h.scipy_conv2d(
        x, w, b, stride=kw["stride"], pads=pads, dilation=kw["dilation"], groups=kw["groups"]
    )
    np.testing.assert_allclose(expected, oracle, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("impl", ops.IMPLS)
@h.FEW
@given(data=st.data())
def test_conv2d_bfloat16_within_looser_tolerance(impl, data):
    _check_case(data.draw(h.conv_cases(rank=2, max_groups=_max_groups(impl))), impl, jnp.bfloat16)


@pytest.mark.parametrize(
    "rank,op,reference,max_groups",
    [(1, ops.conv1d, ref.conv1d, 3), (3, ops.conv3d, ref.conv3d, 2)],
    ids=["conv1d", "conv3d"],
)
@h.FEW
@given(data=st.data())
def test_conv1d_and_conv3d_equal_reference(rank, op, reference, max_groups, data):
    x_shape, w_shape, kw, _, with_bias, seed = data.draw(
        h.conv_cases(rank=rank, max_groups=max_groups)
    )
    rng = np.random.default_rng(seed)
    x, w = h.random(rng, x_shape), h.random(rng, w_shape)
    b = h.random(rng, w_shape[-1:]) if with_bias else None
    h.assert_close_to_reference(
        op(x, w, b, layout="NHWC", **kw),
        reference(x, w, b, **kw),
        _abs_reference(x, w, b, **kw),
        jnp.float32,
    )


@pytest.mark.parametrize(
    "stride,padding",
    [(s, p) for s in (1, 2, 3) for p in ("SAME", "VALID", "valid")] + [(1, "same")],
)
def test_string_padding_matches_lax(stride, padding):
    # Lowercase "same" is torch's (stride 1 only, where it equals XLA's "SAME").
    rng = np.random.default_rng(stride)
    x, w = h.random(rng, (2, 7, 10, 3)), h.random(rng, (3, 4, 3, 5))
    y = ops.conv2d(x, w, stride=stride, padding=padding, dilation=(1, 2), impl="lax")
    expected = jax.lax.conv_general_dilated(
        x,
        w,
        (stride, stride),
        padding.upper(),
        rhs_dilation=(1, 2),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    h.close(y, expected)


def test_auto_and_every_impl_equal_reference():
    rng = np.random.default_rng(0)
    x, w, b = h.random(rng, (3, 12, 12, 2)), h.random(rng, (5, 5, 2, 6)), h.random(rng, (6,))
    kw = dict(stride=1, padding=2)
    expected, bound = ref.conv2d(x, w, b, **kw), _abs_reference(x, w, b, **kw)
    for impl in ("auto", *ops.IMPLS):
        h.assert_close_to_reference(
            ops.conv2d(x, w, b, impl=impl, **kw), expected, bound, jnp.float32
        )


def test_integer_input_is_promoted_to_float():
    x = jnp.arange(2 * 4 * 4 * 1).reshape(2, 4, 4, 1)
    w = jnp.ones((2, 2, 1, 1), jnp.int32)
    y = ops.conv2d(x, w, impl="lax")
    chex.assert_type(y, jnp.float32)
    np.testing.assert_array_equal(y, ref.conv2d(x, w))


GRAD_CASES = [
    dict(stride=1, padding=0, dilation=1, groups=1),
    dict(stride=2, padding=((1, 0), (2, 1)), dilation=1, groups=1),
    dict(stride=(1, 2), padding="SAME", dilation=(2, 1), groups=1),
    dict(stride=1, padding=1, dilation=1, groups=2),
]


@pytest.mark.parametrize(
    "impl, kw",
    [
        pytest.param(impl, kw, id=f"{impl}-{i}")
        for impl in ops.IMPLS
        for i, kw in enumerate(GRAD_CASES)
        if kw["groups"] <= _max_groups(impl)
    ],
)
def test_conv2d_grad_matches_finite_differences(impl, kw):
    rng = np.random.default_rng(1)
    x, w, b = (
        h.random(rng, (2, 6, 7, 4)),
        h.random(rng, (3, 2, 4 // kw["groups"], 4)),
        h.random(rng, (4,)),
    )
    h.assert_grad_matches_fd(
        functools.partial(ops.conv2d, impl=impl, **kw),
        functools.partial(ref.conv2d, **kw),
        (x, w, b),
    )


@pytest.mark.parametrize("conv, shape", [(ops.conv1d, (2, 9, 3)), (ops.conv3d, (1, 5, 4, 6, 3))])
def test_conv1d_conv3d_grad_matches_finite_differences(conv, shape):
    rng = np.random.default_rng(2)
    rank = len(shape) - 2
    x, w = h.random(rng, shape), h.random(rng, (2,) * rank + (3, 2))
    kw = dict(stride=2, padding=1, dilation=1)
    h.assert_grad_matches_fd(
        functools.partial(conv, **kw), functools.partial(ref.conv, **kw), (x, w)
    )


@pytest.mark.parametrize("impl", ops.IMPLS)
def test_vmap_over_images_equals_batched_call(impl):
    rng = np.random.default_rng(3)
    x, w, b = h.random(rng, (4, 8, 8, 3)), h.random(rng, (3, 3, 3, 5)), h.random(rng, (5,))
    kw = dict(stride=2, padding=1, impl=impl)

    def one(img):
        return ops.conv2d(img[None], w, b, **kw)[0]

    h.close(jax.vmap(one)(x), ops.conv2d(x, w, b, **kw))


@pytest.mark.parametrize("impl", ops.IMPLS)
def test_vmap_over_weights_equals_one_call_per_weight(impl):
    rng = np.random.default_rng(4)
    x, ws = h.random(rng, (2, 8, 8, 3)), h.random(rng, (3, 3, 3, 3, 2))
    stacked = jax.vmap(lambda w: ops.conv2d(x, w, padding="SAME", impl=impl))(ws)
    for i in range(ws.shape[0]):
        h.close(stacked[i], ops.conv2d(x, ws[i], padding="SAME", impl=impl))


@pytest.mark.parametrize("impl", ops.IMPLS)
def test_jit_equals_eager(impl):
    rng = np.random.default_rng(5)
    x, w = h.random(rng, (2, 9, 9, 2)), h.random(rng, (3, 3, 2, 4))
    f = functools.partial(ops.conv2d, stride=2, padding=(1, 0), dilation=2, impl=impl)
    h.close(jax.jit(f)(x, w), f(x, w))
