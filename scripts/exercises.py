"""D2L chapter 6's exercises (6.1.6-6.6.4), each answered by a computation that prints its numbers.

Usage::

    python scripts/exercises.py                    # every section
    python scripts/exercises.py --section 6.4      # one section

``EXERCISES.md`` holds the written answers, the training commands of 6.6.4.1-3 and their
measured results; this script prints, under each exercise's full number (``### 6.4.5.2 ...``),
the numbers that back those answers. Arrays print as ``label =`` followed by the array. FLOP
counts come from XLA itself: ``jax.jit(f).lower(...).compile().cost_analysis()["flops"]`` (a
multiply-add counts as 2). Nothing is downloaded and nothing is trained; the whole run compiles
small programs only. The training experiments of 6.6.4.1-3 are not run here: 6.6.4.2's screening
of LeNet variants is a sweep (``scripts/sweep.py --config configs/sweeps/lenet_variants.py``),
whose ``results.md`` is its table; section 6.6 below prints only what each config trains and
its size.

Each exercise is computed here once. ``scripts/chapter6.py``, which shows some of them beside the
book's worked examples (6.2.8.1, 6.2.8.4, 6.4.5.1, 6.5.5.1-2), calls the functions below, and
prints with the same conventions (:func:`heading`, :func:`show`). This script imports no sibling
script, so it also loads as a module on its own (the tests load it that way).
"""

from __future__ import annotations

import argparse
import math
import pathlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax import models, ops

SECTIONS = ("6.1", "6.2", "6.3", "6.4", "6.5", "6.6")


# --------------------------------------------------------------------------------------------
# How both chapter scripts print


def heading(title: str) -> None:
    print(f"\n== {title} ==")


def exercise(number: str, title: str) -> None:
    print(f"\n### {number} {title}")


def show(label: str, value) -> None:
    """Prints ``label =`` then the array on the following lines."""
    print(f"{label} =\n{np.array2string(np.asarray(value))}")


def max_abs_diff(a, b) -> float:
    return float(jnp.max(jnp.abs(jnp.asarray(a) - jnp.asarray(b))))


def xla_flops(f: Callable, *args) -> float:
    """FLOPs XLA's cost model reports for ``jit(f)(*args)`` (a multiply-add counts as 2)."""
    cost = jax.jit(f).lower(*args).compile().cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax returned one dict per computation
        cost = cost[0]
    return float(cost["flops"])


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------------------------
# 6.1 From fully connected layers to convolutions


def section_6_1() -> None:
    heading("6.1 From Fully Connected Layers to Convolutions: exercises")

    exercise("6.1.6.1", "Delta = 0: a 1x1 convolution is a dense layer applied to every pixel")
    x = rng(0).normal(size=(2, 5, 5, 3)).astype(np.float32)
    W = rng(1).normal(size=(3, 4)).astype(np.float32)
    y = ops.conv2d(x, W[None, None])
    print(
        f"conv2d with a (1, 1, 3, 4) kernel vs x @ W per pixel: max |diff| = "
        f"{max_abs_diff(y, x @ W):.2e}"
    )
    x2 = x.copy()
    x2[0, 2, 2, :] += 1.0
    changed = np.argwhere(np.any(np.asarray(ops.conv2d(x2, W[None, None]) != y), axis=-1))
    print(f"perturbing input pixel (0, 2, 2) changes output pixels {changed.tolist()}")

    exercise("6.1.6.2", "translation invariance can hide where something is")
    img_top = np.zeros((1, 12, 12, 1), np.float32)
    img_top[0, 2:5, 4:7, 0] = 1.0  # a 3x3 blob in the top half
    img_bottom = np.roll(img_top, 6, axis=1)  # the same blob in the bottom half
    k = rng(2).normal(size=(3, 3, 1, 4)).astype(np.float32)
    f_top = ops.conv2d(img_top, k, padding=1).max(axis=(1, 2))
    f_bottom = ops.conv2d(img_bottom, k, padding=1).max(axis=(1, 2))
    show("global max of conv features, blob at top", f_top[0])
    show("global max of conv features, blob at bottom", f_bottom[0])
    print(
        f"max |diff| = {max_abs_diff(f_top, f_bottom):.2e}: a conv net with global pooling "
        "cannot answer 'is the blob in the top half?'"
    )

    exercise("6.1.6.3", "image borders: what padding puts there shows up in the output")
    ones = np.ones((5, 5), np.float32)
    K = np.array([[1.0, -1.0]], np.float32)
    show("no padding: corr2d(ones, [[1, -1]])", ops.corr2d(ones, K))
    show("zero padding 1: corr2d(pad0(ones), [[1, -1]])", ops.corr2d(np.pad(ones, 1), K))
    show(
        "edge padding 1: corr2d(pad_edge(ones), [[1, -1]])",
        ops.corr2d(np.pad(ones, 1, mode="edge"), K),
    )
    print("zero padding invents edges at the border; replicating the edge does not.")

    exercise("6.1.6.4", "audio: a 1-D convolution as a matched filter for a tone burst")
    rate, start, length = 8000, 300, 80
    t = np.arange(length) / rate
    burst = np.sin(2 * np.pi * 1000 * t).astype(np.float32)  # 10 ms of 1 kHz
    wave = 0.3 * rng(3).normal(size=800).astype(np.float32)
    wave[start : start + length] += burst
    resp = ops.conv1d(wave[None, :, None], burst[:, None, None])[0, :, 0]
    print(
        f"waveform 800 samples at {rate} Hz, burst at sample {start}; matched-filter "
        f"(conv1d with the burst as kernel) peak at sample {int(jnp.argmax(resp))}, "
        f"response {float(resp.max()):.2f}"
    )

    exercise("6.1.6.5", "text: a 1-D convolution over word embeddings detects an n-gram")
    vocab = ["the", "film", "was", "not", "good", "but", "fun", "."]
    emb = rng(4).normal(size=(len(vocab), 6)).astype(np.float32)
    sentence = "the film was not good but fun .".split()
    ids = [vocab.index(w) for w in sentence]
    x = emb[ids][None]  # (1, L, D)
    kernel = emb[[vocab.index("not"), vocab.index("good")]][:, :, None]  # (2, D, 1)
    resp = ops.conv1d(x, kernel)[0, :, 0]
    show("bigram responses (position i covers words i, i+1)", resp)
    i = int(jnp.argmax(resp))
    print(f"strongest bigram at position {i}: {sentence[i]!r} {sentence[i + 1]!r}")

    exercise("6.1.6.6", "convolution commutes: f * g = g * f")
    f = rng(5).normal(size=(4, 6)).astype(np.float32)
    g = rng(6).normal(size=(3, 2)).astype(np.float32)
    fg = ops.convolve2d(f, g, "full")
    gf = ops.convolve2d(np.pad(g, ((0, 1), (0, 4))), f, "full")[: fg.shape[0], : fg.shape[1]]
    show("f * g (full)", fg)
    print(f"max |f * g - g * f| = {max_abs_diff(fg, gf):.2e}")


# --------------------------------------------------------------------------------------------
# 6.2 Convolutions for images


def edge_image() -> jax.Array:
    """The book's 6x8 image (6.2.3): ones with a black (zero) vertical band in columns 2..5."""
    return jnp.ones((6, 8)).at[:, 2:6].set(0.0)


def diagonal_edges() -> None:
    """6.2.8.1: the edge detector ``K = [[1, -1]]`` on a diagonal edge, and with the image or
    the kernel transposed."""
    K = jnp.array([[1.0, -1.0]])
    D = jnp.tril(jnp.ones((6, 8)))
    show("D (lower-triangular image, one diagonal edge)", D)
    show("corr2d(D, K)", ops.corr2d(D, K))
    show("corr2d(D.T, K)", ops.corr2d(D.T, K))
    show("corr2d(D, K.T)", ops.corr2d(D, K.T))


def derivative_kernel(d: int) -> np.ndarray:
    """(1, d+1) forward-difference kernel of order d: the smallest that takes a d-th derivative."""
    return np.array([[(-1) ** (d - k) * math.comb(d, k) for k in range(d + 1)]], dtype=np.float32)


def derivative_kernels() -> None:
    """6.2.8.4: the second derivative, the d-th derivatives and the integral as kernels on
    ``t**d``, and the Laplacian on ``x**2 + y**2``."""
    t = np.arange(8.0, dtype=np.float32)
    f = (t**2)[None, :]
    show("f = t**2", f)
    show("second-derivative kernel", derivative_kernel(2))
    show("corr2d(f, second-derivative kernel)", ops.corr2d(f, derivative_kernel(2)))
    for d in (1, 2, 3):
        fd = (t**d)[None, :]
        show(f"order-{d} kernel (size {d + 1}) on t**{d}", ops.corr2d(fd, derivative_kernel(d)))
    n = f.shape[1]
    integral = ops.convolve2d(f, np.ones((1, n), np.float32), "full")[:, :n]
    show("integral kernel ones(1, n), full convolution, first n outputs", integral)
    yy, xx = np.mgrid[:6, :6].astype(np.float32)
    lap = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32)
    show("2-D: Laplacian kernel on x**2 + y**2", ops.corr2d(xx**2 + yy**2, lap))


def corr2d_inplace(X: jax.Array, K: jax.Array) -> jax.Array:
    """The book's loop, ``Y[i, j] = (X[i:i + h, j:j + w] * K).sum()``, on a JAX array."""
    h, w = K.shape
    Y = jnp.zeros((X.shape[0] - h + 1, X.shape[1] - w + 1))
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            Y[i, j] = (X[i : i + h, j : j + w] * K).sum()
    return Y


def corr2d_functional(X: jax.Array, K: jax.Array) -> jax.Array:
    """The same loop with JAX's functional update ``Y = Y.at[i, j].set(...)``."""
    h, w = K.shape
    Y = jnp.zeros((X.shape[0] - h + 1, X.shape[1] - w + 1))
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            Y = Y.at[i, j].set((X[i : i + h, j : j + w] * K).sum())
    return Y


def section_6_2() -> None:
    heading("6.2 Convolutions for Images: exercises")

    exercise("6.2.8.1", "diagonal edges, with X, K transposed")
    diagonal_edges()

    exercise("6.2.8.2", "differentiating the hand-written Conv2D")
    K = jnp.array([[1.0, -1.0]])
    X = edge_image()
    try:
        jax.grad(lambda k: corr2d_inplace(X, k).sum())(K)
        print("in-place version: no error")
    except TypeError as e:
        print(f"in-place version raises TypeError: {str(e).splitlines()[0]}")
    g_loop = jax.grad(lambda k: corr2d_functional(X, k).sum())(K)
    g_ops = jax.grad(lambda k: ops.corr2d(X, k).sum())(K)
    show("grad of sum(corr2d(X, K)) w.r.t. K, functional loop", g_loop)
    show("grad of sum(corr2d(X, K)) w.r.t. K, ops.corr2d", g_ops)

    exercise("6.2.8.3", "cross-correlation as a matrix product")
    X = jnp.arange(9.0).reshape(3, 3)
    K2 = jnp.arange(4.0).reshape(2, 2)
    M = ops.corr2d_kernel_matrix(K2, X.shape)
    show("kernel matrix of K = arange(4).reshape(2, 2) for a 3x3 input", M)
    show("(M @ X.ravel()).reshape(2, 2)", (M @ X.ravel()).reshape(2, 2))
    show("im2col patches @ K.ravel()", ops.corr2d_as_matmul(X, K2, method="im2col"))

    exercise("6.2.8.4", "second derivative, integral, and the smallest d-th derivative kernel")
    derivative_kernels()


# --------------------------------------------------------------------------------------------
# 6.3 Padding and stride


def section_6_3() -> None:
    heading("6.3 Padding and Stride: exercises")
    x = np.ones((1, 8, 8, 1), np.float32)

    exercise("6.3.4.1", "the last example: 8x8, kernel (3, 5), padding (0, 1), stride (3, 4)")
    y = ops.conv2d(x, np.ones((3, 5, 1, 1), np.float32), padding=(0, 1), stride=(3, 4))
    print("formula: floor((8 - 3 + 0 + 3) / 3) = 2, floor((8 - 5 + 2 + 4) / 4) = 2")
    print(f"conv2d output shape (H, W) = {tuple(y.shape[1:3])}")

    exercise("6.3.4.2", "other padding and stride combinations")
    cases = (
        ((3, 3), 0, 1),
        ((3, 3), 1, 3),
        ((2, 2), 0, 2),
        ((5, 5), 3, 2),
        ((4, 2), (2, 0), (1, 3)),
    )
    for kernel, padding, stride in cases:
        y = ops.conv2d(x, np.ones((*kernel, 1, 1), np.float32), padding=padding, stride=stride)
        formula = ops.conv_output_shape((8, 8), kernel, stride=stride, padding=padding)
        print(
            f"kernel {kernel}, padding {padding}, stride {stride} -> {tuple(y.shape[1:3])}"
            f"  formula {tuple(formula)}"
        )

    exercise("6.3.4.3", "stride 2 on audio halves the sampling rate (and aliases)")
    # 2 * n_out + 1 samples: a 3-tap stride-2 conv then gives n_out outputs, and a tone whose
    # aliased frequency makes a whole number of cycles in n_out samples has all its energy in
    # one FFT bin (no leakage), so the peaks below compare amplitudes exactly.
    n_out, f0 = 32, 0.375  # a tone at 0.375 cycles per sample, above the new Nyquist 0.25
    tone = np.cos(2 * np.pi * f0 * np.arange(2 * n_out + 1)).astype(np.float32)
    k = np.array([0.25, 0.5, 0.25], np.float32)
    s2 = ops.conv1d(tone[None, :, None], k[:, None, None], stride=2)[0, :, 0]
    s1 = ops.conv1d(tone[None, :, None], k[:, None, None])[0, :, 0]
    print(
        f"conv1d stride 2 vs stride 1 then every 2nd sample: max |diff| = "
        f"{max_abs_diff(s2, s1[::2]):.2e}"
    )
    plain = np.abs(np.fft.rfft(tone[: 2 * n_out : 2]))
    peak = int(np.argmax(plain))
    print(
        f"tone at {f0} cycles/sample, decimated by 2 (every 2nd sample): spectrum peak at bin "
        f"{peak} of {n_out} samples = {peak / n_out} cycles/new sample (not {2 * f0}: aliased), "
        f"magnitude {plain[peak]:.3f}"
    )
    filtered = np.abs(np.fft.rfft(np.asarray(s2)))
    print(
        f"filtered by [1/4, 1/2, 1/4] then decimated (conv1d stride 2): spectrum peak at bin "
        f"{int(np.argmax(filtered))}, magnitude {filtered[peak]:.3f} = "
        f"{filtered[peak] / plain[peak]:.4f} of the unfiltered alias: attenuated, not removed"
    )
    freqs = (0.25, 0.3125, 0.375, 0.4375, 0.5)  # the band that folds onto [0, 0.25]
    gains = [abs(np.exp(-2j * np.pi * f * np.arange(k.size)) @ k) for f in freqs]
    print(
        "gain |sum_t k[t] exp(-2 pi i f t)| of [1/4, 1/2, 1/4] across the folded band: "
        + ", ".join(f"f {f}: {g:.4f}" for f, g in zip(freqs, gains))
    )

    exercise("6.3.4.4", "stride s divides the work by about s**2")
    xs = jnp.ones((1, 28, 28, 16))
    w = jnp.ones((3, 3, 16, 32))
    for s in (1, 2, 3, 4):
        flops = xla_flops(lambda a, b, s=s: ops.conv2d(a, b, stride=s, impl="lax"), xs, w)
        c = ops.conv_cost((28, 28), 16, 32, 3, stride=s)
        print(
            f"stride {s}: output {c.output_shape}, formula forward MACs {c.forward_macs:,}, "
            f"XLA forward flops {flops:,.0f}"
        )


# --------------------------------------------------------------------------------------------
# 6.4 Multiple input and multiple output channels


def compose_kernels(A: jax.Array, B: jax.Array) -> jax.Array:
    """One kernel equal to cross-correlating with A (Cm, Ci, a, a) then with B (Co, Cm, b, b).

    corr(corr(X, A), B) = corr(X, A * B) with * the full convolution, summed over the middle
    channels: shape (Co, Ci, a + b - 1, a + b - 1).
    """

    def full(a, b):
        return ops.convolve2d(a, b, "full")

    over_i = jax.vmap(full, (0, None))  # A[m, i], B[o, m] -> (Ci, k, k)
    over_o = jax.vmap(over_i, (None, 0))  # -> (Co, Ci, k, k)
    over_m = jax.vmap(over_o, (0, 1))  # A[m], B[:, m] -> (Cm, Co, Ci, k, k)
    return jnp.sum(over_m(A, B), axis=0)


def two_convolutions_as_one(r: np.random.Generator) -> None:
    """6.4.5.1: a 3x3 then a 2x2 multi-channel convolution against the one composed 4x4 kernel,
    on an input X (3, 10, 10) and kernels A (4, 3, 3, 3), B (2, 4, 2, 2) drawn from ``r`` in
    that order."""
    X = r.normal(size=(3, 10, 10)).astype(np.float32)
    A = r.normal(size=(4, 3, 3, 3)).astype(np.float32)  # k1 = 3
    B = r.normal(size=(2, 4, 2, 2)).astype(np.float32)  # k2 = 2
    two_step = ops.corr2d_multi_in_out(ops.corr2d_multi_in_out(X, A), B)
    C = compose_kernels(A, B)
    one_step = ops.corr2d_multi_in_out(X, C)
    print(
        f"k1 = {A.shape[-1]}, k2 = {B.shape[-1]} -> composed kernel {tuple(C.shape)} "
        f"(size k1 + k2 - 1 = {A.shape[-1] + B.shape[-1] - 1})"
    )
    scale = float(jnp.max(jnp.abs(two_step)))
    print(
        f"two convolutions vs one: output {tuple(two_step.shape)}, "
        f"max |diff| = {max_abs_diff(two_step, one_step):.2e} (outputs up to {scale:.1f})"
    )


def in_image_macs(h, w, ci, co, k, pad, stride=1) -> int:
    """Multiply-adds of a conv whose taps on the zero padding are skipped, counted in numpy."""
    count = 0
    for size, out in ((h, (h + 2 * pad - k) // stride + 1), (w, (w + 2 * pad - k) // stride + 1)):
        starts = np.arange(out) * stride - pad
        taps = np.clip(starts[:, None] + np.arange(k)[None], -1, size)
        count = (count or 1) * int(((taps >= 0) & (taps < size)).sum())
    return count * ci * co


def conv_memory(c: ops.ConvCost, itemsize: int = 4) -> dict[str, int]:
    """Bytes a conv layer holds in its forward and its backward pass (exercise 6.4.5.2).

    ``ops.conv_cost`` gives the parameter count and the input and output sizes in bytes; the
    gradient buffers follow from them, since each gradient has its variable's shape:

      - "params": the parameters, ``params * itemsize``, held in both passes;
      - "input", "output": what the forward pass reads and writes;
      - "kept input": the input, kept from the forward pass to form the weight gradient;
      - "output gradient": the incoming gradient, the output's size;
      - "input gradient": the gradient passed on to the layer below, the input's size;
      - "parameter gradient": the parameters' size.

    "backward" is the sum of the last four: the buffers the backward pass holds besides the
    parameters themselves (the first layer of a network could skip the input gradient).

    Args:
      c: the layer's :func:`cnnjax.ops.conv_cost`, computed with the same dtype.
      itemsize: bytes per element of that dtype (4 for float32).

    Returns:
      ``{name: bytes}`` with the keys above.
    """
    out = {
        "params": c.params * itemsize,
        "input": c.input_bytes,
        "output": c.activation_bytes,
        "kept input": c.input_bytes,
        "output gradient": c.activation_bytes,
        "input gradient": c.input_bytes,
        "parameter gradient": c.params * itemsize,
    }
    out["backward"] = sum(
        out[k] for k in ("kept input", "output gradient", "input gradient", "parameter gradient")
    )
    return out


def factor_5x5(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A (4, 1, 3, 3) and B (1, 4, 3, 3) with compose_kernels(A, B) == T (1, 1, 5, 5).

    A's four channels are one-hot at the corners (0|2, 0|2), so channel m passes the input on
    shifted by that corner; B[0, m] holds the 3x3 part of T that the shifted copy covers.
    """
    A = np.zeros((4, 1, 3, 3), np.float32)
    B = np.zeros((1, 4, 3, 3), np.float32)
    corners = [(0, 0), (0, 2), (2, 0), (2, 2)]
    for m, (p, q) in enumerate(corners):
        A[m, 0, p, q] = 1.0
    for r in range(5):
        for c in range(5):
            p, q = (0 if r < 3 else 2), (0 if c < 3 else 2)
            B[0, corners.index((p, q)), r - p, c - q] = T[0, 0, r, c]
    return A, B


def im2col(X: np.ndarray, k: int) -> np.ndarray:
    """(Ci, H, W) -> (Ho * Wo, Ci * k * k): one row per output position, its window flattened."""
    ci, h, w = X.shape
    rows = [
        X[:, i : i + k, j : j + k].reshape(-1) for i in range(h - k + 1) for j in range(w - k + 1)
    ]
    return np.stack(rows)


def section_6_4() -> None:
    heading("6.4 Multiple Input and Multiple Output Channels: exercises")
    r = rng(0)

    exercise("6.4.5.1", "two convolutions without a nonlinearity are one; and the converse")
    two_convolutions_as_one(r)
    print(
        f"converse, one channel, 1-D: [1, 0, 1] = x**2 + 1 has roots "
        f"{np.roots([1.0, 0.0, 1.0]).tolist()}: no real size-2 factors"
    )
    T = r.normal(size=(1, 1, 5, 5)).astype(np.float32)
    A5, B5 = factor_5x5(T)
    print(
        f"converse, 4 middle channels: a random 5x5 kernel as 3x3 then 3x3, "
        f"max |diff| = {max_abs_diff(compose_kernels(A5, B5), T):.2e}"
    )

    exercise("6.4.5.2", "cost and memory of a conv layer, forward and backward, vs XLA")
    h = w = 16
    ci, co, k = 3, 8, 3
    for pad, stride in ((0, 1), (1, 1), (1, 2)):
        x = jnp.ones((1, h, w, ci))
        wk = jnp.ones((k, k, ci, co))

        def fwd(a, b, pad=pad, stride=stride):
            # lax's own conv, so its own gradient: on CPU, ops.conv2d computes a strided conv's
            # input gradient on the explicitly dilated cotangent (XLA:CPU can abort on lax's),
            # which XLA counts with the inserted zeros (printed below as "cnnjax CPU bwd").
            return jax.lax.conv_general_dilated(
                a, b, (stride, stride), [(pad, pad)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC")
            )

        def bwd(a, b, fwd=fwd):
            return jax.grad(lambda a, b: jnp.sum(fwd(a, b)), argnums=(0, 1))(a, b)

        def ops_bwd(a, b, pad=pad, stride=stride):
            def f(a, b):
                return jnp.sum(ops.conv2d(a, b, padding=pad, stride=stride, impl="lax"))

            return jax.grad(f, argnums=(0, 1))(a, b)

        c = ops.conv_cost((h, w), ci, co, k, padding=pad, stride=stride)
        print(
            f"ci {ci}, co {co}, {h}x{w}, k {k}, padding {pad}, stride {stride}: "
            f"out {c.output_shape}; formula MACs fwd {c.forward_macs:,} bwd {c.backward_macs:,}; "
            f"in-image MACs {in_image_macs(h, w, ci, co, k, pad, stride):,}; "
            f"XLA flops fwd {xla_flops(fwd, x, wk):,.0f} bwd {xla_flops(bwd, x, wk):,.0f}; "
            f"params {c.params}"
        )
        print(
            f"  cnnjax CPU bwd (ops.conv2d, impl lax): XLA flops {xla_flops(ops_bwd, x, wk):,.0f}"
        )
        m = conv_memory(c)
        print(
            f"  memory (float32 bytes): parameters {m['params']:,}; forward: input "
            f"{m['input']:,}, output {m['output']:,}; backward: kept input {m['kept input']:,} "
            f"+ output gradient {m['output gradient']:,} + input gradient "
            f"{m['input gradient']:,} + parameter gradient {m['parameter gradient']:,} = "
            f"{m['backward']:,}"
        )

    exercise("6.4.5.3", "doubling the channels, or the padding")
    base = dict(in_shape=(28, 28), in_channels=16, out_channels=16, kernel=5, padding=2)
    variants = {
        "base": base,
        "2x ci": dict(base, in_channels=32),
        "2x co": dict(base, out_channels=32),
        "2x ci and co": dict(base, in_channels=32, out_channels=32),
        "2x padding": dict(base, padding=4),
    }
    ref = ops.conv_cost(**base).forward_macs
    for label, kw in variants.items():
        c = ops.conv_cost(**kw)
        print(
            f"{label}: output {c.output_shape}, forward MACs {c.forward_macs:,} "
            f"({c.forward_macs / ref:.3f}x), params {c.params:,}"
        )

    exercise("6.4.5.4", "the cost of a 1x1 convolution")
    x = jnp.ones((1, 28, 28, 64))
    w1 = jnp.ones((1, 1, 64, 32))
    c = ops.conv_cost((28, 28), 64, 32, 1)
    conv_flops = xla_flops(lambda a, b: ops.conv2d(a, b, impl="lax"), x, w1)
    dot_flops = xla_flops(lambda a, b: a.reshape(-1, 64) @ b.reshape(64, 32), x, w1)
    print(
        f"1x1 conv 64 -> 32 on 28x28: formula MACs {c.forward_macs:,} = h*w*ci*co; "
        f"XLA flops conv {conv_flops:,.0f}, as a (784, 64) @ (64, 32) matmul {dot_flops:,.0f}"
    )

    exercise("6.4.5.5", "are Y1 and Y2 exactly equal?")
    X1 = r.normal(size=(64, 6, 6)).astype(np.float32)  # many channels: long sums
    K1 = r.normal(size=(8, 64, 1, 1)).astype(np.float32)
    Y1 = np.asarray(ops.corr2d_multi_in_out_1x1(X1, K1))
    Y2 = np.asarray(ops.corr2d_multi_in_out(X1, K1))
    x64, k64 = X1.astype(np.float64), K1[:, :, 0, 0].astype(np.float64)
    exact = np.einsum("ihw,oi->ohw", x64, k64)
    # Each output is a sum of n = 64 products; float32 summation in any order is within
    # n * eps * sum_i |x_i k_i| of the exact sum (the standard bound for recursive summation).
    terms = np.abs(np.einsum("ihw,oi->oihw", x64, k64)).sum(axis=1)
    bound = X1.shape[0] * np.finfo(np.float32).eps * terms.max()
    print(
        f"64 input channels, float32: max |Y1 - Y2| = {np.abs(Y1 - Y2).max():.3e}, "
        f"{int((Y1 != Y2).sum())} of {Y1.size} entries differ; "
        f"max |Y1 - exact| = {np.abs(Y1 - exact).max():.3e}, "
        f"max |Y2 - exact| = {np.abs(Y2 - exact).max():.3e}, "
        f"bound n * eps * max sum|x_i k_i| = {bound:.3e}"
    )
    book = rng(7)  # the book's sizes, drawn apart so that 6.4.5.6's draws stay as they were
    Xb = book.normal(size=(3, 3, 3)).astype(np.float32)
    Kb = book.normal(size=(2, 3, 1, 1)).astype(np.float32)
    Yb1 = np.asarray(ops.corr2d_multi_in_out_1x1(Xb, Kb))
    Yb2 = np.asarray(ops.corr2d_multi_in_out(Xb, Kb))
    print(
        f"the book's sizes (3 input channels, 2 outputs, 3x3): max |Y1 - Y2| = "
        f"{np.abs(Yb1 - Yb2).max():.3e}, {int((Yb1 != Yb2).sum())} of {Yb1.size} entries differ"
    )

    exercise("6.4.5.6", "convolution as a matrix product for a k x k window (im2col)")
    X = r.normal(size=(3, 6, 6)).astype(np.float32)
    K = r.normal(size=(4, 3, 3, 3)).astype(np.float32)
    patches = im2col(X, 3)
    Y = (patches @ K.reshape(4, -1).T).T.reshape(4, 4, 4)
    print(
        f"patches {patches.shape} @ kernels {K.reshape(4, -1).T.shape} -> {Y.shape}; "
        f"max |diff| to corr2d_multi_in_out = "
        f"{max_abs_diff(Y, ops.corr2d_multi_in_out(X, K)):.2e}"
    )


# --------------------------------------------------------------------------------------------
# 6.5 Pooling


def lse_pool2d(x: jax.Array, window: int, tau: float) -> jax.Array:
    """Softmax (log-mean-exp) pooling: ``tau * log(mean(exp(x / tau)))`` over each window.

    Stable form: the window maximum is taken out before the exponential. It lies between the
    window's mean (tau -> inf) and its maximum (tau -> 0).
    """
    m = ops.max_pool2d(x, window)
    up = jnp.repeat(jnp.repeat(m, window, axis=1), window, axis=2)
    return m + tau * jnp.log(ops.avg_pool2d(jnp.exp((x - up) / tau), window))


def max_pool_2x2_via_relu(x: jax.Array) -> jax.Array:
    """2x2/2 max pooling of NHWC ``x`` without a max: convolutions and ReLU only.

    Depthwise stride-2 convolutions with one-hot 2x2 kernels pick the four window entries;
    ``max(a, b) = a + relu(b - a)`` combines them.
    """
    c = x.shape[-1]

    def pick(i: int, j: int) -> jax.Array:
        w = jnp.zeros((2, 2, 1, c), x.dtype).at[i, j].set(1.0)
        return ops.conv2d(x, w, stride=2, groups=c)

    def pairmax(a, b):
        return a + jax.nn.relu(b - a)

    return pairmax(pairmax(pick(0, 0), pick(0, 1)), pairmax(pick(1, 0), pick(1, 1)))


def avg_pool_as_conv(x: np.ndarray) -> None:
    """6.5.5.1: 2x2 average pooling of NHWC ``x`` against a depthwise stride-2 convolution."""
    c = x.shape[-1]
    as_conv = ops.conv2d(x, jnp.full((2, 2, 1, c), 0.25), stride=2, groups=c)
    print(
        f"avg_pool2d(x, 2) vs depthwise conv2d with 1/4 kernels, stride 2: "
        f"max |diff| = {max_abs_diff(ops.avg_pool2d(x, 2), as_conv):.2e}"
    )


def max_pool_from_relu(x: np.ndarray) -> None:
    """6.5.5.2: 2x2 max pooling of NHWC ``x`` against :func:`max_pool_2x2_via_relu`."""
    print(
        f"max_pool2d(x, 2) vs one-hot convolutions + a + relu(b - a): max |diff| = "
        f"{max_abs_diff(ops.max_pool2d(x, 2), max_pool_2x2_via_relu(x)):.2e}"
    )


def section_6_5() -> None:
    heading("6.5 Pooling: exercises")
    x = rng(0).normal(size=(2, 6, 6, 3)).astype(np.float32)

    exercise("6.5.5.1", "average pooling as a convolution")
    avg_pool_as_conv(x)

    exercise("6.5.5.2", "max pooling from convolutions and ReLU")
    max_pool_from_relu(x)

    exercise("6.5.5.3", "the cost of a pooling layer")
    xp = jnp.ones((1, 16, 16, 3))
    for window in (2, 3):
        pc = ops.pool_cost((16, 16), 3, window)
        fmax = xla_flops(lambda a, window=window: ops.max_pool2d(a, window, impl="lax"), xp)
        favg = xla_flops(lambda a, window=window: ops.avg_pool2d(a, window, impl="lax"), xp)
        print(
            f"window {window}, 16x16x3: output {pc.output_shape}, formula ops {pc.forward_ops} "
            f"(outputs x window); XLA flops max {fmax:.0f}, avg {favg:.0f}; params {pc.params}"
        )

    exercise("6.5.5.4", "why max and average pooling behave differently: their gradients")
    xg = rng(1).normal(size=(1, 4, 4, 1)).astype(np.float32)
    gmax = jax.grad(lambda a: ops.max_pool2d(a, 2).sum())(xg)
    gavg = jax.grad(lambda a: ops.avg_pool2d(a, 2).sum())(xg)
    show("x", xg[0, :, :, 0])
    show("grad of sum(max_pool2d(x, 2))", gmax[0, :, :, 0])
    show("grad of sum(avg_pool2d(x, 2))", gavg[0, :, :, 0])

    exercise("6.5.5.5", "min pooling from max pooling: min_pool(x) = -max_pool(-x)")
    xm = jnp.arange(16.0).reshape(1, 4, 4, 1) % 7
    show("x", xm[0, :, :, 0])
    show("-max_pool2d(-x, 2)", -ops.max_pool2d(-xm, 2)[0, :, :, 0])

    exercise("6.5.5.6", "softmax (log-mean-exp) pooling beside max and average")
    mx, av = ops.max_pool2d(x, 2), ops.avg_pool2d(x, 2)
    for tau in (0.01, 0.1, 1.0, 10.0, 100.0):
        lse = lse_pool2d(x, 2, tau)
        print(
            f"tau {tau:g}: max |lse - max| = {max_abs_diff(lse, mx):.4f}, "
            f"max |lse - avg| = {max_abs_diff(lse, av):.4f}"
        )


# --------------------------------------------------------------------------------------------
# 6.6 LeNet


CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


def load_config_module(name: str):
    """The module ``configs/<name>.py`` (its ``get_config()``, and ``VARIANTS`` if it has them)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"configs_{name}", CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sweep_configs(name: str) -> dict:
    """``configs/sweeps/<name>.py``'s variants: name -> the resolved training config."""
    from cnnjax.train import load_config_file
    from cnnjax.train.sweep import plan_groups, resolve_sweep

    sweep = resolve_sweep(load_config_file(str(CONFIGS / "sweeps" / f"{name}.py")))
    return {
        v: plan_groups(sweep, "screening", [(v, sweep.points[0])])[0].config for v in sweep.variants
    }


def count_params(model_cfg) -> int:
    """Parameters of the LeNet a config's ``model`` section describes (shapes only, no compute)."""
    model = models.LeNet.from_config(model_cfg)
    params = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, 28, 28, 1)))
    return sum(math.prod(p.shape) for p in jax.tree.leaves(params))


def section_6_6() -> None:
    heading("6.6 LeNet: exercises")
    print("6.6.4.1-6.6.4.3 are training runs (configs/lenet_*.py, results in EXERCISES.md);")
    print("here: what each run trains, and its size.")

    exercise("6.6.4.1", "max instead of average pooling")
    for name, config in sweep_configs("pooling").items():
        model = config.model
        print(
            f"configs/sweeps/pooling.py variant {name}: {model.activation}, {model.pooling} "
            f"pooling: {count_params(model):,} parameters (pooling has none)"
        )

    exercise("6.6.4.2", "LeNet variants along each axis")
    for name, config in sweep_configs("lenet_variants").items():
        model, data = config.model, config.data
        print(
            f"variant {name}: channels {tuple(model.channels)}, kernels "
            f"{tuple(model.kernel_sizes)}, dense {tuple(model.dense)}, {model.activation}, "
            f"{model.kernel_init}, {model.pooling} pooling, flips {data.random_flip}, shifts "
            f"{data.random_shift}: {count_params(model):,} parameters"
        )

    cfg = load_config_module("lenet_best").get_config()
    m = cfg.model
    print(
        f"configs/lenet_best.py: channels {tuple(m.channels)}, kernels {tuple(m.kernel_sizes)}, "
        f"dense {tuple(m.dense)}, {m.activation}, {m.pooling} pooling: "
        f"{count_params(m):,} parameters; training images flipped at random: "
        f"{cfg.data.random_flip}, shifted by up to {cfg.data.random_shift} px"
    )

    exercise("6.6.4.3", "the improved LeNet on MNIST")
    cfg = load_config_module("lenet_mnist").get_config()
    m = cfg.model
    print(
        f"configs/lenet_mnist.py ({cfg.data.name}): channels {tuple(m.channels)}, kernels "
        f"{tuple(m.kernel_sizes)}, dense {tuple(m.dense)}, {m.activation}, {m.pooling} pooling: "
        f"{count_params(m):,} parameters"
    )

    exercise("6.6.4.4", "first- and second-layer activations")
    print(
        "python scripts/chapter6.py --section 6.6 --workdir RUN [--data-dir DIR] draws them for "
        "a trained run, with the similarity of a sweater's and a coat's activation maps."
    )


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--section", choices=SECTIONS, help="run one section (default: all)")
    args = parser.parse_args(argv)
    np.set_printoptions(precision=4, suppress=True)
    runners = {
        "6.1": section_6_1,
        "6.2": section_6_2,
        "6.3": section_6_3,
        "6.4": section_6_4,
        "6.5": section_6_5,
        "6.6": section_6_6,
    }
    for name in (args.section,) if args.section else SECTIONS:
        runners[name]()


if __name__ == "__main__":
    main()
