"""scripts/exercises.py end to end: every exercise's printed numbers, recomputed with numpy/scipy.

The script runs once, in a fresh interpreter with XLA's optimisations off (as
tests/test_chapter6.py does); its random inputs come from ``np.random.default_rng(seed)``, so the
tests regenerate the same inputs and recompute each result independently of cnnjax.
"""

import importlib.util
import math
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from scipy import signal, special

from tests.test_chapter6 import block, corr, max_pool

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "exercises.py"
NUMBERS = {
    "6.1": ["6.1.6.1", "6.1.6.2", "6.1.6.3", "6.1.6.4", "6.1.6.5", "6.1.6.6"],
    "6.2": ["6.2.8.1", "6.2.8.2", "6.2.8.3", "6.2.8.4"],
    "6.3": ["6.3.4.1", "6.3.4.2", "6.3.4.3", "6.3.4.4"],
    "6.4": ["6.4.5.1", "6.4.5.2", "6.4.5.3", "6.4.5.4", "6.4.5.5", "6.4.5.6"],
    "6.5": ["6.5.5.1", "6.5.5.2", "6.5.5.3", "6.5.5.4", "6.5.5.5", "6.5.5.6"],
    "6.6": ["6.6.4.1", "6.6.4.2", "6.6.4.3", "6.6.4.4"],
}
FLOAT = r"([-+]?[\d.]+(?:e[-+]?\d+)?)"


@pytest.fixture(scope="module")
def out():
    """stdout of one full run."""
    env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS="1")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def exercises():
    spec = importlib.util.spec_from_file_location("exercises", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ex(out, number):
    """The text printed under ``### number``, up to the next exercise or section."""
    start = out.index(f"### {number} ")
    ends = [i for i in (out.find("\n### ", start + 1), out.find("\n== ", start + 1)) if i >= 0]
    return out[start : min(ends)] if ends else out[start:]


def number(text, pattern):
    m = re.search(pattern, text)
    assert m, f"{pattern!r} not in {text!r}"
    return float(m.group(1).replace(",", ""))


def ints(text):
    return [int(v.replace(",", "")) for v in re.findall(r"\d[\d,]*", text)]


def test_every_exercise_is_printed_in_order(out):
    printed = re.findall(r"^### (6\.\d\.\d\.\d) ", out, flags=re.M)
    expected = [n for section in NUMBERS.values() for n in section]
    assert printed == expected and len(expected) == 30


def test_6_1(out):
    t = ex(out, "6.1.6.1")
    assert number(t, r"max \|diff\| = " + FLOAT) < 1e-5
    assert "changes output pixels [[0, 2, 2]]" in t

    t = ex(out, "6.1.6.2")
    img = np.zeros((12, 12))
    img[2:5, 4:7] = 1
    k = np.random.default_rng(2).normal(size=(3, 3, 1, 4)).astype(np.float32)
    for label, im in (("top", img), ("bottom", np.roll(img, 6, axis=0))):
        feats = [corr(np.pad(im, 1), k[:, :, 0, c]).max() for c in range(4)]
        got = block(t, f"global max of conv features, blob at {label}")
        np.testing.assert_allclose(got, feats, atol=1e-3)

    t = ex(out, "6.1.6.3")
    ones, K = np.ones((5, 5)), np.array([[1.0, -1.0]])
    np.testing.assert_array_equal(block(t, "no padding: corr2d(ones, [[1, -1]])"), corr(ones, K))
    zero = block(t, "zero padding 1: corr2d(pad0(ones), [[1, -1]])")
    np.testing.assert_array_equal(zero, corr(np.pad(ones, 1), K))
    assert np.abs(zero).sum() == 10  # five -1 on the left border, five +1 on the right
    edge = block(t, "edge padding 1: corr2d(pad_edge(ones), [[1, -1]])")
    np.testing.assert_array_equal(edge, np.zeros((7, 6)))

    t = ex(out, "6.1.6.4")
    burst = np.sin(2 * np.pi * 1000 * np.arange(80) / 8000)
    wave = 0.3 * np.random.default_rng(3).normal(size=800).astype(np.float32)
    wave[300:380] += burst.astype(np.float32)
    resp = np.correlate(wave.astype(np.float64), burst, mode="valid")
    assert int(number(t, r"peak at sample (\d+)")) == int(np.argmax(resp)) == 300
    assert number(t, r"response " + FLOAT) == pytest.approx(resp.max(), abs=0.01)

    t = ex(out, "6.1.6.5")
    emb = np.random.default_rng(4).normal(size=(8, 6)).astype(np.float32)
    ids = [0, 1, 2, 3, 4, 5, 6, 7]  # the sentence uses each vocabulary word once, in order
    x = emb[ids]
    resp = [x[i] @ emb[3] + x[i + 1] @ emb[4] for i in range(7)]
    np.testing.assert_allclose(
        block(t, "bigram responses (position i covers words i, i+1)"), resp, atol=1e-3
    )
    assert "position 3: 'not' 'good'" in t

    t = ex(out, "6.1.6.6")
    f = np.random.default_rng(5).normal(size=(4, 6)).astype(np.float32).astype(np.float64)
    g = np.random.default_rng(6).normal(size=(3, 2)).astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(block(t, "f * g (full)"), signal.convolve2d(f, g), atol=1e-3)
    np.testing.assert_allclose(signal.convolve2d(f, g), signal.convolve2d(g, f), atol=1e-12)
    assert number(t, r"max \|f \* g - g \* f\| = " + FLOAT) < 1e-5


def test_6_2(out):
    t = ex(out, "6.2.8.1")
    D, K = np.tril(np.ones((6, 8))), np.array([[1.0, -1.0]])
    for label, (X, k) in {
        "corr2d(D, K)": (D, K),
        "corr2d(D.T, K)": (D.T, K),
        "corr2d(D, K.T)": (D, K.T),
    }.items():
        np.testing.assert_array_equal(block(t, label), corr(X, k))

    t = ex(out, "6.2.8.2")
    assert "raises TypeError: JAX arrays are immutable" in t
    X = np.ones((6, 8))
    X[:, 2:6] = 0
    # d sum(corr2d(X, K)) / dK[a, b] is the sum of the window X[a:a + Ho, b:b + Wo].
    expected = [[X[:, :7].sum(), X[:, 1:].sum()]]
    for label in ("functional loop", "ops.corr2d"):
        np.testing.assert_array_equal(
            block(t, f"grad of sum(corr2d(X, K)) w.r.t. K, {label}"), expected
        )

    t = ex(out, "6.2.8.3")
    X, K = np.arange(9.0).reshape(3, 3), np.arange(4.0).reshape(2, 2)
    M = np.zeros((4, 9))
    for i in range(2):
        for j in range(2):
            for a in range(2):
                for b in range(2):
                    M[i * 2 + j, (i + a) * 3 + (j + b)] = K[a, b]
    np.testing.assert_array_equal(
        block(t, "kernel matrix of K = arange(4).reshape(2, 2) for a 3x3 input"), M
    )
    for label in ("(M @ X.ravel()).reshape(2, 2)", "im2col patches @ K.ravel()"):
        np.testing.assert_array_equal(block(t, label), corr(X, K))

    t = ex(out, "6.2.8.4")
    np.testing.assert_array_equal(
        block(t, "corr2d(f, second-derivative kernel)"), np.full((1, 6), 2)
    )
    for d in (1, 2, 3):
        got = block(t, f"order-{d} kernel (size {d + 1}) on t**{d}")
        np.testing.assert_array_equal(got, np.full((1, 8 - d), math.factorial(d)))
    np.testing.assert_array_equal(
        block(t, "integral kernel ones(1, n), full convolution, first n outputs"),
        np.cumsum(np.arange(8.0) ** 2)[None],
    )
    yy, xx = np.mgrid[:6, :6]
    lap = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]])
    got = block(t, "2-D: Laplacian kernel on x**2 + y**2")
    np.testing.assert_array_equal(got, corr(xx**2 + yy**2, lap))
    np.testing.assert_array_equal(got, np.full((4, 4), 4))


def _out(n, k, p, s):
    return (n + 2 * p - k) // s + 1


def test_6_3(out):
    t = ex(out, "6.3.4.1")
    assert f"(H, W) = ({_out(8, 3, 0, 3)}, {_out(8, 5, 1, 4)})" in t

    rows = re.findall(
        r"^kernel \((\d+), (\d+)\), padding (.+?), stride (.+?) -> \((\d+), (\d+)\)"
        r"  formula \((\d+), (\d+)\)$",
        ex(out, "6.3.4.2"),
        re.M,
    )
    assert len(rows) == 5
    for kh, kw, pad, stride, ho, wo, fh, fw in rows:
        p = eval(pad) if pad.startswith("(") else (int(pad),) * 2
        s = eval(stride) if stride.startswith("(") else (int(stride),) * 2
        expected = (_out(8, int(kh), p[0], s[0]), _out(8, int(kw), p[1], s[1]))
        assert (int(ho), int(wo)) == expected == (int(fh), int(fw))

    t = ex(out, "6.3.4.3")
    assert number(t, r"max \|diff\| = " + FLOAT) < 1e-6
    # 0.375 cycles/sample is 0.75 cycles per new sample after dropping every other one, which
    # a sampled cosine cannot tell from 1 - 0.75 = 0.25: bin 0.25 * 32 = 8.
    f0, n = 0.375, 32
    tone = np.cos(2 * np.pi * f0 * np.arange(2 * n + 1))
    plain = np.abs(np.fft.rfft(tone[: 2 * n : 2]))
    k = np.array([0.25, 0.5, 0.25])
    filtered = np.abs(np.fft.rfft(np.correlate(tone, k, mode="valid")[::2]))
    alias = round((1 - 2 * f0) * n)
    assert alias == 8 == int(np.argmax(plain)) == int(np.argmax(filtered))
    assert int(number(t, r"decimated by 2 \(every 2nd sample\): spectrum peak at bin (\d+)")) == 8
    assert int(number(t, r"conv1d stride 2\): spectrum peak at bin (\d+)")) == 8
    assert number(t, r"cycles/new sample .*magnitude " + FLOAT) == pytest.approx(
        plain[alias], abs=1e-3
    )
    assert number(t, r"conv1d stride 2\): .* magnitude " + FLOAT) == pytest.approx(
        filtered[alias], abs=1e-3
    )
    # The filter's gain at the tone: H(f) = 1/2 + cos(2 pi f)/2 for [1/4, 1/2, 1/4].
    gain = (1 + np.cos(2 * np.pi * f0)) / 2
    assert gain == pytest.approx(0.1464, abs=1e-4)
    assert filtered[alias] / plain[alias] == pytest.approx(gain, abs=1e-9)
    assert number(t, r"= " + FLOAT + r" of the unfiltered alias") == pytest.approx(gain, abs=1e-4)
    gains = dict(re.findall(r"f ([\d.]+): ([\d.]+)", t.split("folded band:")[1]))
    assert list(gains) == ["0.25", "0.3125", "0.375", "0.4375", "0.5"]
    for f, g in gains.items():
        assert float(g) == pytest.approx((1 + np.cos(2 * np.pi * float(f))) / 2, abs=1e-4)
    assert float(gains["0.25"]) == 0.5 and float(gains["0.5"]) == 0.0  # only 0.5 is removed

    rows = re.findall(
        r"^stride (\d): output \((\d+), (\d+)\), formula forward MACs ([\d,]+), "
        r"XLA forward flops ([\d,]+)$",
        ex(out, "6.3.4.4"),
        re.M,
    )
    assert len(rows) == 4
    for s, ho, wo, macs, flops in rows:
        o = _out(28, 3, 0, int(s))
        assert (int(ho), int(wo)) == (o, o)
        assert ints(macs)[0] == o * o * 16 * 32 * 9
        assert ints(flops)[0] == 2 * o * o * 16 * 32 * 9


def _taps_in_image(n, k, p, s):
    """Kernel taps that land inside the image, summed over the output positions (one axis)."""
    return sum(1 for i in range(_out(n, k, p, s)) for a in range(k) if 0 <= i * s - p + a < n)


def test_6_4(out):
    t = ex(out, "6.4.5.1")
    assert "composed kernel (2, 3, 4, 4)" in t
    diffs = [float(v) for v in re.findall(r"max \|diff\| = " + FLOAT, t)]
    assert diffs[0] < 1e-4 and diffs[1] < 1e-6
    assert "roots [" in t and "j" in t  # complex roots: no real factorisation

    rows = re.findall(
        r"^ci 3, co 8, 16x16, k 3, padding (\d), stride (\d): (.*)$", ex(out, "6.4.5.2"), re.M
    )
    assert len(rows) == 3
    for pad, stride, rest in rows:
        p, s = int(pad), int(stride)
        o = _out(16, 3, p, s)
        fwd, bwd, inimg, xf, xb, params = ints(
            re.sub(r"\(\d+, \d+\)", "", rest).replace("fwd", " ").replace("bwd", " ")
        )
        assert fwd == o * o * 3 * 8 * 9 and bwd == 2 * fwd
        assert inimg == _taps_in_image(16, 3, p, s) ** 2 * 3 * 8
        assert xf == 2 * inimg  # XLA counts the taps inside the image, a multiply-add as 2
        assert xb == 2 * xf  # input and weight gradients: the forward's work each
        assert params == 3 * 3 * 3 * 8 + 8
    # cnnjax's own CPU gradient: lax's count at stride 1; at stride 2 its input gradient works on
    # the explicitly dilated cotangent, which XLA counts with the inserted zeros.
    ours = [
        int(v.replace(",", ""))
        for v in re.findall(r"impl lax\): XLA flops ([\d,]+)$", ex(out, "6.4.5.2"), re.M)
    ]
    lax_bwd = [ints(re.sub(r"\(\d+, \d+\)", "", rest).replace("bwd", " "))[4] for *_, rest in rows]
    assert ours[:2] == lax_bwd[:2] and ours[2] > lax_bwd[2]

    mems = re.findall(r"^  memory \(float32 bytes\): (.*)$", ex(out, "6.4.5.2"), re.M)
    assert len(mems) == 3
    for (pad, stride, _), mem in zip(rows, mems, strict=True):
        o = _out(16, 3, int(pad), int(stride))
        params, inputs, outputs = (3 * 3 * 3 * 8 + 8) * 4, 16 * 16 * 3 * 4, o * o * 8 * 4
        got = ints(mem.replace("float32", ""))
        # parameters; forward input, output; backward: kept input + output gradient + input
        # gradient + parameter gradient = total
        backward = [inputs, outputs, inputs, params]
        assert got == [params, inputs, outputs, *backward, sum(backward)]

    rows = re.findall(
        r"^(.+?): output \((\d+), (\d+)\), forward MACs ([\d,]+) \(([\d.]+)x\), params ([\d,]+)$",
        ex(out, "6.4.5.3"),
        re.M,
    )
    expected = {
        "base": (16, 16, 2),
        "2x ci": (32, 16, 2),
        "2x co": (16, 32, 2),
        "2x ci and co": (32, 32, 2),
        "2x padding": (16, 16, 4),
    }
    assert [r[0] for r in rows] == list(expected)
    base = 28 * 28 * 16 * 16 * 25
    for label, ho, wo, macs, ratio, params in rows:
        ci, co, p = expected[label]
        o = 28 + 2 * p - 4
        assert (int(ho), int(wo)) == (o, o)
        assert ints(macs)[0] == o * o * ci * co * 25
        assert float(ratio) == pytest.approx(o * o * ci * co * 25 / base, abs=1e-3)
        assert ints(params)[0] == 25 * ci * co + co

    t = ex(out, "6.4.5.4")
    assert ints(t.split("formula MACs")[1])[0] == 28 * 28 * 64 * 32
    flops = ints(t.split("XLA flops conv")[1])
    assert [flops[0], flops[-1]] == [2 * 28 * 28 * 64 * 32] * 2  # the conv, and the matmul

    t = ex(out, "6.4.5.5")
    r = np.random.default_rng(0)
    for shape in ((3, 10, 10), (4, 3, 3, 3), (2, 4, 2, 2), (1, 1, 5, 5)):  # 6.4.5.1's draws
        r.normal(size=shape)
    X = r.normal(size=(64, 6, 6)).astype(np.float32)
    K = r.normal(size=(8, 64, 1, 1)).astype(np.float32)
    terms = np.abs(
        np.einsum("ihw,oi->oihw", X.astype(np.float64), K[:, :, 0, 0].astype(np.float64))
    )
    bound = 64 * np.finfo(np.float32).eps * terms.sum(axis=1).max()  # n * eps * sum |x_i k_i|
    d12, d1, d2 = (
        number(t, p + FLOAT)
        for p in (r"max \|Y1 - Y2\| = ", r"max \|Y1 - exact\| = ", r"max \|Y2 - exact\| = ")
    )
    assert d1 < bound and d2 < bound and d12 <= d1 + d2 + 1e-12
    assert number(t, r"bound n \* eps \* max sum\|x_i k_i\| = " + FLOAT) == pytest.approx(
        bound, rel=1e-3
    )
    book = re.search(
        r"the book's sizes .*: max \|Y1 - Y2\| = " + FLOAT + r", (\d+) of 18 entries differ", t
    )
    assert book, t
    book_rng = np.random.default_rng(7)  # the script's draws for the book's sizes
    Xb = book_rng.normal(size=(3, 3, 3)).astype(np.float64)
    Kb = book_rng.normal(size=(2, 3, 1, 1)).astype(np.float64)[:, :, 0, 0]
    terms = np.einsum("ihw,oi->ohw", np.abs(Xb), np.abs(Kb))  # sum_i |x_i k_i| per output
    diff, differ = float(book.group(1)), int(book.group(2))
    assert (diff == 0) == (differ == 0)  # equal iff every entry is
    assert diff <= 2 * 3 * np.finfo(np.float32).eps * terms.max()  # each within n eps sum|x k|

    t = ex(out, "6.4.5.6")
    assert "patches (16, 27) @ kernels (27, 4) -> (4, 4, 4)" in t
    assert number(t, r"max \|diff\| to corr2d_multi_in_out = " + FLOAT) < 1e-5


def test_6_5(out):
    for n in ("6.5.5.1", "6.5.5.2"):
        assert number(ex(out, n), r"max \|diff\| = " + FLOAT) < 1e-6

    rows = re.findall(
        r"^window (\d), 16x16x3: output \((\d+), (\d+)\), formula ops (\d+) "
        r".*XLA flops max (\d+), avg (\d+); params (\d+)$",
        ex(out, "6.5.5.3"),
        re.M,
    )
    assert len(rows) == 2
    for k, ho, wo, ops_, fmax, favg, params in map(lambda r: map(int, r), rows):
        o = 16 // k
        outputs = o * o * 3
        assert (ho, wo, params) == (o, o, 0)
        assert ops_ == outputs * k * k
        assert fmax == outputs * (k * k - 1)  # k*k - 1 comparisons per window
        assert favg == outputs * k * k  # k*k - 1 additions and one division

    t = ex(out, "6.5.5.4")
    x = block(t, "x")
    gmax, gavg = (
        block(t, "grad of sum(max_pool2d(x, 2))"),
        block(t, "grad of sum(avg_pool2d(x, 2))"),
    )
    expected = np.zeros((4, 4))
    for i in range(2):
        for j in range(2):
            w = x[2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
            a, b = np.unravel_index(np.argmax(w), (2, 2))
            expected[2 * i + a, 2 * j + b] = 1
    np.testing.assert_array_equal(gmax, expected)
    np.testing.assert_array_equal(gavg, np.full((4, 4), 0.25))

    t = ex(out, "6.5.5.5")
    x = block(t, "x")
    np.testing.assert_array_equal(x, np.arange(16.0).reshape(4, 4) % 7)
    np.testing.assert_array_equal(
        block(t, "-max_pool2d(-x, 2)"), -max_pool(-x, (2, 2), (2, 2), (0, 0))
    )

    t = ex(out, "6.5.5.6")
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype(np.float64)
    win = x.reshape(2, 3, 2, 3, 2, 3).transpose(0, 1, 3, 5, 2, 4).reshape(2, 3, 3, 3, 4)
    rows = re.findall(
        r"^tau ([\d.]+): max \|lse - max\| = ([\d.]+), max \|lse - avg\| = ([\d.]+)$", t, re.M
    )
    assert len(rows) == 5
    for tau, dmax, davg in (map(float, r) for r in rows):
        lse = tau * (special.logsumexp(win / tau, axis=-1) - np.log(4))
        assert dmax == pytest.approx(np.abs(lse - win.max(-1)).max(), abs=2e-4)
        assert davg == pytest.approx(np.abs(lse - win.mean(-1)).max(), abs=2e-4)
        assert dmax <= tau * np.log(4) + 1e-4  # max - tau log 4 <= lse <= max


def lenet_params(channels, kernels, padding, dense, classes=10):
    """Parameter count of a LeNet on 28x28x1, from its shapes."""
    n, c_in, total = 28, 1, 0
    for i, (c, k) in enumerate(zip(channels, kernels)):
        n = (n + 2 * (padding if i == 0 else 0) - k + 1) // 2
        total += k * k * c_in * c + c
        c_in = c
    width = n * n * c_in
    for d in (*dense, classes):
        total += width * d + d
        width = d
    return total


def test_6_6_model_sizes(out, exercises):
    t = ex(out, "6.6.4.1")
    assert t.count(f"pooling: {lenet_params((6, 16), (5, 5), 2, (120, 84)):,} parameters") == 2
    assert "variant avg_pool: sigmoid, avg pooling" in t
    assert "variant max_pool: sigmoid, max pooling" in t
    t = ex(out, "6.6.4.2")
    configs = exercises.sweep_configs("lenet_variants")
    rows = re.findall(
        r"^variant (\S+): channels (\(.*?\)), kernels (\(.*?\)), "
        r"dense (\(.*?\)), .*: ([\d,]+) parameters$",
        t,
        re.M,
    )
    assert [r[0] for r in rows] == list(configs) and len(rows) >= 10
    for name, channels, kernels, dense, params in rows:
        model = configs[name].model
        assert eval(channels) == tuple(model.channels) and eval(dense) == tuple(model.dense)
        assert ints(params)[0] == lenet_params(
            eval(channels), eval(kernels), model.padding, eval(dense)
        )
    for n, name in (("6.6.4.2", "lenet_best"), ("6.6.4.3", "lenet_mnist")):
        line = next(ln for ln in ex(out, n).splitlines() if ln.startswith(f"configs/{name}.py"))
        model = exercises.load_config_module(name).get_config().model
        expected = lenet_params(model.channels, model.kernel_sizes, model.padding, model.dense)
        assert ints(line.split("pooling:")[1])[0] == expected <= 100_000  # "LeNet-sized"


def test_section_flag_runs_one_section(exercises, capsys):
    exercises.main(["--section", "6.3"])
    printed = re.findall(r"^### (\S+) ", capsys.readouterr().out, flags=re.M)
    assert printed == NUMBERS["6.3"]
