"""2-D convolution as one block-Toeplitz matrix product: the fast path on XLA:CPU.

D2L exercises 6.2.8.3 and 6.4.5.6 ask for a convolution written as a matrix product; here that
is the implementation. For x (N, H, W, C) padded to (N, Hp, Wp, C):

1. Row bands. Output row ``r`` reads input rows ``r*sh + i*dh`` for ``i < kh``. Stacking those
   kh strided row slices gives a matrix ``X`` of shape ``(N*Ho, kh*Wu*C)``: each row is every input
   value one output row sees (``Wu <= Wp`` is the width the kernel actually reaches).
2. Block-Toeplitz weight. ``T[(i, p, c), (q, o)] = w[i, j, c, o]`` where ``p == q*sw + j*dw``,
   else 0: shape ``(kh*Wu*C, Wo*O)``. It is built inside the graph from the HWIO kernel by one
   einsum with a constant 0/1 selector ``S[j, p, q]`` (a numpy array fixed at trace time from
   static shapes), so horizontal stride and dilation live in ``S`` and the kernel stays a plain
   differentiable parameter.
3. One GEMM ``X @ T`` of shape ``(N*Ho, Wo*O)``, reshaped to ``(N, Ho, Wo, O)``.

Width tiles (``tile=T``). The full-width ``T`` spends ``Wu/kw`` times a direct conv's FLOPs,
most of them on the zeros of the Toeplitz weight. Cutting the output width into tiles of ``T``
columns, each reading ``Wt = (T-1)*sw + (kw-1)*dw + 1`` input columns, makes every tile the same
small problem: ``X`` becomes ``(N*Ho*Wo/T, kh*Wt*C)`` (tiles overlap by ``(kw-1)*dw`` columns,
which are copied into both), the weight ``(kh*Wt*C, T*O)`` is shared by all tiles, and the
FLOP blow-up drops to ``Wt/kw``. ``T = Wo`` is the full-width form, ``T = 1`` plain im2col.
Small tiles trade FLOPs for a thinner GEMM and a larger ``X``; :func:`auto_tile` picks ``T``.

Autodiff of slices, an einsum and a dot gives only pads, adds and GEMMs: no convolution op
appears in the forward or backward program.

Why it wins. A direct convolution in a small CNN is a channel-starved GEMM: LeNet's convs
contract kh*kw*C = 25 / 150 values into O = 6 / 16 outputs, and XLA:CPU runs those convolutions
(the backward ones above all) far below the matmul peak; the Toeplitz form spends ``Wt/kw``
times the direct conv's FLOPs on one large GEMM per conv that runs near it. On a GPU, LeNet's
convs are too small to fill the device, and one GEMM per conv (and per population under
``vmap``, a batched GEMM instead of a grouped conv) keeps the step short. The measurements
behind every threshold here are printed by ``scripts/bench_ops.py`` and recorded, with the
machine, in BENCHMARKS.md.

NaN and inf. The GEMM multiplies every input value of a band by the weight's structural zeros,
and ``0 * inf`` is NaN: a non-finite input spreads to more outputs than a direct convolution
gives. ``conv2d(impl="auto")`` therefore runs this form only when its inputs are finite.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["auto_tile", "toeplitz_conv2d", "use_toeplitz", "use_toeplitz_forward"]

# "auto" thresholds (measurements: scripts/bench_ops.py, BENCHMARKS.md).
_MAX_STARVATION = 18.0
_MAX_WEIGHT_ENTRIES = 2**20
_MAX_OUT_CHANNELS = 32
# Slices the band matrix is stacked from (kh per width tile): bounds the program's size and so
# its compile time.
_MAX_SLICES = 64
# On CPU, with width tiles: the FLOP blow-up actually paid, and a smaller weight (bigger convs
# win or lose with the batch size).
_MAX_TILED_STARVATION = 20.0
_MAX_TILED_WEIGHT_ENTRIES = 2**17
# Forward only, lax's direct conv is fast enough once the GEMM it runs is not starved.
_MAX_FORWARD_IN_CHANNELS = 3
_MAX_FORWARD_OUT_CHANNELS = 16
# auto_tile's minimum GEMM output width.
_MIN_TILE_OUTPUTS = 24


def _out_size(n: int, k: int, stride: int, pad: tuple[int, int], dilation: int) -> int:
    return (n + pad[0] + pad[1] - dilation * (k - 1) - 1) // stride + 1


@functools.lru_cache(maxsize=128)
def _selector(kw: int, wu: int, wo: int, sw: int, dw: int) -> np.ndarray:
    """S[j, p, q] = 1 where input column p feeds output column q through kernel column j."""
    s = np.zeros((kw, wu, wo), dtype=np.float32)
    j, q = np.meshgrid(np.arange(kw), np.arange(wo), indexing="ij")
    s[j, q * sw + j * dw, q] = 1.0
    s.setflags(write=False)
    return s


def toeplitz_conv2d(
    x: jax.Array,
    w: jax.Array,
    *,
    stride: tuple[int, int],
    padding: tuple[tuple[int, int], tuple[int, int]],
    dilation: tuple[int, int],
    tile: int | None = None,
) -> jax.Array:
    """Cross-correlation of NHWC ``x`` with HWIO ``w`` as one block-Toeplitz GEMM.

    Same result as ``lax.conv_general_dilated(x, w, stride, padding, rhs_dilation=dilation,
    dimension_numbers=("NHWC", "HWIO", "NHWC"))`` up to float rounding (PyTorch ``conv2d``
    numerics), for ``groups == 1`` and no bias.

    Args:
      x: (N, H, W, C) input.
      w: (kh, kw, C, O) kernel.
      stride: (sh, sw), each >= 1.
      padding: ((top, bottom), (left, right)), each >= 0.
      dilation: (dh, dw), each >= 1.
      tile: output columns per width tile, >= 1; None picks :func:`auto_tile`. ``tile >= Wo``
        is the full-width form; a tile that does not divide Wo pads the input on the right
        so the last tile is whole, and crops the output.

    Returns:
      (N, Ho, Wo, O) with ``Ho = (H + top + bottom - dh*(kh-1) - 1) // sh + 1`` (likewise Wo), in
      the dtype ``jnp.matmul`` gives for ``x`` and ``w``.

    Raises:
      TypeError: ``tile`` not an int or None.
      ValueError: ``tile`` < 1. Other arguments are not validated here: the public ``conv2d``
        does that before dispatching.

    Jit-, grad- and vmap-safe (the selector is a trace-time constant of the static shapes).
    """
    n, h, w_in, c = x.shape
    kh, kw, _, o = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    ho = _out_size(h, kh, sh, padding[0], dh)
    wo = _out_size(w_in, kw, sw, padding[1], dw)
    if tile is None:
        tile = auto_tile(wo, kw, o, stride=sw, dilation=dw, backend=jax.default_backend())
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)):
        raise TypeError(f"toeplitz_conv2d: tile must be an int or None, got {tile!r}")
    if tile < 1:
        raise ValueError(f"toeplitz_conv2d: tile must be >= 1, got {tile}")
    tile = min(int(tile), wo)
    n_tiles = -(-wo // tile)
    # Input columns one tile of output columns reads, and the step between tiles.
    wt = (tile - 1) * sw + (kw - 1) * dw + 1
    step = tile * sw
    # Rows and columns past the last one the kernel reaches are never read: crop them so the
    # GEMM's contraction is no larger than needed; pad on the right if the last tile overhangs.
    hu = (ho - 1) * sh + (kh - 1) * dh + 1
    wu = (n_tiles - 1) * step + wt
    (top, bottom), (left, right) = padding
    right += max(0, wu - (left + w_in + right))
    xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))[:, :hu, :wu, :]

    bands = [xp[:, i * dh : i * dh + (ho - 1) * sh + 1 : sh] for i in range(kh)]
    # (N, Ho, n_tiles, kh, Wt, C): tile t of band i is columns [t*step, t*step + Wt).
    patches = jnp.stack(
        [
            jnp.stack([b[:, :, t * step : t * step + wt] for b in bands], axis=2)
            for t in range(n_tiles)
        ],
        axis=2,
    )
    lhs = patches.reshape(n * ho * n_tiles, kh * wt * c)

    sel = jnp.asarray(_selector(kw, wt, tile, sw, dw), dtype=w.dtype)
    # Each entry of T copies at most one kernel value, so HIGHEST only keeps the copy exact on
    # backends whose default matmul precision rounds (TPU bf16 passes); it costs nothing here.
    toeplitz = jnp.einsum("jpq,ijco->ipcqo", sel, w, precision=lax.Precision.HIGHEST)
    rhs = toeplitz.reshape(kh * wt * c, tile * o)

    y = jnp.matmul(lhs, rhs).reshape(n, ho, n_tiles * tile, o)
    return y[:, :, :wo] if n_tiles * tile != wo else y


def auto_tile(wo: int, kw: int, o: int, *, stride: int, dilation: int, backend: str) -> int:
    """Output columns per width tile that :func:`toeplitz_conv2d` uses when ``tile=None``.

    Args: the output width ``wo``, kernel width ``kw``, output channels ``o``, horizontal
    ``stride`` and ``dilation``, and ``backend`` as ``jax.default_backend()`` names it.

    Returns ``wo`` (full width) off CPU. On CPU, the smallest divisor ``T`` of ``wo`` with

    * ``T * stride >= (kw - 1) * dilation``: a tile advances at least as far as neighbouring
      tiles overlap, so no input column is copied into more than two tiles and the band
      matrix (and, for an input gradient, the scatter-add back from it) stays small;
    * ``T * o >= 24``: the GEMM's output width fills AVX-512 registers;

    or ``wo`` itself when no smaller divisor qualifies.

    Example:
      >>> auto_tile(28, 5, 6, stride=1, dilation=1, backend="cpu")  # LeNet conv1
      4
    """
    if backend != "cpu":
        return wo
    for t in range(1, wo):
        if wo % t == 0 and t * stride >= (kw - 1) * dilation and t * o >= _MIN_TILE_OUTPUTS:
            return t
    return wo


def _geometry(x_shape, w_shape, stride, padding, dilation, backend):
    """(C, O, FLOP blow-up at full width, Toeplitz weight entries, slices, FLOP blow-up with
    the width tiles) of one conv."""
    _, _, w_in, c = x_shape
    kh, kw, _, o = w_shape
    wo = _out_size(w_in, kw, stride[1], padding[1], dilation[1])
    wu = (wo - 1) * stride[1] + (kw - 1) * dilation[1] + 1
    tile = auto_tile(wo, kw, o, stride=stride[1], dilation=dilation[1], backend=backend)
    slices = kh * -(-wo // tile)
    tile_in = (tile - 1) * stride[1] + (kw - 1) * dilation[1] + 1  # input columns of a tile
    return c, o, wu / kw, kh * wu * c * wo * o, slices, tile_in / kw


def use_toeplitz(
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    *,
    stride: tuple[int, int],
    padding: tuple[tuple[int, int], tuple[int, int]],
    dilation: tuple[int, int],
    groups: int,
    backend: str,
) -> bool:
    """Whether ``conv2d(impl="auto")`` should use :func:`toeplitz_conv2d` when differentiated.

    Args are the shapes and normalised arguments ``conv2d`` has after validation: x_shape
    (N, H, W, C), w_shape (kh, kw, C // groups, O), stride (sh, sw), padding
    ((top, bottom), (left, right)), dilation (dh, dw), groups, and backend as
    ``jax.default_backend()`` names it ("cpu", "gpu", "tpu", ...).

    True only when all hold:

    * ``backend`` is "cpu" or "gpu" (on TPU the convolution units run direct convolutions;
      not measured);
    * ``groups == 1``: a grouped Toeplitz weight would be block-diagonal and mostly zeros;
    * ``C * Wu / kw <= 18``, where ``Wu / kw`` is the full-width FLOP blow-up over a direct
      conv (Wu: padded input width the kernel reaches): XLA:CPU's direct convs run at a few
      GFLOP/s per input channel when C is small, the Toeplitz GEMM near the matmul peak, so the
      blow-up it can afford shrinks roughly as 1 / C;
    * ``O <= 32``: with more output channels the direct conv's GEMM is no longer starved;
    * the full-width Toeplitz weight ``kh * Wu * C * Wo * O`` has at most 2**20 entries, so
      building it and its gradient stays cheap next to the GEMM;
    * the band matrix is stacked from at most 64 slices (kh per width tile), which bounds the
      compiled program's size and compile time.

    On CPU a conv that fails the blow-up or size test above is still picked when, counting the
    width tiles it will actually run with (:func:`auto_tile`), ``C * T_in / kw <= 20`` (``T_in``:
    input columns a tile reads) and the weight has at most 2**17 entries: the few-channel convs
    on small maps of LeNet's variants (3x3 kernels, 8 or 10 input channels), which the
    full-width measure declined although the tiled GEMM trains them 1.4-1.8x faster than lax.
    Larger maps are left to lax, where the outcome turns with the batch size.

    The rule errs towards lax: a missed win costs a speed-up, a wrong pick a slow-down. It
    holds for LeNet's two convs (what makes its training fast on CPU) and declines the usual
    research shapes (ResNet's 3x3 64->64, 7x7/2 stems, CIFAR stems).

    Example:
      >>> use_toeplitz((256, 28, 28, 1), (5, 5, 1, 6), stride=(1, 1), padding=((2, 2), (2, 2)),
      ...              dilation=(1, 1), groups=1, backend="cpu")  # LeNet conv1
      True
    """
    if backend not in ("cpu", "gpu") or groups != 1:
        return False
    c, o, blowup, entries, slices, tiled = _geometry(
        x_shape, w_shape, stride, padding, dilation, backend
    )
    if o > _MAX_OUT_CHANNELS or slices > _MAX_SLICES:
        return False
    full_width = c * blowup <= _MAX_STARVATION and entries <= _MAX_WEIGHT_ENTRIES
    width_tiled = (
        backend == "cpu"
        and c * tiled <= _MAX_TILED_STARVATION
        and entries <= _MAX_TILED_WEIGHT_ENTRIES
    )
    return full_width or width_tiled


def use_toeplitz_forward(
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    *,
    stride: tuple[int, int],
    padding: tuple[tuple[int, int], tuple[int, int]],
    dilation: tuple[int, int],
    backend: str,
) -> bool:
    """Whether a conv that :func:`use_toeplitz` picks should also use it when not differentiated.

    Same arguments as :func:`use_toeplitz` (groups is 1 here). Forward only, XLA:CPU's direct
    convolution is much better than its backward ones, so the Toeplitz GEMM must win on the
    forward pass alone: True when ``C <= 3`` and ``O <= 16`` (LeNet's conv1, single-channel
    image stems with few filters), False otherwise (e.g. MNIST-CNN's 3x3 1->32 and LeNet's
    conv2, where lax's forward is as fast or faster).

    Example:
      >>> use_toeplitz_forward((256, 14, 14, 6), (5, 5, 6, 16), stride=(1, 1),
      ...                      padding=((0, 0), (0, 0)), dilation=(1, 1), backend="cpu")
      False
    """
    c, o, *_ = _geometry(x_shape, w_shape, stride, padding, dilation, backend)
    return c <= _MAX_FORWARD_IN_CHANNELS and o <= _MAX_FORWARD_OUT_CHANNELS
