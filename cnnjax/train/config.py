"""The training configuration: schema, defaults and validation (D2L 6.6's recipe as data).

A run is described by one ``ml_collections.ConfigDict``. :func:`default_config` gives every key with
its default (the book's LeNet recipe); the files in ``configs/`` start from it and change what they
need. :func:`resolve_config` is the one place a config is checked, *before anything is built or
compiled*: the user's values are written into a locked copy of the defaults, so ``ConfigDict``
itself refuses unknown keys and values of the wrong type (the message is rephrased to name the
key, what was expected and what was received); the domain rules follow. Everything below the edge
(the state, the compiled programs) takes the resolved config or plain values and never resolves
again.

Keys (defaults in :func:`default_config`):

* ``seed``: the data-order seed (epoch ``e`` is shuffled with ``fold_in(key(seed), e)``).
* ``num_epochs``, ``batch_size``, ``eval_batch_size`` (evaluation batches never exceed the split).
* ``loop``: ``"scan"`` (each epoch is one compiled ``lax.scan``; the default) or ``"step"`` (a
  jitted step called from a Python loop, so a progress bar can count steps).
* ``data.{name, source, dir, normalize, train_limit, test_limit, validation_size,
  fallback_epochs, random_flip, random_shift}``: a limit keeps a fixed pseudo-random subset of
  that many examples (the same for every seed); 0 means all. ``validation_size`` examples are
  held out of the training split (again a fixed subset): each epoch is then evaluated on them,
  and the test split only once, at the end. ``fallback_epochs`` (see
  :mod:`cnnjax.train.inputs`) decides how many epochs a run trains when ``source="auto"``
  falls back to the small bundled set. ``random_flip`` (mirror left-right with probability 1/2)
  and ``random_shift`` (translate by up to that many pixels, black border) augment every
  training batch (:func:`cnnjax.data.augment`); evaluation never.
* ``model.*``: the fields of :class:`cnnjax.models.LeNet` (see ``LeNet.default_config()``).
* ``optimizer.{name, learning_rate, momentum, weight_decay, schedule, warmup_epochs}``.
* ``population.{size, seeds, learning_rates, momentums, weight_decays, strategy,
  freeze_diverged}``: ``size`` members trained in one compiled step; empty ``seeds`` means
  ``seed + i`` for member ``i`` and empty ``learning_rates`` means ``optimizer.learning_rate`` for
  every member. ``momentums`` and ``weight_decays`` likewise give each member its own
  ``optimizer.momentum`` (optimizer "momentum" only) and ``optimizer.weight_decay``; empty means
  the optimizer's value for every member (:func:`member_hyperparams` gives the values per member).
  ``channels`` and ``dense`` give each member its own widths (a sequence of ints per member, each
  at most ``model``'s, which are then the widest member's): the members are *packed*, each
  embedded in the model with zeros and trained with its padding masked out of the gradient, so it
  learns what the narrower LeNet would (:mod:`cnnjax.models.packing`; :func:`member_model`).
* ``population.halving.{rungs, keep}``: successive halving inside the population. Members with
  equal per-member hyper-parameters are seeds of one *point*; after the evaluation of each epoch
  in ``rungs`` (strictly increasing, each in ``[1, num_epochs)``), the still-active points are
  ranked by their members' mean evaluation accuracy and only the best
  ``max(1, ceil(keep * active))`` continue; the others' members stop (frozen; under strategy
  "map" their steps are skipped, under "vmap" computed and discarded). ``keep`` is in (0, 1),
  default 0.5; empty ``rungs`` (the default) is off. See :func:`cnnjax.train.loop.halving`.
* ``max_loss_factor``: a member has diverged once a minibatch loss exceeds this multiple of its
  loss at initialisation (or is non-finite); 0 keeps only the non-finite test. See
  :func:`cnnjax.train.steps.train_step`.
* ``platform``: ``"auto"`` | ``"cpu"`` | ``"gpu"`` | ``"tpu"``, applied before JAX initialises a
  backend (see :func:`cnnjax.train.parallel.select_platform`).
* ``mesh.{population, data}``: devices along the member axis and along the batch axis; 0 is
  automatic (every device is used; see :func:`cnnjax.train.parallel.make_mesh`).
* ``distributed.{coordinator_address, num_processes, process_id}``: ``""`` is one process;
  ``"auto"`` lets JAX detect a TPU pod or SLURM job; else ``HOST:PORT`` of process 0.
* ``per_example_grads``: also log per-example gradient-norm statistics (costs a ``vmap(grad)``).
* ``evaluate_test``: evaluate the final state on the test set (the default). ``False`` never
  touches the test set -- for screening runs chosen on validation (needs
  ``data.validation_size``); the summary then reports the validation split.
* ``profile_steps``: N > 0 writes a ``jax.profiler`` trace of N training steps (run on a copy of
  the initial state, so training is unaffected) under ``<workdir>/tensorboard``, for TensorBoard's
  profile tab or Perfetto; 0 (default) none.
* ``progress``: show a tqdm progress bar.
"""

from __future__ import annotations

import difflib
import importlib.util
import math
import os
from collections.abc import Mapping
from numbers import Integral, Real
from typing import Any

import ml_collections

from cnnjax import data
from cnnjax.models import LeNet
from cnnjax.train.errors import ConfigError, ConfigTypeError
from cnnjax.train.optim import OPTIMIZERS, SCHEDULES
from cnnjax.train.parallel import PLATFORMS
from cnnjax.train.population import STRATEGIES

__all__ = [
    "FALLBACK_EPOCHS",
    "LOOPS",
    "ConfigError",
    "ConfigTypeError",
    "check_override",
    "default_config",
    "load_config_file",
    "member_hyperparams",
    "member_model",
    "resolve_config",
]

# jax.random.key takes a uint32 seed.
_MAX_SEED = 2**32 - 1

# How an epoch is driven: one compiled lax.scan, or a jitted step called from Python.
LOOPS = ("scan", "step")

# When source "auto" falls back to the small bundled set: train as many SGD steps as the data set
# asked for would have taken ("match_steps"), or exactly config.num_epochs ("as_configured").
FALLBACK_EPOCHS = ("match_steps", "as_configured")


def default_config() -> ml_collections.ConfigDict:
    """Every key the trainer reads, with the book's recipe (D2L 6.6) as defaults.

    The book: LeNet with sigmoid and average pooling, Xavier-uniform init, minibatch SGD with
    learning rate 0.9, batch 256, 10 epochs on Fashion-MNIST. The returned dict is unlocked; the
    type of each existing field is enforced by ``ConfigDict`` on assignment.
    """
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_epochs = 10
    c.batch_size = 256
    c.eval_batch_size = 1024
    c.loop = "scan"

    c.data = ml_collections.ConfigDict()
    c.data.name = "fashion_mnist"
    c.data.source = "auto"
    c.data.dir = ""
    c.data.normalize = "unit"
    c.data.train_limit = 0
    c.data.test_limit = 0
    c.data.validation_size = 0
    c.data.random_flip = False
    c.data.random_shift = 0
    c.data.fallback_epochs = "match_steps"

    c.model = ml_collections.ConfigDict(LeNet.default_config())

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.9
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 0.0
    c.optimizer.schedule = "constant"
    c.optimizer.warmup_epochs = 0

    c.population = ml_collections.ConfigDict()
    c.population.size = 1
    c.population.seeds = ()
    c.population.learning_rates = ()
    c.population.momentums = ()
    c.population.weight_decays = ()
    c.population.channels = ()
    c.population.dense = ()
    c.population.strategy = "auto"
    c.population.freeze_diverged = True
    c.population.halving = ml_collections.ConfigDict()
    c.population.halving.rungs = ()
    c.population.halving.keep = 0.5

    c.max_loss_factor = 10.0

    c.platform = "auto"
    c.mesh = ml_collections.ConfigDict()
    c.mesh.population = 0
    c.mesh.data = 0
    c.distributed = ml_collections.ConfigDict()
    c.distributed.coordinator_address = ""
    c.distributed.num_processes = 1
    c.distributed.process_id = 0
    c.per_example_grads = False
    c.evaluate_test = True
    c.profile_steps = 0
    c.progress = True
    return c


def load_config_file(path: str) -> ml_collections.ConfigDict:
    """``get_config()`` of the Python config file ``path`` (the command line's ``--config``;
    a config file may also start from a sibling's, e.g. ``configs/lenet_modern.py``).

    ``FILE:ARG`` (``ml_collections``' form) calls ``get_config(ARG)`` with the string ``ARG``,
    for config files that take a parameter.

    Raises:
      ConfigError: the file is missing, cannot be imported, has no ``get_config``, it raises,
        or it does not return a ``ConfigDict``.
    """
    arg = None
    if not os.path.isfile(path) and ":" in path and os.path.isfile(path.rsplit(":", 1)[0]):
        path, arg = path.rsplit(":", 1)
    if not os.path.isfile(path):
        raise ConfigError(f"--config={path}: no such file (configs/*.py holds the shipped ones)")
    spec = importlib.util.spec_from_file_location("_cnnjax_config", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise ConfigError(f"--config={path}: syntax error on line {e.lineno}: {e.msg}") from e
    except Exception as e:  # noqa: BLE001 -- whatever the file raises, report it in one line
        raise ConfigError(f"--config={path}: importing it failed: {type(e).__name__}: {e}") from e
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise ConfigError(
            f"--config={path}: defines no get_config(); a config file returns its ConfigDict "
            f"from get_config()"
        )
    try:
        config = get_config() if arg is None else get_config(arg)
    except Exception as e:  # noqa: BLE001 -- likewise
        call = "get_config()" if arg is None else f"get_config({arg!r})"
        raise ConfigError(f"--config={path}: {call} raised {type(e).__name__}: {e}") from e
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(
            f"--config={path}: get_config() returned {type(config).__name__}, not an "
            f"ml_collections.ConfigDict"
        )
    return config


def _type_name(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _is_subsequence(short: str, long: str) -> bool:
    chars = iter(long)
    return all(c in chars for c in short)


def _unknown_key_message(path: str, key: str, known: list[str]) -> str:
    where = f"config.{path}" if path else "config"
    msg = f"{where}: unknown key {key!r}"
    close = difflib.get_close_matches(key, known, n=1)
    if not close:  # an abbreviation, e.g. "lr" for "learning_rate"
        close = [k for k in known if _is_subsequence(key, k)]
    if len(close) == 1:
        msg += f" (did you mean {close[0]!r}?)"
    if path == "population" and key in LeNet.field_names():
        msg += (
            f". Members of a population share one model: they are trained by one compiled step, "
            f"so a model field such as {key!r} (which changes the computation) cannot vary per "
            f"member. Only seeds, learning_rates, momentums, weight_decays and the widths "
            f"(channels, dense) can; train other variants as separate runs (cnnjax.train.sweep "
            f"groups them)"
        )
    return msg + f"; valid keys: {sorted(known)}"


def check_override(dotted_key: str, value: str | None = None) -> None:
    """Checks a command-line override ``--config.<dotted_key>=<value>`` before absl parses it.

    ``ml_collections`` fails with a bare ``KeyError`` traceback on an override below an unknown
    key (``--config.optimiser.lr=0.1``); this names the key like :func:`resolve_config` does.
    And its parser turns a bare number given to a sequence key into a one-element tuple
    (``--config.population.seeds=3`` would train seed 3, not 3 seeds); that is refused here.
    An unknown last component is left to :func:`resolve_config`.

    Raises:
      ConfigError: a section on the way to the last key does not exist, or a sequence key is
        given something other than a ``(...)``/``[...]`` literal.
    """
    *sections, last = dotted_key.split(".")
    node, path = default_config(), ""
    for key in sections:
        if not isinstance(node, ml_collections.ConfigDict) or key not in node:
            known = list(node) if isinstance(node, ml_collections.ConfigDict) else []
            raise ConfigError(_unknown_key_message(path, key, known))
        node, path = node[key], f"{path}.{key}" if path else key
    if value is None or last not in node or not isinstance(node[last], tuple):
        return
    if not value.strip().startswith(("(", "[")):
        raise ConfigTypeError(
            f"config.{dotted_key} must be a sequence, got {value!r}; write it as a tuple, e.g. "
            f"--config.{dotted_key}='({value.strip()},)' for one element"
        )


def _write(node: ml_collections.ConfigDict, value: Mapping[str, Any], path: str) -> None:
    """Writes the user's ``value`` into the locked ``node``, key by key.

    ``ConfigDict`` refuses unknown keys (locked) and values its field type cannot take; both are
    re-raised naming the full key. A bool where an int is expected is refused here, since
    ``ConfigDict`` lets it through.
    """
    for key, v in value.items():
        where = f"{path}.{key}" if path else key
        if key not in node:
            raise ConfigError(_unknown_key_message(path, key, list(node)))
        default = node[key]
        if isinstance(default, ml_collections.ConfigDict):
            if not isinstance(v, Mapping):
                raise ConfigTypeError(
                    f"config.{where} must be a mapping of keys {sorted(default)}, "
                    f"got {_type_name(v)}"
                )
            _write(default, v, where)
            continue
        if isinstance(v, Mapping):
            raise ConfigTypeError(f"config.{where} must be a single value, got a mapping {dict(v)}")
        if isinstance(v, bool) and not isinstance(default, bool) and default is not None:
            raise ConfigTypeError(
                f"config.{where} must be {type(default).__name__}, got {_type_name(v)}"
            )
        if isinstance(default, tuple) and not isinstance(v, (tuple, list)):
            raise ConfigTypeError(f"config.{where} must be a sequence, got {_type_name(v)}")
        try:
            setattr(node, key, tuple(v) if isinstance(v, list) else v)
        except TypeError as e:
            raise ConfigTypeError(
                f"config.{where} must be {type(default).__name__}, got {_type_name(v)}"
            ) from e


def _require(cond: bool, path: str, expected: str, got: Any) -> None:
    if not cond:
        raise ConfigError(f"config.{path} must be {expected}, got {got!r}")


def _check_choice(path: str, value: str, choices: tuple[str, ...]) -> None:
    _require(value in choices, path, f"one of {list(choices)}", value)


def _member_values(pop: ml_collections.ConfigDict, key: str, kind: type, default: Any) -> tuple:
    """``population.<key>`` checked element-wise, or ``default(i)`` for each member if empty."""
    values = pop[key]
    for i, v in enumerate(values):
        if not isinstance(v, kind) or isinstance(v, bool):
            name = "an int" if kind is Integral else "a float"
            raise ConfigTypeError(
                f"config.population.{key}[{i}] must be {name}, got {_type_name(v)}"
            )
    if not values:
        return tuple(default(i) for i in range(pop.size))
    _require(
        len(values) == pop.size,
        f"population.{key}",
        f"empty or of length population.size={pop.size}",
        values,
    )
    return tuple(values)


def _resolve_population(c: ml_collections.ConfigDict) -> None:
    """Validates ``population`` and fills in per-member seeds and learning rates (in place)."""
    pop = c.population
    _require(pop.size >= 1, "population.size", ">= 1", pop.size)
    _check_choice("population.strategy", pop.strategy, STRATEGIES)

    seeds = _member_values(pop, "seeds", Integral, lambda i: c.seed + i)
    for i, s in enumerate(seeds):
        _require(0 <= s <= _MAX_SEED, f"population.seeds[{i}]", f"in [0, {_MAX_SEED}]", s)
    pop.seeds = tuple(int(s) for s in seeds)

    rates = _member_values(pop, "learning_rates", Real, lambda i: c.optimizer.learning_rate)
    for i, r in enumerate(rates):
        _require(math.isfinite(r) and r > 0, f"population.learning_rates[{i}]", "finite and > 0", r)
    pop.learning_rates = tuple(float(r) for r in rates)

    # Kept as given (empty = the optimizer's value): a run directory written before these keys
    # existed then resumes with an identical config.
    if pop.momentums and c.optimizer.name != "momentum":
        raise ConfigError(
            f"config.population.momentums: optimizer {c.optimizer.name!r} has no momentum "
            f"hyper-parameter; set optimizer.name='momentum' or leave population.momentums empty"
        )
    momentums = _member_values(pop, "momentums", Real, lambda i: c.optimizer.momentum)
    for i, m in enumerate(momentums):
        _require(0.0 <= m < 1.0, f"population.momentums[{i}]", "in [0, 1)", m)
    decays = _member_values(pop, "weight_decays", Real, lambda i: c.optimizer.weight_decay)
    for i, w in enumerate(decays):
        _require(
            math.isfinite(w) and w >= 0.0, f"population.weight_decays[{i}]", "finite and >= 0", w
        )
    pop.momentums = tuple(float(m) for m in pop.momentums)
    pop.weight_decays = tuple(float(w) for w in pop.weight_decays)
    for key in ("channels", "dense"):
        pop[key] = _member_widths(c, key)


def _member_widths(c: ml_collections.ConfigDict, key: str) -> tuple[tuple[int, ...], ...]:
    """``population.<key>`` (``channels`` or ``dense``) checked against ``model.<key>``: empty,
    or one sequence per member, as long as the model's and nowhere wider."""
    pop, widest = c.population, tuple(c.model[key])
    values = pop[key]
    if not values:
        return ()
    _require(
        len(values) == pop.size,
        f"population.{key}",
        f"empty or of length population.size={pop.size}",
        values,
    )
    out = []
    for i, w in enumerate(values):
        ints = isinstance(w, (tuple, list)) and all(
            isinstance(v, Integral) and not isinstance(v, bool) for v in w
        )
        if not ints:
            raise ConfigTypeError(
                f"config.population.{key}[{i}] must be a sequence of ints (member {i}'s "
                f"model.{key}), got {_type_name(w)}"
            )
        _require(
            len(w) == len(widest) and all(1 <= v <= m for v, m in zip(w, widest, strict=False)),
            f"population.{key}[{i}]",
            f"{len(widest)} int(s), each in [1, model.{key}[j]] with model.{key}={widest} (the "
            f"model is the widest member; raise it to pack wider members)",
            w,
        )
        out.append(tuple(int(v) for v in w))
    return tuple(out)


def member_model(config: ml_collections.ConfigDict, i: int) -> dict[str, Any]:
    """Member ``i``'s own LeNet config in a resolved ``config``: ``config.model`` with the
    member's ``population.channels`` / ``population.dense`` where given (a packed population),
    else ``config.model`` itself. ``LeNet.from_config`` takes it."""
    model = config.model.to_dict()
    for key in ("channels", "dense"):
        if config.population[key]:
            model[key] = tuple(config.population[key][i])
    return model


def member_hyperparams(config: ml_collections.ConfigDict) -> dict[str, tuple[float, ...]]:
    """Each member's optimizer hyper-parameters in a resolved config.

    Returns:
      ``{"learning_rate": ..., "momentum": ..., "weight_decay": ...}``, each a tuple of
      ``population.size`` floats: ``population.<key>s`` where given, else the ``optimizer``'s
      value for every member. (``momentum`` is used by optimizer "momentum" only.)
    """
    pop, opt = config.population, config.optimizer
    return {
        "learning_rate": tuple(pop.learning_rates),
        "momentum": tuple(pop.momentums) or (float(opt.momentum),) * pop.size,
        "weight_decay": tuple(pop.weight_decays) or (float(opt.weight_decay),) * pop.size,
    }


def _check_run(c: ml_collections.ConfigDict) -> None:
    """The top-level keys and where the run runs (platform, mesh, processes)."""
    # A seed is a uint32 key; seed + i must stay one for every derived member seed.
    _require(0 <= c.seed <= _MAX_SEED, "seed", f"in [0, {_MAX_SEED}]", c.seed)
    for key in ("num_epochs", "batch_size", "eval_batch_size"):
        _require(c[key] >= 1, key, ">= 1", c[key])
    _require(c.profile_steps >= 0, "profile_steps", ">= 0 (0 means no profile)", c.profile_steps)
    if not c.evaluate_test and not c.data.validation_size:
        raise ConfigError(
            "config.evaluate_test=False leaves nothing to evaluate on: set "
            "data.validation_size > 0 (a held-out split evaluated every epoch)"
        )
    _check_choice("loop", c.loop, LOOPS)
    _require(
        math.isfinite(c.max_loss_factor) and (c.max_loss_factor == 0 or c.max_loss_factor > 1),
        "max_loss_factor",
        "0 (off) or a finite number > 1",
        c.max_loss_factor,
    )

    _check_choice("platform", c.platform, PLATFORMS)
    for key in ("population", "data"):
        _require(c.mesh[key] >= 0, f"mesh.{key}", ">= 0 (0 means automatic)", c.mesh[key])
    dist = c.distributed
    _require(dist.num_processes >= 1, "distributed.num_processes", ">= 1", dist.num_processes)
    _require(
        0 <= dist.process_id < dist.num_processes,
        "distributed.process_id",
        f"in [0, num_processes={dist.num_processes})",
        dist.process_id,
    )


def _check_data(c: ml_collections.ConfigDict) -> None:
    d = c.data
    _check_choice("data.source", d.source, data.LOAD_SOURCES)
    _check_choice("data.normalize", d.normalize, data.NORMALIZATIONS)
    _check_choice("data.fallback_epochs", d.fallback_epochs, FALLBACK_EPOCHS)
    for key in ("train_limit", "test_limit", "validation_size"):
        _require(d[key] >= 0, f"data.{key}", ">= 0 (0 means all/none)", d[key])
    _require(d.random_shift >= 0, "data.random_shift", ">= 0 pixels (0 means none)", d.random_shift)
    if d.train_limit:
        _require(
            d.train_limit >= c.batch_size + d.validation_size,
            "data.train_limit",
            f"0 (all) or >= batch_size + data.validation_size = "
            f"{c.batch_size + d.validation_size} (an epoch drops the partial batch)",
            d.train_limit,
        )


def _check_optimizer(c: ml_collections.ConfigDict) -> None:
    opt = c.optimizer
    _check_choice("optimizer.name", opt.name, OPTIMIZERS)
    _check_choice("optimizer.schedule", opt.schedule, SCHEDULES)
    lr = opt.learning_rate
    _require(math.isfinite(lr) and lr > 0, "optimizer.learning_rate", "finite and > 0", lr)
    _require(0.0 <= opt.momentum < 1.0, "optimizer.momentum", "in [0, 1)", opt.momentum)
    _require(
        math.isfinite(opt.weight_decay) and opt.weight_decay >= 0.0,
        "optimizer.weight_decay",
        "finite and >= 0",
        opt.weight_decay,
    )
    _require(opt.warmup_epochs >= 0, "optimizer.warmup_epochs", ">= 0", opt.warmup_epochs)
    if opt.schedule == "warmup_cosine":
        _require(
            opt.warmup_epochs < c.num_epochs,
            "optimizer.warmup_epochs",
            f"< num_epochs={c.num_epochs} for schedule 'warmup_cosine'",
            opt.warmup_epochs,
        )
    elif opt.warmup_epochs:
        raise ConfigError(
            f"config.optimizer.warmup_epochs is only used by schedule 'warmup_cosine', "
            f"got warmup_epochs={opt.warmup_epochs} with schedule {opt.schedule!r}"
        )


def resolve_config(config: Any) -> ml_collections.ConfigDict:
    """Validates ``config`` against :func:`default_config` and returns the full, locked config.

    ``config`` is a ``ConfigDict`` or a nested mapping; keys it leaves out take their defaults.
    Nothing is built or compiled here, so this is the place where a bad config fails.

    Returns:
      A locked ``ConfigDict`` with every key, ints given for floats converted, lists as tuples,
      and ``population.seeds`` / ``population.learning_rates`` filled in (one entry per member;
      ``momentums`` / ``weight_decays`` stay as given, see :func:`member_hyperparams`).

    Raises:
      ConfigError (a ValueError): an unknown key (the message lists the valid ones and, for a model
        field under ``population``, explains that members must share one model) or a bad value.
      ConfigTypeError (a ConfigError and a TypeError): a value of the wrong type.

    Example::

        >>> resolve_config({"population": {"size": 2}}).population.seeds
        (0, 1)
    """
    if isinstance(config, ml_collections.ConfigDict):
        config = config.to_dict()
    if not isinstance(config, Mapping):
        raise ConfigTypeError(
            f"config must be a ConfigDict or mapping, got {type(config).__name__}"
        )
    c = default_config()
    c.lock()
    _write(c, config, "")

    _check_run(c)
    _check_data(c)
    _check_optimizer(c)
    try:
        LeNet.from_config(c.model)
    except (TypeError, ValueError) as e:
        kind = ConfigTypeError if isinstance(e, TypeError) else ConfigError
        raise kind(f"config.model: {e}") from e

    _resolve_population(c)
    _check_halving(c)
    return c


def _check_halving(c: ml_collections.ConfigDict) -> None:
    """``population.halving``: rungs strictly increasing epochs in [1, num_epochs), keep in (0, 1)
    (see the module docstring); the rungs are stored as ints."""
    halving = c.population.halving
    for i, r in enumerate(halving.rungs):
        if not isinstance(r, Integral) or isinstance(r, bool):
            raise ConfigTypeError(
                f"config.population.halving.rungs[{i}] must be an int (an epoch), got "
                f"{_type_name(r)}"
            )
    rungs = tuple(int(r) for r in halving.rungs)
    _require(
        all(1 <= r < c.num_epochs for r in rungs)
        and all(a < b for a, b in zip(rungs, rungs[1:], strict=False)),
        "population.halving.rungs",
        f"strictly increasing epochs in [1, num_epochs={c.num_epochs}) (after the last epoch "
        f"nothing is left to skip), or () for no halving",
        rungs,
    )
    keep = halving.keep
    _require(
        math.isfinite(keep) and 0 < keep < 1,
        "population.halving.keep",
        "in (0, 1) (the fraction of points kept at each rung)",
        keep,
    )
    halving.rungs = rungs
