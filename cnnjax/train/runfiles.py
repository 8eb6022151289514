"""What each file of a run directory holds: one schema per file, with its writer and its reader.

:class:`~cnnjax.train.rundir.RunDir` is the door to a run's directory (where, atomically, locked);
this module owns what goes through it. Every file is written from, and read back into, one of
these types, so no other code builds or parses a run file's JSON:

* :class:`CheckpointMeta` -- the JSON record saved with every checkpoint: the epoch, the metrics
  history, the run's :class:`Identity` (resolved config and data fingerprint) and the
  :class:`Shapes` needed to rebuild the state and feed the model;
* :class:`RunInfo` -- ``run.json``: what the config does not fix (data, shapes, strategy,
  devices);
* :class:`EpochRecord` -- one epoch of the history; :func:`metric_rows` turns it into the rows of
  ``metrics.jsonl`` / ``metrics.csv`` (one per member);
* :data:`Summary` -- ``summary.json``: final per-member metrics, the best member, timings;
* ``config.json`` -- the resolved config as a plain dict (read back with
  :meth:`RunDir.read_config <cnnjax.train.rundir.RunDir.read_config>`).

A reader given a file that does not follow its schema raises :class:`RunFileError` naming the
file and what is missing, never a ``KeyError`` from deep inside.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from cnnjax.train.errors import RunDirError

__all__ = [
    "CheckpointMeta",
    "EpochRecord",
    "Identity",
    "RunFileError",
    "RunInfo",
    "Shapes",
    "Summary",
    "best_member",
    "digest",
    "json_digest",
    "metric_rows",
    "summary_from_json",
    "to_json",
]


class RunFileError(RunDirError):
    """A run file exists but does not hold what its schema says (edited, truncated, foreign)."""


def to_json(value: Any) -> Any:
    """``value`` as plain JSON data: numpy/JAX arrays and scalars become lists and numbers,
    tuples lists, and non-finite floats ``None`` (JSON has no NaN)."""
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, (np.ndarray, jax.Array, np.generic)):
        return to_json(np.asarray(value).tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def per_member(values: Iterable[Any]) -> np.ndarray:
    """A (P,) array from JSON per-member values: ``None`` (a non-finite value) becomes NaN,
    booleans stay booleans and ints (e.g. ``stopped_epoch``; a float metric is written with a
    point, ``1.0``) stay ints."""
    values = list(values)
    if values and all(isinstance(v, bool) for v in values):
        return np.asarray(values, bool)
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return np.asarray(values, np.int64)
    return np.asarray([np.nan if v is None else v for v in values], np.float64)


def digest(*arrays: Any) -> str:
    """SHA-256 (hex) of arrays with their dtypes and shapes: equal iff the values are equal."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.asarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def json_digest(value: Any) -> str:
    """SHA-256 (hex) of JSON data in a canonical form (sorted keys, no spaces)."""
    text = json.dumps(to_json(value), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def best_member(accuracy: Sequence[float], healthy: Sequence[bool]) -> int | None:
    """The healthy member with the highest accuracy (the first on ties), or None if none is.

    The one rule behind every "best member" a run reports (epoch line, final table, summary).
    """
    healthy = np.asarray(healthy, bool)
    if not healthy.any():
        return None
    acc = np.asarray(accuracy, np.float64)
    candidates = np.flatnonzero(healthy)
    return int(
        candidates[np.nanargmax(np.where(np.isnan(acc[candidates]), -np.inf, acc[candidates]))]
    )


def _field(record: Mapping[str, Any], key: str, what: str) -> Any:
    if not isinstance(record, Mapping) or key not in record:
        raise RunFileError(f"{what} has no {key!r} entry; it was not written by this trainer")
    return record[key]


@dataclasses.dataclass(frozen=True)
class EpochRecord:
    """One epoch of a run's history.

    Attributes:
      epoch: 1-based epoch number.
      seconds: wall time of the epoch's training.
      metrics: per-member values by name, each a (P,) array: ``train_loss``, ``train_accuracy``,
        ``<split>_loss`` and ``<split>_accuracy`` of the evaluated split (``val`` or ``test``),
        the other training metrics of :data:`cnnjax.train.steps.REDUCTIONS` and ``diverged``;
        with successive halving also ``stopped_epoch`` (int; see
        :func:`cnnjax.train.loop.train_epochs`).
    """

    epoch: int
    seconds: float
    metrics: dict[str, np.ndarray]

    def to_json(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "seconds": self.seconds, "metrics": to_json(self.metrics)}

    @classmethod
    def from_json(cls, record: Any, what: str = "an epoch record") -> EpochRecord:
        metrics = _field(record, "metrics", what)
        if not isinstance(metrics, Mapping) or "diverged" not in metrics:
            raise RunFileError(f"{what}'s metrics have no 'diverged' entry")
        return cls(
            epoch=int(_field(record, "epoch", what)),
            seconds=float(_field(record, "seconds", what)),
            metrics={k: per_member(v) for k, v in metrics.items()},
        )


def metric_rows(
    record: EpochRecord, seeds: Sequence[int], learning_rates: Sequence[float]
) -> list[dict[str, Any]]:
    """The ``metrics.jsonl`` / ``metrics.csv`` rows of one epoch: one per member, with its
    ``epoch``, ``member``, ``seed``, ``learning_rate``, every metric and ``epoch_time_s``."""
    rows = []
    for i, (seed, lr) in enumerate(zip(seeds, learning_rates, strict=True)):
        row = {"epoch": record.epoch, "member": i, "seed": seed, "learning_rate": lr}
        row.update({k: v[i] for k, v in record.metrics.items()})
        row["epoch_time_s"] = record.seconds
        rows.append(to_json(row))
    return rows


@dataclasses.dataclass(frozen=True)
class Shapes:
    """How to rebuild a run's state and feed its model: one example's ``input_shape`` (H, W, C),
    ``steps_per_epoch`` (for schedules) and ``preprocess`` (``{"normalize", "mean"?, "std"?}``,
    how uint8 images become model inputs)."""

    input_shape: tuple[int, ...]
    steps_per_epoch: int
    preprocess: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return to_json(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, record: Any, what: str) -> Shapes:
        return cls(
            input_shape=tuple(int(d) for d in _field(record, "input_shape", what)),
            steps_per_epoch=int(_field(record, "steps_per_epoch", what)),
            preprocess=dict(_field(record, "preprocess", what)),
        )


@dataclasses.dataclass(frozen=True)
class Identity:
    """What defines a run: its resolved ``config`` (a plain dict) and the fingerprint of the
    ``data`` it trains on (:attr:`cnnjax.train.inputs.Inputs.fingerprint`)."""

    config: dict[str, Any]
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"config": to_json(self.config), "data": to_json(self.data)}


@dataclasses.dataclass(frozen=True)
class CheckpointMeta:
    """The JSON record saved beside every checkpoint's arrays.

    It is the record of the run: every other run file can be rebuilt from it. ``to_json`` adds
    ``meta_sha256``, a digest of the record itself, so an edited history is noticed like a
    flipped bit in the arrays (:meth:`from_json` raises).
    """

    epoch: int
    history: tuple[EpochRecord, ...]
    identity: Identity
    shapes: Shapes

    def to_json(self) -> dict[str, Any]:
        record = {
            "epoch": self.epoch,
            "history": [r.to_json() for r in self.history],
            "run": self.identity.to_json(),
            "shapes": self.shapes.to_json(),
        }
        return {**record, "meta_sha256": json_digest(record)}

    @classmethod
    def identity_from_json(cls, meta: Any, what: str = "the checkpoint's record") -> Identity:
        """Only the run's identity, for checking that a checkpoint belongs to this run before its
        history is trusted."""
        run = _field(meta, "run", what)
        return Identity(
            config=dict(_field(run, "config", what)), data=dict(_field(run, "data", what))
        )

    @classmethod
    def from_json(cls, meta: Any, what: str = "the checkpoint's record") -> CheckpointMeta:
        """Parses and verifies a checkpoint's record.

        Raises:
          RunFileError: an entry is missing, or the record does not match its digest.
        """
        record = {k: _field(meta, k, what) for k in ("epoch", "history", "run", "shapes")}
        if meta.get("meta_sha256") != json_digest(record):
            raise RunFileError(f"{what} does not match its checksum (edited or damaged)")
        return cls(
            epoch=int(record["epoch"]),
            history=tuple(
                EpochRecord.from_json(r, f"{what}'s history entry {i}")
                for i, r in enumerate(record["history"])
            ),
            identity=cls.identity_from_json(meta, what),
            shapes=Shapes.from_json(record["shapes"], f"{what}'s shapes"),
        )


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """``run.json``: what the config does not fix -- the ``data`` fingerprint, the
    :class:`Shapes`, the population ``strategy`` ("vmap" | "map") and the ``devices``
    (:func:`cnnjax.train.parallel.describe`)."""

    data: dict[str, Any]
    shapes: Shapes
    strategy: str
    devices: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return to_json(
            {"data": self.data, **self.shapes.to_json(), "strategy": self.strategy, **self.devices}
        )

    @classmethod
    def from_json(cls, record: Any, what: str = "run.json") -> RunInfo:
        own = ("data", "input_shape", "steps_per_epoch", "preprocess", "strategy")
        return cls(
            data=dict(_field(record, "data", what)),
            shapes=Shapes.from_json(record, what),
            strategy=str(_field(record, "strategy", what)),
            devices={k: v for k, v in record.items() if k not in own},
        )


# ``summary.json`` and what ``train_and_evaluate`` returns: a dict with the final per-member
# metrics as (P,) arrays (``train_loss``, ``train_accuracy``, ``test_loss``, ``test_accuracy``,
# ``val_*`` with a validation split, ``diverged`` and the other training metrics of the last
# epoch; with successive halving ``stopped_epoch``, per member the epoch its final metrics are
# from, 0 if it was never stopped), ``epochs``, ``diverged_epoch`` (per member: the epoch it
# diverged in, or None),
# ``best_member`` (:func:`best_member` on the test accuracy, or on the validation accuracy with
# ``evaluate_test=False``, which leaves the test metrics out; None if all diverged),
# ``examples_per_second``, ``compile_seconds``, ``train_seconds``, ``first_step_seconds``,
# ``trained_epochs``, ``device`` and the devices of :class:`RunInfo`.
Summary = dict[str, Any]

_SUMMARY_KEYS = ("epochs", "diverged_epoch", "best_member", "train_accuracy", "diverged")


def summary_from_json(record: Any, what: str = "summary.json") -> Summary:
    """``summary.json`` read back: per-member lists become (P,) arrays (NaN for non-finite)."""
    for key in _SUMMARY_KEYS:
        _field(record, key, what)
    size = len(record["diverged"])
    return {
        k: per_member(v) if isinstance(v, list) and len(v) == size and k != "diverged_epoch" else v
        for k, v in record.items()
    }
