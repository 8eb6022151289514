"""The command line's edge: every user error becomes one line and an exit status.

``scripts/train.py`` only wires flags; this module checks what absl and ``ml_collections`` would
otherwise meet with a traceback (a config file that is missing, does not parse, has no
``get_config`` or returns something else; an override below an unknown section), runs
:func:`~cnnjax.train.trainer.train_and_evaluate`, and maps its errors to exit statuses:

* 0: done;
* 1: the run failed (diverged, a file could not be written); the last good checkpoint stays;
* 2: a usage error (config, data, model shape, devices, workdir);
* 130: interrupted (Ctrl-C); the run resumes with the same command.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import jax

from cnnjax.train.config import check_override, load_config_file
from cnnjax.train.errors import (
    ConfigError,
    DataError,
    RunDirError,
    TrainingDiverged,
    WriteError,
)
from cnnjax.train.parallel import DeviceError
from cnnjax.train.trainer import train_and_evaluate

__all__ = ["check_args", "load_config_file", "run"]

USAGE_ERROR, RUN_FAILED, INTERRUPTED = 2, 1, 130


def _config_path(argv: Sequence[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def check_args(argv: Sequence[str]) -> None:
    """Before absl parses ``argv``: the config file and the override sections.

    Raises:
      ConfigError: see :func:`load_config_file` and :func:`cnnjax.train.config.check_override`.
    """
    path = _config_path(argv)
    if path is not None:
        load_config_file(path)
    for arg in argv[1:]:
        if arg.startswith("--config."):
            check_override(arg[len("--config.") :].split("=", 1)[0])


def fail(message: str, status: int) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return status


def enable_compilation_cache() -> None:
    """Keeps compiled programs across runs in ``$CNNJAX_CACHE_DIR`` (default
    ``~/.cache/cnnjax/jax``), unless JAX's own ``JAX_COMPILATION_CACHE_DIR`` chose a place: the
    second run of a config then starts without compiling its programs again."""
    if jax.config.jax_compilation_cache_dir:
        return
    default = os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "cnnjax", "jax"
    )
    jax.config.update("jax_compilation_cache_dir", os.environ.get("CNNJAX_CACHE_DIR", default))
    # The default (1 s) skips LeNet's initialiser and evaluation, which compile in less.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)


def run(config: Any, workdir: str, *, started: float | None = None) -> int:
    """Runs ``train_and_evaluate`` and returns the process's exit status (see module doc).

    ``started``: ``time.perf_counter()`` at process start, for the start-up line."""
    enable_compilation_cache()
    try:
        train_and_evaluate(config, workdir, started=started)
    except (ConfigError, DataError, DeviceError, RunDirError) as e:
        return fail(str(e), USAGE_ERROR)
    except TrainingDiverged as e:
        return fail(f"training diverged: {e}", RUN_FAILED)
    except WriteError as e:
        return fail(e.strerror or str(e), RUN_FAILED)
    except KeyboardInterrupt:
        print(
            "\ninterrupted: the last completed epoch is checkpointed; run the same command to "
            "resume",
            file=sys.stderr,
            flush=True,
        )
        return INTERRUPTED
    return 0
