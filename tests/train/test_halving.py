"""Successive halving inside a population: the rule, the stops a run makes, frozen members,
untouched survivors, the skipped step, resuming after a rung, bad values, and a sweep's screening.

One population trains on the bundled data: three points (learning rates 0.05, 1e-5 and 0.02) of
two seeds each, a rung after epoch 1 of 2, keep 0.5 -- so ceil(1.5) = 2 points continue, and the
point at 1e-5 (which barely moves from chance) is the one that stops.
"""

import pathlib
import shutil
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.training import train_state

from cnnjax import data
from cnnjax.models import LeNet
from cnnjax.train import (
    ConfigError,
    RunDir,
    create_population,
    make_train_epoch,
    make_train_step,
    resolve_config,
    restore_model,
    train_and_evaluate,
)
from cnnjax.train.loop import _point_keys, halving
from cnnjax.train.state import HalvingState, TrainState
from cnnjax.train.sweep import _rank, combinations, resolve_sweep, run_sweep
from tests.train.tiny import (
    ROOT,
    assert_identical,
    assert_one_line_errors,
    read_metrics,
    tiny_config,
)

MODEL = dict(
    activation="relu", pooling="max", kernel_init="he_uniform", channels=(4, 8), dense=(32,)
)
SEEDS = (0, 1, 0, 1, 0, 1)
RATES = (0.05, 0.05, 1e-5, 1e-5, 0.02, 0.02)
STOPPED = np.array([False, False, True, True, False, False])  # the point at 1e-5


def _config(rungs=(1,), **overrides):
    config = tiny_config(
        model=MODEL,
        evaluate_test=False,
        data__train_limit=1100,
        data__validation_size=100,
        optimizer__name="momentum",
        optimizer__momentum=0.9,
        **overrides,
    )
    config.population.update(size=len(SEEDS), seeds=SEEDS, learning_rates=RATES, strategy="map")
    config.population.halving.rungs = rungs
    return config


def _newest_state(workdir):
    """The whole population state of the newest checkpoint in ``workdir``."""
    with RunDir(workdir, read_only=True) as run:
        meta = run.read_meta(run.epochs()[0])
        config = resolve_config(meta.identity.config)
        model = LeNet.from_config(config.model)
        target = create_population(
            config, model, meta.shapes.input_shape, steps_per_epoch=meta.shapes.steps_per_epoch
        )
        return run.restore(target).state


class Run(NamedTuple):
    workdir: pathlib.Path
    summary: dict
    lines: list[str]
    state: TrainState  # of the newest checkpoint


@pytest.fixture(scope="module")
def halved(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("halving") / "halved"
    lines = []
    summary = train_and_evaluate(_config(), workdir, log=lines.append)
    return Run(workdir, summary, lines, _newest_state(workdir))


@pytest.fixture(scope="module")
def unhalved(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("halving") / "unhalved"
    lines = []
    summary = train_and_evaluate(_config(rungs=()), workdir, log=lines.append)
    return Run(workdir, summary, lines, _newest_state(workdir))


def _at_rung(halved, path):
    """A copy of the halved run as if killed during epoch 2: the rung's checkpoint is the
    newest, and the run has no summary."""
    shutil.copytree(halved.workdir, path)
    shutil.rmtree(path / "checkpoints" / "2")
    (path / "summary.json").unlink()
    return path


@pytest.fixture(scope="module")
def rung_state(halved, tmp_path_factory):
    return _newest_state(_at_rung(halved, tmp_path_factory.mktemp("halving") / "at_rung"))


def _arrays(state, i=None):
    """Every array of ``state`` (of member ``i`` only, if given) by its path: the state's values
    without its static fields (the model's and optimizer's functions)."""
    return {
        jax.tree_util.keystr(path): np.asarray(leaf) if i is None else np.asarray(leaf)[i]
        for path, leaf in jax.tree_util.tree_leaves_with_path(state)
    }


# -- the rule --------------------------------------------------------------------------------


def test_the_rule_keeps_the_best_ceil_keep_times_active_points():
    points = ["a", "a", "b", "b", "c", "c"]
    acc = [0.8, 0.6, 0.9, 0.1, 0.5, 0.5]  # means: a 0.7, b 0.5, c 0.5 (b first: b wins the tie)
    none = np.zeros(6, bool)
    verdict = halving(acc, none, none, points, 0.5)
    assert verdict.stopped.tolist() == [False, False, False, False, True, True]
    assert (verdict.active, verdict.kept) == (3, 2)
    # A diverged seed counts as -inf: its point goes last whatever its other seed reached.
    diverged = np.array([False, True, False, False, False, False])
    verdict = halving(acc, diverged, none, points, 0.5)
    assert verdict.stopped.tolist() == [True, True, False, False, False, False]
    # Points stopped earlier are not active and stay stopped; at least one point continues.
    earlier = np.array([False, False, False, False, True, True])
    verdict = halving(acc, none, earlier, points, 0.01)
    assert verdict.stopped.tolist() == [False, False, True, True, True, True]
    assert (verdict.active, verdict.kept) == (2, 1)
    # keep * active is rounded before ceil: 0.3 of 10 points keeps 3, not 4.
    ten = halving(np.arange(10.0), np.zeros(10, bool), np.zeros(10, bool), range(10), 0.3)
    assert np.flatnonzero(~ten.stopped).tolist() == [7, 8, 9]


def test_members_with_equal_per_member_values_are_seeds_of_one_point():
    config = tiny_config(optimizer__name="momentum")
    config.population.update(
        size=4,
        seeds=(5, 6, 7, 8),
        learning_rates=(0.1, 0.1, 0.1, 0.2),
        momentums=(0.9, 0.9, 0.5, 0.9),
    )
    keys = _point_keys(resolve_config(config))
    assert keys[0] == keys[1] and len(set(keys)) == 3


# -- a run with a rung -----------------------------------------------------------------------


def test_a_rung_stops_exactly_the_points_ranked_out(halved, rung_state):
    assert halved.summary["stopped_epoch"].tolist() == [0, 0, 1, 1, 0, 0]
    assert "halving at epoch 1: 2 of 3 points continue" in halved.lines
    # The best member is one that trained to the end (a stopped member's accuracy is of its
    # rung, not comparable).
    assert halved.summary["stopped_epoch"][halved.summary["best_member"]] == 0
    # The point at 1e-5 has the lowest mean validation accuracy after epoch 1.
    rows = [r for r in read_metrics(halved.workdir) if r["epoch"] == 1]
    means = {
        lr: np.mean([r["val_accuracy"] for r in rows if r["learning_rate"] == lr])
        for lr in set(RATES)
    }
    assert min(means, key=means.get) == 1e-5
    # The stops are in the state, and so in the rung's checkpoint.
    assert rung_state.stopped.tolist() == halved.state.stopped.tolist() == STOPPED.tolist()


def test_a_stopped_members_rows_repeat_the_epoch_it_stopped_after(halved):
    rows = read_metrics(halved.workdir)
    for i in np.flatnonzero(STOPPED):
        first, second = (
            {k: v for k, v in r.items() if k != "epoch"} for r in rows if r["member"] == i
        )
        assert second == first and first["stopped_epoch"] == 1
    assert halved.summary["epochs"] == 2 and not halved.summary["diverged"].any()


def test_a_stopped_member_is_frozen_bit_for_bit(halved, rung_state):
    assert isinstance(halved.state, HalvingState)
    for i in range(len(SEEDS)):
        if STOPPED[i]:  # params, optimizer state, step: nothing moved, bit for bit
            chex.assert_trees_all_equal(_arrays(halved.state, i), _arrays(rung_state, i))
        else:
            assert int(halved.state.step[i]) == 2 * int(rung_state.step[i])
    # What a user restores of it is its state at the rung.
    first = int(np.flatnonzero(STOPPED)[0])
    chex.assert_trees_all_equal(
        _arrays(restore_model(halved.workdir, first).params), _arrays(rung_state.params, first)
    )


def test_survivors_train_exactly_as_without_halving(halved, unhalved):
    assert "stopped_epoch" not in unhalved.summary
    assert not any(line.startswith("halving at") for line in unhalved.lines)
    for i in np.flatnonzero(~STOPPED):
        assert_identical(_arrays(halved.state.params, i), _arrays(unhalved.state.params, i))
    trained = [
        {k: v for k, v in r.items() if k != "stopped_epoch"}
        for r in read_metrics(halved.workdir)
        if not STOPPED[r["member"]]
    ]
    plain = [r for r in read_metrics(unhalved.workdir) if not STOPPED[r["member"]]]
    assert_identical(trained, plain)


class _StateBeforeHalving(train_state.TrainState):
    """The train state's class as it was before successive halving existed."""

    diverged: jax.Array
    max_loss: jax.Array


def test_a_checkpoint_written_before_halving_existed_still_restores(unhalved, tmp_path):
    # Orbax records even a None field as a node of the checkpoint's tree: a field that is None
    # without halving would make such a checkpoint unrestorable (read-only: RunDirError).
    state = unhalved.state
    assert type(state) is TrainState
    old = _StateBeforeHalving(
        **{f: getattr(state, f) for f in ("step", "apply_fn", "params", "tx", "opt_state")},
        diverged=state.diverged,
        max_loss=state.max_loss,
    )
    with RunDir(unhalved.workdir, read_only=True) as run:
        meta = run.read_meta(run.epochs()[0])
    with RunDir(tmp_path / "old") as run:
        run.save(meta.epoch, old, meta)
    chex.assert_trees_all_equal(_arrays(_newest_state(tmp_path / "old")), _arrays(state))


def test_a_run_resumed_after_a_rung_keeps_its_stops(halved, tmp_path, capsys):
    resumed = _at_rung(halved, tmp_path / "resumed")
    with RunDir(halved.workdir, read_only=True) as run:
        config = run.read_config()
    lines = []
    again = train_and_evaluate(config, resumed, log=lines.append)
    assert "resuming after epoch 1" in capsys.readouterr().out
    # Epoch 1 is not trained again, so no rung decides anything: the stops come from the
    # checkpoint (the state) and its history (stopped_epoch).
    assert not any(line.startswith("halving at") for line in lines)
    assert again["stopped_epoch"].tolist() == halved.summary["stopped_epoch"].tolist()
    assert_identical(read_metrics(resumed), read_metrics(halved.workdir))
    assert_identical(_arrays(_newest_state(resumed)), _arrays(halved.state))


# -- the skipped step --------------------------------------------------------------------------

SHAPE = (12, 12, 1)


def _small(strategy, rungs=(1,)):
    config = tiny_config(batch_size=16, model=dict(channels=(2, 4), dense=(8,), num_classes=3))
    config.population.update(size=4, learning_rates=(0.1, 0.2, 0.3, 0.4), strategy=strategy)
    config.population.halving.rungs = rungs
    config = resolve_config(config)
    rng = np.random.default_rng(0)
    train = data.to_device(
        rng.integers(0, 256, size=(64, *SHAPE), dtype=np.uint8),
        rng.integers(0, 3, size=64, dtype=np.int32),
    )
    state = create_population(config, LeNet.from_config(config.model), SHAPE)
    if rungs:
        state = state.replace(stopped=jnp.array([False, True, False, True]))
    return config, state, train


def _subjaxprs(eqn):
    for value in eqn.params.values():
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if hasattr(v, "eqns"):
                yield v
            elif hasattr(getattr(v, "jaxpr", None), "eqns"):
                yield v.jaxpr


def _primitives(jaxpr):
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for sub in _subjaxprs(eqn):
            names |= _primitives(sub)
    return names


def _skipping_conds(jaxpr):
    """Conditionals with one branch that trains (matmuls/convolutions) and one that does not."""
    found = 0
    heavy = {"dot_general", "conv_general_dilated"}
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "cond":
            trains = [bool(heavy & _primitives(b.jaxpr)) for b in eqn.params["branches"]]
            found += sorted(trains) == [False, True]
        for sub in _subjaxprs(eqn):
            found += _skipping_conds(sub)
    return found


@pytest.mark.parametrize(
    ("strategy", "rungs", "skips"), [("map", (1,), 1), ("vmap", (1,), 0), ("map", (), 0)]
)
def test_map_skips_a_stopped_members_step_in_a_conditional(strategy, rungs, skips):
    config, state, train = _small(strategy, rungs)
    epoch = make_train_epoch(config)
    jaxpr = jax.make_jaxpr(epoch)(state, train, data.epoch_key(0, 1)).jaxpr
    assert _skipping_conds(jaxpr) == skips


def test_stopped_members_are_frozen_alike_under_map_and_vmap():
    results = {}
    for strategy in ("map", "vmap"):
        config, state, train = _small(strategy)
        before = _arrays(state)
        step = make_train_step(config)
        after, metrics = step(state, train.images[:16], train.labels[:16])
        after, metrics = step(after, train.images[16:32], train.labels[16:32])
        for i in (1, 3):
            chex.assert_trees_all_equal(_arrays(after, i), {k: v[i] for k, v in before.items()})
            assert np.isnan(metrics["loss"][i]) and metrics["update_norm"][i] == 0
        moved = _arrays(after, 0)[".params['output']['bias']"]
        assert not np.array_equal(moved, before[".params['output']['bias']"][0])
        results[strategy] = _arrays(after)
    # The strategies differ only by float rounding (as populations do, test_population.py).
    chex.assert_trees_all_close(results["map"], results["vmap"], rtol=1e-5, atol=1e-6)


# -- bad values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("halving", "fragment"),
    [
        (
            {"rungs": (2,)},
            "config.population.halving.rungs must be strictly increasing epochs in "
            "[1, num_epochs=2)",
        ),
        ({"rungs": (0,)}, "config.population.halving.rungs must be"),
        ({"rungs": (1, 1)}, "config.population.halving.rungs must be"),
        ({"rungs": (1.0,)}, "config.population.halving.rungs[0] must be an int"),
        ({"keep": 1.0}, "config.population.halving.keep must be in (0, 1)"),
        ({"keep": 0.0}, "config.population.halving.keep must be in (0, 1)"),
        ({"rungs": 1}, "config.population.halving.rungs must be a sequence"),
    ],
)
def test_bad_halving_values_are_one_line_config_errors(halving, fragment):
    config = tiny_config().to_dict()
    config["population"]["halving"] = halving
    with pytest.raises(ConfigError) as error:
        resolve_config(config)
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_bad_halving_values_on_the_command_lines_are_one_line(tmp_path):
    assert_one_line_errors(
        "scripts/train.py",
        {
            "rung past the end": (
                [
                    "--config=configs/lenet.py",
                    f"--workdir={tmp_path / 'run'}",
                    "--config.num_epochs=2",
                    "--config.population.halving.rungs=(2,)",
                ],
                "config.population.halving.rungs must be strictly increasing",
            ),
        },
    )


@pytest.mark.parametrize(
    ("halving", "fragment"),
    [
        (
            {"rungs": (1,)},
            "screening.halving.rungs must be strictly increasing epochs in "
            "[1, screening.num_epochs=1)",
        ),
        ({"rungs": (True,)}, "screening.halving.rungs must be a tuple of epochs"),
        ({"keep": 2}, "screening.halving.keep must be in (0, 1)"),
        ({"kept": 0.5}, "unknown key 'kept' (did you mean 'keep'?)"),
    ],
)
def test_bad_sweep_halving_values_are_one_line_config_errors(halving, fragment):
    config = _sweep_config()
    config.screening.num_epochs = 1
    config.screening.halving = halving
    with pytest.raises(ConfigError) as error:
        resolve_sweep(config)
    assert fragment in str(error.value) and "\n" not in str(error.value)


# -- a sweep's screening ---------------------------------------------------------------------


def _sweep_config():
    from cnnjax.train import load_config_file

    config = load_config_file(str(ROOT / "configs" / "sweeps" / "smoke.py"))
    config.overrides.data.train_limit = 1100
    config.overrides.model.update(channels=(4, 8), dense=(32,))
    config.variants = {"base": {}}
    config.axes.learning_rate = (0.05, 1e-5, 0.02)
    config.screening.update(num_epochs=2, seeds=(0,))
    config.screening.halving = {"rungs": (1,), "keep": 0.5}
    config.final.update(top_k=3, num_epochs=1, seeds=(0,))
    return config


def test_a_sweep_with_halving_records_epochs_and_never_picks_a_stopped_row(tmp_path):
    workdir = tmp_path / "sweep"
    rows = run_sweep(_sweep_config(), workdir, log=lambda line: None)
    screening = [r for r in rows if r["stage"] == "screening"]
    final = [r for r in rows if r["stage"] == "final"]
    assert [(r["learning_rate"], r["epochs"]) for r in screening] == [
        (0.05, 2),
        (1e-5, 1),
        (0.02, 2),
    ]
    # top_k=3, but the stopped row is not comparable: two finalists, trained the final's budget.
    assert sorted(r["learning_rate"] for r in final) == [0.02, 0.05]
    assert all(r["epochs"] == 1 for r in final)
    with RunDir(workdir / "final" / final[0]["group"], read_only=True) as run:
        assert run.read_config().population.halving.rungs == ()
    header = (workdir / "results.csv").read_text().splitlines()[0].split(",")
    assert header[header.index("seeds") + 1] == "epochs"


def test_a_stopped_row_is_neither_a_finalist_nor_a_combination_winner():
    config = _sweep_config()
    config.variants = {
        "base": {},
        "wide": {"model": {"dense": (64,)}},
        "tanh": {"model": {"activation": "tanh"}},
    }
    config.combine = {"top": 2}
    sweep = resolve_sweep(config)

    def row(structure, acc, stopped):
        return {
            "structure": structure,
            "val_acc_mean": acc,
            "params": 1000,
            "_input_shape": (28, 28, 1),
            "_stopped": stopped,
        }

    # The best accuracy is a stopped row's (of fewer epochs): it counts for nothing.
    rows = [
        row("base", 0.5, False),
        row("wide", 0.99, True),
        row("wide", 0.6, False),
        row("tanh", 0.7, False),
    ]
    assert [r["val_acc_mean"] for r in _rank(rows, 3)] == [0.7, 0.6, 0.5]
    lines = []
    assert list(combinations(sweep, rows, lines.append)) == ["tanh+wide"]
    assert "combining ['tanh', 'wide']" in lines[0]
