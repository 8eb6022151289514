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

Why it wins on XLA:CPU. A direct convolution in a small CNN is a channel-starved GEMM: LeNet's
convs contract kh*kw*C = 25 / 150 values into O = 6 / 16 outputs, and XLA:CPU runs their
backward convolutions slowly (slower still inside ``lax.scan``). The Toeplitz form spends
``Wu/kw`` times the direct conv's FLOPs (LeNet: 6.4x and 2.8x) on one large GEMM per conv
(batch 256: conv1 7168x160 @ 160x168, conv2 2560x420 @ 420x160) that runs near the matmul peak.
Measured on the project's 2-core CPU (jax 0.10.2, batch 256, quiet run, full width): LeNet conv1
forward 3.0 ms (~128 GFLOP/s) against lax's 10.3 ms (~6 GFLOP/s), forward + both gradients 8.4
vs 37.5 ms; conv2 forward 2.7 vs 2.1 ms (lax wins), forward + both gradients 7.8 vs 19.3 ms; a
whole LeNet SGD step 19.2 vs 39.2 ms (2.0x). See :func:`use_toeplitz` for the shapes where it
loses (measured at full width; tiling only makes the convs it picks faster).

Width tiles, measured on a later, ~2x faster 2-core CPU (AMD EPYC, AVX-512; shared and noisy, so
ratios within one interleaved run, medians of 7): a bare LeNet SGD step (20 steps in one
``lax.scan``, batch 256) and the forward pass (batch 1024), examples/s relative to full width::

    conv1 T   conv2 T   FLOP blow-up   train   forward
    28        10        6.4 / 2.8      1.00    1.00
    14        5         3.6 / 1.8      1.14
    7         10        2.2 / 2.8              1.14
    7         5         2.2 / 1.8      1.11    1.27
    4         10        1.6 / 2.8      1.18
    4         5         1.6 / 1.8      1.20    1.13    auto_tile
    4         2         1.6 / 1.2              1.06
    4         lax                              1.14
    4         4 (3 tiles, 2 padded cols)  1.00
    2         5         1.2 / 1.8      1.04

An earlier run gave conv2 T=2 (with conv1 T=4) 0.97 in training. Tiles narrower than the
kernel's overlap (conv2 T=2: an input column lands in up to 3 tiles) lose: the band matrix
grows, and with it the scatter-add that turns its gradient into the input gradient, an
elementwise fusion that costs about as much as one of conv2's GEMMs. Lax convs: 0.16x.

On a GPU the same holds for different reasons: LeNet's convs are far too small to fill it, so
each step is bound by kernel launches and cuDNN's small-channel kernels, while one GEMM
per conv (and per population under ``vmap``, a batched GEMM instead of a grouped conv) keeps the
step short. Measured on one H100 (jax 0.11.2, book LeNet, batch 256, whole epoch in
``lax.scan``): 1.13 M examples/s with Toeplitz convs against 0.81 M with cuDNN convs; a
population of 64 under ``vmap``, 5.2 M against 1.9 M example-models/s.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["auto_tile", "toeplitz_conv2d", "use_toeplitz"]

# "auto" thresholds, from the measurements in use_toeplitz's docstring.
_MAX_STARVATION = 18.0
_MAX_WEIGHT_ENTRIES = 2**20
# auto_tile's minimum GEMM output width, from the measurements in the module docstring.
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

    Off CPU, the full width ``wo`` (the form measured on GPU). On CPU, the smallest divisor
    ``T`` of ``wo`` with

    * ``T * stride >= (kw - 1) * dilation``: a tile advances at least as far as neighbouring
      tiles overlap, so no input column is copied into more than two tiles and the band
      matrix (and, for an input gradient, the scatter-add back from it) stays small;
    * ``T * o >= 24``: the GEMM's output width fills AVX-512 registers.

    ``wo`` itself when no smaller divisor qualifies. See the module docstring for the
    measurements behind both bounds.
    """
    if backend != "cpu":
        return wo
    for t in range(1, wo):
        if wo % t == 0 and t * stride >= (kw - 1) * dilation and t * o >= _MIN_TILE_OUTPUTS:
            return t
    return wo


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
    """Whether ``conv2d(impl="auto")`` should use :func:`toeplitz_conv2d` for this convolution.

    Args are the shapes and normalised arguments ``conv2d`` has after validation: x_shape
    (N, H, W, C), w_shape (kh, kw, C // groups, O), stride (sh, sw), padding
    ((top, bottom), (left, right)), dilation (dh, dw), groups, and backend as
    ``jax.default_backend()`` names it ("cpu", "gpu", "tpu", ...).

    True only when all hold:

    * ``backend`` is "cpu" or "gpu". On TPU (not measured) the convolution units are left to
      run direct convolutions. On GPU the rule below was checked on LeNet's two convs only
      (H100: a training epoch 1.4x faster than with cuDNN convs, a vmapped population of 64
      2.7x); larger convs fail the size bounds and go to cuDNN.
    * ``groups == 1``: a grouped Toeplitz weight would be block-diagonal and mostly zeros.
    * ``C * Wu / kw <= 18``, where ``Wu / kw`` is the FLOP blow-up over a direct
      conv (Wu: padded input width the kernel reaches). XLA:CPU's direct convs (backward ones
      above all) run at a few GFLOP/s per input channel when C is small, the Toeplitz GEMM near
      the matmul peak, so the blow-up it can afford shrinks roughly as 1 / C.
    * the Toeplitz weight ``kh * Wu * C * Wo * O`` has at most 2**20 entries (4 MiB in
      float32), so building it and its gradient stays cheap next to the GEMM (the largest
      measured win, C = O = 32 on 14x14 with 5x5 kernels, had 0.7 M entries).

    Measured on the project's 2-core CPU, shared and noisy (jax 0.10.2, float32, stride 1,
    batch 64-256; forward + both gradients; speed-up = lax time / Toeplitz time, interleaved
    round-robin medians, ranges over repeated runs)::

        C   kh=kw  W (pad)  Wu/kw  C*Wu/kw  speed-up   auto
        1   5      28 (2)    6.4      6.4   2.8-4.0    yes   LeNet conv1
        1   3      32 (1)   11.3     11.3   2.1        yes
        1   5      56 (2)   12.0     12.0   1.7-1.9    yes
        1   3      64 (1)   22.0     22.0   0.77-0.85  no
        1   5     112 (2)   23.2     23.2   0.44       no
        2   5      28 (2)    6.4     12.8   1.6        yes
        2   3      28 (1)   10.0     20.0   0.86-0.99  no
        3   5      14 (0)    2.8      8.4   2.9        yes
        3   5      28 (2)    6.4     19.2   0.72-0.76  no
        4   3      14 (1)    5.3     21.3   1.09-1.14  no
        6   5      14 (0)    2.8     16.8   1.6-1.7    yes   LeNet conv2
        6   3      10 (0)    3.3     20.0   2.0        no    (missed win)
        6   5      28 (2)    6.4     38.4   0.52       no
        8   3       8 (1)    3.3     26.7   0.71-0.81  no
        16  5      14 (0)    2.8     44.8   1.6-1.8    no    (missed win)
        16  5       8 (2)    2.4     38.4   0.44       no
        16  3      16 (1)    6.0     96.0   0.42       no
        64  3      32 (1)   11.3    725     0.12       no

    The rule errs towards lax: a missed win costs a speed-up, a wrong pick costs a slow-down.
    Unpadded convs on small maps (the "missed win" rows) can win with more channels, as
    XLA:CPU runs those lax convs slowly, but no simple shape rule separated them from the
    losing rows.
    """
    if backend not in ("cpu", "gpu") or groups != 1:
        return False
    _, _, w_in, c = x_shape
    kh, kw, _, o = w_shape
    wo = _out_size(w_in, kw, stride[1], padding[1], dilation[1])
    wu = (wo - 1) * stride[1] + (kw - 1) * dilation[1] + 1
    blowup = wu / kw
    weight_entries = kh * wu * c * wo * o
    return c * blowup <= _MAX_STARVATION and weight_entries <= _MAX_WEIGHT_ENTRIES
