"""``Dataset``: the train and test splits of an image classification data set, on the host.

This is what D2L 6.6 gets from ``d2l.FashionMNIST``: images and labels of both splits plus the
text labels, here as plain NumPy arrays in JAX's channels-last layout. ``cnnjax.data.iterator``
moves a split to the device.
"""

from __future__ import annotations

import dataclasses

import numpy as np

SOURCES = ("idx", "tfds", "bundled")


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Both splits of one data set, validated on construction.

    Attributes:
      name: the data set actually loaded (``"fashion_mnist"``, ``"mnist"``, or ``"mnist_5k"``
        for the bundled subset, which is what ``load`` falls back to offline).
      source: where it came from, one of ``"idx"``, ``"tfds"``, ``"bundled"``.
      train_images, test_images: ``(N, H, W, C)`` uint8, 0..255.
      train_labels, test_labels: ``(N,)`` int32 in ``[0, len(class_names))``.
      class_names: text label of each class index.

    Raises:
      ValueError: a dtype, rank or length is wrong, the splits' image shapes differ, or a
        label is out of range.
    """

    name: str
    source: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"Dataset: source must be one of {SOURCES}, got {self.source!r}")
        if not self.class_names:
            raise ValueError("Dataset: class_names must not be empty")
        for split in ("train", "test"):
            _check_split(
                f"Dataset({self.name!r}) {split}",
                getattr(self, f"{split}_images"),
                getattr(self, f"{split}_labels"),
                len(self.class_names),
            )
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise ValueError(
                f"Dataset({self.name!r}): train and test images must have the same (H, W, C), "
                f"got {self.train_images.shape[1:]} and {self.test_images.shape[1:]}"
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of one image."""
        return tuple(self.train_images.shape[1:])

    @property
    def num_train(self) -> int:
        return len(self.train_labels)

    @property
    def num_test(self) -> int:
        return len(self.test_labels)

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, source={self.source!r}, "
            f"train={self.num_train}, test={self.num_test}, image_shape={self.image_shape}, "
            f"num_classes={self.num_classes})"
        )


def _check_split(what: str, images: np.ndarray, labels: np.ndarray, num_classes: int) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(
            f"{what}: images must be a uint8 (N, H, W, C) array, got "
            f"{getattr(images, 'dtype', type(images).__name__)} of shape {np.shape(images)}"
        )
    if not isinstance(labels, np.ndarray) or labels.dtype != np.int32 or labels.ndim != 1:
        raise ValueError(
            f"{what}: labels must be an int32 (N,) array, got "
            f"{getattr(labels, 'dtype', type(labels).__name__)} of shape {np.shape(labels)}"
        )
    if len(images) != len(labels):
        raise ValueError(f"{what}: {len(images)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{what}: labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]"
        )
