"""Train LeNet (D2L 6.6) -- one model or a population -- from a config file.

    python scripts/train.py --config configs/lenet.py --workdir runs/lenet
    python scripts/train.py --config configs/lenet.py --config.optimizer.learning_rate=0.5 \\
        --config.num_epochs=3 --workdir runs/lenet_lr05

Re-running with the same ``--workdir`` resumes from its last checkpoint. Errors are one line
(``error: ...``); see :mod:`cnnjax.train.cli` for the exit statuses.
"""

import time

_STARTED = time.perf_counter()  # before the imports: start-up includes importing JAX

import sys  # noqa: E402

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from cnnjax.train import cli  # noqa: E402

# Unlocked, with new keys accepted, so that a misspelt override reaches the config validation
# (which names the key and the valid ones) instead of failing inside flag parsing.
_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Training config file (configs/*.py).",
    lock_config=False,
    accept_new_attributes=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and plots.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        # Orbax logs every checkpoint at INFO, which buries the per-epoch lines.
        logging.set_verbosity(logging.WARNING)
    sys.exit(cli.run(_CONFIG.value, _WORKDIR.value, started=_STARTED))


if __name__ == "__main__":
    try:
        cli.check_args(sys.argv)
    except cli.ConfigError as e:
        sys.exit(cli.fail(str(e), cli.USAGE_ERROR))
    app.run(main)
