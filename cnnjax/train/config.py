"""The training configuration: schema, defaults and validation (D2L 6.6's recipe as data).

A run is described by one ``ml_collections.ConfigDict``. :func:`default_config` gives every key with
its default (the book's LeNet recipe); the files in ``configs/`` start from it and change what they
need. :func:`resolve_config` checks a config against that schema *before anything is built or
compiled*: an unknown key or a value of the wrong type fails at once with a message naming the key,
what was expected and what was received. It then fills in the derived per-member values (seeds,
learning rates) so the resolved config written to the workdir says exactly what was trained.

Keys (defaults in :func:`default_config`):

* ``seed``: the data-order seed (epoch ``e`` is shuffled with ``fold_in(key(seed), e)``).
* ``num_epochs``, ``batch_size``, ``eval_batch_size``.
* ``loop``: ``"scan"`` (each epoch is one compiled ``lax.scan``; the default) or ``"step"`` (a
  jitted step called from a Python loop, so a progress bar can count steps).
* ``data.{name, source, dir, normalize, train_limit, test_limit, fallback_epochs}``; a limit
  keeps a fixed pseudo-random subset of that many examples (the same for every seed); 0 means
  all. When ``source="auto"`` falls back to the small bundled set (no local copy, no network),
  ``fallback_epochs="match_steps"`` (the default) trains proportionally more epochs so the run
  takes as many SGD steps as it would on the data set asked for: the book's recipe needs more
  than one pass over Fashion-MNIST's 60,000 images before it leaves chance, so 10 epochs of
  4,000 images would show a model that never learns. ``"as_configured"`` keeps ``num_epochs``.
* ``model.*``: the fields of :class:`cnnjax.models.LeNet` (see ``LeNet.default_config()``).
* ``optimizer.{name, learning_rate, momentum, weight_decay, schedule, warmup_epochs}``.
* ``population.{size, seeds, learning_rates, strategy, freeze_diverged}``: ``size`` members trained
  in one compiled step; empty ``seeds`` means ``seed + i`` for member ``i`` and empty
  ``learning_rates`` means ``optimizer.learning_rate`` for every member.
* ``per_example_grads``: also log per-example gradient-norm statistics (costs a ``vmap(grad)``).
* ``progress``: show a tqdm progress bar.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from numbers import Integral, Real
from typing import Any

import ml_collections

from cnnjax.models import LeNet
from cnnjax.train.population import STRATEGIES

__all__ = [
    "ConfigError",
    "ConfigTypeError",
    "OPTIMIZERS",
    "check_override",
    "SCHEDULES",
    "STRATEGIES",
    "default_config",
    "resolve_config",
]

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "warmup_cosine")
LOOPS = ("scan", "step")
DATA_SOURCES = ("auto", "idx", "tfds", "bundled")
NORMALIZATIONS = ("unit", "standardize")
FALLBACK_EPOCHS = ("match_steps", "as_configured")


class ConfigError(ValueError):
    """A config has an unknown key or an invalid value."""


class ConfigTypeError(ConfigError, TypeError):
    """A config value has the wrong type (also a ``TypeError``)."""


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
    c.population.strategy = "auto"
    c.population.freeze_diverged = True

    c.per_example_grads = False
    c.progress = True
    return c


def _type_name(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _check_leaf(path: str, value: Any, default: Any) -> Any:
    """``value`` coerced to the type of ``default`` (int -> float, list -> tuple), or raises."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, Integral):
        ok = isinstance(value, Integral) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, Real) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, (tuple, list)):
        ok = isinstance(value, (tuple, list))
        value = tuple(value) if ok else value
    else:  # A default of None (or another type) imposes no type.
        ok = True
    if not ok:
        expected = "a sequence" if isinstance(default, (tuple, list)) else type(default).__name__
        raise ConfigTypeError(f"config.{path} must be {expected}, got {_type_name(value)}")
    return value


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
            f"member. Only seeds and learning_rates can; train other variants as separate runs"
        )
    return msg + f"; valid keys: {sorted(known)}"


def check_override(dotted_key: str) -> None:
    """Checks that a command-line override ``--config.<dotted_key>=...`` names real sections.

    ``ml_collections`` fails with a bare ``KeyError`` traceback on an override below an unknown
    key (``--config.optimiser.lr=0.1``); this names the key like :func:`resolve_config` does.
    An unknown last component is left to :func:`resolve_config`.

    Raises:
      ConfigError: a section on the way to the last key does not exist.
    """
    *sections, _ = dotted_key.split(".")
    node, path = default_config().to_dict(), ""
    for key in sections:
        if not isinstance(node, Mapping) or key not in node:
            known = list(node) if isinstance(node, Mapping) else []
            raise ConfigError(_unknown_key_message(path, key, known))
        node, path = node[key], f"{path}.{key}" if path else key


def _merge(path: str, value: Any, default: Any) -> Any:
    """The user's ``value`` checked against ``default`` key by key; missing keys take defaults."""
    if isinstance(default, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigTypeError(
                f"config.{path} must be a mapping of keys {sorted(default)}, "
                f"got {_type_name(value)}"
            )
        for key in value:
            if key not in default:
                raise ConfigError(_unknown_key_message(path, key, list(default)))
        return {
            key: _merge(f"{path}.{key}" if path else key, value.get(key, d), d)
            for key, d in default.items()
        }
    if isinstance(value, Mapping):
        raise ConfigTypeError(f"config.{path} must be a single value, got a mapping {dict(value)}")
    return _check_leaf(path, value, default)


def _require(cond: bool, path: str, expected: str, got: Any) -> None:
    if not cond:
        raise ConfigError(f"config.{path} must be {expected}, got {got!r}")


def _check_choice(path: str, value: str, choices: tuple[str, ...]) -> None:
    _require(value in choices, path, f"one of {list(choices)}", value)


def _resolve_population(cfg: dict[str, Any]) -> None:
    """Validates ``population`` and fills in per-member seeds and learning rates (in place)."""
    pop = cfg["population"]
    size = pop["size"]
    _require(size >= 1, "population.size", ">= 1", size)
    _check_choice("population.strategy", pop["strategy"], STRATEGIES)

    seeds = pop["seeds"]
    for i, s in enumerate(seeds):
        if not isinstance(s, Integral) or isinstance(s, bool):
            raise ConfigTypeError(
                f"config.population.seeds[{i}] must be an int, got {_type_name(s)}"
            )
        _require(s >= 0, f"population.seeds[{i}]", ">= 0", s)
    if seeds:
        _require(
            len(seeds) == size,
            "population.seeds",
            f"empty or of length population.size={size}",
            seeds,
        )
    else:
        seeds = tuple(cfg["seed"] + i for i in range(size))
    pop["seeds"] = tuple(int(s) for s in seeds)

    rates = pop["learning_rates"]
    for i, r in enumerate(rates):
        if not isinstance(r, Real) or isinstance(r, bool):
            raise ConfigTypeError(
                f"config.population.learning_rates[{i}] must be a float, got {_type_name(r)}"
            )
        _require(math.isfinite(r) and r > 0, f"population.learning_rates[{i}]", "finite and > 0", r)
    if rates:
        _require(
            len(rates) == size,
            "population.learning_rates",
            f"empty or of length population.size={size}",
            rates,
        )
    else:
        rates = (cfg["optimizer"]["learning_rate"],) * size
    pop["learning_rates"] = tuple(float(r) for r in rates)


def resolve_config(config: Any) -> ml_collections.ConfigDict:
    """Validates ``config`` against :func:`default_config` and returns the full, locked config.

    ``config`` is a ``ConfigDict`` or a nested mapping; keys it leaves out take their defaults.
    Nothing is built or compiled here, so this is the place where a bad config fails.

    Returns:
      A locked ``ConfigDict`` with every key, ints given for floats converted, lists as tuples,
      and ``population.seeds`` / ``population.learning_rates`` filled in (one entry per member).

    Raises:
      ConfigError (a ValueError): an unknown key (the message lists the valid ones and, for a model
        field under ``population``, explains that members must share one model) or a bad value.
      ConfigTypeError (a ConfigError and a TypeError): a value of the wrong type.
    """
    if isinstance(config, ml_collections.ConfigDict):
        config = config.to_dict()
    if not isinstance(config, Mapping):
        raise ConfigTypeError(
            f"config must be a ConfigDict or mapping, got {type(config).__name__}"
        )
    cfg = _merge("", config, default_config().to_dict())

    _require(cfg["seed"] >= 0, "seed", ">= 0", cfg["seed"])
    for key in ("num_epochs", "batch_size", "eval_batch_size"):
        _require(cfg[key] >= 1, key, ">= 1", cfg[key])
    _check_choice("loop", cfg["loop"], LOOPS)

    data = cfg["data"]
    _check_choice("data.source", data["source"], DATA_SOURCES)
    _check_choice("data.normalize", data["normalize"], NORMALIZATIONS)
    _check_choice("data.fallback_epochs", data["fallback_epochs"], FALLBACK_EPOCHS)
    for key in ("train_limit", "test_limit"):
        _require(data[key] >= 0, f"data.{key}", ">= 0 (0 means all)", data[key])
    if data["train_limit"]:
        _require(
            data["train_limit"] >= cfg["batch_size"],
            "data.train_limit",
            f"0 (all) or >= batch_size={cfg['batch_size']} (an epoch drops the partial batch)",
            data["train_limit"],
        )

    opt = cfg["optimizer"]
    _check_choice("optimizer.name", opt["name"], OPTIMIZERS)
    _check_choice("optimizer.schedule", opt["schedule"], SCHEDULES)
    lr = opt["learning_rate"]
    _require(math.isfinite(lr) and lr > 0, "optimizer.learning_rate", "finite and > 0", lr)
    _require(0.0 <= opt["momentum"] < 1.0, "optimizer.momentum", "in [0, 1)", opt["momentum"])
    _require(opt["weight_decay"] >= 0.0, "optimizer.weight_decay", ">= 0", opt["weight_decay"])
    warmup = opt["warmup_epochs"]
    _require(warmup >= 0, "optimizer.warmup_epochs", ">= 0", warmup)
    if opt["schedule"] == "warmup_cosine":
        _require(
            warmup < cfg["num_epochs"],
            "optimizer.warmup_epochs",
            f"< num_epochs={cfg['num_epochs']} for schedule 'warmup_cosine'",
            warmup,
        )
    elif warmup:
        raise ConfigError(
            f"config.optimizer.warmup_epochs is only used by schedule 'warmup_cosine', "
            f"got warmup_epochs={warmup} with schedule {opt['schedule']!r}"
        )

    try:
        LeNet.from_config(cfg["model"])
    except (TypeError, ValueError) as e:
        kind = ConfigTypeError if isinstance(e, TypeError) else ConfigError
        raise kind(f"config.model: {e}") from e

    _resolve_population(cfg)
    resolved = ml_collections.ConfigDict(cfg)
    resolved.lock()
    return resolved
