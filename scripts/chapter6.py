"""D2L chapter 6 (sections 6.2-6.6), runnable: prints the book's numbers, draws its pictures.

Usage::

    python scripts/chapter6.py                     # every section, figures in ./chapter6_figures
    python scripts/chapter6.py --section 6.2 --outdir /tmp/figs
    python scripts/chapter6.py --section 6.6 --workdir RUN_DIR   # activations of a trained LeNet

Each worked example prints a ``label =`` line followed by the array (channels first, as the book
prints them). Figures (PNG): ``edge_detection.png`` and ``kernel_learning.png`` (6.2),
``lenet_layer1.png`` and ``lenet_layer2.png`` (6.6, exercise 6.6.4.4: activations of the first
and second conv layers for a few inputs). Without ``--workdir`` LeNet has random parameters and
the inputs are synthetic shapes; the figure titles say which. Takes about 15 s on a shared
2-core CPU, mostly compiling small programs (no data download without ``--workdir``).

The exercises shown beside the worked examples (6.2.8.1, 6.2.8.4, 6.4.5.1, 6.5.5.1-2) are
computed by ``scripts/exercises.py``, which answers every exercise of the chapter; this script
imports them from there, with the printing conventions the two share.
"""

from __future__ import annotations

import argparse
import pathlib
from collections.abc import Callable

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


def lenet_and_inputs(workdir: str | None, seed: int):
    """(model, params, images (N, H, W, C), labels, description) for the activation figures."""
    if workdir is None:
        model = models.LeNet()
        images, names = synthetic_images()
        # One compiled init instead of one compilation per initializer call.
        params = jax.jit(model.init)(jax.random.key(seed), jnp.asarray(images))["params"]
        return model, params, images, names, f"random parameters (untrained, seed {seed})"
    # Only a trained run needs the trainer and the data pipeline.
    from cnnjax import data, train

    # The run's model, its own preprocessing (normalisation statistics) and the data it trained on.
    model, params, preprocess, config = train.restore_model(workdir, member=0)
    cfg = config.data
    ds = data.load(cfg.name, source=cfg.source, data_dir=cfg.dir or None)
    # The first test image of each of the first four classes.
    idx = [int(np.flatnonzero(ds.test_labels == c)[0]) for c in range(min(4, ds.num_classes))]
    images = preprocess(ds.test_images[idx])
    names = [ds.class_names[int(c)] for c in ds.test_labels[idx]]
    return model, params, np.asarray(images), names, f"trained, member 0 of {workdir}"


def montage(maps: np.ndarray, gap: int = 1) -> np.ndarray:
    """(H, W, C) maps side by side, each scaled to [0, 1], separated by NaN (blank) columns."""
    lo = maps.min(axis=(0, 1), keepdims=True)
    span = maps.max(axis=(0, 1), keepdims=True) - lo
    scaled = (maps - lo) / np.where(span > 0, span, 1.0)
    h, _, c = maps.shape
    blank = np.full((h, gap), np.nan, np.float32)
    return np.concatenate([p for k in range(c) for p in (scaled[:, :, k], blank)][:-1], axis=1)


def plot_activations(acts: np.ndarray, images: np.ndarray, names: list[str], title: str):
    """acts (N, H, W, C): one row per input, the input then its C maps (each scaled to [0, 1])."""
    n, _, _, c = acts.shape
    fig, axes = plt.subplots(
        n,
        2,
        figsize=(1.2 + 0.9 * c, 1.3 * n),
        squeeze=False,
        layout="constrained",
        gridspec_kw={"width_ratios": [1, c]},
    )
    for r in range(n):
        axes[r, 0].imshow(images[r, :, :, 0], cmap="gray")
        axes[r, 0].set_ylabel(names[r], fontsize=8)
        axes[r, 1].imshow(montage(acts[r]), cmap="viridis", vmin=0, vmax=1)
    axes[0, 1].set_title(f"channels 0..{c - 1}, left to right", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    return fig


def section_6_6(outdir: pathlib.Path, seed: int, workdir: str | None) -> None:
    heading("6.6 Convolutional Neural Networks (LeNet)")
    print(models.summary(models.LeNet(), (28, 28, 1)))

    subheading("Exercise 6.6.4.4: activations of the first and second conv layers")
    model, params, images, names, source = lenet_and_inputs(workdir, seed)
    print(
        f"inputs ({source}): {', '.join(names)}; {'x'.join(map(str, images.shape[1:]))} "
        f"each, values in [{images.min():.2f}, {images.max():.2f}]"
    )
    feats = models.features(model, params, jnp.asarray(images))
    for layer, stage, file in ((1, "act1", "lenet_layer1.png"), (2, "act2", "lenet_layer2.png")):
        acts = np.asarray(feats[stage], dtype=np.float32)
        print(
            f"layer {layer} ({stage}) activations: {acts.shape[-1]} maps of "
            f"{acts.shape[1]}x{acts.shape[2]} for {acts.shape[0]} inputs"
        )
        title = f"LeNet conv layer {layer} after {model.activation}: {source}"
        save(plot_activations(acts, images, names, title), outdir, file)


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
    parser.add_argument("--seed", type=int, default=0, help="seed of random kernels and params")
    args = parser.parse_args(argv)

    outdir = pathlib.Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    np.set_printoptions(precision=4, suppress=True)
    runners: dict[str, Callable[[], None]] = {
        "6.2": lambda: section_6_2(outdir, args.seed),
        "6.3": section_6_3,
        "6.4": section_6_4,
        "6.5": section_6_5,
        "6.6": lambda: section_6_6(outdir, args.seed, args.workdir),
    }
    for name in (args.section,) if args.section else SECTIONS:
        runners[name]()


if __name__ == "__main__":
    main()
