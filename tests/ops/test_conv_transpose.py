"""conv_transpose*d: == scatter-loop reference == adjoint of conv == scipy's full convolution."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal
from hypothesis import given
from hypothesis import strategies as st

from cnnjax import ops
from cnnjax.ops import reference as ref
from tests.ops import helpers as h


@st.composite
def _cases(draw, rank):
    """(x_shape, w_shape, kwargs, with_bias, seed) of a valid transposed conv."""
    groups = draw(st.integers(1, 2))
    ci, co_g = groups * draw(st.integers(1, 2)), draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(rank))
    out_pad = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    spatial = tuple(draw(st.integers(1, 4)) for _ in range(rank))
    # Crop at most what leaves one output: full size (n-1)*s + d*(k-1) + 1 + op.
    full = [(n - 1) * s + d * (k - 1) + 1 + o for n, s, d, k, o in
            zip(spatial, stride, dilation, kernel, out_pad)]  # fmt: skip
    pads = tuple(
        (lo, draw(st.integers(0, min(2, f - 1 - lo))))
        for f in full
        for lo in [draw(st.integers(0, min(2, f - 1)))]
    )
    padding = draw(st.sampled_from([pads, tuple(lo for lo, _ in pads)]))
    if not isinstance(padding[0], tuple):
        padding = tuple(min(p, (f - 1) // 2) for p, f in zip(padding, full))
    kw = dict(
        stride=stride, padding=padding, output_padding=out_pad, dilation=dilation, groups=groups
    )
    n = draw(st.integers(1, 2))
    return (n, *spatial, ci), (*kernel, ci, co_g), kw, draw(st.booleans()), draw(st.integers(0, 99))


@pytest.mark.parametrize("rank", [1, 2, 3])
@h.FEW
@given(data=st.data())
def test_equals_scatter_loop_reference(rank, data):
    x_shape, w_shape, kw, with_bias, seed = data.draw(_cases(rank))
    rng = np.random.default_rng(seed)
    x, w = h.random(rng, x_shape), h.random(rng, w_shape)
    b = h.random(rng, (w_shape[-1] * kw["groups"],)) if with_bias else None
    y = jax.jit(functools.partial(ops.conv_transpose, **kw))(x, w, b)
    expected = ref.conv_transpose(x, w, b, **kw)
    bound = ref.conv_transpose(np.abs(x), np.abs(w), None if b is None else np.abs(b), **kw)
    h.assert_close_to_reference(y, expected, bound, jnp.float32)


@pytest.mark.parametrize(
    "kw",
    [
        dict(stride=2, padding=1, output_padding=1),
        dict(stride=(3, 1), padding=(0, 2), dilation=(1, 2)),
        dict(stride=2, padding=0, groups=2),
    ],
)
def test_is_the_adjoint_of_conv(kw):
    # conv_transpose(y, w) == d/dx <conv(x, w'), y> with w' = w's channel axes swapped.
    rng = np.random.default_rng(0)
    x, wt = h.random(rng, (2, 9, 8, 4)), h.random(rng, (3, 3, 4 // kw.get("groups", 1), 6))
    conv_kw = {k: v for k, v in kw.items() if k != "output_padding"}
    y, vjp = jax.vjp(lambda x: ops.conv2d(x, wt, layout="NHWC", impl="lax", **conv_kw), x)
    ct = h.random(rng, y.shape)
    (expected,) = vjp(ct)
    # The forward conv's weight (*k, Ci/g, Co) regrouped as the transposed conv's (*k, Co, Ci/g).
    g = kw.get("groups", 1)
    w = wt.reshape(3, 3, 4 // g, g, 6 // g).transpose(0, 1, 3, 4, 2).reshape(3, 3, 6, 4 // g)
    out_pad = tuple(
        n - ((m - 1) * s - 2 * p + d * 2 + 1)
        for n, m, s, p, d in zip(
            x.shape[1:3],
            y.shape[1:3],
            np.broadcast_to(kw["stride"], 2),
            np.broadcast_to(kw["padding"], 2),
            np.broadcast_to(kw.get("dilation", 1), 2),
        )
    )
    kt = dict(kw, output_padding=out_pad)
    h.close(ops.conv_transpose2d(ct, w, **kt), expected)


def test_stride_one_equals_scipy_full_convolution_cropped():
    rng = np.random.default_rng(1)
    x, w = h.random(rng, (1, 6, 7, 2)), h.random(rng, (3, 4, 2, 3))
    y = ops.conv_transpose2d(x, w, padding=(1, 2))
    for o in range(3):
        full = sum(
            scipy.signal.convolve2d(np.asarray(x[0, :, :, c]), np.asarray(w[:, :, c, o]), "full")
            for c in range(2)
        )
        h.close(y[0, :, :, o], full[1:-1, 2:-2])


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_nchw_layout_takes_torch_arrays(rank):
    rng = np.random.default_rng(rank)
    x, w = h.random(rng, (2, *(4,) * rank, 4)), h.random(rng, (*(3,) * rank, 4, 3))
    kw = dict(stride=2, padding=1, output_padding=1, groups=2)
    y = ops.conv_transpose(x, w, **kw)
    x_t = jnp.moveaxis(x, -1, 1)
    w_t = jnp.transpose(w, (rank, rank + 1, *range(rank)))  # torch's (Ci, Co/g, *k)
    h.close(ops.conv_transpose(x_t, w_t, layout="NCHW", **kw), jnp.moveaxis(y, -1, 1))
    # Unbatched in, unbatched out; an empty batch gives an empty batch of the same shape.
    h.close(ops.conv_transpose(x_t[0], w_t, layout="NCHW", **kw), jnp.moveaxis(y, -1, 1)[0])
    assert ops.conv_transpose(x[:0], w, **kw).shape == (0, *y.shape[1:])


def test_grad_matches_finite_differences():
    rng = np.random.default_rng(2)
    x, w, b = h.random(rng, (2, 4, 5, 2)), h.random(rng, (3, 2, 2, 3)), h.random(rng, (3,))
    kw = dict(stride=(2, 1), padding=(1, 0), output_padding=(1, 0))
    h.assert_grad_matches_fd(
        functools.partial(ops.conv_transpose2d, **kw),
        functools.partial(ref.conv_transpose, **kw),
        (x, w, b),
    )


X, W = jnp.ones((2, 4, 4, 4)), jnp.ones((3, 3, 4, 2))


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: ops.conv_transpose2d(X, W, stride=2, output_padding=2),
            "conv_transpose2d: output_padding must be smaller than stride or dilation in every"
            " dim, got output_padding (2, 2), stride (2, 2), dilation (1, 1)",
        ),
        (
            lambda: ops.conv_transpose2d(X, W, padding="same"),
            "conv_transpose2d: padding must be an int, 2 ints or 2 (lo, hi) pairs",
        ),
        (
            lambda: ops.conv_transpose2d(X, jnp.ones((3, 3, 2, 4))),
            "conv_transpose2d: w has 2 input channels, expected Ci = 4",
        ),
        (
            lambda: ops.conv_transpose2d(X, W, groups=3),
            "conv_transpose2d: groups=3 must divide the input channels (4)",
        ),
        (
            lambda: ops.conv_transpose2d(X, W, b=jnp.ones(3), groups=2),
            "conv_transpose2d: b must have shape (Co,) = (4,)",
        ),
        (
            lambda: ops.conv_transpose2d(X[:, :1, :1], W, padding=2),
            "conv_transpose2d: the output size (-1, -1) must be >= 1 in every dim",
        ),
        (
            lambda: ops.conv_transpose2d(X[0, 0], W),
            "conv_transpose2d: x must be 4-D (N, H, W, C) or 3-D unbatched (H, W, C)",
        ),
        (
            lambda: ops.conv_transpose2d(X[:0], W, stride=0),
            "conv_transpose2d: stride must be >= 1 in every dim, got 0",
        ),
    ],
)
def test_bad_input_raises_naming_the_argument(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()
