"""The command line's edge: every user error becomes one line and an exit status.

``scripts/train.py`` only calls :func:`main`. It loads the config file once (``--config=FILE`` or
``--config=FILE:ARG``), checks what absl and ``ml_collections`` would otherwise meet with a
traceback (a config file that is missing, does not parse, has no ``get_config``, raises or
returns something else; an override below an unknown section or of the wrong type; a missing
``--workdir``), runs :func:`~cnnjax.train.trainer.train_and_evaluate`, and maps its errors to exit
statuses:

* 0: done;
* 1: the run failed (diverged, a file could not be written); the last good checkpoint stays;
* 2: a usage error (flags, config, data, model shape, devices, workdir);
* 130: interrupted (Ctrl-C); the run resumes with the same command.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import jax
from absl import app, flags, logging
from ml_collections import config_flags

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

__all__ = ["main", "run"]

USAGE_ERROR, RUN_FAILED, INTERRUPTED = 2, 1, 130


def _split_config(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """The ``--config`` file (``FILE`` or ``FILE:ARG``) and ``argv`` without it."""
    path, rest, skip = None, [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        elif arg == "--config" and i + 1 < len(argv):
            path, skip = argv[i + 1], True
        else:
            rest.append(arg)
    return path, rest


def load_config(argv: Sequence[str]) -> tuple[Any, list[str]]:
    """The config of ``--config`` (its file run once) and the rest of ``argv``.

    Raises:
      ConfigError: no ``--config``, see :func:`~cnnjax.train.config.load_config_file`, or an
        override below an unknown section (:func:`~cnnjax.train.config.check_override`).
    """
    path, rest = _split_config(argv)
    if path is None:
        raise ConfigError("--config is required: a config file, e.g. --config=configs/lenet.py")
    config = load_config_file(path)
    for i, arg in enumerate(rest[1:], start=1):
        if arg.startswith("--config."):
            key, eq, value = arg[len("--config.") :].partition("=")
            if not eq and i + 1 < len(rest) and not rest[i + 1].startswith("-"):
                value = rest[i + 1]  # --config.key value
            check_override(key, value if eq or value else None)
    return config, rest


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
        return interrupted(
            "the last completed epoch is checkpointed; run the same command to resume"
        )
    return 0


def interrupted(what: str) -> int:
    """Says what a Ctrl-C left behind and returns 130; a second Ctrl-C no longer interrupts."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    print(f"\ninterrupted: {what}", file=sys.stderr, flush=True)
    return INTERRUPTED


def main(argv: Sequence[str], *, started: float | None = None) -> int:
    """The whole command line: ``train.py --config=FILE[:ARG] --workdir=DIR [--config.KEY=V]``.

    Returns the exit status (see the module docstring); nothing raises."""
    try:
        return _main(list(argv), started)
    except KeyboardInterrupt:
        return interrupted("before training started; nothing was written")


def _main(argv: list[str], started: float | None) -> int:
    try:
        config, argv = load_config(argv)
    except ConfigError as e:
        return fail(str(e), USAGE_ERROR)
    # Unlocked, with new keys accepted, so that a misspelt override reaches the config validation
    # (which names the key and the valid ones) instead of failing inside flag parsing.
    holder = config_flags.DEFINE_config_dict(
        "config",
        config,
        "The config file's ConfigDict.",
        lock_config=False,
        accept_new_attributes=True,
        sys_argv=argv,  # the overrides; --config=FILE is already consumed
    )
    workdir = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and plots.")

    def parse(args: list[str]) -> list[str]:
        try:
            return flags.FLAGS(args)
        except flags.Error as e:
            sys.exit(fail(f"{e}; see --help", USAGE_ERROR))

    def app_main(rest: list[str]) -> int:
        if len(rest) > 1:
            return fail(f"unexpected arguments {rest[1:]}; flags are --name=value", USAGE_ERROR)
        if workdir.value is None:
            return fail(
                "--workdir is required: the run's directory, e.g. --workdir=runs/lenet",
                USAGE_ERROR,
            )
        if not flags.FLAGS["verbosity"].present:
            # Orbax logs every checkpoint at INFO, which buries the per-epoch lines.
            logging.set_verbosity(logging.WARNING)
        return run(holder.value, workdir.value, started=started)

    try:
        app.run(app_main, argv=argv, flags_parser=parse)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else USAGE_ERROR)
    return 0
