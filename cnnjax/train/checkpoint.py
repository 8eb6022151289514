"""Per-epoch checkpoints with Orbax: atomic, synchronous, resumable.

Each checkpoint is a directory ``<workdir>/checkpoints/<epoch>`` holding the population's
:class:`~cnnjax.train.state.TrainState` and a JSON record (the epoch and the metrics history).
Orbax writes into a temporary directory and renames it when complete, so a run killed while saving
leaves the previous checkpoint as the latest one (leftover temporary directories are cleaned up
when the directory is next opened). Saving is synchronous: when :func:`save` returns the epoch is
on disk, which is what makes a SIGKILLed run resume exactly.
"""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp

from cnnjax.train.state import TrainState

__all__ = ["checkpoint_dir", "latest_epoch", "open_manager", "restore", "save"]

# The epoch in progress and the last good one, plus one more for safety.
_MAX_TO_KEEP = 3


def checkpoint_dir(workdir: str | os.PathLike) -> str:
    """Where the checkpoints of a run in ``workdir`` live (an absolute path)."""
    return os.path.join(os.path.abspath(workdir), "checkpoints")


def open_manager(workdir: str | os.PathLike, *, read_only: bool = False) -> ocp.CheckpointManager:
    """A synchronous checkpoint manager for ``workdir`` (created unless ``read_only``)."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=_MAX_TO_KEEP,
        create=not read_only,
        read_only=read_only,
        enable_async_checkpointing=False,
        cleanup_tmp_directories=not read_only,
    )
    return ocp.CheckpointManager(
        checkpoint_dir(workdir), options=options, item_names=("state", "meta")
    )


def latest_epoch(manager: ocp.CheckpointManager) -> int | None:
    """The epoch of the newest complete checkpoint, or None."""
    return manager.latest_step()


def save(
    manager: ocp.CheckpointManager, epoch: int, state: TrainState, meta: dict[str, Any]
) -> None:
    """Writes ``state`` and the JSON-serialisable ``meta`` as checkpoint ``epoch``; returns once
    the checkpoint is complete on disk."""
    manager.save(
        epoch,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
    )
    manager.wait_until_finished()


def restore(
    manager: ocp.CheckpointManager, target: TrainState, epoch: int | None = None
) -> tuple[int, TrainState, dict[str, Any]]:
    """Loads checkpoint ``epoch`` (default: the latest) into the structure of ``target``.

    ``target`` is a state of the same config (e.g. freshly created); its static fields
    (``apply_fn``, ``tx``) are kept and its arrays give the shapes, dtypes and placement.

    Raises:
      FileNotFoundError: there is no such checkpoint.
    """
    epoch = manager.latest_step() if epoch is None else epoch
    if epoch is None or epoch not in manager.all_steps():
        raise FileNotFoundError(
            f"restore: no checkpoint {'at all' if epoch is None else f'for epoch {epoch}'} "
            f"in {manager.directory}"
        )
    restored = manager.restore(
        epoch,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()
        ),
    )
    return epoch, restored.state, restored.meta
