"""Image classification data for D2L 6.6 (Fashion-MNIST and friends), and batching on device.

``load(name, source=..., data_dir=...)`` returns a host-side ``Dataset`` (uint8 images, int32
labels, class names) from IDX files, tensorflow-datasets (TensorFlow optional) or the bundled
offline set; ``to_device`` / ``epoch_indices`` / ``eval_indices`` / ``gather`` / ``epoch_key``
put a split on the accelerator and batch it there; ``augment`` (random flips and shifts)
transforms a training batch there. This package imports neither
``cnnjax.models`` nor ``cnnjax.train``.
"""

from cnnjax.data.augment import augment, random_flip, random_shift
from cnnjax.data.bundled import load_bundled
from cnnjax.data.dataset import SOURCES, Dataset
from cnnjax.data.idx import IMAGES_MAGIC, LABELS_MAGIC, IDXError, decode_idx, read_idx
from cnnjax.data.iterator import (
    NORMALIZATIONS,
    DeviceSplit,
    NormalizationError,
    channel_stats,
    epoch_indices,
    epoch_key,
    eval_indices,
    gather,
    step_keys,
    to_device,
)
from cnnjax.data.loader import DATA_DIR_ENV, LOAD_SOURCES, load
from cnnjax.data.registry import DatasetSpec, IdxFiles, get_spec, names, register
from cnnjax.data.tfds_source import DataUnavailableError

__all__ = [
    "DATA_DIR_ENV",
    "IMAGES_MAGIC",
    "LABELS_MAGIC",
    "LOAD_SOURCES",
    "NORMALIZATIONS",
    "SOURCES",
    "DataUnavailableError",
    "Dataset",
    "DatasetSpec",
    "DeviceSplit",
    "IDXError",
    "IdxFiles",
    "NormalizationError",
    "augment",
    "channel_stats",
    "decode_idx",
    "epoch_indices",
    "epoch_key",
    "eval_indices",
    "gather",
    "get_spec",
    "load",
    "load_bundled",
    "names",
    "random_flip",
    "random_shift",
    "read_idx",
    "register",
    "step_keys",
    "to_device",
]
