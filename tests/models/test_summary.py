"""summary (the book's layer table, D2L 6.6.2) and features (exercise 6.6.4.4)."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.models import Conv2D, LeNet, features, summary

BOOK_ROWS = [  # (stage, output C x H x W) as the book prints them
    ("conv1", "6 x 28 x 28"),
    ("act1", "6 x 28 x 28"),
    ("pool1", "6 x 14 x 14"),
    ("conv2", "16 x 10 x 10"),
    ("act2", "16 x 10 x 10"),
    ("pool2", "16 x 5 x 5"),
    ("flatten", "400"),
    ("dense1", "120"),
    ("act3", "120"),
    ("dense2", "84"),
    ("act4", "84"),
    ("output", "10"),
]


def table_rows(text):
    """{layer: (output shape, params, MACs, pool ops)} from the table's body lines."""
    rows = {}
    for line in text.splitlines():
        m = re.match(
            r"^(\w+)\s+.*?\s{2,}(\d+(?: x \d+)*)\s+([\d,]+)\s+([\d,-]+)\s+([\d,-]+)$", line
        )
        if m:
            name, shape, *counts = m.groups()
            rows[name] = (shape, *(0 if c == "-" else int(c.replace(",", "")) for c in counts))
        elif line.startswith("total"):
            rows["total"] = ("", *(int(c.replace(",", "")) for c in line.split()[1:]))
    return rows


def test_book_table():
    text = summary(LeNet(conv_impl="lax"), (28, 28, 1))
    rows = table_rows(text)
    assert [(k, v[0]) for k, v in rows.items() if k != "total"] == BOOK_ROWS
    assert "channels first" in text and "NHWC" in text
    # Parameters and multiply-adds of each layer, from the chapter's formulas.
    conv = lambda k, ci, co, hw: (k * k * ci * co + co, k * k * ci * co * hw * hw)  # noqa: E731
    dense = lambda i, o: (i * o + o, i * o)  # noqa: E731
    expected = {
        "conv1": conv(5, 1, 6, 28),
        "conv2": conv(5, 6, 16, 10),
        "dense1": dense(400, 120),
        "dense2": dense(120, 84),
        "output": dense(84, 10),
    }
    for name, (params, macs) in expected.items():
        assert rows[name][1:3] == (params, macs), name
    # 2x2 pooling touches every input element once.
    assert rows["pool1"][3] == 6 * 28 * 28 and rows["pool2"][3] == 16 * 10 * 10
    total = rows["total"]
    assert total[1] == 61_706
    assert total[2] == sum(macs for _, macs in expected.values())
    assert total[3] == 6 * 28 * 28 + 16 * 10 * 10


def test_batch_shape_gives_the_same_table_and_variants_show():
    model = LeNet(conv_impl="lax")
    assert summary(model, (7, 28, 28, 1)) == summary(model, (28, 28, 1))
    text = summary(LeNet(pooling="max", activation="relu", channels=(4, 8)), (32, 32, 3))
    rows = table_rows(text)
    assert "MaxPool 2x2" in text and "relu" in text
    assert rows["conv1"][:2] == ("4 x 32 x 32", 5 * 5 * 3 * 4 + 4)
    assert rows["flatten"][0] == str(8 * 6 * 6)


def test_summary_bad_input():
    with pytest.raises(
        ValueError, match=r"summary: input_shape must be \(H, W, C\) or \(N, H, W, C\)"
    ):
        summary(LeNet(), (28, 28))
    with pytest.raises(ValueError, match="input_shape"):
        summary(LeNet(), (28, 0, 1))
    with pytest.raises(TypeError, match="summary: model must define stages"):
        summary(Conv2D((2, 2)), (8, 8, 1))
    with pytest.raises(ValueError):  # 8x8 is too small for two 5x5 convs and two poolings
        summary(LeNet(), (8, 8, 1))


def test_features_in_order_and_consistent():
    model = LeNet(conv_impl="lax")
    x = jax.random.uniform(jax.random.key(0), (3, 28, 28, 1))
    params = model.init(jax.random.key(1), x)["params"]
    feats = jax.jit(lambda p, x: features(model, p, x))(params, x)
    assert [(k, v.shape[1:]) for k, v in feats.items()] == [
        ("conv1", (28, 28, 6)),
        ("act1", (28, 28, 6)),
        ("pool1", (14, 14, 6)),
        ("conv2", (10, 10, 16)),
        ("act2", (10, 10, 16)),
        ("pool2", (5, 5, 16)),
        ("flatten", (400,)),
        ("dense1", (120,)),
        ("act3", (120,)),
        ("dense2", (84,)),
        ("act4", (84,)),
        ("output", (10,)),
    ]
    np.testing.assert_allclose(feats["output"], model.apply({"params": params}, x), rtol=1e-6)
    np.testing.assert_allclose(feats["act1"], jax.nn.sigmoid(feats["conv1"]), rtol=1e-6)
    a = np.asarray(feats["act2"])
    pooled = a.reshape(3, 5, 2, 5, 2, 16).mean(axis=(2, 4))
    np.testing.assert_allclose(feats["pool2"], pooled, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(feats["flatten"], np.asarray(feats["pool2"]).reshape(3, -1))
    # The whole variables dict works too.
    chex.assert_trees_all_close(features(model, {"params": params}, x)["output"], feats["output"])


def test_features_needs_a_sowing_model():
    conv = Conv2D((2, 2))
    x = jnp.ones((4, 4))
    with pytest.raises(TypeError, match="features: Conv2D does not sow its stages"):
        features(conv, conv.init(jax.random.key(0), x)["params"], x)
