"""scripts/chapter6.py end to end: the book's numbers, recomputed here with numpy/scipy.

The script imports its sibling ``scripts/exercises.py`` as a script does (Python puts ``scripts/``
on the path of ``python scripts/chapter6.py``), so every test runs it as a process.
"""

import math
import os
import pathlib
import re
import subprocess
import sys

import jax
import matplotlib.image
import numpy as np
import pytest
from scipy import signal

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "chapter6.py"
FIGURES = ("edge_detection.png", "kernel_learning.png", "lenet_layer1.png", "lenet_layer2.png")


def run_script(*args) -> str:
    """stdout of ``python scripts/chapter6.py *args``, in a fresh interpreter."""
    # The script compiles dozens of small programs; without XLA's optimisations that is
    # several times faster and the numbers stay exact to the tolerances below.
    env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS="1")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(stdout, outdir) of one full run."""
    outdir = tmp_path_factory.mktemp("chapter6")
    return run_script("--outdir", outdir), outdir


def _parse_nested(text):
    """numpy's printed array ("[[1. 2.]\n [3. 4.]]") -> ndarray, shape included."""
    stack, top = [[]], None
    for tok in re.findall(r"\[|\]|[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?", text):
        if tok == "[":
            stack.append([])
        elif tok == "]":
            top = stack.pop()
            stack[-1].append(top)
        else:
            stack[-1].append(float(tok))
    return np.array(stack[0][0])


def block(out, label, nth=0):
    """The array printed after the ``nth`` line ``{label} =``."""
    lines = out.splitlines()
    starts = [i for i, line in enumerate(lines) if line == f"{label} ="]
    assert len(starts) > nth, f"{label!r} not printed"
    text, depth = [], 0
    for line in lines[starts[nth] + 1 :]:
        text.append(line)
        depth += line.count("[") - line.count("]")
        if depth == 0:
            break
    return _parse_nested("\n".join(text))


def section(out, title):
    """The text of one ``== title ==`` section."""
    start = out.index(f"== {title}")
    end = out.find("\n== ", start + 1)
    return out[start:] if end < 0 else out[start:end]


def edge_image():
    X = np.ones((6, 8))
    X[:, 2:6] = 0
    return X


def corr(X, K):
    return signal.correlate2d(X, K, mode="valid")


def max_pool(x, window, stride, pad):
    """Plain max pooling of one (H, W) map, padding with -inf."""
    (kh, kw), (sh, sw), (ph, pw) = window, stride, pad
    xp = np.pad(x, ((ph, ph), (pw, pw)), constant_values=-np.inf)
    ho, wo = (xp.shape[0] - kh) // sh + 1, (xp.shape[1] - kw) // sw + 1
    return np.array(
        [
            [xp[i * sh : i * sh + kh, j * sw : j * sw + kw].max() for j in range(wo)]
            for i in range(ho)
        ]
    )


def test_6_2_cross_correlation_and_edges(run):
    out = section(run[0], "6.2")
    X, K = np.arange(9.0).reshape(3, 3), np.arange(4.0).reshape(2, 2)
    got = block(out, "corr2d(X, K)")
    np.testing.assert_array_equal(got, corr(X, K))
    np.testing.assert_array_equal(got, [[19, 25], [37, 43]])
    E, K = edge_image(), np.array([[1.0, -1.0]])
    np.testing.assert_array_equal(block(out, "Y = corr2d(X, K)"), corr(E, K))
    np.testing.assert_array_equal(block(out, "corr2d(X.T, K)"), np.zeros((8, 5)))


def test_6_2_learning_replays_in_numpy(run):
    out = section(run[0], "6.2")
    X, K = edge_image(), np.array([[1.0, -1.0]])
    Y = corr(X, K)
    w = block(out, "initial kernel").reshape(1, 2)
    assert ((w >= 0) & (w < 1)).all()
    losses = []
    for _ in range(10):  # the book's loop with the gradient of sum((corr(X, w) - Y)^2) by hand
        r = corr(X, w) - Y
        losses.append(float((r**2).sum()))
        grad = np.array([[2 * (r * X[:, :-1]).sum(), 2 * (r * X[:, 1:]).sum()]])
        w = w - 3e-2 * grad
    printed = dict(re.findall(r"^epoch (\d+), loss ([\d.]+)$", out, flags=re.M))
    assert sorted(map(int, printed)) == [2, 4, 6, 8, 10]
    for epoch, loss in printed.items():
        assert float(loss) == pytest.approx(losses[int(epoch) - 1], abs=1.5e-3)
    learned = block(out, "learned kernel")
    np.testing.assert_allclose(learned, w, atol=1e-4)
    # The bound derived in tests/models/test_conv2d.py.
    np.testing.assert_allclose(learned, K, atol=0.12)


def test_6_2_exercises(run):
    out = section(run[0], "6.2")
    D, K = np.tril(np.ones((6, 8))), np.array([[1.0, -1.0]])
    np.testing.assert_array_equal(block(out, "corr2d(D, K)"), corr(D, K))
    np.testing.assert_array_equal(block(out, "corr2d(D.T, K)"), corr(D.T, K))
    np.testing.assert_array_equal(block(out, "corr2d(D, K.T)"), corr(D, K.T))
    second = block(out, "corr2d(f, second-derivative kernel)")
    np.testing.assert_array_equal(second, np.full((1, 6), 2))
    for d in (1, 2, 3):
        got = block(out, f"order-{d} kernel (size {d + 1}) on t**{d}")
        np.testing.assert_array_equal(got, np.full((1, 8 - d), math.factorial(d)))
    integral = block(out, "integral kernel ones(1, n), full convolution, first n outputs")
    np.testing.assert_array_equal(integral, np.cumsum(np.arange(8.0) ** 2)[None])


def test_6_3_shapes(run):
    lines = re.findall(
        r"^kernel \((\d+), (\d+)\), padding (.+?), stride (.+?) -> \((\d+), (\d+)\)",
        section(run[0], "6.3"),
        flags=re.M,
    )
    assert len(lines) == 4
    got = []
    for kh, kw, pad, stride, ho, wo in lines:
        p = eval(pad) if pad.startswith("(") else (int(pad),) * 2
        s = eval(stride) if stride.startswith("(") else (int(stride),) * 2
        for n, k, pp, ss, o in zip((8, 8), (int(kh), int(kw)), p, s, (int(ho), int(wo))):
            assert o == (n + 2 * pp - k) // ss + 1
        got.append((int(ho), int(wo)))
    assert got == [(8, 8), (8, 8), (4, 4), (2, 2)]  # the book's four results


def test_6_4_channels(run):
    out = section(run[0], "6.4")
    X = np.stack([np.arange(9.0).reshape(3, 3), np.arange(1.0, 10.0).reshape(3, 3)])
    K = np.stack([np.arange(4.0).reshape(2, 2), np.arange(1.0, 5.0).reshape(2, 2)])
    multi_in = sum(corr(x, k) for x, k in zip(X, K))
    np.testing.assert_array_equal(block(out, "corr2d_multi_in(X, K)"), multi_in)
    np.testing.assert_array_equal(multi_in, [[56, 72], [104, 120]])
    expected = np.stack([sum(corr(x, k) for x, k in zip(X, K + i)) for i in range(3)])
    np.testing.assert_array_equal(block(out, "corr2d_multi_in_out(X, K)"), expected)
    assert "K.shape = (3, 2, 2, 2)" in out
    diff = float(re.search(r"1x1 .*max \|diff\| = ([\d.e+-]+), allclose True", out).group(1))
    assert diff < 1e-5
    m = re.search(r"composed kernel \(2, 3, 4, 4\) \(size k1 \+ k2 - 1 = 4\)", out)
    assert m
    diff, scale = map(
        float, re.search(r"max \|diff\| = ([\d.e+-]+) \(outputs up to ([\d.]+)\)", out).groups()
    )
    assert diff < 1e-5 * scale


def test_6_5_pooling(run):
    out = section(run[0], "6.5")
    X = np.arange(9.0).reshape(3, 3)
    np.testing.assert_array_equal(
        block(out, "pool2d(X, (2, 2), max)"), max_pool(X, (2, 2), (1, 1), (0, 0))
    )
    avg = np.array([[X[i : i + 2, j : j + 2].mean() for j in range(2)] for i in range(2)])
    np.testing.assert_array_equal(block(out, "pool2d(X, (2, 2), avg)"), avg)
    X = np.arange(16.0).reshape(4, 4)
    cases = {
        "max_pool2d(X, 3)": ((3, 3), (3, 3), (0, 0)),
        "max_pool2d(X, 3, stride=2, padding=1)": ((3, 3), (2, 2), (1, 1)),
        "max_pool2d(X, (2, 3), stride=(2, 3), padding=(0, 1))": ((2, 3), (2, 3), (0, 1)),
    }
    for label, args in cases.items():
        np.testing.assert_array_equal(block(out, label), max_pool(X, *args))
    np.testing.assert_array_equal(block(out, "max_pool2d(X, 3)"), [[10]])
    two = block(out, "max_pool2d(cat(X, X + 1), 3, stride=2, padding=1)")
    np.testing.assert_array_equal(two, [max_pool(X + c, (3, 3), (2, 2), (1, 1)) for c in (0, 1)])
    np.testing.assert_array_equal(two, [[[5, 7], [13, 15]], [[6, 8], [14, 16]]])
    for label in ("depthwise conv2d with 1/4 kernels", "a + relu(b - a)"):
        diff = float(re.search(re.escape(label) + r".*max \|diff\| = ([\d.e+-]+)", out).group(1))
        assert diff < 1e-5


def test_6_6_summary_and_figures(run):
    out, outdir = run
    text = section(out, "6.6")
    shapes = re.findall(
        r"^(conv\d|pool\d|flatten|dense\d|output)\s.*?\s{2,}(\d+(?: x \d+)*)\s", text, re.M
    )
    assert shapes == [
        ("conv1", "6 x 28 x 28"),
        ("pool1", "6 x 14 x 14"),
        ("conv2", "16 x 10 x 10"),
        ("pool2", "16 x 5 x 5"),
        ("flatten", "400"),
        ("dense1", "120"),
        ("dense2", "84"),
        ("output", "10"),
    ]
    assert re.search(r"^total\s+61,706\s", text, re.M)
    assert "6 maps of 28x28 for 4 inputs" in text and "16 maps of 10x10 for 4 inputs" in text
    assert "inputs (random parameters (untrained, seed 0)): square, disc, cross, diagonal" in text
    for name in FIGURES:
        assert f"[figure] {outdir / name}" in out
        img = matplotlib.image.imread(outdir / name)
        assert img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 0.01, name


def test_section_flag_runs_one_section(tmp_path):
    out = run_script("--section", "6.3", "--outdir", tmp_path)
    assert "== 6.3 Padding and Stride ==" in out
    assert "== 6.2" not in out and "== 6.4" not in out
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def fast_compiles():
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


def _cos(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return a @ b / np.sqrt((a @ a) * (b @ b))


def _corr(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return np.corrcoef(a, b)[0, 1]


def _lenet_acts(params, x):
    """The book's LeNet's act1 and act2 for one (28, 28) image, in numpy/scipy: conv 5x5 pad 2,
    sigmoid, 2x2 average pooling, conv 5x5, sigmoid."""

    def layer(maps, kernel, bias):  # maps (C, H, W), kernel (k, k, C, O)
        out = [
            sum(corr(maps[c], kernel[:, :, c, o]) for c in range(maps.shape[0])) + bias[o]
            for o in range(kernel.shape[-1])
        ]
        return 1 / (1 + np.exp(-np.stack(out)))

    p = {k: {n: np.asarray(v, np.float64) for n, v in d.items()} for k, d in params.items()}
    act1 = layer(np.pad(x, 2)[None], p["conv1"]["kernel"], p["conv1"]["bias"])
    pool1 = act1.reshape(6, 14, 2, 14, 2).mean(axis=(2, 4))
    act2 = layer(pool1, p["conv2"]["kernel"], p["conv2"]["bias"])
    return act1, act2  # (6, 28, 28), (16, 10, 10)


def _row(out, pair, table):
    """The cells of the markdown row of ``pair`` in the ``table``-th similarity table."""
    rows = [ln for ln in out.splitlines() if ln.startswith(f"| {pair} |")]
    return [c.strip() for c in rows[table].strip("|").split("|")[1:]]


def test_workdir_shows_a_trained_models_activations(tmp_path, capsys, fast_compiles):
    """6.6.4.4 on a trained run: its model, preprocessing and data from its run directory
    (``restore_model``); the first test image of classes 2, 4, 7 and 8 (a sweater, a coat, a
    sneaker and a bag on Fashion-MNIST); every printed similarity recomputed here from the
    checkpoint's parameters with scipy's correlation."""
    from cnnjax import data, train

    config = train.default_config()
    config.num_epochs, config.batch_size, config.eval_batch_size = 1, 32, 64
    config.data.source, config.data.name = "bundled", "mnist_5k"
    config.data.train_limit, config.data.test_limit = 128, 64
    config.progress = False
    workdir = tmp_path / "run"
    train.train_and_evaluate(config, workdir)
    capsys.readouterr()

    outdir = tmp_path / "figs"
    out = run_script("--section", "6.6", "--workdir", workdir, "--outdir", outdir)
    ds = data.load("mnist_5k", source="bundled")
    first = [int(np.flatnonzero(ds.test_labels == c)[0]) for c in (2, 4, 7, 8)]
    names = [f"{c} (test #{i})" for c, i in zip((2, 4, 7, 8), first)]
    assert (
        f"inputs (trained, member 0 of {workdir}): {', '.join(names)}; 28x28x1 each, "
        "values in [0.00, 1.00]"
    ) in out  # the run's "unit" normalisation
    assert "6 maps of 28x28 for 4 inputs" in out and "16 maps of 10x10 for 4 inputs" in out
    assert sorted(p.name for p in outdir.iterdir()) == ["lenet_layer1.png", "lenet_layer2.png"]

    _, params, _, restored = train.restore_model(workdir)
    assert (restored.model.activation, restored.model.pooling) == ("sigmoid", "avg")
    assert restored.data.normalize == "unit"

    def arrays(i):
        x = ds.test_images[i, :, :, 0].astype(np.float64) / 255
        return (x, *_lenet_acts(params, x))

    # One image per class: cosine / correlation per layer, per-channel cosines.
    ref = arrays(first[0])
    for c, i, name in zip((4, 7, 8), first[1:], names[1:]):
        other = arrays(i)
        cells = _row(out, f"2 vs {c}", 0)
        pairs = [cells[0], cells[1], cells[3]]  # input, layer 1, layer 2
        for cell, a, b in zip(pairs, ref, other, strict=True):
            cos, cor = map(float, cell.split(" / "))
            assert cos == pytest.approx(_cos(a, b), abs=2e-3)
            assert cor == pytest.approx(_corr(a, b), abs=2e-3)
        for layer, col in ((1, 2), (2, 4)):
            per = [_cos(x, y) for x, y in zip(ref[layer], other[layer])]
            got = block(out, f"layer {layer} per-channel cosine, {names[0]} vs {name}")
            np.testing.assert_allclose(got, per, atol=2e-4)
            mean, lo, hi = map(float, re.findall(r"[\d.]+", cells[col]))
            assert (mean, lo, hi) == pytest.approx((np.mean(per), min(per), max(per)), abs=2e-3)

    # The same, averaged over 100 pairs (the bundled test split has 100 images per class).
    assert "mean over 100 pairs" in out
    hits = [np.flatnonzero(ds.test_labels == c)[:100] for c in (2, 4, 7, 8)]
    refs = [arrays(i) for i in hits[0]]
    for c, idx in zip((4, 7, 8), hits[1:]):
        others = [arrays(i) for i in idx]
        cells = _row(out, f"2 vs {c}", 1)
        for layer, cell in enumerate(cells):
            cos, cor = map(float, cell.split(" / "))
            assert cos == pytest.approx(
                np.mean([_cos(a[layer], b[layer]) for a, b in zip(refs, others)]), abs=2e-3
            )
            assert cor == pytest.approx(
                np.mean([_corr(a[layer], b[layer]) for a, b in zip(refs, others)]), abs=2e-3
            )


def test_data_dir_errors_are_one_line(tmp_path):
    """--data-dir without --workdir, and a --workdir that holds no run: exit 2, one line."""
    env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS="1")
    for args, says in (
        (["--data-dir", str(tmp_path)], "--data-dir needs --workdir"),
        (["--section", "6.6", "--workdir", str(tmp_path / "none")], str(tmp_path / "none")),
    ):
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), *args, "--outdir", str(tmp_path / "figs")],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        last = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode == 2 and "error: " in last and says in last, proc.stderr
        assert "Traceback" not in proc.stderr
