"""Hand-rolled reference versions of every op in :mod:`cnnjax.ops`, as plain loops.

Each function loops over output positions and computes one window at a time, in float64 NumPy,
the way D2L 6.2-6.5 writes them: slow and obviously right. The tests hold the fast ``lax``
versions to these; ``scripts/bench_ops.py`` times the difference. Same arguments and layouts
as the fast functions; arguments are assumed valid (hyper-parameters are only normalised, with
the same rules as the fast ops). Results are float64 NumPy arrays.
"""

from __future__ import annotations

import numpy as np

from cnnjax.ops import _checks

__all__ = [
    "corr2d",
    "convolve2d",
    "corr2d_multi_in",
    "corr2d_multi_in_out",
    "corr2d_multi_in_out_1x1",
    "pool2d",
    "conv",
    "conv1d",
    "conv2d",
    "conv3d",
    "max_pool",
    "avg_pool",
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
]


def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def corr2d(X, K) -> np.ndarray:
    """Valid cross-correlation of X (H, W) with K (kh, kw)."""
    X, K = _f64(X), _f64(K)
    h, w = K.shape
    Y = np.zeros((X.shape[0] - h + 1, X.shape[1] - w + 1))
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            Y[i, j] = (X[i : i + h, j : j + w] * K).sum()
    return Y


def convolve2d(X, K, mode: str = "valid") -> np.ndarray:
    """True convolution: corr2d with K flipped; "full" first zero-pads X by (kh-1, kw-1)."""
    X, K = _f64(X), _f64(K)
    if mode == "full":
        h, w = K.shape
        X = np.pad(X, ((h - 1, h - 1), (w - 1, w - 1)))
    return corr2d(X, K[::-1, ::-1])


def corr2d_multi_in(X, K) -> np.ndarray:
    """X (Ci, H, W), K (Ci, kh, kw): sum over channels of corr2d."""
    return sum(corr2d(x, k) for x, k in zip(X, K))


def corr2d_multi_in_out(X, K) -> np.ndarray:
    """X (Ci, H, W), K (Co, Ci, kh, kw) -> (Co, H', W')."""
    return np.stack([corr2d_multi_in(X, k) for k in K])


def corr2d_multi_in_out_1x1(X, K) -> np.ndarray:
    """X (Ci, H, W), K (Co, Ci, 1, 1): at every pixel, the channel vector times K's matrix."""
    X, K = _f64(X), _f64(K)
    M = K[:, :, 0, 0]
    Y = np.zeros((K.shape[0], X.shape[1], X.shape[2]))
    for i in range(X.shape[1]):
        for j in range(X.shape[2]):
            Y[:, i, j] = M @ X[:, i, j]
    return Y


def pool2d(X, pool_size, mode: str = "max") -> np.ndarray:
    """Max or mean of every window of X (H, W), stride 1, no padding."""
    X = _f64(X)
    p_h, p_w = _checks.int_tuple("pool2d", "pool_size", pool_size, 2, minimum=1)
    Y = np.zeros((X.shape[0] - p_h + 1, X.shape[1] - p_w + 1))
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            window = X[i : i + p_h, j : j + p_w]
            Y[i, j] = window.max() if mode == "max" else window.mean()
    return Y


def _window(pos, strides, kernel, dilations) -> tuple[slice, ...]:
    """Slices of the padded input read by output position ``pos`` (batch and channels whole)."""
    taps = tuple(
        slice(p * s, p * s + d * (k - 1) + 1, d)
        for p, s, k, d in zip(pos, strides, kernel, dilations)
    )
    return (slice(None), *taps, slice(None))


def conv(x, w, b=None, *, stride=1, padding=0, dilation=1, groups: int = 1) -> np.ndarray:
    """N-d grouped cross-correlation: x (N, *spatial, Ci), w (*kernel, Ci/groups, Co), b (Co,)."""
    x, w = _f64(x), _f64(w)
    r = x.ndim - 2
    kernel = w.shape[:r]
    strides = _checks.int_tuple("conv", "stride", stride, r, minimum=1)
    dilations = _checks.int_tuple("conv", "dilation", dilation, r, minimum=1)
    k_eff = [d * (k - 1) + 1 for k, d in zip(kernel, dilations)]
    pads = _checks.padding_pairs("conv", padding, x.shape[1:-1], k_eff, strides)
    x = np.pad(x, ((0, 0), *pads, (0, 0)))
    out_shape = [(n - k) // s + 1 for n, k, s in zip(x.shape[1:-1], k_eff, strides)]
    ci_g, co_g = w.shape[-2], w.shape[-1] // groups
    y = np.zeros((x.shape[0], *out_shape, w.shape[-1]))
    for pos in np.ndindex(*out_shape):
        patch = x[_window(pos, strides, kernel, dilations)]  # (N, *kernel, Ci)
        for g in range(groups):
            x_g = patch[..., g * ci_g : (g + 1) * ci_g]
            w_g = w[..., g * co_g : (g + 1) * co_g]
            # Sum over every kernel tap and input channel of the group: (N, Co/groups).
            y[(slice(None), *pos, slice(g * co_g, (g + 1) * co_g))] = np.tensordot(
                x_g, w_g, axes=r + 1
            )
    if b is not None:
        y += _f64(b)
    return y


conv1d = conv2d = conv3d = conv


def _pool(x, window, stride, padding, mode: str, count_include_pad: bool) -> np.ndarray:
    x = _f64(x)
    r = x.ndim - 2
    window = _checks.int_tuple("pool", "window", window, r, minimum=1)
    strides = (
        window if stride is None else _checks.int_tuple("pool", "stride", stride, r, minimum=1)
    )
    pads = _checks.padding_pairs("pool", padding, x.shape[1:-1], window, strides)
    full_pads = ((0, 0), *pads, (0, 0))
    xp = np.pad(x, full_pads, constant_values=-np.inf if mode == "max" else 0.0)
    real = np.pad(np.ones_like(x), full_pads)  # 1 where xp holds input, 0 in the padding
    out_shape = [(n - k) // s + 1 for n, k, s in zip(xp.shape[1:-1], window, strides)]
    spatial_axes = tuple(range(1, r + 1))
    y = np.zeros((x.shape[0], *out_shape, x.shape[-1]))
    for pos in np.ndindex(*out_shape):
        sl = _window(pos, strides, window, (1,) * r)
        at = (slice(None), *pos, slice(None))
        if mode == "max":
            y[at] = xp[sl].max(axis=spatial_axes)
        else:
            count = np.prod(window) if count_include_pad else real[sl].sum(axis=spatial_axes)
            y[at] = xp[sl].sum(axis=spatial_axes) / count
    return y


def max_pool(x, window, stride=None, padding=0) -> np.ndarray:
    """Max pooling of x (N, *spatial, C); padding never wins."""
    return _pool(x, window, stride, padding, "max", True)


def avg_pool(x, window, stride=None, padding=0, count_include_pad: bool = True) -> np.ndarray:
    """Average pooling of x (N, *spatial, C), PyTorch's ``count_include_pad``."""
    return _pool(x, window, stride, padding, "avg", count_include_pad)


max_pool1d = max_pool2d = max_pool3d = max_pool
avg_pool1d = avg_pool2d = avg_pool3d = avg_pool
