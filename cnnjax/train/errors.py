"""The errors a training run reports to its user as one line (the CLI prints ``error: <message>``).

Each message says what is wrong and how to fix it; none needs a traceback to be understood.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConfigTypeError",
    "DataError",
    "RunDirError",
    "TrainingDiverged",
    "WriteError",
]


class ConfigError(ValueError):
    """A config has an unknown key or an invalid value, or a model that does not fit the data."""


class ConfigTypeError(ConfigError, TypeError):
    """A config value has the wrong type (also a ``TypeError``)."""


class DataError(ValueError):
    """The data set asked for cannot be loaded (unknown name, missing or damaged files)."""


class RunDirError(ValueError):
    """The workdir cannot hold this run: unusable path, in use by another trainer, or holding
    checkpoints of a different run (other config or other data)."""


class WriteError(OSError):
    """A file of the run could not be written (disk full, read-only); the message names the file
    and the last good checkpoint."""


class TrainingDiverged(RuntimeError):
    """Training stopped because a member's loss or gradient became non-finite or exceeded the
    divergence bound (``config.max_loss_factor``)."""
