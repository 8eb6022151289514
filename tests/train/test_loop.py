"""train_and_evaluate: outputs, determinism, resuming, divergence (in process, tiny runs)."""

import math
import os
import pathlib
import shutil
import stat

import jax
import numpy as np
import pytest

from cnnjax import data
from cnnjax.models import LeNet
from cnnjax.train import (
    ConfigError,
    RunDir,
    RunDirError,
    TrainingDiverged,
    create_population,
    make_eval_fn,
    resolve_config,
    restore_model,
    train_and_evaluate,
)
from cnnjax.train.inputs import load_inputs
from cnnjax.train.runfiles import Identity, to_json
from cnnjax.train.trainer import _check_same_run
from tests.train.tiny import RUN_OUTPUTS, assert_identical, read_metrics, tiny_config

METRICS = (
    "train_loss",
    "train_accuracy",
    "test_loss",
    "test_accuracy",
    "grad_norm",
    "update_norm",
    "param_norm",
    "diverged",
)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted 2-epoch run of the tiny config."""
    workdir = tmp_path_factory.mktemp("reference")
    return workdir, train_and_evaluate(tiny_config(), workdir)


def test_run_writes_every_output(reference, capsys):
    workdir, result = reference
    for name in RUN_OUTPUTS:
        assert (workdir / name).stat().st_size > 0, name
    assert (workdir / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with RunDir(workdir, read_only=True) as run:
        saved, summary = run.read_config(), run.read_summary()
    assert saved.population.seeds == (0,) and saved.data.train_limit == 256
    records = read_metrics(workdir)
    assert [r["epoch"] for r in records] == [1, 2]
    csv_lines = (workdir / "metrics.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 3 and csv_lines[0].startswith("epoch,member,seed,learning_rate")
    for name in METRICS:
        assert result[name].shape == (1,)
        assert records[-1][name] == result[name][0] or math.isclose(
            records[-1][name], result[name][0]
        )
    assert result["epochs"] == 2 and result["examples_per_second"] > 0
    assert 0.0 <= result["test_accuracy"][0] <= 1.0
    assert summary["test_accuracy"] == [pytest.approx(result["test_accuracy"][0])]
    with RunDir(workdir, read_only=True) as rundir:
        assert rundir.epochs() == [2, 1, 0]


def test_same_config_gives_identical_results(reference, tmp_path):
    workdir, _ = reference
    train_and_evaluate(tiny_config(), tmp_path)
    assert_identical(read_metrics(tmp_path), read_metrics(workdir))
    assert_identical(restore_model(tmp_path)[1], restore_model(workdir)[1])


def test_resumed_run_equals_the_uninterrupted_one(reference, tmp_path, capsys):
    workdir, result = reference
    train_and_evaluate(tiny_config(num_epochs=1), tmp_path)
    resumed = train_and_evaluate(tiny_config(num_epochs=2), tmp_path)
    assert "resuming after epoch 1" in capsys.readouterr().out
    assert_identical(read_metrics(tmp_path), read_metrics(workdir))
    assert_identical({k: resumed[k] for k in METRICS}, {k: result[k] for k in METRICS})
    model, params, *_ = restore_model(tmp_path)
    assert_identical(params, restore_model(workdir)[1])
    assert model.activation == "sigmoid"
    # A finished run trains nothing more, and a different config cannot reuse the workdir.
    again = train_and_evaluate(tiny_config(num_epochs=2), tmp_path)
    np.testing.assert_array_equal(again["test_accuracy"], result["test_accuracy"])
    with pytest.raises(
        RunDirError, match=r"different run \(config.optimizer.learning_rate: 0.5 -> 0.1; "
    ):
        train_and_evaluate(tiny_config(num_epochs=3, optimizer__learning_rate=0.1), tmp_path)


def test_restore_model_validates_member_and_workdir(reference, tmp_path):
    workdir, _ = reference
    with pytest.raises(ValueError, match=r"member must be an int in \[0, 1\), got 1"):
        restore_model(workdir, member=1)
    with pytest.raises(RunDirError, match="holds no run"):
        restore_model(tmp_path)


def test_divergence_stops_naming_member_epoch_and_rate_and_keeps_the_checkpoint(tmp_path):
    config = tiny_config(model__activation="relu", optimizer__learning_rate=1e4)
    with pytest.raises(
        TrainingDiverged, match=r"epoch 1: member 0 \(seed 0, learning rate 10000\) diverged"
    ):
        train_and_evaluate(config, tmp_path)
    with RunDir(tmp_path, read_only=True) as rundir:
        assert rundir.epochs() == [0]  # epoch 1 was not checkpointed
    _, params, *_ = restore_model(tmp_path)
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(params))
    records = read_metrics(tmp_path)
    assert records[-1]["epoch"] == 1 and records[-1]["diverged"] is True


def test_diverged_members_are_frozen_while_the_rest_train(tmp_path, capsys):
    config = tiny_config(
        model__activation="relu", population__size=2, population__learning_rates=(0.5, 1e4)
    )
    result = train_and_evaluate(config, tmp_path)
    out = capsys.readouterr().out
    assert "epoch 1: member 1 (seed 1, learning rate 10000) diverged" in out
    assert "diverged in epoch 1 (frozen)" in out
    np.testing.assert_array_equal(result["diverged"], [False, True])
    assert result["epochs"] == 2
    _, frozen, *_ = restore_model(tmp_path, member=1)
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(frozen))

    strict = tiny_config(
        model__activation="relu",
        population__size=2,
        population__learning_rates=(0.5, 1e4),
        population__freeze_diverged=False,
    )
    with pytest.raises(TrainingDiverged, match="epoch 1: member 1 .* diverged"):
        train_and_evaluate(strict, tmp_path / "strict")


def test_step_loop_with_per_example_grads_trains_like_the_scan(reference, tmp_path):
    workdir, _ = reference
    config = tiny_config(num_epochs=1, loop="step", per_example_grads=True)
    result = train_and_evaluate(config, tmp_path)
    expected = read_metrics(workdir)[0]
    for name in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "param_norm"):
        np.testing.assert_allclose(result[name][0], expected[name], rtol=1e-4)
    record = read_metrics(tmp_path)[0]
    assert 0 < record["example_grad_norm_mean"] <= record["example_grad_norm_max"]
    # The mean of per-example gradients has a norm no larger than their mean norm.
    assert record["grad_norm"] <= record["example_grad_norm_mean"] * (1 + 1e-5)


def test_augmented_runs_replay_exactly_in_either_loop_and_on_resume(reference, tmp_path, capsys):
    augmented = {"data__random_flip": True, "data__random_shift": 2}
    whole = train_and_evaluate(tiny_config(**augmented), tmp_path / "whole")
    assert not np.array_equal(whole["train_loss"], reference[1]["train_loss"])
    with pytest.raises(ConfigError, match=r"random_shift=28 would move a 28x28 .* at most 27"):
        train_and_evaluate(tiny_config(data__random_shift=28), tmp_path / "too_far")
    train_and_evaluate(tiny_config(num_epochs=1, **augmented), tmp_path / "resumed")
    train_and_evaluate(tiny_config(**augmented), tmp_path / "resumed")
    assert "resuming after epoch 1" in capsys.readouterr().out
    assert_identical(read_metrics(tmp_path / "resumed"), read_metrics(tmp_path / "whole"))
    stepped = train_and_evaluate(tiny_config(loop="step", **augmented), tmp_path / "step")
    for name in ("train_loss", "train_accuracy", "test_accuracy", "param_norm"):
        np.testing.assert_allclose(stepped[name], whole[name], rtol=1e-4)
    with pytest.raises(RunDirError, match=r"config.data.random_shift: 2 -> 1"):
        train_and_evaluate(
            tiny_config(num_epochs=3, **{**augmented, "data__random_shift": 1}),
            tmp_path / "whole",
        )


def test_a_checkpoint_from_before_a_new_config_key_still_resumes():
    config = to_json(resolve_config(tiny_config()).to_dict())
    current = Identity(config, {"sha256": "x"})
    old = {k: v for k, v in config["data"].items() if k not in ("random_flip", "random_shift")}
    saved = Identity({**config, "data": old}, current.data)
    _check_same_run(saved, current, "constant")  # the defaults of the missing keys match
    changed = Identity({**config, "data": {**config["data"], "random_flip": True}}, current.data)
    with pytest.raises(RunDirError, match=r"config.data.random_flip: False -> True"):
        _check_same_run(saved, changed, "constant")


# --------------------------------------------------------------------------------------------
# Regressions: what used to pass silently or be lost.


def _copy_run(reference, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(reference[0], workdir)
    return workdir


def test_a_runaway_finite_loss_is_divergence(tmp_path, capsys):
    # lr 1e3 on the book's recipe: the loss stays finite but climbs far above its initial value.
    with pytest.raises(TrainingDiverged, match=r"member 0 .* diverged .*above 10x its initial"):
        train_and_evaluate(tiny_config(optimizer__learning_rate=1e3), tmp_path / "single")
    population = tiny_config(population__size=2, population__learning_rates=(0.5, 1e6))
    result = train_and_evaluate(population, tmp_path / "population")
    np.testing.assert_array_equal(result["diverged"], [False, True])
    assert result["best_member"] == 0 and result["diverged_epoch"] == [None, 1]
    assert "best: member 0 (seed 0, lr 0.5)" in capsys.readouterr().out


def test_resume_refuses_another_model_or_rate_even_without_config_json(reference, tmp_path):
    workdir = _copy_run(reference, tmp_path)
    (workdir / "config.json").unlink()
    with pytest.raises(RunDirError, match=r"config.model.channels: \[6, 16\] -> \[4, 16\]"):
        train_and_evaluate(tiny_config(num_epochs=3, model__channels=(4, 16)), workdir)
    # Only the checkpoints, copied to a new workdir: still the same run, still refused.
    fresh = tmp_path / "fresh"
    shutil.copytree(workdir / "checkpoints", fresh / "checkpoints")
    with pytest.raises(RunDirError, match="optimizer.learning_rate: 0.5 -> 0.2"):
        train_and_evaluate(tiny_config(num_epochs=3, optimizer__learning_rate=0.2), fresh)


def test_resume_refuses_other_data_with_the_same_config(tmp_path, monkeypatch):
    from tests.support import go_offline

    real = os.environ.get("CNNJAX_DATA_DIR") or str(
        pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / "fashion_mnist"
    )
    if not os.path.isdir(real):
        pytest.skip(f"real Fashion-MNIST not found at {real}")
    config = tiny_config(num_epochs=1, data__source="auto", data__name="fashion_mnist")
    monkeypatch.setenv("CNNJAX_DATA_DIR", real)
    train_and_evaluate(config, tmp_path)
    # Unset, on an offline machine: "auto" falls back to the bundled digits. Refused.
    go_offline(monkeypatch)
    monkeypatch.delenv("CNNJAX_DATA_DIR")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "no_tfds"))
    with pytest.raises(RunDirError, match=r"data.name: 'fashion_mnist' -> 'mnist_5k'"):
        train_and_evaluate(tiny_config(num_epochs=2, data__source="auto"), tmp_path)


def _largest_file(directory: pathlib.Path) -> pathlib.Path:
    return max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_latest_checkpoint_falls_back_and_ends_identical(
    reference, tmp_path, capsys, damage
):
    workdir = _copy_run(reference, tmp_path)
    victim = _largest_file(workdir / "checkpoints" / "2" / "state")
    raw = bytearray(victim.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    else:
        raw[len(raw) // 2] ^= 0x10
    victim.write_bytes(bytes(raw))
    resumed = train_and_evaluate(tiny_config(), workdir)
    out = capsys.readouterr().out
    assert "warning: checkpoint 2 is damaged" in out and "resuming after epoch 1" in out
    assert [p.name.split("-")[0] for p in (workdir / "damaged").iterdir()] == ["2"]
    assert_identical(read_metrics(workdir), read_metrics(reference[0]))
    assert_identical(restore_model(workdir)[1], restore_model(reference[0])[1])
    np.testing.assert_array_equal(resumed["test_accuracy"], reference[1]["test_accuracy"])


def test_missing_metric_files_are_rebuilt_from_the_checkpoint(reference, tmp_path):
    workdir = _copy_run(reference, tmp_path)
    for name in ("metrics.jsonl", "metrics.csv", "summary.json", "learning_curves.png"):
        (workdir / name).unlink()
    train_and_evaluate(tiny_config(), workdir)
    assert read_metrics(workdir) == read_metrics(reference[0])
    for name in RUN_OUTPUTS:
        assert (workdir / name).is_file(), name


def test_workdir_misuse_is_refused(reference, tmp_path):
    with pytest.raises(RunDirError, match="the workdir is empty"):
        train_and_evaluate(tiny_config(), "")
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match="is a file, not a directory"):
        train_and_evaluate(tiny_config(), tmp_path / "file")
    workdir = _copy_run(reference, tmp_path)
    with RunDir(workdir), pytest.raises(RunDirError, match="in use by another trainer"):
        train_and_evaluate(tiny_config(), workdir)


def test_files_follow_the_umask(reference):
    umask = os.umask(0)
    os.umask(umask)
    for name in RUN_OUTPUTS:
        assert stat.S_IMODE((reference[0] / name).stat().st_mode) == 0o666 & ~umask, name


def test_evaluation_never_pads_beyond_the_split():
    config = resolve_config(tiny_config(eval_batch_size=65536, model=dict(channels=(2, 4))))
    model = LeNet.from_config(config.model)
    state = create_population(config, model, (28, 28, 1))
    rng = np.random.default_rng(0)
    split = data.to_device(
        rng.integers(0, 256, (100, 28, 28, 1), dtype=np.uint8), rng.integers(0, 10, 100)
    )
    hlo = make_eval_fn(config).lower(state, split).as_text()
    assert "65536" not in hlo and "100x28x28x1" in hlo


def test_black_is_the_normalised_zero_pixel():
    config = resolve_config(tiny_config(data__normalize="standardize"))
    inputs = load_inputs(config.data, batch_size=32, num_classes=10)
    zero = np.zeros((1, *inputs.input_shape), np.uint8)
    preprocess = inputs.preprocess
    mean, std = (np.asarray(preprocess[k], np.float32) for k in ("mean", "std"))
    labels = np.zeros(1, np.int32)
    expected = data.to_device(zero, labels, normalize="standardize", mean=mean, std=std)
    expected = expected.images[0, 0, 0]
    np.testing.assert_allclose(inputs.black, expected, rtol=1e-6)
    plain = load_inputs(resolve_config(tiny_config()).data, batch_size=32, num_classes=10)
    assert plain.black == (0.0,)


# --------------------------------------------------------------------------------------------
# TensorBoard and profiles, read back with TensorBoard's own reader.


def test_a_run_writes_tensorboard_per_member(tmp_path):
    from tests.train.test_tensorboard import _hparams_data, _read, _scalars

    config = tiny_config(
        population__size=2, population__learning_rates=(0.5, 0.2), data__validation_size=50
    )
    result = train_and_evaluate(config, tmp_path / "run")
    logdir = tmp_path / "run" / "tensorboard"
    records = read_metrics(tmp_path / "run")
    for i in range(2):
        acc = _read(logdir / f"member_{i}")
        tags = set(acc.Tags()["scalars"])
        assert {"train/loss", "train/accuracy", "val/loss", "val/accuracy"} <= tags
        assert {"learning_rate", "examples_per_second", "diverged", "train/grad_norm"} <= tags
        mine = [r for r in records if r["member"] == i]
        assert [s for s, _ in _scalars(acc, "val/accuracy")] == [1, 2]
        np.testing.assert_allclose(
            [v for _, v in _scalars(acc, "train/loss")], [r["train_loss"] for r in mine], 1e-6
        )
        # The test set, evaluated once at the end, is logged at the last epoch.
        np.testing.assert_allclose(
            _scalars(acc, "test/accuracy"), [(2, result["test_accuracy"][i])], 1e-6
        )
        assert _scalars(acc, "learning_rate")[0][1] == pytest.approx((0.5, 0.2)[i])
        start = _hparams_data(acc, "session_start_info").session_start_info.hparams
        assert start["seed"].number_value == i
        assert start["learning_rate"].number_value == pytest.approx((0.5, 0.2)[i])
    figures = _read(logdir / "figures")
    assert figures.Tags()["images"] == ["learning_curves"]


def test_profile_steps_writes_a_trace_and_changes_nothing(reference, tmp_path):
    workdir, _ = reference
    train_and_evaluate(tiny_config(profile_steps=2), tmp_path / "run")
    traces = list((tmp_path / "run" / "tensorboard" / "plugins" / "profile").iterdir())
    assert len(traces) == 1 and any(p.name.endswith(".trace.json.gz") for p in traces[0].iterdir())
    assert any(p.name == "perfetto_trace.json.gz" for p in traces[0].iterdir())
    assert_identical(read_metrics(tmp_path / "run"), read_metrics(workdir))


def test_evaluate_test_false_never_touches_the_test_set(tmp_path, capsys):
    with pytest.raises(ConfigError, match="evaluate_test=False .* data.validation_size"):
        resolve_config(tiny_config(evaluate_test=False))
    config = tiny_config(evaluate_test=False, data__validation_size=50, population__size=2)
    result = train_and_evaluate(config, tmp_path / "run")
    assert not any(k.startswith("test_") for k in result)
    assert result["best_member"] == int(np.argmax(result["val_accuracy"]))
    out = capsys.readouterr().out
    assert "val acc" in out and "test acc" not in out
    # Turned on when resumed, the finished run reports its test set once.
    resumed = train_and_evaluate(
        tiny_config(data__validation_size=50, population__size=2), tmp_path / "run"
    )
    assert resumed["test_accuracy"].shape == (2,)
