"""Sweeps over architectures and optimizer hyper-parameters, trained as compiled populations.

D2L 6.6.4's exercises change LeNet along several axes and ask which variant is best. A sweep
config (``configs/sweeps/*.py``; :func:`default_sweep_config` lists every key) names a base
training config, structural *variants* of it (name -> dotted overrides of model/data/optimizer
keys; ``"base"`` with no overrides is the base itself), numeric *axes* (learning rate, weight
decay, momentum: explicit values or a grid) and seeds. :func:`run_sweep` runs its protocol:

1. **screening**: every variant at every point of the axes' product and every screening seed,
   ``screening.num_epochs`` epochs, scored on the validation split (``data.validation_size`` > 0,
   ``evaluate_test=False``: the test set is never read);
2. **combination** (optional, ``combine.top`` > 0): the ``combine.top`` variants whose best
   screening row beats the baseline variant's (``combine.baseline``) are combined — every subset
   of two or more of them, their overrides merged (a subset whose variants set one key to
   different values is skipped) — and the combinations are screened like the variants;
3. **final**: the ``final.top_k`` rows (variant and numeric point) of the screening and
   combination stages with the best mean validation accuracy, retrained with ``final.seeds``
   for ``final.num_epochs`` epochs (with ``final.overrides``, e.g. the whole training split)
   and only then evaluated on the test set, once (``evaluate_test=True``). The sweep's *choice*
   is the finalist with the best final validation accuracy.

``max_params`` > 0 bounds the model: a variant or combination above it is screened (when named
explicitly) but never combined or chosen as a finalist.

**Grouping.** Each (variant, point, seed) is a *member*. Members whose resolved configs are equal
but for what a population member may have of its own (seed, learning rate, momentum, weight
decay) form one *group*: one population, one ordinary run directory
``<workdir>/<stage>/<group>/``, trained by :func:`~cnnjax.train.trainer.train_and_evaluate` with
one compiled step. Groups of different shapes run one after another. Rerunning the same command
resumes: a group whose ``summary.json`` holds its last epoch is read back, not retrained; an
unfinished one resumes from its checkpoint.

**Successive halving** (optional, ``screening.halving.rungs``): the screening and combination
groups train with ``population.halving`` (:func:`cnnjax.train.loop.halving`): after each rung
epoch the numeric points of a group (its rows; rows of variants with equal configs share a
point) are ranked by mean validation accuracy and the members of all but the best
``max(1, ceil(keep * active))`` stop, so the budget goes to the promising points. It ranks
within each group, never across groups (a group of one point never stops). A stopped row's
accuracy is from fewer epochs (its ``epochs`` column), so it is not comparable: it is never a
finalist or a combination winner. The final stage never halves.

**Records** (written atomically, from this module only): ``results.csv`` and ``results.md`` with
one row per (variant, point) and stage (:data:`COLUMNS`; the test columns are empty for every
row that is not a finalist), and ``results.png``, validation accuracy against parameter count
with the Pareto front marked.

**Packing** (``pack=True``): members whose configs differ only in LeNet's widths share one group
too, each embedded in the widest network with zeros and its padding masked out of the gradient
(:mod:`cnnjax.models.packing`); each row's ``params`` and ``macs`` are still its own network's.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import io
import itertools
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from numbers import Integral, Real
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cnnjax import ops
from cnnjax.models import LeNet, features
from cnnjax.models.packing import PACKABLE_FIELDS, widest
from cnnjax.train.config import load_config_file, member_model, resolve_config
from cnnjax.train.errors import ConfigError, DataError, RunDirError, TrainingDiverged, WriteError
from cnnjax.train.parallel import DeviceError
from cnnjax.train.rundir import RunDir

__all__ = [
    "AXES",
    "COLUMNS",
    "STAGES",
    "Group",
    "Member",
    "choice",
    "combinations",
    "default_sweep_config",
    "main",
    "model_cost",
    "pareto_figure",
    "pareto_front",
    "plan_groups",
    "resolve_sweep",
    "run_sweep",
    "write_records",
]

# Numeric axes: sweep name -> the population key that carries one value per member.
AXES = {
    "learning_rate": "learning_rates",
    "momentum": "momentums",
    "weight_decay": "weight_decays",
}

# The columns of results.csv / results.md, in order. ``variant`` is the structure and the swept
# values ("narrow lr=0.05"); ``params`` and ``macs`` (forward multiply-adds per example) come from
# :func:`model_cost`; ``seeds`` counts the row's members, ``epochs`` the epochs they trained
# (fewer than the stage's when successive halving stopped the row; empty when unknown, i.e.
# every member diverged), ``diverged`` those that diverged;
# accuracies are mean and (population) std over the row's members, empty when none has one (the
# test columns always, except for finalists); ``examples_per_s`` is the group's training
# throughput per member (examples·models/s over its size); ``group`` the run directory's name.
COLUMNS = (
    "variant",
    "stage",
    "structure",
    "learning_rate",
    "momentum",
    "weight_decay",
    "params",
    "macs",
    "seeds",
    "epochs",
    "diverged",
    "val_acc_mean",
    "val_acc_std",
    "test_acc_mean",
    "test_acc_std",
    "examples_per_s",
    "group",
)

STAGES = ("screening", "combination", "final")

# Keys the sweep's protocol sets, so a variant may not: the population's members, the number of
# epochs and whether the test set is read belong to the stage.
_PROTOCOL_KEYS = ("num_epochs", "evaluate_test", "population", "seed")


def default_sweep_config() -> ml_collections.ConfigDict:
    """Every key of a sweep config, with its default.

    * ``base``: the training config file the variants start from (``FILE`` or ``FILE:ARG``;
      relative paths are from the current directory, as ``--config`` is).
    * ``overrides``: training config keys applied to the base for every variant (e.g. a smaller
      data set for the whole sweep), nested like the config (``{"data": {"train_limit": 600}}``).
    * ``variants``: name -> overrides of the base, nested the same way, each a structural
      variant (``{"model": {"channels": (8, 16)}}``); ``{}`` is the base itself. Rows come
      in name order (a ``ConfigDict`` sorts its keys). Any key of
      the training config but those the protocol sets (``num_epochs``, ``evaluate_test``,
      ``seed``, ``population.*``).
    * ``axes.{learning_rate, momentum, weight_decay}``: the values each variant is trained at.
      A tuple lists them; a mapping ``{"start", "stop", "num", "scale": "log" | "linear"}`` is
      a grid of ``num`` values from ``start`` to ``stop``; ``()`` (the default) keeps the
      variant's ``optimizer`` value. The rows are the product of the axes.
    * ``screening.{num_epochs, seeds}``: the screening runs (validation split only).
      ``screening.halving.{rungs, keep}``: successive halving in the screening and combination
      groups (``population.halving`` of :mod:`cnnjax.train.config`: rungs are epochs in
      ``[1, screening.num_epochs)``, strictly increasing; ``keep`` in (0, 1)); ``()`` (the
      default) is off. See the module docstring.
    * ``combine.top``: how many of the screening's best variants (each by its best row, only
      those beating ``combine.baseline``'s best row) are combined in the combination stage; 0
      (the default) skips the stage. ``combine.baseline``: the variant they must beat (default
      ``"base"``; ``""`` requires nothing). Combinations train with the screening's budget.
    * ``final.{top_k, num_epochs, seeds}``: how many rows are retrained, for how long, with
      which seeds (use at least 4 for a real sweep); only these touch the test set.
      ``final.overrides``: training config keys changed for the final stage only, nested like
      ``overrides`` (e.g. ``{"data": {"train_limit": 0}}`` to retrain on the whole split).
    * ``max_params``: the largest model (parameters) that may be combined or be a finalist;
      0 (the default) sets no bound.
    * ``pack``: members whose configs differ only in LeNet's widths (``model.channels``,
      ``model.dense``, as many layers) train as one packed population, each padded to the
      widest and its padding masked out of the gradient (``population.channels`` /
      ``population.dense``, :mod:`cnnjax.models.packing`): one compiled program instead of one
      per width, results equal to separate groups up to float rounding. Off by default: on a
      CPU, where members run in turn, a narrow member then costs as much as the widest
      (BENCHMARKS.md has the trade).
    """
    c = ml_collections.ConfigDict()
    c.base = ""
    c.overrides = ml_collections.ConfigDict()
    c.variants = ml_collections.ConfigDict()
    c.axes = ml_collections.ConfigDict()
    for axis in AXES:
        c.axes[axis] = ()
    c.screening = ml_collections.ConfigDict()
    c.screening.num_epochs = 1
    c.screening.seeds = (0,)
    c.screening.halving = ml_collections.ConfigDict()
    c.screening.halving.rungs = ()
    c.screening.halving.keep = 0.5
    c.final = ml_collections.ConfigDict()
    c.final.top_k = 1
    c.final.num_epochs = 1
    c.final.seeds = (0, 1, 2, 3)
    c.final.overrides = ml_collections.ConfigDict()
    c.combine = ml_collections.ConfigDict()
    c.combine.top = 0
    c.combine.baseline = "base"
    c.max_params = 0
    c.pack = False
    return c


# -- the sweep config --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A checked sweep config: the base training config (a plain dict), each variant's overrides,
    the numeric points (one dict axis -> value, only the swept axes) and the protocol."""

    base: dict[str, Any]
    variants: dict[str, dict[str, Any]]
    points: tuple[dict[str, float], ...]
    screening_epochs: int
    screening_seeds: tuple[int, ...]
    top_k: int
    final_epochs: int
    final_seeds: tuple[int, ...]
    final_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    combine_top: int = 0
    combine_baseline: str = "base"
    max_params: int = 0
    pack: bool = False
    halving_rungs: tuple[int, ...] = ()
    halving_keep: float = 0.5


def _unknown(path: str, key: str, known: Sequence[str], hint: str = "") -> ConfigError:
    close = difflib.get_close_matches(key, list(known), n=1)
    did = f" (did you mean {close[0]!r}?)" if close else ""
    where = f"sweep config {path}" if path else "sweep config"
    return ConfigError(f"{where}: unknown key {key!r}{did}{hint}; valid keys: {sorted(known)}")


def _check_keys(node: Mapping[str, Any], schema: ml_collections.ConfigDict, path: str) -> None:
    for key, value in node.items():
        if key not in schema:
            hint = ""
            if path == "axes":
                hint = (
                    ". Only the optimizer's numeric hyper-parameters vary within a population; "
                    "a model or data change is a structural variant (sweep.variants)"
                )
            raise _unknown(path or "", key, list(schema), hint)
        if not isinstance(schema[key], ml_collections.ConfigDict):
            continue
        where = f"{path}.{key}" if path else key
        free = key in ("variants", "overrides")  # training config keys, checked against it
        if not isinstance(value, Mapping):
            keys = "training config keys" if free else f"keys {sorted(schema[key])}"
            raise ConfigError(f"sweep config {where} must be a mapping of {keys}, got {value!r}")
        if not free:
            _check_keys(value, schema[key], where)


def _axis_values(name: str, spec: Any) -> tuple[float, ...]:
    """An axis's values: a sequence as given, or a grid mapping expanded."""
    where = f"sweep config axes.{name}"
    if isinstance(spec, Mapping):
        keys = {"start", "stop", "num", "scale"}
        if set(spec) - keys or not {"start", "stop", "num"} <= set(spec):
            raise ConfigError(
                f"{where}: a grid is a mapping with keys start, stop, num and optionally scale "
                f"('log' or 'linear'), got keys {sorted(spec)}"
            )
        num, scale = spec["num"], spec.get("scale", "log")
        if not isinstance(num, Integral) or isinstance(num, bool) or num < 1:
            raise ConfigError(f"{where}: the grid is empty (num={num!r}); num must be >= 1")
        if scale not in ("log", "linear"):
            raise ConfigError(f"{where}.scale must be 'log' or 'linear', got {scale!r}")
        start, stop = float(spec["start"]), float(spec["stop"])
        if scale == "log":
            if start <= 0 or stop <= 0:
                raise ConfigError(f"{where}: a log grid needs start and stop > 0")
            values = np.geomspace(start, stop, num)
        else:
            values = np.linspace(start, stop, num)
        return tuple(float(f"{v:.6g}") for v in values)
    if not isinstance(spec, (tuple, list)):
        raise ConfigError(
            f"{where} must be a tuple of values or a grid mapping, got {type(spec).__name__}"
        )
    for v in spec:
        if not isinstance(v, Real) or isinstance(v, bool):
            raise ConfigError(f"{where} must hold numbers, got {v!r}")
    if len(set(spec)) != len(spec):
        raise ConfigError(f"{where} lists a value twice: {tuple(spec)}")
    return tuple(float(v) for v in spec)


def _seeds(path: str, seeds: Any) -> tuple[int, ...]:
    if not isinstance(seeds, (tuple, list)) or not seeds:
        raise ConfigError(f"sweep config {path} must be a non-empty tuple of seeds, got {seeds!r}")
    for s in seeds:
        if not isinstance(s, Integral) or isinstance(s, bool) or not 0 <= s < 2**32:
            raise ConfigError(f"sweep config {path} must hold ints in [0, 2**32), got {s!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"sweep config {path} lists a seed twice: {tuple(seeds)}")
    return tuple(int(s) for s in seeds)


def _positive(path: str, value: Any) -> int:
    if not isinstance(value, Integral) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"sweep config {path} must be an int >= 1, got {value!r}")
    return int(value)


def _flatten(overrides: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"channels": (8, 16)}}`` (a ConfigDict takes no dots in its keys) or
    ``{"model.channels": (8, 16)}`` as dotted key -> value."""
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(_flatten(value, dotted))
        else:
            flat[dotted] = value
    return flat


def _set_dotted(config: dict[str, Any], key: str, value: Any, where: str) -> None:
    """Writes ``value`` at the dotted ``key`` of the plain-dict training ``config``.

    Raises:
      ConfigError: a component of ``key`` is not a key of the training config.
    """
    *sections, last = key.split(".")
    node, path = config, ""
    for part in [*sections, last]:
        if not isinstance(node, dict) or part not in node:
            known = sorted(node) if isinstance(node, dict) else []
            close = difflib.get_close_matches(part, known, n=1)
            did = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"sweep config {where}: {key!r} is not a training config key: "
                f"{'config.' + path if path else 'config'} has no {part!r}{did}; "
                f"valid keys there: {known}"
            )
        if part != last:
            node, path = node[part], f"{path}.{part}" if path else part
    node[last] = list(value) if isinstance(value, tuple) else value


def _checked_overrides(
    base: dict[str, Any], overrides: Mapping[str, Any], where: str, fix: str
) -> dict[str, Any]:
    """``overrides`` as dotted key -> value, each a key of the training config ``base`` that the
    protocol does not set (``fix`` ends that error message).

    Raises:
      ConfigError: a protocol key, or a key ``base`` does not have.
    """
    flat = _flatten(overrides)
    scratch = json.loads(json.dumps(base))  # a deep copy of plain data, written to check keys
    for key, value in flat.items():
        if key.split(".")[0] in _PROTOCOL_KEYS:
            raise ConfigError(
                f"sweep config {where}: {key!r} is set by the sweep's protocol, {fix}"
            )
        _set_dotted(scratch, key, value, where)
    return flat


def _combine_settings(
    combine: Mapping[str, Any], variants: Mapping[str, Any], max_params: Any
) -> tuple[int, str, int]:
    """``(combine.top, combine.baseline, max_params)``, checked.

    Raises:
      ConfigError: ``top`` is not 0 or an int >= 2; ``baseline`` (when the stage runs) is not a
        variant; ``max_params`` is not an int >= 0.
    """
    top, baseline = combine["top"], combine["baseline"]
    if not isinstance(top, Integral) or isinstance(top, bool) or top < 0 or top == 1:
        raise ConfigError(
            f"sweep config combine.top must be 0 (no combination stage) or an int >= 2 (how "
            f"many of the best variants are combined), got {top!r}"
        )
    if top and baseline and baseline not in variants:
        raise ConfigError(
            f"sweep config combine.baseline {baseline!r} is not a variant; name one of "
            f"{sorted(variants)} or '' (no baseline to beat)"
        )
    if not isinstance(max_params, Integral) or isinstance(max_params, bool) or max_params < 0:
        raise ConfigError(
            f"sweep config max_params must be an int >= 0 (0: no bound), got {max_params!r}"
        )
    return int(top), str(baseline), int(max_params)


def _halving_settings(screening: Mapping[str, Any]) -> tuple[tuple[int, ...], float]:
    """``(screening.halving.rungs, screening.halving.keep)``, checked.

    Raises:
      ConfigError: a rung that is not an int in ``[1, screening.num_epochs)``, rungs not
        strictly increasing, or ``keep`` not a number in (0, 1).
    """
    halving = {**default_sweep_config().screening.halving.to_dict(), **screening["halving"]}
    rungs, keep, epochs = halving["rungs"], halving["keep"], screening["num_epochs"]
    where = "sweep config screening.halving"
    if not isinstance(rungs, (tuple, list)) or not all(
        isinstance(r, Integral) and not isinstance(r, bool) for r in rungs
    ):
        raise ConfigError(f"{where}.rungs must be a tuple of epochs (ints), got {rungs!r}")
    ok = all(1 <= r < epochs for r in rungs) and all(a < b for a, b in itertools.pairwise(rungs))
    if not ok:
        raise ConfigError(
            f"{where}.rungs must be strictly increasing epochs in [1, screening.num_epochs="
            f"{epochs}), or () for no halving, got {tuple(rungs)!r}"
        )
    if not isinstance(keep, Real) or isinstance(keep, bool) or not 0 < keep < 1:
        raise ConfigError(
            f"{where}.keep must be in (0, 1) (the fraction of points kept at each rung), "
            f"got {keep!r}"
        )
    return tuple(int(r) for r in rungs), float(keep)


def resolve_sweep(config: Any) -> Sweep:
    """Checks a sweep config (see :func:`default_sweep_config`) and loads its base.

    Raises:
      ConfigError: an unknown key (at any level), an axis that cannot vary, an empty grid or
        empty variants/seeds, a variant overriding an unknown training key or one the protocol
        sets, or a base config that does not load.
    """
    if isinstance(config, ml_collections.ConfigDict):
        config = config.to_dict()
    if not isinstance(config, Mapping):
        raise ConfigError(f"a sweep config must be a ConfigDict, got {type(config).__name__}")
    schema = default_sweep_config()
    _check_keys(config, schema, "")
    merged = schema.to_dict()
    for key, value in config.items():
        if isinstance(value, Mapping) and key not in ("variants", "overrides"):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    if not merged["base"]:
        raise ConfigError(
            "sweep config base is required: the training config file the "
            "variants start from, e.g. configs/lenet_modern.py"
        )
    base = load_config_file(merged["base"]).to_dict()
    for key, value in _flatten(merged["overrides"]).items():
        _set_dotted(base, key, value, f"overrides[{key!r}]")

    variants = dict(merged["variants"])
    if not variants:
        raise ConfigError("sweep config variants is empty: name at least one, e.g. {'base': {}}")
    for name, overrides in variants.items():
        if not isinstance(overrides, Mapping):
            raise ConfigError(
                f"sweep config variants[{name!r}] must map dotted keys to values, got {overrides!r}"
            )
        if not name or "/" in name or name.startswith("."):
            raise ConfigError(f"sweep config variants: {name!r} cannot name a directory")
        variants[name] = _checked_overrides(
            base,
            overrides,
            f"variants[{name!r}]",
            "not per variant (numeric values: sweep axes; seeds: screening.seeds and "
            "final.seeds; epochs: screening/final.num_epochs)",
        )

    axes = {a: _axis_values(a, merged["axes"][a]) for a in AXES}
    swept = {a: v for a, v in axes.items() if v}
    points = tuple(dict(zip(swept, p, strict=True)) for p in itertools.product(*swept.values()))

    screening, final, combine = merged["screening"], merged["final"], merged["combine"]
    final_overrides = _checked_overrides(
        base,
        final["overrides"],
        "final.overrides",
        "not an override (final.num_epochs, final.seeds)",
    )
    top, baseline, max_params = _combine_settings(combine, variants, merged["max_params"])
    if not isinstance(merged["pack"], bool):
        raise ConfigError(f"sweep config pack must be True or False, got {merged['pack']!r}")
    screening_epochs = _positive("screening.num_epochs", screening["num_epochs"])
    rungs, keep = _halving_settings({**screening, "num_epochs": screening_epochs})
    sweep = Sweep(
        base=base,
        variants=variants,
        points=points,
        screening_epochs=screening_epochs,
        screening_seeds=_seeds("screening.seeds", screening["seeds"]),
        top_k=_positive("final.top_k", final["top_k"]),
        final_epochs=_positive("final.num_epochs", final["num_epochs"]),
        final_seeds=_seeds("final.seeds", final["seeds"]),
        final_overrides=final_overrides,
        combine_top=top,
        combine_baseline=baseline,
        max_params=max_params,
        pack=merged["pack"],
        halving_rungs=rungs,
        halving_keep=keep,
    )
    # Every variant's groups are resolved now, so a bad one fails before anything trains (the
    # combinations are resolved when the screening has chosen them).
    rows = [(v, p) for v in sweep.variants for p in sweep.points]
    for stage in ("screening", "final"):
        plan_groups(sweep, stage, rows)
    return sweep


# -- members and groups ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Member:
    """One model of the sweep: a structural variant, a numeric point, a seed."""

    variant: str
    point: tuple[tuple[str, float], ...]  # (axis, value) of the swept axes
    seed: int


@dataclasses.dataclass(frozen=True)
class Group:
    """Members trained as one population: ``config`` is the population's resolved training config
    (member ``i`` is ``members[i]``), ``name`` its run directory under ``<workdir>/<stage>/``."""

    name: str
    stage: str
    members: tuple[Member, ...]
    config: ml_collections.ConfigDict


def _variant_config(sweep: Sweep, variant: str, point: Mapping[str, float]) -> dict[str, Any]:
    config = json.loads(json.dumps(sweep.base))  # a deep copy of plain data
    for key, value in sweep.variants[variant].items():
        _set_dotted(config, key, value, f"variants[{variant!r}]")
    for axis, value in point.items():
        config.setdefault("optimizer", {})[axis] = value
    return config


def _member_key(config: ml_collections.ConfigDict, pack: bool) -> str:
    """What members of one group share: the resolved config less what a member has of its own
    (with ``pack``, of the widths only how many layers there are)."""
    shared = config.to_dict()
    del shared["population"]
    for key in AXES:
        del shared["optimizer"][key]
    if pack:
        for key in PACKABLE_FIELDS:
            shared["model"][key] = len(shared["model"][key])
    return json.dumps(shared, sort_keys=True, default=str)


def _packed(config: dict[str, Any], configs: Sequence[ml_collections.ConfigDict]) -> None:
    """Makes the group ``config`` (a plain dict) hold ``configs``' members at their own widths:
    the model the widest, each member's widths in ``population.channels`` / ``.dense``."""
    models = [c.model.to_dict() for c in configs]
    if all(m == models[0] for m in models):
        return  # one width: an ordinary population
    config["model"].update(widest(models))
    for key in PACKABLE_FIELDS:
        config["population"][key] = [list(m[key]) for m in models]


def _resolve(config: dict[str, Any], where: str) -> ml_collections.ConfigDict:
    try:
        return resolve_config(config)
    except ConfigError as e:
        raise type(e)(f"sweep {where}: {e}") from e


def plan_groups(
    sweep: Sweep, stage: str, rows: Sequence[tuple[str, Mapping[str, float]]]
) -> list[Group]:
    """The populations that train ``rows`` (variant name, numeric point) in ``stage``.

    Returns:
      The groups in the order of their first row; each member's values are in its group
      config's ``population.{seeds, learning_rates, weight_decays}`` (and ``momentums`` for
      optimizer "momentum").

    Raises:
      ConfigError: a row's training config is invalid (the message names the variant).
      ValueError: ``stage`` is not one of :data:`STAGES`.
    """
    if stage not in STAGES:
        raise ValueError(f"plan_groups: stage must be one of {list(STAGES)}, got {stage!r}")
    screening = stage != "final"  # the combination stage is screened like the variants
    epochs = sweep.screening_epochs if screening else sweep.final_epochs
    seeds = sweep.screening_seeds if screening else sweep.final_seeds
    by_key: dict[str, list[tuple[Member, ml_collections.ConfigDict]]] = {}
    for variant, point in rows:
        config = _variant_config(sweep, variant, point)
        if not screening:
            for key, value in sweep.final_overrides.items():
                _set_dotted(config, key, value, f"final.overrides[{key!r}]")
        config["num_epochs"] = epochs
        config["evaluate_test"] = not screening
        population = config.setdefault("population", {})
        population.update(
            size=1,
            seeds=[],
            learning_rates=[],
            momentums=[],
            weight_decays=[],
            channels=[],
            dense=[],
        )
        # One member's divergence must not stop its group: the others are other experiments.
        population["freeze_diverged"] = True
        # Halving screens; a finalist trains its whole budget.
        population["halving"] = (
            {"rungs": list(sweep.halving_rungs), "keep": sweep.halving_keep}
            if screening
            else {"rungs": []}
        )
        where = f"variants[{variant!r}]" + (f" at {dict(point)}" if point else "")
        resolved = _resolve(config, where)
        if "momentum" in point and resolved.optimizer.name != "momentum":
            raise ConfigError(
                f"sweep {where}: axes.momentum cannot vary: optimizer "
                f"{resolved.optimizer.name!r} has no momentum hyper-parameter; set "
                f"optimizer.name='momentum' (in overrides or the variant) or drop the axis"
            )
        if not resolved.data.validation_size:
            raise ConfigError(
                f"sweep {where}: data.validation_size is 0, but a sweep chooses on a validation "
                f"split; set it > 0 in the base config or in the sweep's overrides"
            )
        for seed in seeds:
            member = Member(variant, tuple(point.items()), seed)
            by_key.setdefault(_member_key(resolved, sweep.pack), []).append((member, resolved))

    groups = []
    for index, entries in enumerate(by_key.values()):
        members = tuple(m for m, _ in entries)
        configs = [c for _, c in entries]
        config = configs[0].to_dict()
        opt = config["optimizer"]
        names = list(dict.fromkeys(m.variant for m in members))
        population = config["population"]
        population.update(
            size=len(members),
            seeds=[m.seed for m in members],
            learning_rates=[c.optimizer.learning_rate for c in configs],
            weight_decays=[c.optimizer.weight_decay for c in configs],
            momentums=[c.optimizer.momentum for c in configs] if opt["name"] == "momentum" else [],
        )
        if sweep.pack:
            _packed(config, configs)
        name = f"g{index}-" + "+".join(names)
        groups.append(Group(name, stage, members, _resolve(config, f"group {name}")))
    return groups


# -- model cost ----------------------------------------------------------------------------------


def model_cost(model_config: Mapping[str, Any], input_shape: Sequence[int]) -> tuple[int, int]:
    """(parameters, forward multiply-adds per example) of the LeNet ``model_config`` describes,
    on inputs of ``input_shape`` (H, W, C): the totals of :func:`cnnjax.models.summary`'s table
    (convolutions by :func:`cnnjax.ops.conv_cost`, dense layers in x out). Only traced."""
    model = LeNet.from_config(model_config)
    example = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    params = jax.eval_shape(model.init, jax.random.key(0), example)["params"]
    outputs = jax.eval_shape(lambda p, x: features(model, p, x), params, example)
    shape, macs = tuple(example.shape), 0
    for stage in model.stages():
        if stage.kind == "conv":
            cost = ops.conv_cost(
                tuple(shape[1:3]), shape[3], stage.size, stage.kernel, padding=stage.padding
            )
            macs += cost.forward_macs
        elif stage.kind == "dense":
            macs += math.prod(shape[1:]) * stage.size
        shape = tuple(outputs[stage.name].shape)
    return sum(int(leaf.size) for leaf in jax.tree.leaves(params)), int(macs)


# -- running -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GroupResult:
    """What the records need of a finished group: its summary, input shape and, when every
    member diverged (no summary is written then), None."""

    group: Group
    summary: dict[str, Any] | None
    input_shape: tuple[int, ...]


def _finished(path: str, group: Group) -> GroupResult | None:
    """The group's result if its run directory holds a finished run of this very config."""
    if not os.path.isfile(os.path.join(path, "summary.json")):
        return None
    with RunDir(path, read_only=True) as run:
        saved, wanted = run.read_config().to_dict(), group.config.to_dict()
        # A raised num_epochs is left to train_and_evaluate, which resumes where it may.
        if {**saved, "num_epochs": 0} != {**wanted, "num_epochs": 0}:
            raise RunDirError(
                f"{path} holds a different run than this sweep's group {group.name} (the sweep "
                f"config changed); use a new --workdir"
            )
        summary = run.read_summary()
        if summary["epochs"] != group.config.num_epochs:
            return None
        return GroupResult(group, summary, tuple(run.read_info().shapes.input_shape))


def _diverged_marker(path: str) -> str:
    return path.rstrip(os.sep) + ".diverged"


def _train_group(
    group: Group, path: str, log: Callable[[str], None], train: Callable[..., Any]
) -> GroupResult:
    done = _finished(path, group)
    if done is not None:
        log(f"{group.stage}/{group.name}: finished earlier, read back")
        return done
    if os.path.isfile(_diverged_marker(path)):
        log(f"{group.stage}/{group.name}: every member diverged earlier")
        with RunDir(path, read_only=True) as run:
            return GroupResult(group, None, tuple(run.read_info().shapes.input_shape))
    log(
        f"{group.stage}/{group.name}: {group.config.population.size} member(s), "
        f"{group.config.num_epochs} epoch(s)"
    )
    try:
        summary = train(group.config, path)
    except TrainingDiverged as e:
        log(f"{group.stage}/{group.name}: {e}")
        _write_atomic(_diverged_marker(path), f"{e}\n")
        with RunDir(path, read_only=True) as run:
            return GroupResult(group, None, tuple(run.read_info().shapes.input_shape))
    with RunDir(path, read_only=True) as run:
        return GroupResult(group, summary, tuple(run.read_info().shapes.input_shape))


def _rows_of(results: Sequence[GroupResult], stage: str) -> list[dict[str, Any]]:
    """One record row per (variant, point) of ``stage``, from its members' group summaries.

    A member that diverged (frozen, see ``population.freeze_diverged``) counts with the accuracy
    of its frozen state and in ``diverged``; a group whose members all diverged has no summary,
    its rows no accuracy (and are never finalists). ``epochs`` is the epochs the row's members
    trained: the group's, or fewer for a row successive halving stopped (its members' summary
    ``stopped_epoch``; they stop together); such a row is marked ``_stopped``."""
    acc: dict[tuple[str, tuple], dict[str, Any]] = {}
    for result in results:
        config, summary = result.group.config, result.summary
        size = config.population.size
        for i, member in enumerate(result.group.members):
            row = acc.setdefault(
                (member.variant, member.point),
                {"group": result.group.name, "val": [], "test": [], "seeds": [], "div": 0},
            )
            row["seeds"].append(member.seed)
            row.setdefault("config", config)
            row.setdefault("index", i)
            row.setdefault("input_shape", result.input_shape)
            if summary is None:
                row["div"] += 1
                continue
            row["div"] += bool(np.asarray(summary["diverged"])[i])
            stopped = int(np.asarray(summary.get("stopped_epoch", np.zeros(size)))[i])
            row.setdefault("epochs", []).append(stopped or int(summary["epochs"]))
            row["val"].append(float(summary["val_accuracy"][i]))
            if "test_accuracy" in summary:
                if stage != "final":
                    raise RuntimeError(
                        f"{stage}/{result.group.name} reports test metrics; only finalists may"
                    )
                row["test"].append(float(summary["test_accuracy"][i]))
            row["eps"] = summary["examples_per_second"] / size

    rows = []
    for (variant, point), r in acc.items():
        config, i = r["config"], r["index"]
        hparams = {
            "learning_rate": config.population.learning_rates[i],
            "momentum": config.population.momentums[i]
            if config.population.momentums
            else (config.optimizer.momentum if config.optimizer.name == "momentum" else ""),
            "weight_decay": config.population.weight_decays[i],
        }
        params, macs = model_cost(member_model(config, i), r["input_shape"])
        label = " ".join([variant, *(f"{_SHORT[a]}={v:g}" for a, v in point)])
        rows.append(
            {
                "variant": label,
                "stage": stage,
                "structure": variant,
                **hparams,
                "params": params,
                "macs": macs,
                "seeds": len(r["seeds"]),
                # Seeds of one point stop together; max, should a row ever span points.
                "epochs": max(r["epochs"]) if "epochs" in r else "",
                "diverged": r["div"],
                **_mean_std("val_acc", r["val"]),
                **_mean_std("test_acc", r["test"]),
                # Empty when unknown: nothing trained (all diverged, or every epoch resumed).
                "examples_per_s": r["eps"] if math.isfinite(r.get("eps", math.nan)) else "",
                "group": r["group"],
                "_point": dict(point),
                "_input_shape": r["input_shape"],
                "_stopped": "epochs" in r and min(r["epochs"]) < config.num_epochs,
            }
        )
    return rows


_SHORT = {"learning_rate": "lr", "momentum": "m", "weight_decay": "wd"}


def _mean_std(name: str, values: Sequence[float]) -> dict[str, Any]:
    """Mean and (population) standard deviation of the finite ``values``; empty if none."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {f"{name}_mean": "", f"{name}_std": ""}
    return {f"{name}_mean": float(np.mean(finite)), f"{name}_std": float(np.std(finite))}


def _comparable(row: dict[str, Any], max_params: int) -> bool:
    """Whether a screened row may be chosen (a finalist, a combination winner, the baseline's
    bar): it has a validation accuracy, trained the whole screening budget (successive halving
    did not stop it) and has at most ``max_params`` parameters (when > 0)."""
    return (
        row["val_acc_mean"] != ""
        and not row.get("_stopped", False)
        and (not max_params or row["params"] <= max_params)
    )


def _rank(rows: Sequence[dict[str, Any]], top_k: int, max_params: int = 0) -> list[dict[str, Any]]:
    """The ``top_k`` rows by mean validation accuracy among the :func:`_comparable` ones (ties
    keep the config's order)."""
    scored = [r for r in rows if _comparable(r, max_params)]
    return sorted(scored, key=lambda r: -r["val_acc_mean"])[:top_k]


def combinations(
    sweep: Sweep, screened: Sequence[dict[str, Any]], log: Callable[[str], None] = print
) -> dict[str, dict[str, Any]]:
    """The combination stage's variants, from the screening's record rows.

    The winners are the at most ``sweep.combine_top`` variants whose best row (over the numeric
    points) has a higher mean validation accuracy than the baseline variant's best row, best
    first, and at most ``sweep.max_params`` parameters; rows that successive halving stopped
    count for neither. Every subset of two or more winners is
    one combination, named ``"a+b"`` in the winners' order, its overrides the union of theirs.
    A subset whose variants set one key to different values (two kernel sizes), whose union
    equals a variant already screened, or whose model exceeds ``max_params`` is skipped, and the
    reason logged.

    Returns:
      Name -> dotted overrides, in subset order (pairs first); empty when fewer than two
      variants beat the baseline.
    """
    best: dict[str, float] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for r in screened:
        if not _comparable(r, sweep.max_params):
            continue
        best[r["structure"]] = max(best.get(r["structure"], -math.inf), r["val_acc_mean"])
        shapes[r["structure"]] = r["_input_shape"]
    baseline = sweep.combine_baseline
    bar = best.get(baseline, -math.inf) if baseline else -math.inf
    winners = sorted((v for v in best if v != baseline and best[v] > bar), key=lambda v: -best[v])
    winners = winners[: sweep.combine_top]
    log(f"combination: combining {winners} (each beat {baseline or 'nothing'!s} on validation)")
    known = [dict(o) for o in sweep.variants.values()]
    combos: dict[str, dict[str, Any]] = {}
    for n in range(2, len(winners) + 1):
        for subset in itertools.combinations(winners, n):
            name, merged, clash = "+".join(subset), {}, []
            for variant in subset:
                for key, value in sweep.variants[variant].items():
                    if key in merged and merged[key] != value:
                        clash.append(key)
                    merged[key] = value
            if clash:
                log(f"combination: skipped {name}: its variants set {sorted(set(clash))} apart")
                continue
            if merged in known:
                log(f"combination: skipped {name}: the same as a variant already screened")
                continue
            if sweep.max_params:
                model = _variant_config(
                    dataclasses.replace(sweep, variants={name: merged}), name, {}
                )["model"]
                params, _ = model_cost(model, shapes[subset[0]])
                if params > sweep.max_params:
                    log(f"combination: skipped {name}: {params:,} parameters > max_params")
                    continue
            combos[name] = merged
    return combos


def _stage_dir(workdir: str, stage: str) -> str:
    return os.path.join(workdir, stage)


def run_sweep(
    sweep_config: Any,
    workdir: str | os.PathLike,
    *,
    log: Callable[[str], None] = print,
    train: Callable[..., Any] | None = None,
    until: str = "final",
) -> list[dict[str, Any]]:
    """Runs (or resumes) the sweep's stages and writes its records.

    Args:
      sweep_config: a sweep ``ConfigDict`` or mapping (:func:`default_sweep_config`).
      workdir: the sweep's directory: ``<stage>/<group>/`` run directories, ``results.csv``,
        ``results.md``, ``results.png``.
      log: receives one line per group (the runs print their own lines too).
      train: ``train(config, workdir) -> summary``; default
        :func:`cnnjax.train.trainer.train_and_evaluate` with this ``log``.
      until: the last stage to run (one of :data:`STAGES`): ``"screening"`` screens and stops,
        so the table can be read before anything is retrained; the same call with the default
        later resumes from there.

    Returns:
      The rows of ``results.csv`` (dicts keyed by :data:`COLUMNS`), screening rows first.

    Raises:
      ConfigError, DataError, DeviceError, RunDirError, WriteError: as ``train_and_evaluate``
        (a bad sweep config is a ConfigError, raised before anything is trained).
      ValueError: ``until`` is not a stage.
    """
    if until not in STAGES:
        raise ValueError(f"run_sweep: until must be one of {list(STAGES)}, got {until!r}")
    sweep = resolve_sweep(sweep_config)
    workdir = os.fspath(workdir)
    if train is None:
        from cnnjax.train.trainer import train_and_evaluate

        def train(config: Any, path: str) -> Any:
            return train_and_evaluate(config, path, log=log)

    os.makedirs(workdir, exist_ok=True)
    all_rows: list[dict[str, Any]] = []
    screened: list[dict[str, Any]] = []  # the rows the finalists are chosen from
    rows = [(v, p) for v in sweep.variants for p in sweep.points]
    for stage in STAGES:
        if stage == "combination":
            if not sweep.combine_top:
                continue
            combos = combinations(sweep, screened, log)
            if not combos:
                log("combination: fewer than two variants to combine; stage skipped")
                continue
            sweep = dataclasses.replace(sweep, variants={**sweep.variants, **combos})
            rows = [(v, p) for v in combos for p in sweep.points]
        elif stage == "final":
            finalists = _rank(screened, sweep.top_k, sweep.max_params)
            if not finalists:
                log("screening: every eligible member diverged; no finalist")
                break
            rows = [(r["structure"], r["_point"]) for r in finalists]
        groups = plan_groups(sweep, stage, rows)
        log(f"{stage}: {len(rows)} row(s) in {len(groups)} group(s)")
        results = [
            _train_group(g, os.path.join(_stage_dir(workdir, stage), g.name), log, train)
            for g in groups
        ]
        stage_rows = _rows_of(results, stage)
        all_rows += stage_rows
        if stage != "final":
            screened += stage_rows
        write_records(workdir, all_rows)  # the screening's table stands if a later stage fails
        if stage == until:
            break
    return [{k: r[k] for k in COLUMNS} for r in all_rows]


# -- records -------------------------------------------------------------------------------------


def _write_atomic(path: str, content: str | bytes) -> None:
    """Writes ``path`` whole or not at all: a temporary file beside it, then a rename."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content.encode() if isinstance(content, str) else content)
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise WriteError(e.errno, f"cannot write {path}: {e.strerror or e}") from e


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.6g}"
    return str(value)


def write_records(workdir: str, rows: Sequence[dict[str, Any]]) -> None:
    """``results.csv``, ``results.md`` and ``results.png`` of ``rows`` in ``workdir``.

    Raises:
      ValueError: a row that is not a finalist's carries test numbers (the protocol forbids
        reporting them: only finalists were chosen without looking at the test set).
      WriteError: a file could not be written (the previous one stays whole).
    """
    for r in rows:
        if r["stage"] != "final" and (r["test_acc_mean"] != "" or r["test_acc_std"] != ""):
            raise ValueError(
                f"write_records: row {r['variant']!r} of stage {r['stage']!r} has test numbers; "
                f"only finalists are evaluated on the test set"
            )
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in rows:
        writer.writerow([_cell(r[k]) for k in COLUMNS])
    _write_atomic(os.path.join(workdir, "results.csv"), out.getvalue())

    shown = [c for c in COLUMNS if c != "group"]
    lines = [
        "| " + " | ".join(shown) + " |",
        "|" + "|".join("---" for _ in shown) + "|",
        *("| " + " | ".join(_cell(r[k]) for k in shown) + " |" for r in rows),
    ]
    note = (
        "\nTest accuracy is reported for the finalists only: they were chosen on the "
        "validation split and evaluated on the test set once.\n"
    )
    chosen = choice(rows)
    if chosen is not None:
        note += (
            f"\nThe sweep's choice (the finalist with the best final validation accuracy): "
            f"**{chosen['variant']}**.\n"
        )
    _write_atomic(os.path.join(workdir, "results.md"), "\n".join(lines) + "\n" + note)

    buf = io.BytesIO()
    pareto_figure(rows).savefig(buf, format="png", dpi=100)
    _write_atomic(os.path.join(workdir, "results.png"), buf.getvalue())


def choice(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The sweep's choice: the final-stage row with the best mean validation accuracy (the
    first on a tie), or None before the final stage has a scored row."""
    finals = [r for r in rows if r["stage"] == "final" and r["val_acc_mean"] != ""]
    return max(finals, key=lambda r: r["val_acc_mean"]) if finals else None


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (cost, score) points no other point beats: none has lower-or-equal cost
    and a higher score, or lower cost and an equal score. Sorted by cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def pareto_figure(rows: Sequence[dict[str, Any]]):
    """Validation accuracy against parameters of the screening and combination rows (finalists'
    final runs starred), the Pareto front joined. Returns a ``matplotlib.figure.Figure``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    screened = [r for r in rows if r["stage"] != "final" and r["val_acc_mean"] != ""]
    xs = [r["params"] for r in screened]
    ys = [r["val_acc_mean"] for r in screened]
    for stage, color in (("screening", "tab:blue"), ("combination", "tab:orange")):
        mine = [i for i, r in enumerate(screened) if r["stage"] == stage]
        if mine:
            ax.scatter(
                [xs[i] for i in mine],
                [ys[i] for i in mine],
                s=18,
                color=color,
                label=f"{stage} (mean over seeds)",
            )
    front = pareto_front(list(zip(xs, ys, strict=True)))
    if front:
        ax.plot(
            [xs[i] for i in front],
            [ys[i] for i in front],
            "-o",
            color="tab:red",
            mfc="none",
            ms=9,
            label="Pareto front",
        )
    for i in front:
        ax.annotate(
            screened[i]["variant"],
            (xs[i], ys[i]),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    finals = [r for r in rows if r["stage"] == "final" and r["val_acc_mean"] != ""]
    if finals:
        ax.scatter(
            [r["params"] for r in finals],
            [r["val_acc_mean"] for r in finals],
            marker="*",
            s=90,
            color="tab:green",
            label="finalists (final runs)",
        )
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("validation accuracy")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # nothing scored (every member diverged): no legend
        ax.legend(fontsize=8)
    return fig


# -- command line --------------------------------------------------------------------------------


_USAGE = (
    "usage: sweep.py --config=configs/sweeps/NAME.py --workdir=runs/NAME "
    f"[--until={{{','.join(STAGES)}}}]"
)


def _parse(argv: Sequence[str]) -> tuple[str, str, str] | None:
    """``(config, workdir, until)`` of the command line, or None for ``--help``."""
    values: dict[str, str] = {}
    args = list(argv[1:])
    while args:
        arg = args.pop(0)
        if arg in ("-h", "--help"):
            return None
        name, eq, value = arg.partition("=")
        if name not in ("--config", "--workdir", "--until"):
            raise ConfigError(f"unexpected argument {arg!r}; {_USAGE}")
        if not eq:
            if not args:
                raise ConfigError(f"{name} needs a value; {_USAGE}")
            value = args.pop(0)
        values[name] = value
    for name in ("--config", "--workdir"):
        if not values.get(name):
            raise ConfigError(f"{name} is required; {_USAGE}")
    until = values.get("--until", "final")
    if until not in STAGES:
        raise ConfigError(f"--until must be one of {list(STAGES)}, got {until!r}; {_USAGE}")
    return values["--config"], values["--workdir"], until


def main(argv: Sequence[str]) -> int:
    """``sweep.py --config=FILE --workdir=DIR [--until=STAGE]``: runs or resumes a sweep (up to
    and including ``STAGE``, default all); returns the exit
    status of :mod:`cnnjax.train.cli` (0 done, 1 failed, 2 usage error, 130 interrupted)."""
    from absl import logging

    from cnnjax.train import cli

    try:
        parsed = _parse(argv)
        if parsed is None:
            print(f"{_USAGE}\n\n{__doc__.split(chr(10) + chr(10))[0]}")
            return 0
        path, workdir, until = parsed
        config = load_config_file(path)
        resolve_sweep(config)
    except ConfigError as e:
        return cli.fail(str(e), cli.USAGE_ERROR)
    except KeyboardInterrupt:
        return cli.interrupted("before the sweep started; nothing was written")
    cli.enable_compilation_cache()
    logging.set_verbosity(logging.WARNING)  # Orbax logs every checkpoint at INFO
    try:
        rows = run_sweep(config, workdir, until=until)
    except (ConfigError, DataError, DeviceError, RunDirError) as e:
        return cli.fail(str(e), cli.USAGE_ERROR)
    except WriteError as e:
        return cli.fail(e.strerror or str(e), cli.RUN_FAILED)
    except KeyboardInterrupt:
        return cli.interrupted(
            "finished groups and the running group's last epoch are kept; run the same "
            "command to resume"
        )
    print(f"{len(rows)} row(s): {os.path.join(workdir, 'results.md')}", file=sys.stdout)
    return 0
