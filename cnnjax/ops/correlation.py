"""The book's cross-correlation functions (D2L 6.2 and 6.4), on ``lax``.

Single examples, channels first, exactly the book's semantics: valid cross-correlation of an
(H, W) image with a (kh, kw) kernel gives (H - kh + 1, W - kw + 1). Each function validates its
arguments while tracing (so also under ``jit``), promotes integer input to JAX's default float,
and is jit-, grad- and vmap-safe. ``cnnjax.ops.reference`` holds the same functions as plain
loops; the tests hold these to those.

``corr2d_as_matmul`` answers exercises 6.2.8.3 and 6.4.5.6: cross-correlation as one matrix
product, either with a (sparse, Toeplitz-structured) matrix built from the kernel or with a
matrix of input patches (im2col).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnnjax.ops import _checks

__all__ = [
    "corr2d",
    "convolve2d",
    "corr2d_multi_in",
    "corr2d_multi_in_out",
    "corr2d_multi_in_out_1x1",
    "corr2d_kernel_matrix",
    "corr2d_as_matmul",
]

# Channels-first single images batched as N=1: the layout the book uses.
_DN = ("NCHW", "OIHW", "NCHW")


def _inputs(op: str, x, k, x_dims: int, x_layout: str, k_dims: int, k_layout: str):
    x = _checks.as_real_array(op, "X", x)
    k = _checks.as_real_array(op, "K", k)
    _checks.check_ndim(op, "X", x, x_dims, x_layout)
    _checks.check_ndim(op, "K", k, k_dims, k_layout)
    _checks.check_nonempty(op, "X", x)
    _checks.check_nonempty(op, "K", k)
    dtype = _checks.common_float_dtype(x, k)
    return x.astype(dtype), k.astype(dtype)


def _check_fits(op: str, x_hw, k_hw) -> None:
    if k_hw[0] > x_hw[0] or k_hw[1] > x_hw[1]:
        raise ValueError(
            f"{op}: kernel (kh, kw) = {tuple(k_hw)} must fit in the input (H, W) = {tuple(x_hw)}"
        )


def _check_channels(op: str, x_ci: int, k_ci: int) -> None:
    if x_ci != k_ci:
        raise ValueError(f"{op}: K has {k_ci} input channels but X has {x_ci}")


def corr2d(X, K) -> jax.Array:
    """Valid 2-D cross-correlation (D2L 6.2.1).

    Args:
      X: (H, W) input.
      K: (kh, kw) kernel, kh <= H and kw <= W.

    Returns:
      (H - kh + 1, W - kw + 1): ``Y[i, j] = sum_ab X[i + a, j + b] * K[a, b]``.

    Raises:
      TypeError: non-numeric X or K.
      ValueError: X or K not 2-D or empty, or K larger than X.
    """
    X, K = _inputs("corr2d", X, K, 2, "(H, W)", 2, "(kh, kw)")
    _check_fits("corr2d", X.shape, K.shape)
    y = lax.conv_general_dilated(
        X[None, None], K[None, None], (1, 1), "VALID", dimension_numbers=_DN
    )
    return y[0, 0]


def convolve2d(X, K, mode: str = "valid") -> jax.Array:
    """True 2-D convolution: cross-correlation with the kernel flipped in both axes (D2L 6.2.3).

    Args:
      X: (H, W) input.
      K: (kh, kw) kernel.
      mode: "valid" (kernel inside the input: (H - kh + 1, W - kw + 1); needs K to fit in X) or
        "full" (every overlap: (H + kh - 1, W + kw - 1); commutative in X and K).

    Returns:
      The convolution, matching ``scipy.signal.convolve2d(X, K, mode)``.

    Raises:
      TypeError: non-numeric X or K.
      ValueError: X or K not 2-D or empty, unknown ``mode``, or K larger than X in "valid" mode.
    """
    op = "convolve2d"
    mode = _checks.check_choice(op, "mode", mode, ("valid", "full"))
    X, K = _inputs(op, X, K, 2, "(H, W)", 2, "(kh, kw)")
    kh, kw = K.shape
    if mode == "valid":
        _check_fits(op, X.shape, K.shape)
        pad = ((0, 0), (0, 0))
    else:
        pad = ((kh - 1, kh - 1), (kw - 1, kw - 1))
    y = lax.conv_general_dilated(
        X[None, None], K[::-1, ::-1][None, None], (1, 1), pad, dimension_numbers=_DN
    )
    return y[0, 0]


def corr2d_multi_in(X, K) -> jax.Array:
    """Cross-correlation summed over input channels (D2L 6.4.1).

    Args:
      X: (Ci, H, W) input.
      K: (Ci, kh, kw) kernel, one (kh, kw) slice per input channel.

    Returns:
      (H - kh + 1, W - kw + 1): ``sum_c corr2d(X[c], K[c])``.

    Raises:
      TypeError: non-numeric X or K.
      ValueError: wrong ndim, empty, channel counts differ, or kernel larger than X.
    """
    op = "corr2d_multi_in"
    X, K = _inputs(op, X, K, 3, "(Ci, H, W)", 3, "(Ci, kh, kw)")
    _check_channels(op, X.shape[0], K.shape[0])
    _check_fits(op, X.shape[1:], K.shape[1:])
    y = lax.conv_general_dilated(X[None], K[None], (1, 1), "VALID", dimension_numbers=_DN)
    return y[0, 0]


def corr2d_multi_in_out(X, K) -> jax.Array:
    """One multi-input cross-correlation per output channel (D2L 6.4.2).

    Args:
      X: (Ci, H, W) input.
      K: (Co, Ci, kh, kw) kernel.

    Returns:
      (Co, H - kh + 1, W - kw + 1): output channel o is ``corr2d_multi_in(X, K[o])``.

    Raises:
      TypeError: non-numeric X or K.
      ValueError: wrong ndim, empty, channel counts differ, or kernel larger than X.
    """
    op = "corr2d_multi_in_out"
    X, K = _inputs(op, X, K, 3, "(Ci, H, W)", 4, "(Co, Ci, kh, kw)")
    _check_channels(op, X.shape[0], K.shape[1])
    _check_fits(op, X.shape[1:], K.shape[2:])
    return lax.conv_general_dilated(X[None], K, (1, 1), "VALID", dimension_numbers=_DN)[0]


def corr2d_multi_in_out_1x1(X, K) -> jax.Array:
    """A 1x1 convolution as one matrix product (D2L 6.4.3).

    A 1x1 kernel mixes channels independently at every pixel, so it is a fully connected layer
    over the channel axis: ``(Co, Ci) @ (Ci, H*W)``.

    Args:
      X: (Ci, H, W) input.
      K: (Co, Ci, 1, 1) kernel.

    Returns:
      (Co, H, W), equal to ``corr2d_multi_in_out(X, K)``.

    Raises:
      TypeError: non-numeric X or K.
      ValueError: wrong ndim, empty, channel counts differ, or K not 1x1.
    """
    op = "corr2d_multi_in_out_1x1"
    X, K = _inputs(op, X, K, 3, "(Ci, H, W)", 4, "(Co, Ci, 1, 1)")
    _check_channels(op, X.shape[0], K.shape[1])
    if K.shape[2:] != (1, 1):
        raise ValueError(f"{op}: K must be (Co, Ci, 1, 1), got shape {tuple(K.shape)}")
    ci, h, w = X.shape
    y = K.reshape(K.shape[0], ci) @ X.reshape(ci, h * w)
    return y.reshape(-1, h, w)


@functools.lru_cache(maxsize=64)
def _toeplitz_index(h: int, w: int, kh: int, kw: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of every kernel tap in the (Ho*Wo, H*W) matrix; shape (Ho, Wo, kh, kw)."""
    ho, wo = h - kh + 1, w - kw + 1
    i, j, a, b = np.meshgrid(
        np.arange(ho), np.arange(wo), np.arange(kh), np.arange(kw), indexing="ij"
    )
    return i * wo + j, (i + a) * w + (j + b)


def corr2d_kernel_matrix(K, input_shape: tuple[int, int]) -> jax.Array:
    """The matrix ``M`` with ``corr2d(X, K).ravel() == M @ X.ravel()`` for X of ``input_shape``.

    Row ``i*Wo + j`` holds K laid out at offset (i, j) of an (H, W) grid, zeros elsewhere: a
    doubly block-Toeplitz matrix (exercise 6.2.8.3). Differentiable in K.

    Args:
      K: (kh, kw) kernel.
      input_shape: (H, W) of the images it will multiply.

    Returns:
      (Ho*Wo, H*W) with Ho = H - kh + 1, Wo = W - kw + 1.

    Raises:
      TypeError: non-numeric K, or ``input_shape`` not ints.
      ValueError: K not 2-D or empty, ``input_shape`` not a positive pair, or K larger than it.
    """
    op = "corr2d_kernel_matrix"
    K = _checks.as_real_array(op, "K", K)
    _checks.check_ndim(op, "K", K, 2, "(kh, kw)")
    _checks.check_nonempty(op, "K", K)
    h, w = _checks.int_tuple(op, "input_shape", input_shape, 2, minimum=1, one_means_all=False)
    _check_fits(op, (h, w), K.shape)
    K = K.astype(_checks.common_float_dtype(K))
    rows, cols = _toeplitz_index(h, w, *K.shape)
    ho, wo = rows.shape[:2]
    taps = jnp.broadcast_to(K, rows.shape)
    return jnp.zeros((ho * wo, h * w), K.dtype).at[rows.ravel(), cols.ravel()].set(taps.ravel())


def corr2d_as_matmul(X, K, *, method: str = "toeplitz") -> jax.Array:
    """``corr2d(X, K)`` computed as one matrix-vector product (exercises 6.2.8.3, 6.4.5.6).

    Args:
      X: (H, W) input.
      K: (kh, kw) kernel.
      method: "toeplitz": ``corr2d_kernel_matrix(K, X.shape) @ X.ravel()``, a
        (Ho*Wo, H*W) matrix mostly of zeros; or "im2col": the (Ho*Wo, kh*kw) matrix of input
        patches times ``K.ravel()``, the dense form real conv libraries use.

    Returns:
      (H - kh + 1, W - kw + 1), equal to ``corr2d(X, K)``.

    Raises:
      TypeError: non-numeric X or K.
      ValueError: X or K not 2-D or empty, K larger than X, or unknown ``method``.
    """
    op = "corr2d_as_matmul"
    method = _checks.check_choice(op, "method", method, ("toeplitz", "im2col"))
    X, K = _inputs(op, X, K, 2, "(H, W)", 2, "(kh, kw)")
    _check_fits(op, X.shape, K.shape)
    (h, w), (kh, kw) = X.shape, K.shape
    ho, wo = h - kh + 1, w - kw + 1
    if method == "toeplitz":
        return (corr2d_kernel_matrix(K, (h, w)) @ X.ravel()).reshape(ho, wo)
    _, cols = _toeplitz_index(h, w, kh, kw)
    patches = X.ravel()[cols.reshape(ho * wo, kh * kw)]
    return (patches @ K.ravel()).reshape(ho, wo)
