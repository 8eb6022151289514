"""The run directory: the one door through which a run's files are written and read.

A run's ``workdir`` holds:

* ``checkpoints/<epoch>``: Orbax checkpoints (epoch 0 is the initial state). Each carries the
  population's :class:`~cnnjax.train.state.TrainState`, its record
  (:class:`~cnnjax.train.runfiles.CheckpointMeta`: the epoch, the metrics history, the run's
  identity, with a checksum of its own) and a SHA-256 of every saved array. The checkpoint is
  the record of the run; every other file can be rebuilt from it.
* ``config.json``: the resolved config (every key, per-member seeds and learning rates);
* ``run.json``: what the config does not fix (:class:`~cnnjax.train.runfiles.RunInfo`);
* ``metrics.jsonl`` / ``metrics.csv``: one row per (epoch, member), appended every epoch;
* ``learning_curves.png``: the book's figure, one curve per member;
* ``summary.json``: final per-member metrics, throughput and timings
  (:data:`~cnnjax.train.runfiles.Summary`);
* ``tensorboard/``: TensorBoard event files, one run per member
  (:mod:`cnnjax.train.tensorboard`), and ``jax.profiler`` traces;
* ``.lock``: the pid of the trainer holding the directory (the lock itself is a ``flock`` on
  the directory).

Each file has one schema in :mod:`cnnjax.train.runfiles` and one writer and one reader here:
scripts and tests read a run through :class:`RunDir` (``RunDir(path, read_only=True)``), never
its JSON. Writes are atomic (temporary file + rename; Orbax renames a finished checkpoint into
place), except the per-epoch metrics appends, which a resumed run rebuilds from its checkpoint;
so a killed run leaves whole files and its previous checkpoint. Files get the user's umask.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from cnnjax.train.errors import RunDirError, WriteError
from cnnjax.train.runfiles import (
    CheckpointMeta,
    Identity,
    RunFileError,
    RunInfo,
    Summary,
    digest,
    summary_from_json,
    to_json,
)

__all__ = ["Checkpoint", "RunDir"]

# The files a run writes besides checkpoints/ (a directory holding one of them, but no
# checkpoints, is not a run's and is not written into).
RUN_FILES = (
    "config.json",
    "run.json",
    "metrics.jsonl",
    "metrics.csv",
    "learning_curves.png",
    "summary.json",
)

# The epoch in progress and the last good one, plus one more to fall back on.
_MAX_TO_KEEP = 3


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
    return {
        jax.tree_util.keystr(path): digest(_host(leaf))
        for path, leaf in jax.tree_util.tree_leaves_with_path(state)
    }


class Checkpoint(NamedTuple):
    """A restored checkpoint: its ``epoch``, ``state`` and ``meta`` (:class:`CheckpointMeta`)."""

    epoch: int
    state: Any
    meta: CheckpointMeta


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
        # Reading a run starts no JAX backend; only a trainer asks which process it is.
        self.primary = True if read_only else jax.process_index() == 0
        self._check_path()
        if read_only:
            if not os.path.isdir(self.checkpoint_dir):
                raise RunDirError(f"{self.path} holds no run (no checkpoints/ directory)")
            return
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as e:
            raise RunDirError(f"cannot use workdir {self.path}: {e.strerror}") from e
        if self.primary:
            self._check_not_foreign()
            self._acquire_lock()

    # -- lifetime ------------------------------------------------------------------------------

    def _check_path(self) -> None:
        """One clear line for whatever stands where the run's directories should be."""
        if os.path.islink(self.path) and not os.path.exists(self.path):
            raise RunDirError(
                f"workdir {self.path} is a symbolic link to {os.readlink(self.path)!r}, which "
                f"does not exist; create its target or choose another --workdir"
            )
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise RunDirError(f"workdir {self.path} is a file, not a directory; choose another")
        for sub in ("checkpoints", "damaged", "tensorboard"):
            where = os.path.join(self.path, sub)
            if os.path.lexists(where) and not os.path.isdir(where):
                raise RunDirError(
                    f"{where} is a file, but the run keeps a directory there; move it away or "
                    f"choose another --workdir"
                )
        lock = self.file(".lock")
        if os.path.lexists(lock) and (os.path.islink(lock) or not os.path.isfile(lock)):
            kind = "a symbolic link" if os.path.islink(lock) else "not a regular file"
            raise RunDirError(
                f"{lock} is {kind}; the run writes its trainer's pid there, so remove it "
                f"(nothing of the run is lost) or choose another --workdir"
            )

    def _check_not_foreign(self) -> None:
        """Refuses a directory that holds a run's file names but no run (never overwrite them)."""
        if os.path.isdir(self.checkpoint_dir):
            return
        found = [name for name in RUN_FILES if os.path.lexists(self.file(name))]
        if found:
            raise RunDirError(
                f"workdir {self.path} is not a cnnjax run (no checkpoints/) but holds "
                f"{', '.join(found)}, which a run would overwrite; choose an empty or new --workdir"
            )

    def _acquire_lock(self) -> None:
        # The lock is a flock on the directory itself: the kernel releases it when its holder
        # dies (a killed trainer's lock is taken over without clean-up), and, unlike a lock
        # file, it cannot be deleted or replaced under a running trainer. ``.lock`` only names
        # the holder, and is written by rename (a symbolic link there is never followed).
        try:
            self._lock_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as e:
            raise RunDirError(f"cannot use workdir {self.path}: {e.strerror}") from e
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise RunDirError(
                f"workdir {self.path} is in use by another trainer (pid {self._holder()}); "
                f"wait for it to finish or use another --workdir"
            ) from None
        self._write(".lock", lambda f: f.write(f"{os.getpid()}\n"))

    def _holder(self) -> str:
        try:
            fd = os.open(self.file(".lock"), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return "?"
        with os.fdopen(fd) as f:
            return f.read(64).strip() or "?"

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

    def _write_json(self, name: str, value: Any) -> None:
        self._write(name, lambda f: f.write(json.dumps(to_json(value), indent=2) + "\n"))

    def _read_json(self, name: str) -> Any:
        path = self.file(name)
        try:
            with open(path) as f:
                return json.load(f)
        except FileNotFoundError:
            raise RunFileError(f"{path} does not exist; the run has not written it (yet)") from None
        except (OSError, ValueError) as e:
            raise RunFileError(f"{path} cannot be read: {_first_line(e)}") from e

    def write_config(self, config: Any) -> None:
        """``config.json``: the resolved config (a ``ConfigDict`` or mapping)."""
        self._write_json("config.json", config.to_dict() if hasattr(config, "to_dict") else config)

    def read_config(self) -> Any:
        """``config.json`` as a resolved, locked ``ConfigDict``.

        Raises:
          RunFileError: the file is missing or unreadable; ConfigError: it is not a valid config.
        """
        from cnnjax.train.config import resolve_config  # the schema sits above the run files

        return resolve_config(self._read_json("config.json"))

    def write_info(self, info: RunInfo) -> None:
        """``run.json`` (see :class:`~cnnjax.train.runfiles.RunInfo`)."""
        self._write_json("run.json", info.to_json())

    def read_info(self) -> RunInfo:
        return RunInfo.from_json(self._read_json("run.json"), self.file("run.json"))

    def write_summary(self, summary: Summary) -> None:
        """``summary.json`` (see :data:`~cnnjax.train.runfiles.Summary`)."""
        self._write_json("summary.json", summary)

    def read_summary(self) -> Summary:
        """``summary.json``, per-member values as (P,) arrays (NaN where non-finite)."""
        return summary_from_json(self._read_json("summary.json"), self.file("summary.json"))

    def write_metrics(self, rows: Sequence[dict[str, Any]]) -> None:
        """Rewrites ``metrics.jsonl`` and ``metrics.csv`` from ``rows`` (one per epoch and
        member, :func:`~cnnjax.train.runfiles.metric_rows`): how a resumed run rebuilds them
        from its checkpoint's history."""
        rows = [to_json(r) for r in rows]
        self._write("metrics.jsonl", lambda f: f.writelines(json.dumps(r) + "\n" for r in rows))
        self._write("metrics.csv", lambda f: _write_csv(f, rows, header=True))

    def append_metrics(self, rows: Sequence[dict[str, Any]]) -> None:
        """Appends one epoch's ``rows`` to ``metrics.jsonl`` and ``metrics.csv``.

        Appending is not atomic; a run killed mid-append is rebuilt whole from its checkpoint
        when it resumes (:meth:`write_metrics`). Rows with other columns than the file's (a run
        resumed with ``per_example_grads`` turned on) rebuild the files with every column.
        """
        if not self.primary:
            return
        rows = [to_json(r) for r in rows]
        if rows and self._csv_header() not in (None, list(rows[0])):
            self.write_metrics(self.read_metrics() + rows)
            return
        for name, write in (
            ("metrics.jsonl", lambda f: f.writelines(json.dumps(r) + "\n" for r in rows)),
            ("metrics.csv", lambda f: _write_csv(f, rows, header=f.tell() == 0)),
        ):
            path = self.file(name)
            try:
                with open(path, "a", newline="") as f:
                    write(f)
            except OSError as e:
                raise WriteError(
                    e.errno, f"could not write {path}: {e.strerror}{self._last_good()}"
                ) from e

    def _csv_header(self) -> list[str] | None:
        try:
            with open(self.file("metrics.csv"), newline="") as f:
                return next(csv.reader(f), None)
        except FileNotFoundError:
            return None

    def read_metrics(self) -> list[dict[str, Any]]:
        """``metrics.jsonl``: one dict per (epoch, member), in the order written."""
        path = self.file("metrics.jsonl")
        try:
            with open(path) as f:
                return [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            raise RunFileError(f"{path} does not exist; the run has not written it (yet)") from None
        except (OSError, ValueError) as e:
            raise RunFileError(f"{path} cannot be read: {_first_line(e)}") from e

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

    def save(self, epoch: int, state: Any, meta: CheckpointMeta) -> None:
        """Writes checkpoint ``epoch``: ``state`` and its record ``meta`` plus a SHA-256 of every
        array; returns once it is complete on disk.

        Raises:
          WriteError: it could not be written; the previous checkpoint is intact.
        """
        record = dict(meta.to_json(), checksums=_checksums(state))
        manager = self._open_manager()
        try:
            manager.save(
                epoch,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(record)
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

    def _read_record(self, epoch: int, what: str) -> tuple[CheckpointMeta, Any]:
        """Checkpoint ``epoch``'s record and the checksums of its arrays."""
        try:
            record = (
                self._open_manager()
                .restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
                .meta
            )
        except Exception as e:  # noqa: BLE001 -- whatever Orbax raises, the record is unreadable
            raise RunFileError(f"{what} cannot be read ({_first_line(e)})") from e
        return CheckpointMeta.from_json(record, what), record.get("checksums")

    def read_meta(self, epoch: int) -> CheckpointMeta:
        """The record of checkpoint ``epoch``.

        Raises:
          RunFileError: it cannot be read, misses an entry or does not match its checksum.
        """
        return self._read_record(epoch, f"checkpoint {epoch}'s record in {self.checkpoint_dir}")[0]

    def restore(
        self, target: Any, check_identity: Callable[[Identity], None] | None = None
    ) -> Checkpoint | None:
        """The newest intact checkpoint, restored into the structure and placement of ``target``.

        A checkpoint whose record cannot be read or does not match its checksum, or whose arrays
        cannot be read or do not match theirs (bit flips, truncation, an edited history), is
        damaged: it is moved to ``damaged/<epoch>-<time>`` (never deleted), one warning line is
        logged, and the next older one is tried.

        Args:
          target: a state of the run's structure (e.g. freshly created).
          check_identity: called with each intact candidate's
            :class:`~cnnjax.train.runfiles.Identity` before its arrays are restored; it may
            raise (e.g. a :class:`RunDirError` for a run with another config).

        Returns:
          The :class:`Checkpoint`, or None if the workdir holds none.
        """
        for epoch in self.epochs():
            try:
                meta, checksums = self._read_record(epoch, "its record")
            except RunFileError as e:
                self._set_aside(epoch, str(e))
                continue
            if check_identity is not None:
                check_identity(meta.identity)
            try:
                restored = self._open_manager().restore(
                    epoch,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()
                    ),
                )
                state = restored.state
                damaged = _checksums(state) != checksums
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


def _write_csv(f: io.TextIOBase, rows: Sequence[dict[str, Any]], *, header: bool) -> None:
    if rows:
        columns = list(dict.fromkeys(k for row in rows for k in row))  # every column, in order
        writer = csv.DictWriter(f, fieldnames=columns)
        if header:
            writer.writeheader()
        writer.writerows(rows)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().split("\n")[0]
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__
