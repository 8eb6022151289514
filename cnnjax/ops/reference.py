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
    "conv_transpose",
    "max_pool",
    "avg_pool",
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "max_unpool",
    "adaptive_avg_pool",
    "adaptive_max_pool",
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


def conv_transpose(
    x, w, b=None, *, stride=1, padding=0, output_padding=0, dilation=1, groups: int = 1
) -> np.ndarray:
    """Transposed conv as the scatter loop: every input value times the kernel, added at
    ``p * stride + k * dilation``; then ``padding`` cropped, ``output_padding`` kept at the end.

    x (N, *spatial, Ci), w (*kernel, Ci, Co/groups), b (Co,); padding an int, r ints or r pairs.
    """
    x, w = _f64(x), _f64(w)
    r = x.ndim - 2
    kernel = w.shape[:r]
    strides = _checks.int_tuple("conv_transpose", "stride", stride, r, minimum=1)
    dilations = _checks.int_tuple("conv_transpose", "dilation", dilation, r, minimum=1)
    out_pads = _checks.int_tuple("conv_transpose", "output_padding", output_padding, r, minimum=0)
    pads = _checks.padding_pairs("conv_transpose", padding, (1,) * r, (1,) * r, (1,) * r)
    ci_g, co_g = x.shape[-1] // groups, w.shape[-1]
    full = [
        (n - 1) * s + d * (k - 1) + 1 + op
        for n, s, d, k, op in zip(x.shape[1:-1], strides, dilations, kernel, out_pads)
    ]
    y = np.zeros((x.shape[0], *full, co_g * groups))
    for pos in np.ndindex(*x.shape[1:-1]):
        for tap in np.ndindex(*kernel):
            at = tuple(p * s + t * d for p, s, t, d in zip(pos, strides, tap, dilations))
            for g in range(groups):
                x_g = x[(slice(None), *pos, slice(g * ci_g, (g + 1) * ci_g))]  # (N, Ci/G)
                w_g = w[(*tap, slice(g * ci_g, (g + 1) * ci_g))]  # (Ci/G, Co/G)
                y[(slice(None), *at, slice(g * co_g, (g + 1) * co_g))] += x_g @ w_g
    crop = tuple(slice(lo, f - hi) for (lo, hi), f in zip(pads, full))
    y = y[(slice(None), *crop, slice(None))]
    if b is not None:
        y += _f64(b)
    return y


# --- Pooling: torch's loops, one example, channel and output element at a time. ---


def _pool_size(n: int, k_eff: int, s: int, lo: int, hi: int, ceil_mode: bool) -> int:
    """torch's pooling_output_shape, with (lo, hi) padding."""
    span = n + lo + hi - k_eff + (s - 1 if ceil_mode else 0)
    out = span // s + 1
    if ceil_mode and (out - 1) * s >= n + lo:
        out -= 1
    return out


def _pool_params(x, window, stride, padding, dilation):
    r = x.ndim - 2
    window = _checks.int_tuple("pool", "window", window, r, minimum=1)
    strides = (
        window if stride is None else _checks.int_tuple("pool", "stride", stride, r, minimum=1)
    )
    dilation = _checks.int_tuple("pool", "dilation", dilation, r, minimum=1)
    k_eff = [d * (k - 1) + 1 for k, d in zip(window, dilation)]
    pads = _checks.padding_pairs("pool", padding, x.shape[1:-1], k_eff, strides)
    return window, strides, dilation, k_eff, pads


def max_pool(x, window, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Max pooling of x (N, *spatial, C) as torch's CPU kernel loops it.

    Taps are visited in row-major window order; out-of-input taps are skipped; a tap wins if it
    is greater than the running max or NaN. Indices are flat within the (unpadded) spatial plane
    (int64).
    """
    x = _f64(x)
    window, strides, dilation, k_eff, pads = _pool_params(x, window, stride, padding, dilation)
    spatial = x.shape[1:-1]
    out = [
        _pool_size(n, k, s, lo, hi, ceil_mode)
        for n, k, s, (lo, hi) in zip(spatial, k_eff, strides, pads)
    ]
    y = np.full((x.shape[0], *out, x.shape[-1]), -np.inf)
    idx = np.zeros(y.shape, np.int64)
    for b in range(x.shape[0]):
        for c in range(x.shape[-1]):
            for pos in np.ndindex(*out):
                best, best_i = -np.inf, None
                for tap in np.ndindex(*window):
                    coord = tuple(
                        p * s - lo + t * d
                        for p, s, (lo, _), t, d in zip(pos, strides, pads, tap, dilation)
                    )
                    if not all(0 <= q < n for q, n in zip(coord, spatial)):
                        continue
                    flat = int(np.ravel_multi_index(coord, spatial))
                    v = x[(b, *coord, c)]
                    if best_i is None:
                        best_i = flat
                    if v > best or np.isnan(v):
                        best, best_i = v, flat
                y[(b, *pos, c)] = best
                idx[(b, *pos, c)] = best_i if best_i is not None else -1
    return (y, idx) if return_indices else y


def avg_pool(
    x,
    window,
    stride=None,
    padding=0,
    ceil_mode=False,
    count_include_pad=True,
    divisor_override=None,
):
    """Average pooling of x (N, *spatial, C) as torch's CPU kernel loops it.

    A window is clipped to input + padding (its size is the count_include_pad divisor), then to
    the input (the elements summed, and the divisor otherwise); divisor_override replaces both.
    """
    x = _f64(x)
    window, strides, _, _, pads = _pool_params(x, window, stride, padding, 1)
    spatial = x.shape[1:-1]
    out = [
        _pool_size(n, k, s, lo, hi, ceil_mode)
        for n, k, s, (lo, hi) in zip(spatial, window, strides, pads)
    ]
    y = np.zeros((x.shape[0], *out, x.shape[-1]))
    for pos in np.ndindex(*out):
        lo_pad = [p * s - lo for p, s, (lo, _) in zip(pos, strides, pads)]
        hi_pad = [min(a + k, n + hi) for a, k, n, (_, hi) in zip(lo_pad, window, spatial, pads)]
        pool_size = np.prod([e - a for a, e in zip(lo_pad, hi_pad)])
        start = [max(a, 0) for a in lo_pad]
        end = [min(e, n) for e, n in zip(hi_pad, spatial)]
        region = (slice(None), *(slice(a, e) for a, e in zip(start, end)), slice(None))
        total = x[region].sum(axis=tuple(range(1, x.ndim - 1)))
        if divisor_override is not None:
            divisor = divisor_override
        elif count_include_pad:
            divisor = pool_size
        else:
            divisor = np.prod([e - a for a, e in zip(start, end)])
        y[(slice(None), *pos, slice(None))] = total / divisor
    return y


max_pool1d = max_pool2d = max_pool3d = max_pool
avg_pool1d = avg_pool2d = avg_pool3d = avg_pool


def max_unpool(x, indices, window, stride=None, padding=0, output_size=None):
    """Zeros of the output size, with x[b, ..., c] written at flat position indices[b, ..., c]
    of example b's channel-c plane (channels last)."""
    x, indices = _f64(x), np.asarray(indices)
    r = x.ndim - 2
    window = _checks.int_tuple("unpool", "window", window, r, minimum=1)
    strides = (
        window if stride is None else _checks.int_tuple("unpool", "stride", stride, r, minimum=1)
    )
    pads = _checks.padding_pairs("unpool", padding, x.shape[1:-1], window, strides)
    if output_size is None:
        output_size = [
            (n - 1) * s + k - lo - hi
            for n, s, k, (lo, hi) in zip(x.shape[1:-1], strides, window, pads)
        ]
    y = np.zeros((x.shape[0], *output_size, x.shape[-1]))
    for b in range(x.shape[0]):
        for c in range(x.shape[-1]):
            plane = y[b, ..., c].reshape(-1)
            for pos in np.ndindex(*x.shape[1:-1]):
                plane[indices[(b, *pos, c)]] = x[(b, *pos, c)]
            y[b, ..., c] = plane.reshape(output_size)
    return y


def _adaptive(x, output_size, mode: str, return_indices: bool = False):
    x = _f64(x)
    spatial = x.shape[1:-1]
    r = len(spatial)
    if not isinstance(output_size, (tuple, list)):
        output_size = (output_size,) * r
    out = [n if o is None else o for o, n in zip(output_size, spatial)]
    y = np.zeros((x.shape[0], *out, x.shape[-1]))
    idx = np.zeros(y.shape, np.int64)
    for pos in np.ndindex(*out):
        # torch: start = floor(i * n / o), end = ceil((i + 1) * n / o).
        start = [int(np.floor(i * n / o)) for i, n, o in zip(pos, spatial, out)]
        end = [int(np.ceil((i + 1) * n / o)) for i, n, o in zip(pos, spatial, out)]
        region = x[(slice(None), *(slice(a, e) for a, e in zip(start, end)), slice(None))]
        at = (slice(None), *pos, slice(None))
        if mode == "avg":
            y[at] = region.mean(axis=tuple(range(1, r + 1)))
            continue
        for b in range(x.shape[0]):
            for c in range(x.shape[-1]):
                best, best_i = -np.inf, None
                for local in np.ndindex(*region.shape[1:-1]):
                    coord = tuple(a + q for a, q in zip(start, local))
                    v = region[(b, *local, c)]
                    if best_i is None or v > best or np.isnan(v):
                        best, best_i = v, int(np.ravel_multi_index(coord, spatial))
                y[(b, *pos, c)], idx[(b, *pos, c)] = best, best_i
    return (y, idx) if return_indices else y


def adaptive_avg_pool(x, output_size) -> np.ndarray:
    """Adaptive average pooling of x (N, *spatial, C): the mean of each of torch's bins."""
    return _adaptive(x, output_size, "avg")


def adaptive_max_pool(x, output_size, return_indices=False):
    """Adaptive max pooling of x (N, *spatial, C), torch's bins and tie/NaN rule."""
    return _adaptive(x, output_size, "max", return_indices)
