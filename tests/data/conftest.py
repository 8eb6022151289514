"""Fixtures for the data tests: no network, ever, and small real tfds data sets on disk."""

import io
import os
import pathlib

import numpy as np
import pytest

from tests.support import go_offline

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data"
SHARED_FASHION_MNIST = SHARED_DATA / "fashion_mnist"
SHARED_MNIST = SHARED_DATA / "mnist"
IDX_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """No test of this package may reach the network: host names do not resolve."""
    go_offline(monkeypatch)


def real_fashion_mnist_dir() -> pathlib.Path:
    """The real Fashion-MNIST IDX directory, or skip the test saying why."""
    directory = os.environ.get("CNNJAX_DATA_DIR")
    if directory and all((pathlib.Path(directory) / n).is_file() for n in IDX_NAMES):
        return pathlib.Path(directory)
    if SHARED_FASHION_MNIST.is_dir():
        return SHARED_FASHION_MNIST
    pytest.skip(
        f"real Fashion-MNIST not found: set CNNJAX_DATA_DIR or provide {SHARED_FASHION_MNIST}"
    )


def real_mnist_dir() -> pathlib.Path:
    """The real MNIST IDX directory, or skip the test saying why."""
    if all((SHARED_MNIST / n).is_file() for n in IDX_NAMES):
        return SHARED_MNIST
    pytest.skip(f"real MNIST not found: provide its four IDX archives in {SHARED_MNIST}")


def tiny_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random uint8 (28, 28, 1) images and labels covering all ten classes."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28, 1), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.int64)
    rng.shuffle(labels)
    return images, labels


@pytest.fixture(scope="session")
def prepared_tfds_dir(tmp_path_factory):
    """A tfds data dir holding ``fashion_mnist`` prepared as array_record, made without TF.

    tfds's own FashionMNIST builder and writer, fed with PNG bytes encoded by PIL: TensorFlow
    is only needed to encode numpy images, and a PNG byte string is accepted as is. Returns
    ``(data_dir, {"train": (images, labels), "test": (images, labels)})``.
    """
    import tensorflow_datasets as tfds
    from PIL import Image

    splits = {"train": tiny_images(30, seed=1), "test": tiny_images(20, seed=2)}

    class TinyFashionMNIST(tfds.image_classification.FashionMNIST, skip_registration=True):
        name = "fashion_mnist"

        def _split_generators(self, dl_manager):
            del dl_manager
            return {split: self._generate_examples(*arrays) for split, arrays in splits.items()}

        def _generate_examples(self, images, labels):
            for i, (image, label) in enumerate(zip(images, labels)):
                png = io.BytesIO()
                Image.fromarray(image[..., 0]).save(png, format="PNG")
                yield i, {"image": png.getvalue(), "label": int(label)}

    data_dir = tmp_path_factory.mktemp("tfds")
    TinyFashionMNIST(data_dir=data_dir, file_format="array_record").download_and_prepare()
    return data_dir, splits
