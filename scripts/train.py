"""Train LeNet (D2L 6.6) -- one model or a population -- from a config file.

    python scripts/train.py --config configs/lenet.py --workdir runs/lenet
    python scripts/train.py --config configs/lenet.py --config.optimizer.learning_rate=0.5 \\
        --config.num_epochs=3 --workdir runs/lenet_lr05

Re-running with the same ``--workdir`` resumes from its last checkpoint.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

import cnnjax.train

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
    try:
        cnnjax.train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except cnnjax.train.ConfigError as e:
        raise SystemExit(f"config error: {e}") from e
    except cnnjax.train.TrainingDiverged as e:
        raise SystemExit(f"training diverged: {e}") from e


def _check_overrides(argv: list[str]) -> None:
    # Before absl parses the flags: ml_collections meets an unknown section with a traceback.
    for arg in argv[1:]:
        if arg.startswith("--config."):
            try:
                cnnjax.train.check_override(arg[len("--config.") :].split("=", 1)[0])
            except cnnjax.train.ConfigError as e:
                raise SystemExit(f"config error: {e}") from e


if __name__ == "__main__":
    _check_overrides(sys.argv)
    app.run(main)
