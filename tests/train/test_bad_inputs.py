"""Regressions of an adversarial pass over the run directory and the trainer (issue 20): each
case used to crash, lose data or pass silently; now it is one clear error or correct behaviour."""

import json
import os
import pathlib
import shutil

import numpy as np
import pytest

from cnnjax.train import (
    ConfigError,
    RunDir,
    RunDirError,
    load_config_file,
    resolve_config,
    restore_model,
    train_and_evaluate,
)
from cnnjax.train.cli import load_config
from tests.train.tiny import read_metrics, tiny_config


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2-epoch run of the tiny config."""
    workdir = tmp_path_factory.mktemp("finished") / "run"
    train_and_evaluate(tiny_config(), workdir)
    return workdir


def _copy(run, tmp_path) -> pathlib.Path:
    workdir = tmp_path / "run"
    shutil.copytree(run, workdir)
    return workdir


def _meta_file(workdir, epoch) -> pathlib.Path:
    """The file Orbax keeps checkpoint ``epoch``'s JSON record in."""
    for path in (workdir / "checkpoints" / str(epoch) / "meta").rglob("*"):
        if path.is_file() and b'"history"' in path.read_bytes():
            return path
    raise AssertionError(f"no record found for checkpoint {epoch}")


# -- a member that goes non-finite ----------------------------------------------------------


def test_a_non_finite_member_still_gets_a_summary(tmp_path):
    # Its loss is non-finite from the first step: frozen, reported as diverged, and the summary
    # (which used to raise TypeError on its None metrics) is written and reads back.
    config = tiny_config(
        num_epochs=1,
        model__activation="relu",
        population__size=2,
        population__learning_rates=(0.5, 1e30),
    )
    result = train_and_evaluate(config, tmp_path / "run")
    np.testing.assert_array_equal(result["diverged"], [False, True])
    assert result["best_member"] == 0
    with RunDir(tmp_path / "run", read_only=True) as run:
        summary = run.read_summary()
    assert summary["diverged_epoch"] == [None, 1] and np.isnan(summary["train_loss"][1])
    # The same command again resumes the finished run and reports it again.
    assert train_and_evaluate(config, tmp_path / "run")["best_member"] == 0


# -- nothing of anyone's is lost ------------------------------------------------------------


def test_a_lock_that_is_a_symlink_is_refused_and_its_target_untouched(tmp_path):
    victim = tmp_path / "other_run_summary.json"
    victim.write_text('{"precious": true}\n')
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / ".lock").symlink_to(victim)
    with pytest.raises(RunDirError, match=r"\.lock is a symbolic link"):
        train_and_evaluate(tiny_config(), workdir)
    assert victim.read_text() == '{"precious": true}\n'


def test_a_directory_of_someone_elses_files_is_not_trained_into(tmp_path):
    workdir = tmp_path / "results"
    workdir.mkdir()
    for name in ("config.json", "metrics.csv", "summary.json"):
        (workdir / name).write_text(f"mine: {name}\n")
    with pytest.raises(RunDirError, match=r"not a cnnjax run .* config\.json, metrics\.csv"):
        train_and_evaluate(tiny_config(), workdir)
    for name in ("config.json", "metrics.csv", "summary.json"):
        assert (workdir / name).read_text() == f"mine: {name}\n"
    assert not (workdir / "checkpoints").exists()


def test_deleting_the_lock_file_does_not_let_a_second_trainer_in(tmp_path):
    with RunDir(tmp_path / "run"):
        (tmp_path / "run" / ".lock").unlink()
        with pytest.raises(RunDirError, match="in use by another trainer"):
            RunDir(tmp_path / "run")


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda w: (w / "damaged").write_text("x"), r"damaged is a file"),
        (lambda w: (w / "checkpoints").write_text("x"), r"checkpoints is a file"),
        (lambda w: (w / ".lock").mkdir(), r"\.lock is not a regular file"),
    ],
    ids=["damaged-file", "checkpoints-file", "lock-directory"],
)
def test_a_file_in_the_way_is_one_line(tmp_path, make, message):
    workdir = tmp_path / "run"
    workdir.mkdir()
    make(workdir)
    with pytest.raises(RunDirError, match=message):
        RunDir(workdir)


def test_a_dangling_symlink_workdir_says_so(tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    with pytest.raises(RunDirError, match=r"symbolic link to .*gone.*does not exist"):
        RunDir(tmp_path / "link")


# -- the checkpoint's record is verified like its arrays ------------------------------------


@pytest.mark.parametrize("edit", ["history", "drop-run", "garbage"])
def test_an_edited_checkpoint_record_is_set_aside(finished, tmp_path, edit, capsys):
    workdir = _copy(finished, tmp_path)
    path = _meta_file(workdir, 2)
    if edit == "garbage":
        path.write_text("{not json")
    else:
        record = json.loads(path.read_text())
        if edit == "history":
            record["history"][-1]["metrics"]["test_accuracy"] = [0.999]
        else:
            del record["run"]
        path.write_text(json.dumps(record))
    with pytest.raises(RunDirError, match="checkpoint 2"):
        restore_model(workdir)  # read-only: refuses, sets nothing aside
    result = train_and_evaluate(tiny_config(), workdir)  # falls back to epoch 1, retrains 2
    assert "checkpoint 2 is damaged" in capsys.readouterr().out
    assert any((workdir / "damaged").iterdir())
    assert read_metrics(workdir) == read_metrics(finished)
    assert result["test_accuracy"][0] != 0.999


def test_restore_model_names_the_input_it_expects(finished):
    model, params, preprocess, config = restore_model(finished)
    assert config.data.train_limit == 256 and config.population.seeds == (0,)
    with pytest.raises(ValueError, match=r"\(N, 28, 28, 1\) uint8.*got shape \(2, 32, 32, 1\)"):
        preprocess(np.zeros((2, 32, 32, 1), np.uint8))
    assert model.apply(
        {"params": params}, preprocess(np.zeros((2, 28, 28, 1), np.uint8))
    ).shape == (
        2,
        10,
    )


# -- what changes nothing may change on resume ----------------------------------------------


def test_resume_accepts_changes_that_change_no_result(finished, tmp_path):
    workdir = _copy(finished, tmp_path)
    shutil.rmtree(workdir / "checkpoints" / "2")  # resume after epoch 1
    config = tiny_config(eval_batch_size=100, loop="step", per_example_grads=True)
    config.model.conv_impl = "lax"
    result = train_and_evaluate(config, workdir)
    assert result["epochs"] == 2 and "example_grad_norm_mean" in result
    rows = read_metrics(workdir)
    assert [r["epoch"] for r in rows] == [1, 2] and "example_grad_norm_mean" in rows[1]
    header = (workdir / "metrics.csv").read_text().splitlines()[0]
    assert "example_grad_norm_mean" in header  # the CSV was rebuilt with the new columns


# -- config edge ----------------------------------------------------------------------------


def test_an_impossible_population_is_refused_before_anything_is_allocated(tmp_path):
    with pytest.raises(ConfigError, match=r"population.size=1000000: training needs about"):
        train_and_evaluate(tiny_config(population__size=1_000_000), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_weight_decay_must_be_finite():
    with pytest.raises(ConfigError, match="weight_decay must be finite and >= 0, got inf"):
        resolve_config({"optimizer": {"weight_decay": float("inf")}})


def test_a_config_file_takes_an_argument(tmp_path):
    path = tmp_path / "param.py"
    path.write_text(
        "from cnnjax.train import default_config\n\n"
        "def get_config(epochs):\n"
        "    c = default_config()\n"
        "    c.num_epochs = int(epochs)\n"
        "    return c\n"
    )
    assert load_config_file(f"{path}:7").num_epochs == 7
    config, rest = load_config(["train.py", f"--config={path}:3", "--workdir=w"])
    assert config.num_epochs == 3 and rest == ["train.py", "--workdir=w"]
    with pytest.raises(ConfigError, match=r"get_config\(\) raised TypeError"):
        load_config_file(str(path))


def test_a_bare_number_for_a_sequence_key_is_refused():
    with pytest.raises(ConfigError, match=r"config.population.seeds must be a sequence, got '3'"):
        load_config(["train.py", "--config=configs/lenet.py", "--config.population.seeds=3"])
    config, _ = load_config(
        ["train.py", "--config=configs/lenet.py", "--config.population.seeds=(3,)"]
    )
    assert config.num_epochs == 10


def test_config_files_load_the_schema_alone():
    # A config file's `from cnnjax.train import default_config` must not pull in the trainer,
    # Orbax or TensorBoard's writer.
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from cnnjax.train import load_config_file\n"
        "load_config_file('configs/lenet_best.py')\n"
        "heavy = [m for m in ('orbax.checkpoint', 'cnnjax.train.trainer', 'tensorboardX',"
        " 'cnnjax.train.rundir') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    root = pathlib.Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout
    assert os.path.isfile(root / "configs" / "lenet_best.py")


def test_a_bogus_jax_platforms_is_named():
    import subprocess
    import sys

    code = (
        "from cnnjax.train import parallel\n"
        "try:\n"
        "    parallel.select_platform('auto')\n"
        "except parallel.DeviceError as e:\n"
        "    print(e)\n"
    )
    env = {**os.environ, "JAX_PLATFORMS": "bogus"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "jax_platforms='bogus'" in out and "Unset JAX_PLATFORMS" in out, out
    assert "a AUTO" not in out
