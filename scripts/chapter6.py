"""D2L chapter 6 (sections 6.2-6.6), runnable: prints the book's numbers, draws its pictures.

Usage::

    python scripts/chapter6.py                     # every section, figures in ./chapter6_figures
    python scripts/chapter6.py --section 6.2 --outdir /tmp/figs
    python scripts/chapter6.py --section 6.6 --workdir RUN_DIR [--data-dir DIR]  # 6.6.4.4

Each worked example prints a ``label =`` line followed by the array (channels first, as the book
prints them). Figures (PNG): ``edge_detection.png`` and ``kernel_learning.png`` (6.2),
``lenet_layer1.png`` and ``lenet_layer2.png`` (6.6, exercise 6.6.4.4: activations of the first
and second conv layers for a few inputs). With ``--workdir`` (a trained run, member 0) the
inputs are the first test image of classes 2, 4, 7 and 8 of the run's data set -- on
Fashion-MNIST a sweater ("Pullover"), a coat, a sneaker and a bag -- and the script prints how
similar the first input's activation maps are to each other's, per layer and per channel, for
those images and averaged over 100 pairs; the data set is read from ``--data-dir``, else the
run's ``config.data.dir``, else ``$CNNJAX_DATA_DIR``. Without ``--workdir`` LeNet has random
parameters and the inputs are synthetic shapes; the figure titles say which. Takes about 15 s
on a shared 2-core CPU, mostly compiling small programs.

The exercises shown beside the worked examples (6.2.8.1, 6.2.8.4, 6.4.5.1, 6.5.5.1-2) are
computed by ``scripts/exercises.py``, which answers every exercise of the chapter; this script
imports them from there, with the printing conventions the two share.
"""

from __future__ import annotations

import argparse
import pathlib
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

# The sibling script that computes every exercise, and prints as this one does (a script run as
# ``python scripts/chapter6.py`` finds its siblings: Python puts scripts/ first on the path).
from exercises import (  # noqa: E402
    avg_pool_as_conv,
    derivative_kernels,
    diagonal_edges,
    edge_image,
    heading,
    max_abs_diff,
    max_pool_from_relu,
    show,
    two_convolutions_as_one,
)

from cnnjax import models, ops  # noqa: E402

SECTIONS = ("6.2", "6.3", "6.4", "6.5", "6.6")


def subheading(title: str) -> None:
    print(f"\n-- {title} --")


def save(fig: plt.Figure, outdir: pathlib.Path, name: str) -> None:
    path = outdir / name
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    print(f"[figure] {path}")


# --------------------------------------------------------------------------------------------
# 6.2 Convolutions for images


def learn_edge_kernel(
    X: jax.Array, Y: jax.Array, *, lr: float, steps: int, seed: int
) -> tuple[list[np.ndarray], list[float]]:
    """Plain gradient descent on the summed squared error of a bias-free 1x2 ``Conv2D``.

    Returns the kernel before every step and after the last (steps + 1 entries), and the loss
    at every step, measured before that step's update (as the book prints it).
    """
    conv = models.Conv2D((1, 2), use_bias=False)
    params = conv.init(jax.random.key(seed), X)["params"]

    def loss_fn(p):
        return jnp.sum((conv.apply({"params": p}, X) - Y) ** 2)

    @jax.jit
    def step(p):
        loss, grads = jax.value_and_grad(loss_fn)(p)
        return jax.tree.map(lambda w, g: w - lr * g, p, grads), loss

    kernels, losses = [np.asarray(params["weight"])], []
    for _ in range(steps):
        params, loss = step(params)
        kernels.append(np.asarray(params["weight"]))
        losses.append(float(loss))
    return kernels, losses


def section_6_2(outdir: pathlib.Path, seed: int) -> None:
    heading("6.2 Convolutions for Images")

    subheading("6.2.1 The cross-correlation operation")
    X = jnp.arange(9.0).reshape(3, 3)
    K = jnp.arange(4.0).reshape(2, 2)
    show("X", X)
    show("K", K)
    show("corr2d(X, K)", ops.corr2d(X, K))

    subheading("6.2.3 Object edge detection in images")
    X = edge_image()
    K = jnp.array([[1.0, -1.0]])
    Y = ops.corr2d(X, K)
    show("X", X)
    show("K", K)
    show("Y = corr2d(X, K)", Y)
    print("1 marks the edge from white to black, -1 the edge from black to white.")
    YT = ops.corr2d(X.T, K)
    show("corr2d(X.T, K)", YT)
    print("K only detects vertical edges: on the transposed image it sees none.")
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.2), layout="constrained")
    for ax, img, title in zip(
        axes, (X, Y, X.T, YT), ("X", "corr2d(X, K)", "X.T", "corr2d(X.T, K)")
    ):
        if title.startswith("X"):
            ax.imshow(np.asarray(img), cmap="gray", vmin=0, vmax=1)
        else:
            out = ax.imshow(np.asarray(img), cmap="coolwarm", vmin=-1, vmax=1)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(out, ax=axes, shrink=0.8, label="output")
    fig.suptitle("6.2.3 Edge detection with K = [[1, -1]]")
    save(fig, outdir, "edge_detection.png")

    subheading("6.2.4 Learning a kernel")
    lr, steps = 3e-2, 10
    print(f"Conv2D((1, 2), use_bias=False), sum of squared errors, gradient descent lr {lr}")
    kernels, losses = learn_edge_kernel(X, Y, lr=lr, steps=steps, seed=seed)
    show("initial kernel", kernels[0])
    for i, loss in enumerate(losses, start=1):
        if i % 2 == 0:
            print(f"epoch {i}, loss {loss:.3f}")
    show("learned kernel", kernels[-1])
    fig, (ax_k, ax_l) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    it = np.arange(steps + 1)
    ks = np.stack([k.reshape(-1) for k in kernels])
    for j, (target, color) in enumerate(((1.0, "C0"), (-1.0, "C1"))):
        ax_k.plot(it, ks[:, j], "o-", color=color, label=f"learned K[0, {j}]")
        ax_k.axhline(target, color=color, ls="--", label=f"target {target:+.0f}")
    ax_k.set_xlabel("iteration")
    ax_k.set_title("kernel vs target [1, -1]")
    ax_k.legend(fontsize=8)
    ax_l.semilogy(np.arange(1, steps + 1), losses, "o-")
    ax_l.set_xlabel("iteration")
    ax_l.set_title("loss (before the update)")
    fig.suptitle(f"6.2.4 Learning the edge kernel (lr {lr}, no bias, seed {seed})")
    save(fig, outdir, "kernel_learning.png")

    subheading("Exercise 6.2.8.1: diagonal edges")
    diagonal_edges()
    print(
        "A diagonal edge is both a horizontal and a vertical change: K and K.T both fire "
        "along it; transposing D flips the sign, transposing K shifts the response one row."
    )

    subheading("Exercise 6.2.8.4: derivative and integral kernels on a test signal")
    derivative_kernels()
    print("f'' = 2 everywhere: the kernel is exact on quadratics.")
    print("A d-th derivative needs a kernel of at least d + 1 taps; on t**d it gives d!.")
    show("np.cumsum(f), the integral's values", np.cumsum(np.arange(8.0)[None, :] ** 2, axis=1))


# --------------------------------------------------------------------------------------------
# 6.3 Padding and stride


def section_6_3() -> None:
    heading("6.3 Padding and Stride")
    x = np.random.default_rng(0).normal(size=(1, 8, 8, 1)).astype(np.float32)
    cases = (
        ((3, 3), 1, 1),
        ((5, 3), (2, 1), 1),
        ((3, 3), 1, 2),
        ((3, 5), (0, 1), (3, 4)),
    )
    print("input 8x8, one channel; output shape (H, W) and the formula's prediction:")
    for kernel, padding, stride in cases:
        w = jnp.ones((*kernel, 1, 1))
        y = ops.conv2d(x, w, padding=padding, stride=stride)
        predicted = ops.conv_output_shape((8, 8), kernel, stride=stride, padding=padding)
        print(
            f"kernel {kernel}, padding {padding}, stride {stride} -> {tuple(y.shape[1:3])}"
            f"  formula {tuple(predicted)}"
        )


# --------------------------------------------------------------------------------------------
# 6.4 Multiple input and multiple output channels


def section_6_4() -> None:
    heading("6.4 Multiple Input and Multiple Output Channels")

    subheading("6.4.1 Multiple input channels")
    X = jnp.stack([jnp.arange(9.0).reshape(3, 3), jnp.arange(1.0, 10.0).reshape(3, 3)])
    K = jnp.stack([jnp.arange(4.0).reshape(2, 2), jnp.arange(1.0, 5.0).reshape(2, 2)])
    show("corr2d_multi_in(X, K)", ops.corr2d_multi_in(X, K))

    subheading("6.4.2 Multiple output channels")
    K3 = jnp.stack([K, K + 1, K + 2])
    print(f"K.shape = {K3.shape}")
    show("corr2d_multi_in_out(X, K)", ops.corr2d_multi_in_out(X, K3))

    subheading("6.4.3 1x1 convolution layer")
    rng = np.random.default_rng(0)
    X1 = rng.normal(size=(3, 3, 3)).astype(np.float32)
    K1 = rng.normal(size=(2, 3, 1, 1)).astype(np.float32)
    Y1 = ops.corr2d_multi_in_out_1x1(X1, K1)
    Y2 = ops.corr2d_multi_in_out(X1, K1)
    diff = max_abs_diff(Y1, Y2)
    print(
        f"1x1 as matrix product vs corr2d_multi_in_out: max |diff| = {diff:.2e}, "
        f"allclose {bool(jnp.allclose(Y1, Y2, atol=1e-6))}"
    )

    subheading("Exercise 6.4.5.1: two convolutions without a nonlinearity are one convolution")
    two_convolutions_as_one(rng)


# --------------------------------------------------------------------------------------------
# 6.5 Pooling


def section_6_5() -> None:
    heading("6.5 Pooling")

    subheading("6.5.1 Maximum pooling and average pooling")
    X = jnp.arange(9.0).reshape(3, 3)
    show("pool2d(X, (2, 2), max)", ops.pool2d(X, (2, 2), mode="max"))
    show("pool2d(X, (2, 2), avg)", ops.pool2d(X, (2, 2), mode="avg"))

    subheading("6.5.2 Padding and stride (arrays NHWC; printed as the (H, W) of each channel)")
    X = jnp.arange(16.0).reshape(1, 4, 4, 1)
    show("X", X[0, :, :, 0])
    show("max_pool2d(X, 3)", ops.max_pool2d(X, 3)[0, :, :, 0])
    show(
        "max_pool2d(X, 3, stride=2, padding=1)",
        ops.max_pool2d(X, 3, stride=2, padding=1)[0, :, :, 0],
    )
    show(
        "max_pool2d(X, (2, 3), stride=(2, 3), padding=(0, 1))",
        ops.max_pool2d(X, (2, 3), stride=(2, 3), padding=(0, 1))[0, :, :, 0],
    )

    subheading("6.5.3 Multiple channels (printed channels first)")
    X2 = jnp.concatenate([X, X + 1], axis=-1)
    show(
        "max_pool2d(cat(X, X + 1), 3, stride=2, padding=1)",
        jnp.transpose(ops.max_pool2d(X2, 3, stride=2, padding=1)[0], (2, 0, 1)),
    )

    subheading("Exercise 6.5.5.1: average pooling is a convolution")
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype(np.float32)
    avg_pool_as_conv(x)

    subheading("Exercise 6.5.5.2: max pooling from convolutions and ReLU")
    max_pool_from_relu(x)


# --------------------------------------------------------------------------------------------
# 6.6 LeNet


# Exercise 6.6.4.4 asks for a sweater and a coat: Fashion-MNIST's label 2, "Pullover" (the
# book's "sweater"), and label 4, "Coat". A sneaker (7) and a bag (8) give dissimilar pairs, so
# that the sweater-coat similarity has something to be compared with. The first input is the
# reference of every pair.
CLASSES = (2, 4, 7, 8)
# One image per class is an anecdote; the mean over this many pairs (the i-th test image of the
# first class against the i-th of another) says whether it is typical.
PAIRS = 100


class Inputs(NamedTuple):
    """What the activation figures show: a model, its params and a batch of inputs."""

    model: models.LeNet
    params: Any
    images: np.ndarray  # (N, H, W, C), as the model takes them (the run's preprocessing)
    names: list[str]
    source: str  # where model and images come from, for titles
    # (len(names), PAIRS, H, W, C): the first PAIRS test images of each class, preprocessed as
    # ``images``; None for the synthetic inputs.
    class_images: np.ndarray | None = None


def synthetic_images(size: int = 28) -> tuple[np.ndarray, list[str]]:
    """Four (size, size, 1) float images in [0, 1]: a square, a disc, a cross and a diagonal bar."""
    yy, xx = np.mgrid[:size, :size] / (size - 1) - 0.5
    imgs = {
        "square": (np.abs(xx) < 0.25) & (np.abs(yy) < 0.25),
        "disc": xx**2 + yy**2 < 0.3**2,
        "cross": (np.abs(xx) < 0.06) | (np.abs(yy) < 0.06),
        "diagonal": np.abs(xx - yy) < 0.08,
    }
    return np.stack(list(imgs.values())).astype(np.float32)[..., None], list(imgs)


def untrained_inputs(seed: int) -> Inputs:
    """The book's LeNet with random parameters, on :func:`synthetic_images`."""
    model = models.LeNet()
    images, names = synthetic_images()
    # One compiled init instead of one compilation per initializer call.
    params = jax.jit(model.init)(jax.random.key(seed), jnp.asarray(images))["params"]
    return Inputs(model, params, images, names, f"random parameters (untrained, seed {seed})")


def trained_inputs(workdir: str, data_dir: str | None = None) -> Inputs:
    """Member 0 of the run in ``workdir``, on the first test image of each class in ``CLASSES``.

    Args:
      workdir: a run directory with a checkpoint (read by ``cnnjax.train.restore_model``).
      data_dir: where the run's data set is (its IDX files); default the run's
        ``config.data.dir``, else ``$CNNJAX_DATA_DIR`` (as ``cnnjax.data.load`` looks).

    Returns:
      :class:`Inputs`, the images preprocessed as the run preprocessed its own; its
      ``class_images`` holds the first ``PAIRS`` test images of each class (fewer if a class
      has fewer), the first of which are ``images``.

    Raises:
      RunDirError: ``workdir`` holds no run or no checkpoint.
      ValueError: the data loaded is not the data set the run trained on (e.g. the offline
        fallback), or it has no test image of one of ``CLASSES``.
      FileNotFoundError, NotADirectoryError, IDXError, DataUnavailableError: as
        ``cnnjax.data.load`` raises them for ``data_dir``.
    """
    # Only a trained run needs the trainer and the data pipeline.
    from cnnjax import data, train

    model, params, preprocess, config = train.restore_model(workdir, member=0)
    with train.RunDir(workdir, read_only=True) as run:
        trained_on = run.read_info().data["name"]
    cfg = config.data
    ds = data.load(cfg.name, source=cfg.source, data_dir=data_dir or cfg.dir or None)
    if ds.name != trained_on:
        raise ValueError(
            f"--workdir {workdir} trained on {trained_on!r} but {ds.name!r} was loaded; pass "
            f"--data-dir DIR, the directory of {trained_on}'s IDX files"
        )
    hits = [np.flatnonzero(ds.test_labels == c) for c in CLASSES]
    for c, h in zip(CLASSES, hits):
        if h.size == 0:
            raise ValueError(
                f"--workdir {workdir}: {ds.name}'s test split has no image of class {c}; "
                f"6.6.4.4 needs classes {CLASSES}"
            )
    k = min(PAIRS, *(h.size for h in hits))
    idx = np.stack([h[:k] for h in hits])  # (classes, k) test indices
    pixels = ds.test_images[idx.reshape(-1)]
    class_images = np.asarray(preprocess(pixels), dtype=np.float32).reshape(
        *idx.shape, *pixels.shape[1:]
    )
    names = [f"{ds.class_names[c]} (test #{i})" for c, i in zip(CLASSES, idx[:, 0])]
    return Inputs(
        model,
        params,
        class_images[:, 0],
        names,
        f"trained, member 0 of {workdir}",
        class_images,
    )


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two arrays, flattened (NaN when one of them is all zeros)."""
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / norm) if norm > 0 else float("nan")


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two arrays, flattened: the cosine after removing each one's mean.

    After a sigmoid every map sits on a positive baseline (the bias's value where the input is
    blank), which alone makes the plain cosine of any two maps large; the correlation measures
    only how the two maps vary together.
    """
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return cosine(a - a.mean(), b - b.mean())


LAYERS = (("layer 1", "act1"), ("layer 2", "act2"))


def similarities(images: np.ndarray, acts: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """How alike the first input and each other input are, at the input and after each layer.

    Args:
      images: (N, H, W, C) inputs.
      acts: ``{stage: (N, H, W, C) activations}`` holding the stages of :data:`LAYERS`.

    Returns:
      One dict per input after the first, with "input", "layer 1", "layer 2" each a dict:
      "cos" and "corr" (:func:`cosine`, :func:`correlation`) of the flattened arrays, and for
      the layers "per_channel", the cosine of each channel's map (C,).
    """
    rows = []
    for j in range(1, len(images)):
        row = {
            "input": {
                "cos": cosine(images[0], images[j]),
                "corr": correlation(images[0], images[j]),
            }
        }
        for label, stage in LAYERS:
            a, b = acts[stage][0], acts[stage][j]
            row[label] = {
                "cos": cosine(a, b),
                "corr": correlation(a, b),
                "per_channel": np.array([cosine(a[..., k], b[..., k]) for k in range(a.shape[-1])]),
            }
        rows.append(row)
    return rows


def mean_similarities(model, params, class_images: np.ndarray) -> list[dict[str, Any]]:
    """:func:`similarities`' "cos" and "corr", averaged over pairs of test images.

    Args:
      model, params: the network.
      class_images: (classes, K, H, W, C); pair i compares ``class_images[0, i]`` with
        ``class_images[j, i]``.

    Returns:
      One dict per class after the first, as :func:`similarities` (without "per_channel"),
      each value the mean over the K pairs.
    """
    n, k = class_images.shape[:2]
    flat = class_images.reshape(n * k, *class_images.shape[2:])
    feats = models.features(model, params, jnp.asarray(flat))
    arrays = {"input": flat}
    arrays.update({label: np.asarray(feats[stage], np.float32) for label, stage in LAYERS})
    rows = []
    for j in range(1, n):
        row = {}
        for label, a in arrays.items():
            a = a.reshape(n, k, -1)
            row[label] = {
                key: float(np.mean([f(a[0, i], a[j, i]) for i in range(k)]))
                for key, f in (("cos", cosine), ("corr", correlation))
            }
        rows.append(row)
    return rows


def similarity_table(names: list[str], rows: list[dict[str, Any]]) -> list[str]:
    """:func:`similarities` (or :func:`mean_similarities`: no per-channel columns) as markdown,
    one row per pair (first input vs the others)."""

    def short(name: str) -> str:
        return name.split(" (")[0]

    def cell(d) -> str:
        return f"{d['cos']:.3f} / {d['corr']:.3f}"

    def channels(d) -> str:
        v = d["per_channel"]
        return f"{np.nanmean(v):.3f} ({np.nanmin(v):.3f} to {np.nanmax(v):.3f})"

    per_channel = "per_channel" in rows[0]["layer 1"]
    head = ["pair", "input cos / corr"]
    for label, _ in LAYERS:
        head.append(f"{label} cos / corr")
        if per_channel:
            head.append(f"{label} per-channel cos, mean (min to max)")
    out = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, row in zip(names[1:], rows):
        cells = [f"{short(names[0])} vs {short(name)}", cell(row["input"])]
        for label, _ in LAYERS:
            cells.append(cell(row[label]))
            if per_channel:
                cells.append(channels(row[label]))
        out.append("| " + " | ".join(cells) + " |")
    return out


def channel_scaled(acts: np.ndarray) -> np.ndarray:
    """(N, H, W, C) -> the same, each channel scaled to [0, 1] by its range over all N inputs,
    so that one channel's maps for different inputs are drawn on one colour scale."""
    lo = acts.min(axis=(0, 1, 2), keepdims=True)
    span = acts.max(axis=(0, 1, 2), keepdims=True) - lo
    return (acts - lo) / np.where(span > 0, span, 1.0)


def montage(maps: np.ndarray, gap: int = 1) -> np.ndarray:
    """(H, W, C) maps side by side, channel 0 first, separated by NaN (blank) columns."""
    h, _, c = maps.shape
    blank = np.full((h, gap), np.nan, np.float32)
    return np.concatenate([p for k in range(c) for p in (maps[:, :, k], blank)][:-1], axis=1)


def plot_activations(
    acts: np.ndarray, images: np.ndarray, names: list[str], title: str, per_channel=None
):
    """acts (N, H, W, C): one row per input, the input then its C maps, each channel on one
    colour scale for all inputs (:func:`channel_scaled`). ``per_channel``, if given, holds for
    each input after the first its maps' cosine with the first input's (C,), written under them.
    """
    n, h, w, c = acts.shape
    scaled = channel_scaled(acts)
    fig, axes = plt.subplots(
        n,
        2,
        figsize=(1.2 + 0.9 * c, 1.5 * n),
        squeeze=False,
        layout="constrained",
        gridspec_kw={"width_ratios": [1, c]},
    )
    for r in range(n):
        axes[r, 0].imshow(images[r, :, :, 0], cmap="gray")
        axes[r, 0].set_ylabel(names[r], fontsize=7)
        axes[r, 1].imshow(montage(scaled[r]), cmap="viridis", vmin=0, vmax=1)
        if per_channel is not None and r > 0:
            for k, v in enumerate(per_channel[r - 1]):
                axes[r, 1].text(
                    k * (w + 1) + (w - 1) / 2,
                    h + 0.5,
                    f"{v:.2f}",
                    ha="center",
                    va="top",
                    fontsize=6,
                    clip_on=False,
                )
    note = ""
    if per_channel is not None:
        note = f"; under each map its cosine similarity with the same channel's for {names[0]}"
    axes[0, 1].set_title(f"channels 0..{c - 1}, left to right{note}", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    return fig


def section_6_6(outdir: pathlib.Path, inputs: Inputs) -> None:
    heading("6.6 Convolutional Neural Networks (LeNet)")
    print(models.summary(inputs.model, inputs.images.shape[1:]))

    subheading("Exercise 6.6.4.4: activations of the first and second conv layers")
    model, params, images, names, source = inputs[:5]
    print(
        f"inputs ({source}): {', '.join(names)}; {'x'.join(map(str, images.shape[1:]))} "
        f"each, values in [{images.min():.2f}, {images.max():.2f}]"
    )
    feats = models.features(model, params, jnp.asarray(images))
    acts = {stage: np.asarray(feats[stage], dtype=np.float32) for _, stage in LAYERS}
    rows = similarities(images, acts)
    for (label, stage), file in zip(LAYERS, ("lenet_layer1.png", "lenet_layer2.png")):
        a = acts[stage]
        print(
            f"{label} ({stage}) activations: {a.shape[-1]} maps of "
            f"{a.shape[1]}x{a.shape[2]} for {a.shape[0]} inputs"
        )
        title = f"LeNet conv {label} after {model.activation}: {source}"
        per_channel = [row[label]["per_channel"] for row in rows]
        save(plot_activations(a, images, names, title, per_channel), outdir, file)

    print(
        f"\nsimilarity of {names[0]} to each other input: cosine of the flattened arrays / "
        "Pearson correlation (the cosine after removing each array's mean), per layer; and the "
        "cosine of each channel's maps"
    )
    print("\n".join(similarity_table(names, rows)))
    for name, row in zip(names[1:], rows):
        for label, _ in LAYERS:
            show(f"{label} per-channel cosine, {names[0]} vs {name}", row[label]["per_channel"])
    if inputs.class_images is not None:
        k = inputs.class_images.shape[1]
        print(
            f"\nthe same, mean over {k} pairs: the i-th test image of each class against the "
            f"i-th of {names[0].split(' (')[0]}, i < {k}"
        )
        rows = mean_similarities(model, params, inputs.class_images)
        print("\n".join(similarity_table(names, rows)))


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--section", choices=SECTIONS, help="run one section (default: all)")
    parser.add_argument("--outdir", default="chapter6_figures", help="where PNGs are written")
    parser.add_argument(
        "--workdir",
        default=None,
        help="a trained run's directory: show its LeNet's activations (6.6)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="with --workdir: the directory of the run's data set (IDX files), if its config's "
        "data.dir or $CNNJAX_DATA_DIR does not give it",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of random kernels and params")
    args = parser.parse_args(argv)
    if args.data_dir is not None and args.workdir is None:
        parser.error("--data-dir needs --workdir (the run whose data set it holds)")
    sections = (args.section,) if args.section else SECTIONS

    inputs = None
    if "6.6" in sections:
        if args.workdir is None:
            inputs = untrained_inputs(args.seed)
        else:
            from cnnjax import data, train

            try:
                inputs = trained_inputs(args.workdir, args.data_dir)
            except (
                train.RunDirError,
                ValueError,
                OSError,
                data.IDXError,
                data.DataUnavailableError,
            ) as e:
                parser.error(str(e).splitlines()[0])

    outdir = pathlib.Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    np.set_printoptions(precision=4, suppress=True)
    runners: dict[str, Callable[[], None]] = {
        "6.2": lambda: section_6_2(outdir, args.seed),
        "6.3": section_6_3,
        "6.4": section_6_4,
        "6.5": section_6_5,
        "6.6": lambda: section_6_6(outdir, inputs),
    }
    for name in sections:
        runners[name]()


if __name__ == "__main__":
    main()
