"""Config-driven, compiled training of one LeNet or a population of them (D2L 6.6).

* :func:`train_and_evaluate` -- the one training loop (``scripts/train.py`` calls it);
  :func:`restore_model` -- a trained member's model, parameters, preprocessing and config.
* :func:`default_config`, :func:`resolve_config` -- the config schema and its validation;
  :func:`load_config_file` -- a ``configs/*.py`` file's ``get_config()``.
* :func:`set_up` / :class:`Setup` -- a run's devices, data, model and initial state;
  :func:`train_epochs`, :func:`make_epoch_runner` -- the loop's parts (for benchmarks, sweeps).
* :func:`create_population`, :class:`TrainState` -- the train state with a member axis.
* :func:`train_step`, :func:`eval_step` -- the pure one-model steps.
* :func:`run_sweep` -- a sweep over architectures and hyper-parameters, grouped into populations
  (``scripts/sweep.py``).
* :func:`population_map` -- one step over all members ("vmap" | "map" | "auto").
* :func:`make_train_epoch`, :func:`make_train_step`, :func:`make_eval_fn` -- the compiled programs.
* :class:`RunDir` -- the run directory's one door (``RunDir(path, read_only=True)`` reads a run);
  the schemas of its files in :mod:`cnnjax.train.runfiles`; :class:`TensorBoardWriter`, a run's
  event files (:mod:`cnnjax.train.tensorboard`); the errors of :mod:`cnnjax.train.errors`.

Names are imported on first use, so a config file's ``from cnnjax.train import default_config``
loads the schema alone, not the trainer, Orbax or TensorBoard's writer.
"""

import importlib

# Public name -> the module that defines it.
_EXPORTS = {
    "ConfigError": "errors",
    "ConfigTypeError": "errors",
    "DataError": "errors",
    "RunDirError": "errors",
    "TrainingDiverged": "errors",
    "WriteError": "errors",
    "check_override": "config",
    "default_config": "config",
    "load_config_file": "config",
    "resolve_config": "config",
    "member_hyperparams": "config",
    "member_model": "config",
    "make_optimizer": "optim",
    "population_map": "population",
    "resolve_strategy": "population",
    "make_eval_fn": "programs",
    "make_train_epoch": "programs",
    "make_train_step": "programs",
    "RunDir": "rundir",
    "RunFileError": "runfiles",
    "TensorBoardWriter": "tensorboard",
    "Setup": "setup",
    "set_up": "setup",
    "make_run_mesh": "setup",
    "TrainState": "state",
    "create_population": "state",
    "member": "state",
    "eval_step": "steps",
    "train_step": "steps",
    "make_epoch_runner": "loop",
    "train_epochs": "loop",
    "RestoredModel": "trainer",
    "restore_model": "trainer",
    "train_and_evaluate": "trainer",
    "run_sweep": "sweep",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cnnjax.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"cnnjax.train.{_EXPORTS[name]}"), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
