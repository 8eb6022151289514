"""The data a run trains and evaluates on: splits on the device, and a fingerprint of them.

:func:`load_inputs` turns ``config.data`` into device-resident train / validation / test splits
(:class:`cnnjax.data.DeviceSplit`), the normalisation the run uses, and a fingerprint that
identifies the data actually trained on (name, source, split sizes and a SHA-256 of the arrays),
so a resumed run can refuse other data with the same file names.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np

from cnnjax import data
from cnnjax.train.errors import ConfigError, DataError
from cnnjax.train.runfiles import digest

__all__ = ["Inputs", "fallback_epochs", "load_inputs"]


@dataclasses.dataclass(frozen=True)
class Inputs:
    """The splits of one run.

    Attributes:
      name, source: the data set actually loaded (after any fallback) and where it came from.
      train, test: device splits; ``validation`` is None unless ``data.validation_size`` > 0.
      num_classes: classes of the data set.
      preprocess: ``{"normalize": ..., "mean": [...], "std": [...]}`` (mean/std per channel
        for "standardize" only): how uint8 images become model inputs.
      fingerprint: JSON-safe identity of the data (see the module docstring).
    """

    name: str
    source: str
    train: data.DeviceSplit
    validation: data.DeviceSplit | None
    test: data.DeviceSplit
    num_classes: int
    preprocess: dict[str, Any]
    fingerprint: dict[str, Any]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.train.images.shape[1:])

    @property
    def black(self) -> tuple[float, ...]:
        """The model-input value of a black (0) pixel, per channel: what a randomly shifted
        training image shows where its border was uncovered."""
        channels = self.input_shape[-1]
        if self.preprocess["normalize"] != "standardize":
            return (0.0,) * channels
        mean, std = self.preprocess["mean"], self.preprocess["std"]
        return tuple(float(-m / s) for m, s in zip(mean, std, strict=True))


def _fixed_permutation(n: int, salt: int) -> np.ndarray:
    # The same for every run and seed: a held-out or limited subset never depends on the seed.
    return np.random.default_rng(salt).permutation(n)


def _subset(images: np.ndarray, labels: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """``limit`` examples (all if 0), the same pseudo-random ones for every run and seed.

    Random rather than the first ``limit``: a data set stored sorted by class (the bundled
    MNIST subset is) would otherwise give a single class.
    """
    if not limit or limit >= labels.shape[0]:
        return images, labels
    keep = np.sort(_fixed_permutation(labels.shape[0], 0)[:limit])
    return images[keep], labels[keep]


def _hold_out(images: np.ndarray, labels: np.ndarray, size: int):
    """``(train_x, train_y), (val_x, val_y)``: ``size`` fixed pseudo-random examples held out."""
    order = _fixed_permutation(labels.shape[0], 1)
    val, train = np.sort(order[:size]), np.sort(order[size:])
    return (images[train], labels[train]), (images[val], labels[val])


def _load(name: str, source: str, data_dir: str) -> data.Dataset:
    try:
        return data.load(name, source=source, data_dir=data_dir or None)
    except (data.IDXError, data.DataUnavailableError, OSError) as e:
        raise DataError(f"data set {name!r} (source {source!r}): {e}") from e
    except (KeyError, ValueError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise DataError(f"config.data: {message}") from e


def load_inputs(
    data_config: Any,
    *,
    batch_size: int,
    num_classes: int,
    sharding: jax.sharding.Sharding | None = None,
) -> Inputs:
    """Loads ``config.data`` and puts its splits on the device.

    Args:
      data_config: the resolved ``config.data``.
      batch_size: the training batch; the training split must hold at least one.
      num_classes: the model's output classes; the data set may not have more.
      sharding: where the splits live (e.g. replicated over a mesh); default: JAX's default
        device.

    Returns:
      :class:`Inputs`. The training split is the (limited) training set less the validation
      hold-out; "standardize" statistics come from that training split alone.

    Raises:
      DataError: the data set cannot be loaded.
      ConfigError: the splits do not fit the batch size, the validation size or the model.
    """
    cfg = data_config
    dataset = _load(cfg.name, cfg.source, cfg.dir)
    train_x, train_y = _subset(dataset.train_images, dataset.train_labels, cfg.train_limit)
    test_x, test_y = _subset(dataset.test_images, dataset.test_labels, cfg.test_limit)
    val = None
    if cfg.validation_size:
        if cfg.validation_size + batch_size > train_y.shape[0]:
            raise ConfigError(
                f"config.data.validation_size={cfg.validation_size} leaves fewer than "
                f"batch_size={batch_size} of the {train_y.shape[0]} training examples of "
                f"{dataset.name!r}; lower it"
            )
        (train_x, train_y), val = _hold_out(train_x, train_y, cfg.validation_size)
    if train_x.shape[0] < batch_size:
        raise ConfigError(
            f"config.batch_size={batch_size} exceeds the {train_x.shape[0]} training "
            f"examples of {dataset.name!r} ({dataset.source}); lower it"
        )
    if dataset.num_classes > num_classes:
        raise ConfigError(
            f"config.model.num_classes={num_classes} is less than the "
            f"{dataset.num_classes} classes of {dataset.name!r}; raise it"
        )
    stats = {}
    if cfg.normalize == "standardize":
        stats = dict(zip(("mean", "std"), data.channel_stats(train_x), strict=True))

    def put(images: np.ndarray, labels: np.ndarray) -> data.DeviceSplit:
        # Every process holds the whole split, so each puts its own devices' part there.
        try:
            return data.to_device(images, labels, normalize=cfg.normalize, device=sharding, **stats)
        except data.NormalizationError as e:
            raise ConfigError(f"config.data.normalize={cfg.normalize!r}: {e}") from e

    arrays = [train_x, train_y, test_x, test_y] + (list(val) if val is not None else [])
    fingerprint = {
        "name": dataset.name,
        "source": dataset.source,
        "num_train": int(train_y.shape[0]),
        "num_validation": int(val[1].shape[0]) if val is not None else 0,
        "num_test": int(test_y.shape[0]),
        "sha256": digest(*arrays),
    }
    return Inputs(
        name=dataset.name,
        source=dataset.source,
        train=put(train_x, train_y),
        validation=put(*val) if val is not None else None,
        test=put(test_x, test_y),
        num_classes=dataset.num_classes,
        preprocess={
            "normalize": cfg.normalize,
            **{k: np.asarray(v).tolist() for k, v in stats.items()},
        },
        fingerprint=fingerprint,
    )


def fallback_epochs(
    data_config: Any, inputs: Inputs, *, num_epochs: int, batch_size: int
) -> int | None:
    """The epochs to train instead of ``num_epochs`` after a fallback, or None to keep them.

    When ``source="auto"`` fell back to a smaller data set and ``fallback_epochs`` is
    "match_steps", the run takes as many SGD steps as it would have on the data set asked for:
    the book's recipe needs more than one pass over Fashion-MNIST's 60,000 images before it
    leaves chance, so 10 epochs of a few thousand images would show a model that never learns.
    """
    fell_back = data_config.source == "auto" and inputs.name != data_config.name
    if not fell_back or data_config.fallback_epochs != "match_steps":
        return None
    wanted = data.get_spec(data_config.name).num_train
    if data_config.train_limit:
        wanted = min(wanted, data_config.train_limit)
    wanted -= data_config.validation_size
    have = inputs.train.images.shape[0]
    factor = (wanted // batch_size) / (have // batch_size)
    return math.ceil(num_epochs * factor) if factor > 1 else None
