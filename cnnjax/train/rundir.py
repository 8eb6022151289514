"""The run directory: the one door through which a run's files are written and read.

A run's ``workdir`` holds:

* ``checkpoints/<epoch>``: Orbax checkpoints (epoch 0 is the initial state). Each carries the
  population's :class:`~cnnjax.train.state.TrainState` and a JSON record: the epoch, the metrics
  history, the run's identity (the resolved config and the fingerprint of the data trained on)
  and a SHA-256 of every saved array. The checkpoint is the record of the run; every other file
  can be rebuilt from it.
* ``config.json``: the resolved config (every key, per-member seeds and learning rates);
* ``run.json``: what the config does not fix (data fingerprint, input shape, steps per epoch,
  preprocessing, devices);
* ``metrics.jsonl`` / ``metrics.csv``: one record per (epoch, member);
* ``learning_curves.png``: the book's figure, one curve per member;
* ``summary.json``: final per-member metrics, throughput and timings;
* ``.lock``: held (``flock``) by the trainer using the directory.

Writes are atomic (temporary file + rename; Orbax renames a finished checkpoint into place), so
a killed run leaves whole files and its previous checkpoint. Files get the user's umask.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from cnnjax.train.errors import RunDirError, WriteError

__all__ = ["Checkpoint", "RunDir", "to_json"]

# The epoch in progress and the last good one, plus one more to fall back on.
_MAX_TO_KEEP = 3


def to_json(value: Any) -> Any:
    """``value`` as plain JSON data: numpy/JAX arrays and scalars become lists and numbers,
    tuples lists, and non-finite floats ``None`` (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, (np.ndarray, jax.Array, np.generic)):
        return to_json(np.asarray(value).tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _host(leaf: Any) -> np.ndarray:
    """The whole array on this host (gathered from every process when it is split across them)."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
    return np.asarray(jax.device_get(leaf))


def _checksums(state: Any) -> dict[str, str]:
    """SHA-256 of every array of ``state`` (with its dtype and shape), keyed by its tree path.

    Independent of how the arrays are sharded, so a run resumed on another mesh verifies."""
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        a = _host(leaf)
        h = hashlib.sha256(f"{a.dtype}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
        out[jax.tree_util.keystr(path)] = h.hexdigest()
    return out


class Checkpoint:
    """A restored checkpoint: ``epoch``, ``state`` and ``meta`` (the JSON record)."""

    def __init__(self, epoch: int, state: Any, meta: dict[str, Any]):
        self.epoch, self.state, self.meta = epoch, state, meta


class RunDir:
    """Owns a run's workdir (see the module docstring for its files).

    Args:
      workdir: the directory; created unless ``read_only``. Must not be empty (an empty
        ``--workdir`` would write the run into the current directory).
      read_only: open an existing run to read it (no lock, nothing created).
      log: where one-line warnings go (e.g. a damaged checkpoint was skipped).

    Raises:
      RunDirError: empty path, a file in the way, a directory that cannot be created or
        written, another trainer holding the lock, or (``read_only``) no run there.

    Use as a context manager, or call :meth:`close`, to release the lock.

    In a multi-process run every process opens the run directory and takes part in checkpoint
    writes (Orbax coordinates them); only process 0 holds the lock and writes the other files.
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        read_only: bool = False,
        log: Callable[[str], None] = print,
    ):
        if not str(workdir).strip():
            raise RunDirError(
                "the workdir is empty; give a directory for the run, e.g. --workdir=runs/lenet"
            )
        self.path = os.path.abspath(workdir)
        self.read_only = read_only
        self.log = log
        self._mode = 0o666 & ~_umask()
        self._lock_fd: int | None = None
        self._manager: ocp.CheckpointManager | None = None
        self.primary = jax.process_index() == 0
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise RunDirError(f"workdir {self.path} is a file, not a directory; choose another")
        if read_only:
            if not os.path.isdir(self.checkpoint_dir):
                raise RunDirError(f"{self.path} holds no run (no checkpoints/ directory)")
            return
        try:
            os.makedirs(self.path, exist_ok=True)
            if self.primary:
                lock = os.path.join(self.path, ".lock")
                self._lock_fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise RunDirError(f"cannot use workdir {self.path}: {e.strerror}") from e
        if self.primary:
            self._acquire_lock()

    # -- lifetime ------------------------------------------------------------------------------

    def _acquire_lock(self) -> None:
        # flock is released by the kernel when its holder dies, so a stale lock of a killed
        # trainer is taken over without any clean-up.
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            with contextlib.suppress(OSError):
                holder = os.pread(self._lock_fd, 64, 0).decode().strip()
            os.close(self._lock_fd)
            self._lock_fd = None
            raise RunDirError(
                f"workdir {self.path} is in use by another trainer (pid {holder or '?'}); "
                f"wait for it to finish or use another --workdir"
            ) from None
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, f"{os.getpid()}\n".encode(), 0)

    def close(self) -> None:
        self.close_manager()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- plain files ---------------------------------------------------------------------------

    @property
    def checkpoint_dir(self) -> str:
        return os.path.join(self.path, "checkpoints")

    def file(self, name: str) -> str:
        """The absolute path of the run's file ``name`` (e.g. ``"metrics.jsonl"``)."""
        return os.path.join(self.path, name)

    def _write(self, name: str, write: Callable[[io.TextIOBase], None], *, binary=False) -> None:
        if not self.primary:
            return
        path = self.file(name)
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=self.path, prefix=f".{name}.tmp-")
            os.fchmod(fd, self._mode)  # mkstemp creates 0600; a run's files follow the umask
            with os.fdopen(fd, "wb" if binary else "w", newline=None if binary else "") as f:
                write(f)
            os.replace(tmp, path)
        except OSError as e:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.remove(tmp)
            raise WriteError(
                e.errno, f"could not write {path}: {e.strerror}{self._last_good()}"
            ) from e

    def write_json(self, name: str, value: Any) -> None:
        """Writes ``value`` (see :func:`to_json`) as indented JSON to the run's file ``name``."""
        self._write(name, lambda f: f.write(json.dumps(to_json(value), indent=2) + "\n"))

    def read_json(self, name: str) -> Any:
        with open(self.file(name)) as f:
            return json.load(f)

    def write_metrics(self, records: Sequence[dict[str, Any]]) -> None:
        """Writes ``metrics.jsonl`` and ``metrics.csv``: one record per (epoch, member)."""
        records = [to_json(r) for r in records]
        self._write("metrics.jsonl", lambda f: f.writelines(json.dumps(r) + "\n" for r in records))

        def write_csv(f: io.TextIOBase) -> None:
            if records:
                writer = csv.DictWriter(f, fieldnames=list(records[0]))
                writer.writeheader()
                writer.writerows(records)

        self._write("metrics.csv", write_csv)

    def write_figure(self, name: str, figure: Any) -> None:
        """Saves a matplotlib ``figure`` as the run's file ``name`` (format from its suffix)."""
        fmt = os.path.splitext(name)[1].lstrip(".")
        self._write(name, lambda f: figure.savefig(f, format=fmt, dpi=120), binary=True)

    # -- checkpoints ---------------------------------------------------------------------------

    def _open_manager(self) -> ocp.CheckpointManager:
        if self._manager is None:
            options = ocp.CheckpointManagerOptions(
                max_to_keep=_MAX_TO_KEEP,
                create=not self.read_only,
                read_only=self.read_only,
                enable_async_checkpointing=False,
                cleanup_tmp_directories=not self.read_only,
            )
            self._manager = ocp.CheckpointManager(
                self.checkpoint_dir, options=options, item_names=("state", "meta")
            )
        return self._manager

    def _last_good(self) -> str:
        if self._manager is None:
            return ""
        latest = self._manager.latest_step()
        return "" if latest is None else f"; the last good checkpoint is epoch {latest}"

    def epochs(self) -> list[int]:
        """Epochs with a complete checkpoint, newest first."""
        if not os.path.isdir(self.checkpoint_dir):
            return []
        return sorted(self._open_manager().all_steps(), reverse=True)

    def save(self, epoch: int, state: Any, meta: dict[str, Any]) -> None:
        """Writes checkpoint ``epoch`` (``state`` and the JSON ``meta`` plus the arrays'
        checksums); returns once it is complete on disk.

        Raises:
          WriteError: it could not be written; the previous checkpoint is intact.
        """
        meta = dict(to_json(meta), checksums=_checksums(state))
        manager = self._open_manager()
        try:
            manager.save(
                epoch,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
                ),
                force=True,
            )
            manager.wait_until_finished()
        except (OSError, ValueError, RuntimeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).split("\n")[0]
            raise WriteError(
                getattr(e, "errno", None) or 5,
                f"could not write checkpoint {epoch} in {self.checkpoint_dir}: {reason}"
                f"{self._last_good()}",
            ) from e

    def read_meta(self, epoch: int) -> dict[str, Any]:
        """The JSON record of checkpoint ``epoch`` (raises if it cannot be read)."""
        restored = self._open_manager().restore(
            epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
        )
        return restored.meta

    def restore(
        self, target: Any, check_meta: Callable[[dict[str, Any]], None] | None = None
    ) -> Checkpoint | None:
        """The newest intact checkpoint, restored into the structure and placement of ``target``.

        A checkpoint that cannot be read, or whose arrays do not match the checksums saved with
        it (bit flips, truncation), is damaged: it is moved to ``damaged/<epoch>-<time>`` (never
        deleted), one warning line is logged, and the next older one is tried.

        Args:
          target: a state of the run's structure (e.g. freshly created).
          check_meta: called with each candidate's meta before its arrays are restored; it may
            raise (e.g. a :class:`RunDirError` for a run with another config).

        Returns:
          The :class:`Checkpoint`, or None if the workdir holds none.
        """
        for epoch in self.epochs():
            try:
                meta = self.read_meta(epoch)
            except Exception as e:  # noqa: BLE001 -- any failure to read means damage
                self._set_aside(epoch, f"its record cannot be read ({_first_line(e)})")
                continue
            if check_meta is not None:
                check_meta(meta)
            try:
                restored = self._open_manager().restore(
                    epoch,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()
                    ),
                )
                state = restored.state
                damaged = _checksums(state) != meta.get("checksums")
                reason = "its arrays do not match their checksums"
            except Exception as e:  # noqa: BLE001
                damaged, reason = True, f"its arrays cannot be read ({_first_line(e)})"
            if damaged:
                self._set_aside(epoch, reason)
                continue
            return Checkpoint(epoch, state, meta)
        return None

    def _set_aside(self, epoch: int, reason: str) -> None:
        if self.read_only or jax.process_count() > 1:
            raise RunDirError(
                f"checkpoint {epoch} in {self.checkpoint_dir} is damaged: {reason}; resume the "
                f"run with the trainer in one process (it sets the damaged checkpoint aside and "
                f"falls back to the newest intact one)"
            )
        damaged = os.path.join(self.path, "damaged", f"{epoch}-{time.strftime('%Y%m%d-%H%M%S')}")
        self.close_manager()
        os.makedirs(os.path.dirname(damaged), exist_ok=True)
        shutil.move(os.path.join(self.checkpoint_dir, str(epoch)), damaged)
        self.log(
            f"warning: checkpoint {epoch} is damaged ({reason}); moved to {damaged}, "
            f"falling back to the previous one"
        )

    def close_manager(self) -> None:
        if self._manager is not None:
            self._manager.close()
            self._manager = None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().split("\n")[0]
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__
