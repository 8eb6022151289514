"""Sweeps: variants grouped into populations, the screening/final protocol, records, resuming,
and bad sweep configs as one-line errors. One smoke sweep (configs/sweeps/smoke.py) is shared."""

import csv
import math
import pathlib
import shutil

import numpy as np
import pytest

from cnnjax.models import LeNet, summary
from cnnjax.train import RunDir, load_config_file
from cnnjax.train.sweep import (
    COLUMNS,
    choice,
    combinations,
    model_cost,
    pareto_front,
    plan_groups,
    resolve_sweep,
    run_sweep,
    write_records,
)
from tests.train.tiny import assert_one_line_errors

ROOT = pathlib.Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "sweeps" / "smoke.py")


def _smoke_config():
    return load_config_file(SMOKE)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sweep") / "smoke"
    lines = []
    rows = run_sweep(_smoke_config(), workdir, log=lines.append)
    return workdir, rows, lines


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _summary(path):
    with RunDir(path, read_only=True) as run:
        return run.read_summary()


def test_members_form_one_group_per_shape_with_one_run_directory_each(smoke):
    workdir, _, _ = smoke
    # 2 variants x 2 learning rates x 2 seeds: one population of 4 per variant (the rates and
    # seeds are per-member values); the finalist row's 2 seeds are one more population.
    assert sorted(p.name for p in (workdir / "screening").iterdir()) == ["g0-base", "g1-narrow"]
    assert sorted(p.name for p in (workdir / "final").iterdir()) == ["g0-base"]
    for name in ("g0-base", "g1-narrow"):
        with RunDir(workdir / "screening" / name, read_only=True) as run:
            pop = run.read_config().population
        assert pop.size == 4
        assert pop.seeds == (0, 1, 0, 1) and pop.learning_rates == (0.01, 0.01, 0.05, 0.05)
    with RunDir(workdir / "final" / "g0-base", read_only=True) as run:
        assert run.read_config().population.size == 2


def test_results_table_has_one_row_per_variant_point_and_stage(smoke):
    workdir, rows, _ = smoke
    table = _read_csv(workdir / "results.csv")
    assert tuple(table[0]) == COLUMNS
    assert [(r["structure"], r["learning_rate"], r["stage"]) for r in table] == [
        ("base", "0.01", "screening"),
        ("base", "0.05", "screening"),
        ("narrow", "0.01", "screening"),
        ("narrow", "0.05", "screening"),
        (table[4]["structure"], table[4]["learning_rate"], "final"),
    ]
    assert len(rows) == len(table) == 5
    assert (workdir / "results.png").stat().st_size > 0
    md = (workdir / "results.md").read_text().splitlines()
    assert (
        md[0].startswith("| variant | stage |")
        and len([m for m in md if "| screening |" in m]) == 4
    )
    # The numbers are the groups' own: mean and std over the row's seeds of its members.
    summary_ = _summary(workdir / "screening" / "g1-narrow")
    narrow_fast = next(r for r in table if r["variant"] == "narrow lr=0.05")
    val = summary_["val_accuracy"][2:]
    assert float(narrow_fast["val_acc_mean"]) == pytest.approx(np.mean(val), rel=1e-5)
    assert float(narrow_fast["val_acc_std"]) == pytest.approx(np.std(val), abs=1e-6)
    assert int(narrow_fast["seeds"]) == 2 and float(narrow_fast["examples_per_s"]) > 0
    # Parameters and multiply-adds are summary()'s totals.
    narrow = LeNet.from_config({**LeNet.default_config(), "channels": (4, 8), "dense": (32,)})
    total = summary(narrow, (28, 28, 1)).splitlines()[-1].split()
    assert [narrow_fast["params"], narrow_fast["macs"]] == [t.replace(",", "") for t in total[1:3]]


def test_only_the_finalist_is_tested_and_screening_never_reads_the_test_set(smoke):
    workdir, _, _ = smoke
    table = _read_csv(workdir / "results.csv")
    screening = [r for r in table if r["stage"] == "screening"]
    final = [r for r in table if r["stage"] == "final"]
    assert all(r["test_acc_mean"] == r["test_acc_std"] == "" for r in screening)
    best = max(screening, key=lambda r: float(r["val_acc_mean"]))
    assert [r["variant"] for r in final] == [best["variant"]]
    assert math.isfinite(float(final[0]["test_acc_mean"]))
    for group in (workdir / "screening").iterdir():
        s = _summary(group)
        assert "test_accuracy" not in s and "test_loss" not in s and "val_accuracy" in s
        with RunDir(group, read_only=True) as run:
            assert not any(k.startswith("test") for k in run.read_metrics()[0])
    assert "test_accuracy" in _summary(workdir / "final" / final[0]["group"])


def _without_timing(path):
    return [{k: v for k, v in r.items() if k != "examples_per_s"} for r in _read_csv(path)]


def test_a_finished_sweep_is_read_back_without_training(smoke, tmp_path):
    workdir, rows, _ = smoke
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy)

    def no_training(config, path):
        raise AssertionError(f"{path} was trained again")

    again = run_sweep(_smoke_config(), copy, train=no_training, log=lambda line: None)
    assert again == rows


def test_until_screening_stops_before_the_final_and_trains_nothing_read_back(smoke, tmp_path):
    workdir, rows, _ = smoke
    copy = tmp_path / "copy"
    shutil.copytree(workdir / "screening", copy / "screening")

    def no_training(config, path):
        raise AssertionError(f"{path} was trained again")

    screened = run_sweep(
        _smoke_config(), copy, train=no_training, log=lambda line: None, until="screening"
    )
    assert screened == [r for r in rows if r["stage"] == "screening"]
    assert not (copy / "final").exists()
    assert "| final |" not in (copy / "results.md").read_text()
    with pytest.raises(ValueError, match="until must be one of"):
        run_sweep(_smoke_config(), copy, until="test")


def test_a_killed_sweep_resumes_to_the_same_table(smoke, tmp_path):
    workdir, _, _ = smoke
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy)
    # As if killed during the final group's first epoch: its summary and epoch-1 checkpoint gone.
    final = copy / "final" / "g0-base"
    (final / "summary.json").unlink()
    shutil.rmtree(final / "checkpoints" / "1")
    (copy / "results.csv").unlink()
    lines = []
    run_sweep(_smoke_config(), copy, log=lines.append)
    assert sum("finished earlier, read back" in line for line in lines) == 2  # the screening
    assert any(line.startswith("final/g0-base: 2 member(s)") for line in lines)
    assert _without_timing(copy / "results.csv") == _without_timing(workdir / "results.csv")


def test_variants_with_equal_configs_share_a_population():
    config = _smoke_config()
    config.variants = {
        "base": {},
        # The base's own widths: the same network, so the same population.
        "same": {"model": {"channels": (6, 16)}},
        # Weight decay is a per-member value: still one population, the member decays.
        "decayed": {"optimizer": {"weight_decay": 1e-3}},
        "tanh": {"model": {"activation": "tanh"}},
    }
    sweep = resolve_sweep(config)
    rows = [(v, p) for v in sweep.variants for p in sweep.points]
    groups = plan_groups(sweep, "screening", rows)
    # A ConfigDict keeps its keys sorted: variants come in name order.
    assert [g.name for g in groups] == ["g0-base+decayed+same", "g1-tanh"]
    assert [g.config.population.size for g in groups] == [12, 4]
    assert groups[0].config.population.weight_decays == (0.0,) * 4 + (1e-3,) * 4 + (0.0,) * 4
    assert all(not g.config.evaluate_test and g.config.num_epochs == 1 for g in groups)
    final = plan_groups(sweep, "final", rows[:1])
    assert final[0].config.evaluate_test and final[0].config.population.seeds == (0, 1)


def test_packed_variants_of_other_widths_train_as_one_population(smoke, tmp_path):
    workdir, _, _ = smoke
    config = _smoke_config()
    config.pack = True
    # "thin" differs from the base in widths only: packed into the base's population.
    config.variants = {"base": {}, "thin": {"model": {"channels": (4, 8), "dense": (60, 42)}}}
    rows = run_sweep(config, tmp_path / "packed", log=lambda _: None, until="screening")
    assert [p.name for p in (tmp_path / "packed" / "screening").iterdir()] == ["g0-base+thin"]
    with RunDir(tmp_path / "packed" / "screening" / "g0-base+thin", read_only=True) as run:
        pop = run.read_config().population
    assert pop.channels == ((6, 16),) * 4 + ((4, 8),) * 4
    assert pop.dense == ((120, 84),) * 4 + ((60, 42),) * 4
    by_variant = {r["variant"]: r for r in rows}
    thin = LeNet.from_config({**LeNet.default_config(), "channels": (4, 8), "dense": (60, 42)})
    total = summary(thin, (28, 28, 1)).splitlines()[-1].split()
    # Each row is its own network's: its parameters, and for the base (the widest, whose mask
    # is all ones) the accuracies of the unpacked smoke sweep's base group.
    assert [str(by_variant["thin lr=0.05"][k]) for k in ("params", "macs")] == [
        t.replace(",", "") for t in total[1:3]
    ]
    unpacked = {r["variant"]: r for r in _read_csv(workdir / "results.csv")}
    for lr in ("0.01", "0.05"):
        assert by_variant[f"base lr={lr}"]["val_acc_mean"] == pytest.approx(
            float(unpacked[f"base lr={lr}"]["val_acc_mean"]), abs=1e-6
        )
        assert by_variant[f"base lr={lr}"]["params"] == int(unpacked[f"base lr={lr}"]["params"])


@pytest.mark.parametrize(
    "name",
    ["smoke", "lenet_variants", "pooling", "lenet_mnist", "lenet_round2", "lenet_mnist_round2"],
)
def test_shipped_sweep_configs_resolve_into_groups(name):
    sweep = resolve_sweep(load_config_file(str(ROOT / "configs" / "sweeps" / f"{name}.py")))
    rows = [(v, p) for v in sweep.variants for p in sweep.points]
    groups = plan_groups(sweep, "screening", rows)
    assert len(groups) == len(sweep.variants)  # every variant its own shape
    assert all(not g.config.evaluate_test for g in groups)
    final = plan_groups(sweep, "final", rows)
    assert all(g.config.evaluate_test and g.config.population.size >= 4 for g in final)


def _combining_sweep():
    config = _smoke_config()
    config.variants = {
        "base": {},
        "narrow": {"model": {"channels": (4, 8)}},
        "narrower": {"model": {"channels": (2, 4)}},
        "tanh": {"model": {"activation": "tanh"}},
        "small_dense": {"model": {"dense": (16,)}},
    }
    config.combine = {"top": 3}
    return config


def _screened(scores, params=None):
    return [
        {
            "stage": "screening",
            "structure": v,
            "val_acc_mean": score,
            "params": (params or {}).get(v, 1000),
            "_input_shape": (28, 28, 1),
        }
        for v, score in scores.items()
    ]


def test_combinations_merge_the_winners_best_first_and_skip_clashes():
    sweep = resolve_sweep(_combining_sweep())
    scores = {"base": 0.5, "narrow": 0.7, "narrower": 0.8, "tanh": 0.6, "small_dense": 0.4}
    lines = []
    combos = combinations(sweep, _screened(scores), log=lines.append)
    # Winners, best first: narrower, narrow, tanh (small_dense lost to the base). narrower and
    # narrow both set model.channels, so every subset holding both is skipped.
    assert combos == {
        "narrower+tanh": {"model.channels": (2, 4), "model.activation": "tanh"},
        "narrow+tanh": {"model.channels": (4, 8), "model.activation": "tanh"},
    }
    assert sum("skipped narrower+narrow" in line for line in lines) == 2  # the pair, the triple
    # Only one variant beats the base: nothing to combine.
    assert combinations(sweep, _screened({**scores, "narrow": 0.1, "tanh": 0.1})) == {}
    # max_params: a winner above it is never combined, nor a combination above it kept
    # (narrow+tanh has 36,046 parameters).
    bounded = resolve_sweep({**_combining_sweep().to_dict(), "max_params": 40_000})
    big = _screened(scores, params={"narrower": 40_001})
    assert list(combinations(bounded, big, log=lines.append)) == ["narrow+tanh"]
    tight = resolve_sweep({**_combining_sweep().to_dict(), "max_params": 36_045})
    assert combinations(tight, big, log=lines.append) == {}
    assert lines[-1] == "combination: skipped narrow+tanh: 36,046 parameters > max_params"


def test_a_combination_stage_screens_the_combined_winners_and_feeds_the_final(tmp_path):
    config = _smoke_config()
    config.overrides.model.update(channels=(4, 8), dense=(32,))
    config.variants = {
        "tanh": {"model": {"activation": "tanh"}},
        "flip": {"data": {"random_flip": True}},
        "xavier": {"model": {"kernel_init": "xavier_uniform"}},
    }
    config.axes.learning_rate = (0.05,)
    config.combine = {"top": 2, "baseline": ""}  # the two best, whatever they beat
    config.final.top_k = 3
    config.final.overrides = {"data": {"train_limit": 300}}
    lines = []
    rows = run_sweep(config, tmp_path, log=lines.append)
    stages = [r["stage"] for r in rows]
    assert stages == ["screening"] * 3 + ["combination"] + ["final"] * 3
    combo = rows[3]
    assert "+" in combo["structure"] and combo["test_acc_mean"] == ""
    assert sorted(combo["structure"].split("+")) == sorted(
        r["structure"] for r in sorted(rows[:3], key=lambda r: -r["val_acc_mean"])[:2]
    )
    (group,) = (tmp_path / "combination").iterdir()
    with RunDir(group, read_only=True) as run:
        saved = run.read_config()
    applied = {
        "tanh": saved.model.activation == "tanh",
        "flip": saved.data.random_flip,
        "xavier": saved.model.kernel_init == "xavier_uniform",
    }
    assert sorted(v for v, on in applied.items() if on) == sorted(combo["structure"].split("+"))
    # The finalists come from both stages; their runs use final.overrides, and only they and
    # the final stage's rows have test numbers.
    finals = [r for r in rows if r["stage"] == "final"]
    assert all(r["test_acc_mean"] != "" for r in finals)
    ranked = sorted(rows[:4], key=lambda r: -r["val_acc_mean"])[:3]
    assert [r["structure"] for r in finals] == [r["structure"] for r in ranked]
    for path in (tmp_path / "final").iterdir():
        with RunDir(path, read_only=True) as run:
            assert run.read_config().data.train_limit == 300
    md = (tmp_path / "results.md").read_text()
    assert f"**{choice(rows)['variant']}**" in md
    assert choice(rows)["val_acc_mean"] == max(r["val_acc_mean"] for r in finals)


def test_grids_and_the_pareto_front():
    config = _smoke_config()
    config.axes = {
        "learning_rate": {"start": 1e-3, "stop": 1e-1, "num": 3},
        "weight_decay": (0.0, 1e-4),
    }
    sweep = resolve_sweep(config)
    assert [p["learning_rate"] for p in sweep.points[::2]] == [1e-3, 1e-2, 1e-1]
    assert len(sweep.points) == 6
    # (cost, score): (2, 0.5) is beaten by (1, 0.6); (3, 0.6) by (1, 0.6) too.
    assert pareto_front([(2, 0.5), (1, 0.6), (3, 0.6), (4, 0.9)]) == [1, 3]
    assert model_cost(LeNet.default_config(), (28, 28, 1)) == (61706, 416520)


def _bad_configs(tmp_path):
    base = str(ROOT / "configs" / "lenet.py")
    header = (
        "import ml_collections\n\n\ndef get_config():\n"
        "    c = ml_collections.ConfigDict()\n"
        f"    c.base = {base!r}\n"
        "    c.overrides = {'data': {'validation_size': 100, 'source': 'bundled', "
        "'name': 'mnist_5k'}}\n"
        "    c.variants = {'base': {}}\n"
    )
    cases = {
        "unknown_key": ("    c.seeds = (0, 1)\n", "unknown key 'seeds'"),
        "axis_cannot_vary": (
            "    c.axes = {'channels': ((4, 8),)}\n",
            "axes: unknown key 'channels'",
        ),
        "empty_grid": (
            "    c.axes = {'learning_rate': {'start': 0.01, 'stop': 0.1, 'num': 0}}\n",
            "the grid is empty",
        ),
        "unknown_override": (
            "    c.variants = {'base': {}, 'bad': {'model': {'chanels': (4, 8)}}}\n",
            "has no 'chanels' (did you mean 'channels'?)",
        ),
        "protocol_key": (
            "    c.variants = {'long': {'num_epochs': 5}}\n",
            "'num_epochs' is set by the sweep's protocol",
        ),
        "momentum_without_momentum": (
            "    c.axes = {'momentum': (0.5, 0.9)}\n",
            "optimizer 'sgd' has no momentum hyper-parameter",
        ),
        "no_validation": (
            "    c.overrides = {'data': {'source': 'bundled', 'name': 'mnist_5k'}}\n",
            "set data.validation_size > 0",
        ),
        "empty_variants": ("    c.variants = {}\n", "variants is empty"),
        "combine_one": ("    c.combine = {'top': 1}\n", "combine.top must be 0"),
        "pack_not_bool": ("    c.pack = 'yes'\n", "pack must be True or False"),
        "final_protocol_key": (
            "    c.final = {'overrides': {'seed': 3}}\n",
            "final.overrides: 'seed' is set by the sweep's protocol",
        ),
    }
    args = {}
    for name, (body, fragment) in cases.items():
        path = tmp_path / f"{name}.py"
        path.write_text(header + body + "    return c\n")
        args[name] = ([f"--config={path}", f"--workdir={tmp_path / name}"], fragment)
    args["no_workdir"] = ([f"--config={SMOKE}"], "--workdir is required")
    args["bad_until"] = (
        [f"--config={SMOKE}", f"--workdir={tmp_path / 'bad_until'}", "--until=test"],
        "--until must be one of",
    )
    args["missing_file"] = ([f"--config={tmp_path / 'nope.py'}", "--workdir=x"], "no such file")
    return args


def test_bad_sweep_configs_are_one_line_with_exit_status_2(tmp_path):
    cases = _bad_configs(tmp_path)
    # All at once: each is a Python start-up and no training.
    assert_one_line_errors("scripts/sweep.py", cases)
    for name in cases:
        assert not (tmp_path / name).exists(), name  # refused before anything was written


def test_every_per_member_value_reaches_tensorboards_hparams(smoke):
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    workdir, _, _ = smoke
    group = workdir / "screening" / "g1-narrow"
    with RunDir(group, read_only=True) as run:
        pop = run.read_config().population
    for i in range(pop.size):
        acc = event_accumulator.EventAccumulator(str(group / "tensorboard" / f"member_{i}"))
        acc.Reload()
        content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
        values = {k: v.number_value for k, v in start.hparams.items()}
        assert values["seed"] == pop.seeds[i]
        assert values["learning_rate"] == pytest.approx(pop.learning_rates[i])
        assert values["momentum"] == pytest.approx(pop.momentums[i])
        assert values["weight_decay"] == pytest.approx(pop.weight_decays[i])


def test_records_refuse_test_numbers_outside_the_final_stage(smoke, tmp_path):
    _, rows, _ = smoke
    leaked = [dict(r) for r in rows]
    leaked[0].update(test_acc_mean=0.5, test_acc_std=0.0)
    with pytest.raises(ValueError, match="only finalists are evaluated on the test set"):
        write_records(str(tmp_path), leaked)
    assert not list(tmp_path.iterdir())
    write_records(str(tmp_path), rows)
    assert _read_csv(tmp_path / "results.csv") == _read_csv(smoke[0] / "results.csv")


def test_a_group_whose_members_all_diverge_is_recorded_and_not_retrained(tmp_path):
    config = _smoke_config()
    config.variants = {"narrow": {"model": {"channels": (4, 8), "dense": (32,)}}}
    config.axes.learning_rate = (1e4,)  # every member's loss explodes in the first epoch
    lines = []
    rows = run_sweep(config, tmp_path, log=lines.append)
    assert len(rows) == 1 and rows[0]["stage"] == "screening"
    assert rows[0]["val_acc_mean"] == "" and rows[0]["diverged"] == 2
    assert any("no finalist" in line for line in lines)
    assert (tmp_path / "screening" / "g0-narrow.diverged").is_file()
    assert not (tmp_path / "final").exists()

    def no_training(config, path):
        raise AssertionError(f"{path} was trained again")

    assert run_sweep(config, tmp_path, train=no_training, log=lambda line: None) == rows
