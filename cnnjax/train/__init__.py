"""Config-driven, compiled training of one LeNet or a population of them (D2L 6.6).

* :func:`train_and_evaluate` -- the one training loop (``scripts/train.py`` calls it).
* :func:`restore_model` -- a trained member's model, parameters and preprocessing.
* :func:`default_config`, :func:`resolve_config` -- the config schema and its validation;
  :func:`load_config_file` -- a ``configs/*.py`` file's ``get_config()``.
* :func:`create_population`, :class:`TrainState` -- the train state with a member axis.
* :func:`train_step`, :func:`eval_step` -- the pure one-model steps.
* :func:`population_map` -- one step over all members ("vmap" | "map" | "auto").
* :func:`make_train_epoch`, :func:`make_train_step`, :func:`make_eval_fn` -- the compiled programs.
* :class:`RunDir` -- the run directory's one door; the errors of :mod:`cnnjax.train.errors`.
"""

from cnnjax.train.config import check_override, default_config, load_config_file, resolve_config
from cnnjax.train.errors import (
    ConfigError,
    ConfigTypeError,
    DataError,
    RunDirError,
    TrainingDiverged,
    WriteError,
)
from cnnjax.train.optim import make_optimizer
from cnnjax.train.population import population_map, resolve_strategy
from cnnjax.train.programs import make_eval_fn, make_train_epoch, make_train_step
from cnnjax.train.rundir import RunDir
from cnnjax.train.state import TrainState, create_population, member
from cnnjax.train.steps import eval_step, train_step
from cnnjax.train.trainer import RestoredModel, restore_model, train_and_evaluate

__all__ = [
    "ConfigError",
    "ConfigTypeError",
    "DataError",
    "RestoredModel",
    "RunDir",
    "RunDirError",
    "TrainState",
    "TrainingDiverged",
    "WriteError",
    "check_override",
    "create_population",
    "default_config",
    "eval_step",
    "load_config_file",
    "make_eval_fn",
    "make_optimizer",
    "make_train_epoch",
    "make_train_step",
    "member",
    "population_map",
    "resolve_config",
    "resolve_strategy",
    "restore_model",
    "train_and_evaluate",
    "train_step",
]
