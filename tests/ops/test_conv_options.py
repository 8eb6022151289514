"""conv's torch options (padding modes, causal, layout, unbatched/empty input, static
hyper-parameters) and "auto" without traps (NaN/inf as lax, eager and forward-only choices)."""

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
from cnnjax.ops import toeplitz
from tests.ops import helpers as h

_NUMPY_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def test_padding_modes_hold_torchs_values_in_1d():
    # torch.nn.functional.pad([1, 2, 3], (2, 2), mode) by definition; a 1x1 identity conv shows
    # what the padding holds.
    x = jnp.asarray([1.0, 2.0, 3.0])[None, :, None]
    w = jnp.ones((1, 1, 1))
    expected = {
        "zeros": [0, 0, 1, 2, 3, 0, 0],
        "reflect": [3, 2, 1, 2, 3, 2, 1],
        "replicate": [1, 1, 1, 2, 3, 3, 3],
        "circular": [2, 3, 1, 2, 3, 1, 2],
    }
    for mode, values in expected.items():
        y = ops.conv1d(x, w, padding=2, padding_mode=mode)
        np.testing.assert_array_equal(y[0, :, 0], values, err_msg=mode)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@h.FEW
@given(data=st.data())
def test_padding_modes_equal_reference_on_padded_input(mode, data):
    rank = data.draw(st.integers(1, 3))
    x_shape, w_shape, kw, pads, with_bias, seed = data.draw(h.conv_cases(rank=rank, max_groups=2))
    # reflect needs padding < input size, circular <= it: grow the input to allow any padding.
    x_shape = (x_shape[0], *(n + 3 for n in x_shape[1:-1]), x_shape[-1])
    rng = np.random.default_rng(seed)
    x, w = h.random(rng, x_shape), h.random(rng, w_shape)
    b = h.random(rng, w_shape[-1:]) if with_bias else None
    if isinstance(kw["padding"], str) and kw["padding"] == "SAME":
        k_eff = [d * (k - 1) + 1 for k, d in zip(w_shape[:rank], kw["dilation"])]
        pads = jax.lax.padtype_to_pads(x_shape[1:-1], k_eff, kw["stride"], "SAME")
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), *pads, (0, 0)), mode=_NUMPY_MODE[mode])
    kw_ref = dict(kw, padding=0)
    y = ops.conv(x, w, b, padding_mode=mode, layout="NHWC", impl="lax", **kw)
    expected = ref.conv(xp, w, b, **kw_ref)
    bound = ref.conv(np.abs(xp), np.abs(np.asarray(w)), None if b is None else np.abs(b), **kw_ref)
    h.assert_close_to_reference(y, expected, bound, jnp.float32)


@pytest.mark.parametrize("impl", ["auto", "toeplitz"])
def test_padding_mode_with_every_2d_impl(impl):
    rng = np.random.default_rng(0)
    x, w = h.random(rng, (2, 9, 9, 1)), h.random(rng, (5, 5, 1, 4))
    xp = np.pad(np.asarray(x), ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    y = jax.jit(functools.partial(ops.conv2d, padding=2, padding_mode="reflect", impl=impl))(x, w)
    h.close(y, ref.conv2d(xp, w))


@pytest.mark.parametrize("dilation", [1, 3])
def test_causal_padding_left_pads_and_never_looks_ahead(dilation):
    rng = np.random.default_rng(dilation)
    x, w = h.random(rng, (2, 11, 3)), h.random(rng, (3, 3, 4))
    y = ops.conv1d(x, w, padding="causal", dilation=dilation)
    assert y.shape == (2, 11, 4)
    h.close(y, ref.conv1d(x, w, padding=((2 * dilation, 0),), dilation=dilation))
    # Output t depends on inputs <= t only: the Jacobian of y[:, t] is zero past t.
    t = 5
    grad = jax.grad(lambda x: ops.conv1d(x, w, padding="causal", dilation=dilation)[:, t].sum())(x)
    assert np.all(np.asarray(grad[:, t + 1 :]) == 0)
    assert np.any(np.asarray(grad[:, t]) != 0)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_nchw_layout_takes_torch_arrays_and_unbatched_input(rank):
    rng = np.random.default_rng(rank)
    x, w, b = h.random(rng, (2, *(6,) * rank, 4)), h.random(rng, (*(3,) * rank, 2, 6)), None
    b = h.random(rng, (6,))
    kw = dict(stride=2, padding=1, dilation=1, groups=2)
    y = ops.conv(x, w, b, layout="NHWC", **kw)
    h.close(y, ref.conv(x, w, b, **kw))
    x_t = jnp.moveaxis(x, -1, 1)  # (N, C, *spatial)
    w_t = jnp.transpose(w, (rank + 1, rank, *range(rank)))  # (Co, Ci/g, *kernel)
    y_t = jnp.moveaxis(y, -1, 1)
    h.close(ops.conv(x_t, w_t, b, layout="NCHW", **kw), y_t)
    h.close(ops.conv(x_t[1], w_t, b, layout="NCHW", **kw), y_t[1])  # unbatched: (C, *spatial)
    h.close(ops.conv(x[1], w, b, layout="NHWC", **kw), y[1])  # unbatched: (*spatial, C)


@pytest.mark.parametrize("impl", ["auto", "lax", "toeplitz"])
def test_empty_batch_gives_empty_result_and_gradients(impl):
    x, w = jnp.ones((0, 8, 8, 2)), jnp.ones((3, 3, 2, 5))
    y = ops.conv2d(x, w, padding=1, stride=2, impl=impl)
    assert y.shape == (0, 4, 4, 5)
    grad = jax.grad(lambda w: ops.conv2d(x, w, padding=1, impl=impl).sum())(w)
    np.testing.assert_array_equal(grad, np.zeros_like(w))


def test_traced_hyperparameter_error_shows_the_fix():
    x, w = jnp.ones((1, 8, 8, 2)), jnp.ones((3, 3, 2, 4))
    with pytest.raises(
        TypeError, match=r"stride must be static.*functools\.partial.*static_argnames"
    ):
        jax.jit(ops.conv2d)(x, w, stride=2)
    with pytest.raises(TypeError, match="padding must be static"):
        jax.jit(ops.conv2d)(x, w, padding=(1, 1))
    # The fixes the message names work.
    y = jax.jit(functools.partial(ops.conv2d, stride=2))(x, w)
    z = jax.jit(ops.conv2d, static_argnames=("stride",))(x, w, stride=2)
    np.testing.assert_array_equal(y, z)


def test_torch_weight_guard_has_an_explicit_escape():
    x, w = jnp.ones((1, 70, 8, 3)), jnp.ones((64, 3, 3, 3))
    with pytest.raises(ValueError, match=re.escape("looks like a PyTorch")):
        ops.conv2d(x, w)
    assert ops.conv2d(x, w, layout="NHWC").shape == (1, 7, 6, 3)  # the 64x3 HWIO reading
    x_t = jnp.ones((1, 3, 70, 8))
    assert ops.conv2d(x_t, w, layout="NCHW").shape == (1, 64, 68, 6)  # the torch reading


# --- "auto" without traps ----------------------------------------------------------------------

_LENET_C1 = ((4, 28, 28, 1), (5, 5, 1, 6), 2)


def _lenet_c1(rng):
    x_shape, w_shape, _ = _LENET_C1
    return h.random(rng, x_shape), h.random(rng, w_shape)


def _same_values(a, b):
    """Same NaN positions, same infinities, finite values equal up to rounding."""
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_array_equal(np.isinf(a), np.isinf(b))
    np.testing.assert_array_equal(a[np.isinf(a)], b[np.isinf(b)])
    finite = np.isfinite(a)
    np.testing.assert_allclose(a[finite], b[finite], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_auto_propagates_nan_and_inf_exactly_as_lax(bad):
    x, w = _lenet_c1(np.random.default_rng(0))
    if bad == "nan":
        x = x.at[1, 10, 12, 0].set(jnp.nan)
    else:  # +inf in one image, -inf at the border of another
        x = x.at[1, 10, 12, 0].set(jnp.inf).at[3, 0, 27, 0].set(-jnp.inf)
    auto = jax.jit(functools.partial(ops.conv2d, padding=2))
    lax_ = jax.jit(functools.partial(ops.conv2d, padding=2, impl="lax"))
    toep = jax.jit(functools.partial(ops.conv2d, padding=2, impl="toeplitz"))
    _same_values(auto(x, w), lax_(x, w))
    # The trap "auto" avoids: the bare Toeplitz GEMM spreads it (0 * inf = NaN) to more outputs.
    assert np.isnan(np.asarray(toep(x, w))).sum() > np.isnan(np.asarray(lax_(x, w))).sum()
    # Also when differentiated (the Toeplitz path) and under vmap over a population of weights.
    ws = jnp.stack([w, 2 * w])

    def grads(impl):
        def loss(w, x):
            return jnp.sum(ops.conv2d(x, w, padding=2, impl=impl) * jnp.arange(6.0))

        return jax.jit(jax.vmap(jax.value_and_grad(loss, argnums=(0, 1)), (0, None)))(ws, x)

    for got, want in zip(jax.tree.leaves(grads("auto")), jax.tree.leaves(grads("lax"))):
        _same_values(got, want)


def test_auto_is_lax_eagerly_and_toeplitz_when_traced_and_differentiated():
    x, w = _lenet_c1(np.random.default_rng(1))
    eager = ops.conv2d(x, w, padding=2)
    np.testing.assert_array_equal(eager, ops.conv2d(x, w, padding=2, impl="lax"))

    def loss(w):
        return jnp.sum(ops.conv2d(x, w, padding=2) ** 2)

    grad_jaxpr = str(jax.make_jaxpr(jax.grad(loss))(w))
    assert "dot_general" in grad_jaxpr and "cond" in grad_jaxpr
    # Under vmap the finiteness test is one for all members: still a cond, not a select.
    vmapped = str(jax.make_jaxpr(jax.vmap(jax.grad(loss)))(jnp.stack([w, w])))
    assert "cond" in vmapped


@pytest.mark.parametrize(
    "x_shape, w_shape, pad, forward_toeplitz",
    [
        ((4, 28, 28, 1), (5, 5, 1, 6), 2, True),  # LeNet conv1: Toeplitz wins forward too
        ((4, 14, 14, 6), (5, 5, 6, 16), 0, False),  # LeNet conv2
        ((4, 28, 28, 1), (3, 3, 1, 32), 0, False),  # MNIST-CNN conv1
    ],
)
def test_auto_forward_only_choice(x_shape, w_shape, pad, forward_toeplitz):
    rng = np.random.default_rng(2)
    x, w = h.random(rng, x_shape), h.random(rng, w_shape)
    f = functools.partial(ops.conv2d, padding=pad)
    forward = str(jax.make_jaxpr(f)(x, w))
    assert ("dot_general" in forward) == forward_toeplitz
    assert ("conv_general_dilated" in forward) != forward_toeplitz or "cond" in forward
    # Differentiated, all three pick the Toeplitz GEMM, and agree with lax.
    grad = str(jax.make_jaxpr(jax.grad(lambda w: f(x, w).sum()))(w))
    assert "dot_general" in grad
    h.close(jax.jit(f)(x, w), ops.conv2d(x, w, padding=pad, impl="lax"))


# What "auto" promises for finite inputs: lax's values up to float rounding, not bit for bit.
# The Toeplitz GEMM adds the products in another order; per output, float32 on CPU stays within
# 1e-6 of conv(|x|, |w|) (measured <= 4e-7 on LeNet's convs, i.e. ~5e-6 absolute on conv1's
# outputs near 25). GPUs may run float32 GEMMs and convs in TF32: helpers' GPU tolerance.
_AUTO_VS_LAX_RTOL = 1e-6


@pytest.mark.parametrize(
    "x_shape, w_shape, pad",
    [((32, 28, 28, 1), (5, 5, 1, 6), 2), ((32, 14, 14, 6), (5, 5, 6, 16), 0)],  # LeNet's convs
)
def test_auto_agrees_with_lax_to_float_rounding_under_jit(x_shape, w_shape, pad):
    rng = np.random.default_rng(4)
    x, w, b = h.random(rng, x_shape), h.random(rng, w_shape), h.random(rng, w_shape[-1:])
    n, size, co = x_shape[0], x_shape[1] + 2 * pad - w_shape[0] + 1, w_shape[-1]
    ct = h.random(rng, (n, size, size, co))

    def outputs(impl, x, w, b, ct):
        """The forward-only conv, then the differentiated one's output and x, w, b gradients."""
        conv = functools.partial(ops.conv2d, padding=pad, impl=impl)
        y, vjp = jax.vjp(conv, x, w, b)
        return (conv(x, w, b), y, *vjp(ct))

    # The differentiated conv runs the GEMM (as LeNet's training step does).
    assert "dot_general" in str(jax.make_jaxpr(functools.partial(outputs, "auto"))(x, w, b, ct))
    auto = jax.jit(functools.partial(outputs, "auto"))(x, w, b, ct)
    lax_ = jax.jit(functools.partial(outputs, "lax"))(x, w, b, ct)
    # Each entry's scale: the same sum over the absolute values of its terms.
    scales = outputs("lax", jnp.abs(x), jnp.abs(w), jnp.abs(b), jnp.abs(ct))
    tol = _AUTO_VS_LAX_RTOL if jax.default_backend() == "cpu" else h.rel_tol(jnp.float32)
    names = ("y (forward only)", "y", "dx", "dw", "db")
    for name, got, want, scale in zip(names, auto, lax_, scales):
        err = np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))
        worst = float(np.max(err / np.asarray(scale, np.float64)))
        assert worst <= tol, f"{name}: |auto - lax| reaches {worst:.3g} of the scale, over {tol}"


@pytest.mark.parametrize(
    "x_shape, w_shape, stride, pad",
    [
        ((32, 32, 32, 64), (3, 3, 64, 64), 1, 1),  # ResNet 3x3 64->64
        ((8, 224, 224, 3), (7, 7, 3, 64), 2, 3),  # ImageNet 7x7/2 stem
        ((32, 32, 32, 3), (3, 3, 3, 64), 1, 1),  # CIFAR stem
        ((32, 26, 26, 32), (3, 3, 32, 64), 1, 0),  # MNIST-CNN conv2
        ((32, 28, 28, 1), (3, 3, 1, 64), 1, 1),  # 1 -> 64: lax's GEMM is not starved
    ],
)
def test_auto_declines_research_shapes(x_shape, w_shape, stride, pad):
    kw = dict(stride=(stride,) * 2, padding=((pad, pad),) * 2, dilation=(1, 1))
    for backend in ("cpu", "gpu"):
        assert not toeplitz.use_toeplitz(x_shape, w_shape, **kw, groups=1, backend=backend)
