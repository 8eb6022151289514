"""The real MNIST (``../shared/data/mnist``, exercise 6.6.4.3): loaded, counted, trained on.

Skipped, with the reason, where the directory is absent. The expected sizes and per-class counts
are read from the directory's own SOURCE.md and from the raw label archives (decoded here with
gzip and numpy), not from cnnjax.
"""

import gzip
import pathlib
import re

import jax
import numpy as np
import pytest

from cnnjax import data, train

MNIST_DIR = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="module")
def mnist_dir():
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"the real MNIST is not at {MNIST_DIR} (the four IDX archives)")
    return MNIST_DIR


def raw_labels(path: pathlib.Path) -> np.ndarray:
    """An IDX1 label archive decoded by hand: magic 2049, count, then one byte per label."""
    raw = gzip.decompress(path.read_bytes())
    magic, count = int.from_bytes(raw[:4], "big"), int.from_bytes(raw[4:8], "big")
    assert magic == 2049
    labels = np.frombuffer(raw, np.uint8, offset=8)
    assert labels.size == count
    return labels


def published_counts(source_md: str, split: str) -> list[int]:
    """The per-class counts SOURCE.md lists for ``split`` ("train" or "test")."""
    m = re.search(rf"^- {split}: (\d+) x [^\[]*\[([\d,\s]+)\]", source_md, flags=re.M)
    counts = [int(v) for v in m.group(2).split(",")]
    assert sum(counts) == int(m.group(1))  # the listed size
    return counts


def test_real_mnist_loads_with_its_published_sizes_and_class_counts(mnist_dir):
    ds = data.load("mnist", source="idx", data_dir=mnist_dir)
    assert ds.name == "mnist" and ds.num_classes == 10
    assert ds.train_images.shape == (60000, 28, 28, 1) and ds.train_images.dtype == np.uint8
    assert ds.test_images.shape == (10000, 28, 28, 1) and ds.test_images.dtype == np.uint8
    source_md = (mnist_dir / "SOURCE.md").read_text()
    for split, labels, archive in (
        ("train", ds.train_labels, "train-labels-idx1-ubyte.gz"),
        ("test", ds.test_labels, "t10k-labels-idx1-ubyte.gz"),
    ):
        counts = np.bincount(labels, minlength=10).tolist()
        assert counts == published_counts(source_md, split)
        np.testing.assert_array_equal(labels, raw_labels(mnist_dir / archive))
    # Digits, not clothes: SOURCE.md's pixel mean on the 0..1 scale.
    mean = float(re.search(r"pixel mean ([\d.]+)", source_md).group(1))
    assert ds.train_images.mean() / 255 == pytest.approx(mean, abs=1e-4)


@pytest.fixture
def fast_compiles():
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


def test_short_real_training_run_on_mnist(mnist_dir, tmp_path, fast_compiles):
    """The modern LeNet learns real digits in 2 short epochs, scored on held-out data."""
    config = train.default_config()
    config.num_epochs, config.batch_size = 2, 128
    config.data.name, config.data.source, config.data.dir = "mnist", "idx", str(mnist_dir)
    config.data.normalize = "standardize"
    config.data.train_limit, config.data.validation_size, config.data.test_limit = 4096, 1024, 2000
    config.model.activation, config.model.pooling = "relu", "max"
    config.model.kernel_init = "he_uniform"
    config.optimizer.name, config.optimizer.learning_rate = "adam", 3e-3
    config.population.size = 2
    config.progress = False
    workdir = tmp_path / "runs" / "mnist_short"
    result = train.train_and_evaluate(config, workdir)
    assert result["epochs"] == 2
    for key in ("val_accuracy", "test_accuracy"):
        assert result[key].shape == (2,)
        assert (result[key] > 0.8).all(), (key, result[key])  # chance is 0.1
    with train.RunDir(workdir, read_only=True) as run:
        records = run.read_metrics()
    assert {r["epoch"] for r in records} == {1, 2}
    assert all("val_accuracy" in r for r in records)
