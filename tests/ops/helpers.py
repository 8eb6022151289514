"""Oracles, tolerances and hypothesis strategies shared by the ops tests."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.signal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# Every new shape costs XLA compilations (~0.1-0.2 s each on a busy 2-core CI machine), so the
# example counts are small; derandomized so CI sees the same examples every run.
FAST = settings(
    max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
FEW = settings(
    max_examples=5, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


DTYPES = (jnp.float32, jnp.bfloat16)


def rel_tol(dtype) -> float:
    """Error bound relative to sum(|x| * |w|) of one output element.

    float32 on CPU is exact to a few ulps; GPUs may run float32 convs in TF32 (10-bit mantissa).
    bfloat16 (8-bit mantissa): the output's own rounding is 2**-9, accumulation adds more.
    """
    if jnp.dtype(dtype) == jnp.bfloat16:
        return 2.0**-6
    return 1e-5 if jax.default_backend() == "cpu" else 2e-3


def close(a, b, dtype=jnp.float32) -> None:
    """Two fast computations of the same thing agree (different orders of float32 rounding)."""
    tol = max(rel_tol(dtype), 1e-6)
    np.testing.assert_allclose(
        np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=tol, atol=tol
    )


def fd_rtol() -> float:
    """Tolerance of a float32 directional derivative against a float64 finite difference."""
    return 2e-3 if jax.default_backend() == "cpu" else 2e-2


def random(rng: np.random.Generator, shape, dtype=jnp.float32) -> jax.Array:
    return jnp.asarray(rng.standard_normal(shape), dtype)


def assert_close_to_reference(y, ref, ref_abs, dtype) -> None:
    """|y - ref| <= tol * ref_abs, where ref_abs is the same op applied to |inputs|."""
    y = np.asarray(y, np.float64)
    assert y.shape == ref.shape, (y.shape, ref.shape)
    bound = rel_tol(dtype) * np.asarray(ref_abs) + 1e-6
    err = np.abs(y - ref)
    assert np.all(err <= bound), (
        f"max error {err.max():.3g}, max allowed {bound[err > bound].min():.3g}"
    )


def dilate_kernel(k: np.ndarray, dilation) -> np.ndarray:
    """A 2-D kernel with dilation-1 zeros inserted between taps."""
    dh, dw = dilation
    out = np.zeros(((k.shape[0] - 1) * dh + 1, (k.shape[1] - 1) * dw + 1))
    out[::dh, ::dw] = k
    return out


def scipy_conv2d(x, w, b, *, stride, pads, dilation, groups) -> np.ndarray:
    """conv2d from scipy.signal.correlate2d channel pair by channel pair: an independent oracle.

    x (N, H, W, Ci), w (kh, kw, Ci/groups, Co), explicit pads ((t, b), (l, r)).
    """
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    ci_g, co = w.shape[2], w.shape[3]
    co_g = co // groups
    outs = []
    for n in range(x.shape[0]):
        xp = np.pad(x[n], (*pads, (0, 0)))
        chans = []
        for o in range(co):
            g = o // co_g
            acc = sum(
                scipy.signal.correlate2d(
                    xp[:, :, g * ci_g + c], dilate_kernel(w[:, :, c, o], dilation), "valid"
                )
                for c in range(ci_g)
            )
            chans.append(acc[:: stride[0], :: stride[1]])
        outs.append(np.stack(chans, -1))
    y = np.stack(outs)
    return y if b is None else y + np.asarray(b, np.float64)


def window_view_pool(
    x, window, stride, pads, mode: str, count_include_pad: bool = True
) -> np.ndarray:
    """2-D pooling of (N, H, W, C) via numpy's sliding_window_view: an oracle without loops."""
    x = np.asarray(x, np.float64)
    full = ((0, 0), *pads, (0, 0))
    fill = -np.inf if mode == "max" else 0.0
    xp = np.pad(x, full, constant_values=fill)
    real = np.pad(np.ones_like(x), full)
    view = np.lib.stride_tricks.sliding_window_view(xp, window, axis=(1, 2))[
        :, :: stride[0], :: stride[1]
    ]
    if mode == "max":
        return view.max(axis=(-2, -1))
    counts = np.lib.stride_tricks.sliding_window_view(real, window, axis=(1, 2))[
        :, :: stride[0], :: stride[1]
    ]
    denom = np.prod(window) if count_include_pad else counts.sum(axis=(-2, -1))
    return view.sum(axis=(-2, -1)) / denom


def assert_grad_matches_fd(fast, ref, args, *, seed: int = 0, eps: float = 1e-4) -> None:
    """JAX's gradient of the fast op equals a float64 central difference of the reference.

    For a random cotangent g, L = sum(ref(args) * g), and each argument a random direction v:
    <grad_a sum(fast(args) * g), v> == (L(a + eps v) - L(a - eps v)) / (2 eps).
    """
    rng = np.random.default_rng(seed)
    y = np.asarray(jax.jit(fast)(*args))
    g = rng.standard_normal(y.shape)
    grads = jax.jit(jax.grad(lambda *a: jnp.sum(fast(*a) * g), argnums=tuple(range(len(args)))))(
        *args
    )
    for i, (a, grad) in enumerate(zip(args, grads)):
        v = rng.standard_normal(np.shape(a))
        a64 = np.asarray(a, np.float64)

        def loss(t, i=i, a64=a64, v=v):
            shifted = list(args)
            shifted[i] = a64 + t * v
            return float(np.sum(ref(*shifted) * g))

        fd = (loss(eps) - loss(-eps)) / (2 * eps)
        analytic = float(np.sum(np.asarray(grad, np.float64) * v))
        np.testing.assert_allclose(analytic, fd, rtol=fd_rtol(), atol=1e-3, err_msg=f"argument {i}")


@st.composite
def padding_for(draw, kernel_eff):
    """A padding argument in one of the accepted forms, and its (lo, hi) pairs (None for SAME)."""
    rank = len(kernel_eff)
    form = draw(st.sampled_from(["int", "per_dim", "pairs", "SAME", "valid"]))
    if form == "int":
        p = draw(st.integers(0, 2))
        return p, ((p, p),) * rank
    if form == "per_dim":
        ps = tuple(draw(st.integers(0, 2)) for _ in range(rank))
        return ps, tuple((p, p) for p in ps)
    if form == "pairs":
        pairs = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(rank))
        return pairs, pairs
    if form == "SAME":
        return "SAME", None
    return "valid", ((0, 0),) * rank


@st.composite
def conv_cases(draw, rank: int = 2, max_groups: int = 3):
    """(x_shape, w_shape, kwargs for conv, explicit pads, with_bias, seed)."""
    groups = draw(st.integers(1, max_groups))
    ci = groups * draw(st.integers(1, 2))
    co = groups * draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(rank))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(rank))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    k_eff = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    padding, pads = draw(padding_for(k_eff))
    if pads is None:
        spatial = tuple(draw(st.integers(1, 9)) for _ in range(rank))
        pads = tuple(jax.lax.padtype_to_pads(spatial, k_eff, stride, "SAME"))
    else:
        spatial = tuple(
            draw(st.integers(max(1, k - lo - hi), max(1, k - lo - hi) + 5))
            for k, (lo, hi) in zip(k_eff, pads)
        )
    n = draw(st.integers(1, 2))
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return (
        (n, *spatial, ci),
        (*kernel, ci // groups, co),
        kwargs,
        pads,
        draw(st.booleans()),
        draw(st.integers(0, 2**16)),
    )


@st.composite
def pool_cases(draw, rank: int = 2, reshape_only: bool = False):
    """(x_shape, window, stride, padding, explicit pads, seed)."""
    window = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    if reshape_only:
        stride, padding, pads = draw(st.sampled_from([None, window])), 0, ((0, 0),) * rank
    else:
        stride = draw(st.one_of(st.none(), st.tuples(*[st.integers(1, 3)] * rank)))
        # Padding at most half the window (PyTorch's rule, which the ops enforce).
        pads = tuple((draw(st.integers(0, k // 2)), draw(st.integers(0, k // 2))) for k in window)
        padding = draw(st.sampled_from([pads, tuple(lo for lo, _ in pads)]))
        if not isinstance(padding[0], tuple):
            pads = tuple((lo, lo) for lo, _ in pads)
    # torch's avg_pool3d needs the unpadded input to hold the window; 1-D/2-D may be smaller.
    spatial = tuple(
        draw(st.integers(k if rank == 3 else max(1, k - lo - hi), k + 5))
        for k, (lo, hi) in zip(window, pads)
    )
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    return (n, *spatial, c), window, stride, padding, pads, draw(st.integers(0, 2**16))
