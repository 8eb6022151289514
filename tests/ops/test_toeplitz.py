"""toeplitz_conv2d against lax.conv_general_dilated; use_toeplitz's backend and shape rules."""

import functools
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

from cnnjax.ops.toeplitz import auto_tile, toeplitz_conv2d, use_toeplitz

_DN = ("NHWC", "HWIO", "NHWC")
# Off CPU, float32 matmuls default to TF32 (10-bit mantissa) while the reference asks for HIGHEST.
_TOL = dict(rtol=1e-5, atol=1e-5) if jax.default_backend() == "cpu" else dict(rtol=1e-2, atol=1e-2)


def _lax_conv(x, w, *, stride, padding, dilation):
    return lax.conv_general_dilated(
        x,
        w,
        stride,
        padding,
        rhs_dilation=dilation,
        dimension_numbers=_DN,
        precision=lax.Precision.HIGHEST,
    )


@jax.jit(static_argnames=("conv", "stride", "padding", "dilation"))
def _value_and_grads(x, w, ct, *, conv, stride, padding, dilation):
    """conv's output and its input and weight gradients for cotangent ct."""
    y, vjp = jax.vjp(
        lambda x, w: conv(x, w, stride=stride, padding=padding, dilation=dilation), x, w
    )
    return (y, *vjp(ct))


@jax.jit(static_argnames=("stride", "padding", "dilation"))
def _reference_value_and_grads(x, w, ct, *, stride, padding, dilation):
    """lax's output, and both gradients as the cotangent contracted with lax's Jacobians.

    The Jacobians come from forward mode, which runs only forward convolutions: lax's own VJP
    (a transposed convolution for the input gradient) makes XLA:CPU abort the whole process for
    some small strided convolutions whose dilated kernel is not square, e.g. x (1, 4, 6, 3),
    w (3, 2, 3, 2), stride 2, padding 1 (a failed CHECK, "Window dimensions do not match RHS
    shape", in the algebraic simplifier's convolution operand swap; jaxlib 0.10.2 and 0.12.0.1).
    The inputs here are small enough for dense Jacobians.
    """

    def conv(x, w):
        return _lax_conv(x, w, stride=stride, padding=padding, dilation=dilation)

    jac_x, jac_w = jax.jacfwd(conv, argnums=(0, 1))(x, w)
    hi = lax.Precision.HIGHEST
    return (
        conv(x, w),
        jnp.tensordot(ct, jac_x, ct.ndim, precision=hi),
        jnp.tensordot(ct, jac_w, ct.ndim, precision=hi),
    )


@st.composite
def _conv_cases(draw):
    """Small convolutions whose padded input fits the dilated kernel (any stride, padding)."""
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(2))
    # Smallest input that still gives one output row/column, plus some slack.
    h = max(1, dilation[0] * (kh - 1) + 1 - sum(padding[0])) + draw(st.integers(0, 5))
    w = max(1, dilation[1] * (kw - 1) + 1 - sum(padding[1])) + draw(st.integers(0, 5))
    n, c, o = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    tile = draw(st.one_of(st.none(), st.integers(1, 8)))
    kwargs = dict(stride=stride, padding=padding, dilation=dilation)
    return (n, h, w, c), (kh, kw, c, o), kwargs, tile, seed


@functools.cache
def _inputs_and_reference(x_shape, w_shape, kwargs_items, seed):
    """x, w and a cotangent drawn from ``seed``, and the reference's output and gradients for
    them; cached, since the tile tests hold many tiles to one reference."""
    kwargs = dict(kwargs_items)
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=w_shape), jnp.float32)
    y_shape = jax.eval_shape(lambda x, w: _lax_conv(x, w, **kwargs), x, w).shape
    ct = jnp.asarray(rng.normal(size=y_shape), jnp.float32)
    return (x, w, ct), _reference_value_and_grads(x, w, ct, **kwargs)


def _assert_matches_lax(x_shape, w_shape, kwargs, tile, seed):
    """toeplitz_conv2d(tile=tile)'s output and both gradients equal lax's (see
    :func:`_reference_value_and_grads` for how lax's gradients are computed)."""
    (x, w, ct), want = _inputs_and_reference(x_shape, w_shape, tuple(kwargs.items()), seed)
    tiled = functools.partial(toeplitz_conv2d, tile=tile)

    got = _value_and_grads(x, w, ct, conv=tiled, **kwargs)

    for name, g, e in zip(("output", "input grad", "weight grad"), got, want):
        chex.assert_shape(g, e.shape)
        # A weight-gradient entry sums N*Ho*Wo products, so its rounding error grows with the
        # largest entry, not with its own (possibly cancelled) value.
        atol = _TOL["atol"] * max(1.0, float(np.max(np.abs(e))))
        np.testing.assert_allclose(
            g, e, rtol=_TOL["rtol"], atol=atol, err_msg=f"{name}, tile={tile}"
        )


@settings(max_examples=12, deadline=None)
@given(_conv_cases())
def test_matches_lax_value_and_grads(case):
    _assert_matches_lax(*case)


_LENET_CONV1 = dict(stride=(1, 1), padding=((2, 2), (2, 2)), dilation=(1, 1))


_LENET_CONV2 = dict(stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1))
_STRIDED = dict(stride=(2, 3), padding=((1, 2), (0, 1)), dilation=(2, 1))


# Shapes of the kind the property test draws now and then (2 of 600 uniform draws of its ranges):
# with lax's own VJP as the reference, compiling the input gradient aborted the process (the xdist
# worker that died in test_matches_lax_value_and_grads). See _reference_value_and_grads.
@pytest.mark.parametrize(
    "x_shape,w_shape,kwargs",
    [
        (
            (1, 4, 6, 3),
            (3, 2, 3, 2),
            dict(stride=(2, 2), padding=((1, 1), (1, 1)), dilation=(1, 1)),
        ),
        (
            (2, 2, 4, 3),
            (2, 2, 3, 4),
            dict(stride=(2, 2), padding=((1, 1), (1, 2)), dilation=(2, 1)),
        ),
    ],
)
def test_matches_lax_where_lax_input_gradient_aborts_xla_cpu(x_shape, w_shape, kwargs):
    _assert_matches_lax(x_shape, w_shape, kwargs, tile=1, seed=8)


# Wo = 28 and 10: every divisor, non-divisors (the last tile overhangs) and tiles wider than Wo.
@pytest.mark.parametrize("tile", [None, 1, 3, 4, 7, 9, 14, 28, 40])
def test_every_tile_matches_lax_on_lenet_conv1(tile):
    _assert_matches_lax((2, 28, 28, 1), (5, 5, 1, 6), _LENET_CONV1, tile, seed=5)


@pytest.mark.parametrize("tile", [None, 1, 2, 3, 4, 5, 6, 10, 11])
def test_every_tile_matches_lax_on_lenet_conv2(tile):
    _assert_matches_lax((2, 14, 14, 6), (5, 5, 6, 16), _LENET_CONV2, tile, seed=6)


# Wo = 4 here (9 wide, padded by 0 + 1, dilated kernel 2 wide, stride 3 -> columns 0, 3, 6, 9).
@pytest.mark.parametrize("tile", [1, 2, 3, 4])
def test_every_tile_matches_lax_strided_dilated(tile):
    _assert_matches_lax((2, 9, 9, 3), (3, 2, 3, 4), _STRIDED, tile, seed=7)


@pytest.mark.parametrize(
    "tile,error", [(0, ValueError), (-1, ValueError), (2.0, TypeError), (True, TypeError)]
)
def test_rejects_bad_tile(tile, error):
    x, w = jnp.zeros((1, 6, 6, 1)), jnp.zeros((3, 3, 1, 2))
    with pytest.raises(error, match="tile"):
        toeplitz_conv2d(x, w, **_LENET_CONV2, tile=tile)


@pytest.mark.parametrize(
    "wo,kw,o,stride,dilation",
    [
        (28, 5, 6, 1, 1),
        (10, 5, 16, 1, 1),
        (13, 3, 8, 1, 1),
        (32, 3, 64, 2, 2),
        (7, 7, 2, 1, 1),
    ],
)
def test_auto_tile_bounds(wo, kw, o, stride, dilation):
    t = auto_tile(wo, kw, o, stride=stride, dilation=dilation, backend="cpu")

    assert wo % t == 0
    if t < wo:  # a narrower tile must meet both bounds, and no smaller divisor may
        assert t * stride >= (kw - 1) * dilation and t * o >= 24
        for d in range(1, t):
            assert wo % d or d * stride < (kw - 1) * dilation or d * o < 24
    assert auto_tile(wo, kw, o, stride=stride, dilation=dilation, backend="gpu") == wo


@pytest.mark.parametrize("kwargs", [_LENET_CONV2, _STRIDED], ids=["lenet-conv2", "strided-dilated"])
def test_vmap_over_population_of_inputs_and_weights(kwargs):
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.normal(size=(3, 2, 9, 10, 4)), jnp.float32)
    ws = jnp.asarray(rng.normal(size=(3, 3, 2, 4, 5)), jnp.float32)

    got = jax.vmap(lambda x, w: toeplitz_conv2d(x, w, **kwargs))(xs, ws)

    for k in range(3):
        np.testing.assert_allclose(got[k], _lax_conv(xs[k], ws[k], **kwargs), **_TOL)


@pytest.mark.parametrize("kwargs", [_LENET_CONV2, _STRIDED], ids=["lenet-conv2", "strided-dilated"])
def test_vmap_over_population_of_weights_only(kwargs):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, 9, 10, 4)), jnp.float32)
    ws = jnp.asarray(rng.normal(size=(3, 3, 2, 4, 5)), jnp.float32)

    got = jax.jit(jax.vmap(lambda w: toeplitz_conv2d(x, w, **kwargs)))(ws)

    for k in range(3):
        np.testing.assert_allclose(got[k], _lax_conv(x, ws[k], **kwargs), **_TOL)


def test_vmapped_weight_grads_match_per_member_grads():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(2, 8, 8, 3)), jnp.float32)
    ws = jnp.asarray(rng.normal(size=(4, 3, 3, 3, 2)), jnp.float32)

    def loss(w, conv):
        return jnp.sum(jnp.tanh(conv(x, w, **_STRIDED)))

    got = jax.jit(jax.vmap(jax.grad(lambda w: loss(w, toeplitz_conv2d))))(ws)

    for k in range(4):
        np.testing.assert_allclose(got[k], jax.grad(loss)(ws[k], _lax_conv), **_TOL)


def test_jit_equals_eager():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(2, 7, 6, 2)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(2, 3, 2, 3)), jnp.float32)

    def conv(x, w):
        return toeplitz_conv2d(x, w, **_STRIDED)

    np.testing.assert_allclose(jax.jit(conv)(x, w), conv(x, w), **_TOL)


def test_bfloat16_close_to_float32_result():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 12, 12, 3)).astype(np.float32)
    w = rng.normal(size=(5, 5, 3, 4)).astype(np.float32)
    kwargs = dict(stride=(1, 1), padding=((2, 2), (2, 2)), dilation=(1, 1))

    got = toeplitz_conv2d(jnp.asarray(x, jnp.bfloat16), jnp.asarray(w, jnp.bfloat16), **kwargs)

    assert got.dtype == jnp.bfloat16
    want = _lax_conv(jnp.asarray(x), jnp.asarray(w), **kwargs)
    # bfloat16 keeps 8 significant bits; the 75-term sums have magnitude ~9.
    np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=5e-2, atol=0.3)


def _grad_programs(conv):
    """(StableHLO, compiled HLO) of the input and weight gradient of a LeNet conv1-sized conv."""
    x = jnp.zeros((4, 28, 28, 1), jnp.float32)
    w = jnp.zeros((5, 5, 1, 6), jnp.float32)

    def loss(x, w):
        return jnp.sum(conv(x, w, stride=(1, 1), padding=((2, 2), (2, 2)), dilation=(1, 1)) ** 2)

    lowered = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, w)
    return lowered.as_text(), lowered.compile().as_text()


# Op names only, so source names in the programs' debug metadata cannot match. XLA:GPU compiles
# convolutions to cuDNN custom calls.
_STABLEHLO_CONV = re.compile(r"stablehlo\.convolution\b")
_HLO_CONV = re.compile(r"= \S+ convolution\(|__cudnn\$conv")


def test_gradient_programs_are_convolution_free():
    stablehlo, hlo = _grad_programs(toeplitz_conv2d)

    assert "dot_general" in stablehlo
    assert not _STABLEHLO_CONV.search(stablehlo)
    assert not _HLO_CONV.search(hlo)


def test_convolution_patterns_detect_lax_convolutions():
    stablehlo, hlo = _grad_programs(_lax_conv)

    assert _STABLEHLO_CONV.search(stablehlo)
    assert _HLO_CONV.search(hlo)


_LENET = [
    ((256, 28, 28, 1), (5, 5, 1, 6), ((2, 2), (2, 2))),
    ((256, 14, 14, 6), (5, 5, 6, 16), ((0, 0), (0, 0))),
]


def _auto(x_shape, w_shape, padding, *, groups=1, backend="cpu", stride=(1, 1)):
    return use_toeplitz(
        x_shape,
        w_shape,
        stride=stride,
        padding=padding,
        dilation=(1, 1),
        groups=groups,
        backend=backend,
    )


@pytest.mark.parametrize("x_shape,w_shape,padding", _LENET, ids=["conv1", "conv2"])
def test_auto_picks_toeplitz_for_lenet_on_cpu_and_gpu_not_tpu(x_shape, w_shape, padding):
    assert _auto(x_shape, w_shape, padding)
    assert _auto(x_shape, w_shape, padding, backend="gpu")
    assert not _auto(x_shape, w_shape, padding, backend="tpu")


def test_auto_never_picks_toeplitz_for_grouped_conv():
    # 2 groups: the HWIO kernel holds Ci/groups = 3 input channels.
    assert not _auto((256, 14, 14, 6), (5, 5, 3, 16), ((0, 0), (0, 0)), groups=2)


def test_auto_picks_the_width_tiled_gemm_for_lenet_variants_on_cpu_only():
    # LeNet with 3x3 kernels: conv2 is 14x14x6 -> 16. At full width the blow-up (C * Wu / kw =
    # 28) exceeds the bound, but with the 2-column tiles auto_tile picks it is 8 (measured
    # 1.8x faster than lax in training on CPU); GPUs run full width, so the rule stays there.
    assert _auto((256, 14, 14, 6), (3, 3, 6, 16), ((0, 0), (0, 0)))
    assert not _auto((256, 14, 14, 6), (3, 3, 6, 16), ((0, 0), (0, 0)), backend="gpu")
    # 16 input channels (tiled blow-up 21) and larger maps (a 242k-entry weight) stay on lax.
    assert not _auto((256, 14, 14, 16), (3, 3, 16, 16), ((0, 0), (0, 0)))
    assert not _auto((256, 28, 28, 6), (3, 3, 6, 16), ((1, 1), (1, 1)))


def test_auto_declines_wide_many_channel_convs():
    # A ResNet-style 3x3 conv on 56x56x64: the Toeplitz weight would be ~40 M entries.
    assert not _auto((32, 56, 56, 64), (3, 3, 64, 64), ((1, 1), (1, 1)))
