"""Config schema and validation: bad configs fail before anything is built, with clear messages."""

import pathlib
import subprocess
import sys

import ml_collections
import pytest

from cnnjax.models import LeNet
from cnnjax.train import (
    ConfigError,
    ConfigTypeError,
    default_config,
    load_config_file,
    resolve_config,
)
from cnnjax.train.config import member_hyperparams
from tests.train.tiny import subprocess_env

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _load_config_file(name: str) -> ml_collections.ConfigDict:
    return load_config_file(str(ROOT / "configs" / f"{name}.py"))


def test_defaults_resolve_to_the_book_recipe_with_derived_members():
    c = resolve_config(default_config())
    assert (c.optimizer.name, c.optimizer.learning_rate, c.batch_size, c.num_epochs) == (
        "sgd",
        0.9,
        256,
        10,
    )
    assert (c.model.activation, c.model.pooling, c.model.kernel_init) == (
        "sigmoid",
        "avg",
        "xavier_uniform",
    )
    assert c.population.seeds == (0,) and c.population.learning_rates == (0.9,)
    assert set(c.model.keys()) == set(LeNet.field_names())
    with pytest.raises(AttributeError):  # locked: no new keys after resolution
        c.new_key = 1


def test_population_defaults_follow_seed_and_learning_rate():
    c = default_config()
    c.seed, c.population.size, c.optimizer.learning_rate = 5, 3, 0.1
    r = resolve_config(c)
    assert r.population.seeds == (5, 6, 7)
    assert r.population.learning_rates == (0.1, 0.1, 0.1)


def test_partial_mapping_takes_defaults_and_coerces_types():
    r = resolve_config(
        {"optimizer": {"learning_rate": 1}, "population": {"size": 2, "seeds": [3, 4]}}
    )
    assert isinstance(r.optimizer.learning_rate, float) and r.optimizer.learning_rate == 1.0
    assert r.population.seeds == (3, 4)
    assert r.num_epochs == default_config().num_epochs


@pytest.mark.parametrize(
    "config, fragment",
    [
        (
            {"optimizer": {"lr": 0.1}},
            "config.optimizer: unknown key 'lr' (did you mean 'learning_rate'?)",
        ),
        ({"epochs": 3}, "unknown key 'epochs' (did you mean 'num_epochs'?)"),
        ({"model": {"chanels": (6, 16)}}, "config.model: unknown key 'chanels'"),
        ({"population": {"activation": ("relu", "sigmoid")}}, "cannot vary per member"),
    ],
)
def test_unknown_keys_are_rejected_by_name(config, fragment):
    with pytest.raises(ConfigError, match="unknown key") as info:
        resolve_config(config)
    assert fragment in str(info.value)
    assert not isinstance(info.value, TypeError)


@pytest.mark.parametrize(
    "config, fragment",
    [
        ({"num_epochs": 2.5}, "config.num_epochs must be int, got float 2.5"),
        ({"batch_size": True}, "config.batch_size must be int, got bool True"),
        (
            {"optimizer": {"learning_rate": "0.1"}},
            "config.optimizer.learning_rate must be float, got str '0.1'",
        ),
        (
            {"population": {"size": 2, "seeds": (0, 1.5)}},
            "config.population.seeds[1] must be an int",
        ),
        ({"data": 3}, "config.data must be a mapping"),
        ({"model": {"channels": 6}}, "config.model.channels must be a sequence, got int 6"),
        ({"progress": "yes"}, "config.progress must be bool"),
    ],
)
def test_wrong_types_raise_type_errors_naming_the_key(config, fragment):
    with pytest.raises(TypeError) as info:
        resolve_config(config)
    assert isinstance(info.value, ConfigTypeError)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "config, fragment",
    [
        ({"optimizer": {"name": "rmsprop"}}, "config.optimizer.name must be one of"),
        (
            {"optimizer": {"learning_rate": -1.0}},
            "config.optimizer.learning_rate must be finite and > 0",
        ),
        (
            {"population": {"size": 3, "seeds": (0, 1)}},
            "population.seeds must be empty or of length",
        ),
        (
            {"population": {"size": 2, "learning_rates": (0.1, 0.0)}},
            "learning_rates[1] must be finite and > 0",
        ),
        ({"population": {"strategy": "pmap"}}, "population.strategy must be one of"),
        (
            {"population": {"size": 2, "momentums": (0.9, 0.5)}},
            "population.momentums: optimizer 'sgd' has no momentum hyper-parameter",
        ),
        (
            {"optimizer": {"name": "momentum"}, "population": {"size": 2, "momentums": (0.9, 1)}},
            "config.population.momentums[1] must be in [0, 1), got 1",
        ),
        (
            {"population": {"size": 2, "weight_decays": (0.1,)}},
            "population.weight_decays must be empty or of length population.size=2",
        ),
        (
            {"population": {"size": 2, "weight_decays": (0.1, float("inf"))}},
            "population.weight_decays[1] must be finite and >= 0",
        ),
        ({"optimizer": {"warmup_epochs": 2}}, "only used by schedule 'warmup_cosine'"),
        (
            {"optimizer": {"schedule": "warmup_cosine", "warmup_epochs": 10}},
            "warmup_epochs must be < num_epochs",
        ),
        (
            {"batch_size": 64, "data": {"train_limit": 10}},
            "data.train_limit must be 0 (all) or >= batch_size + data.validation_size = 64",
        ),
        ({"data": {"random_shift": -1}}, "config.data.random_shift must be >= 0 pixels"),
        ({"seed": 2**32}, "config.seed must be in [0, 4294967295]"),
        (
            {"population": {"size": 2, "seeds": (0, 2**32)}},
            "config.population.seeds[1] must be in [0, 4294967295]",
        ),
        ({"seed": 2**32 - 1, "population": {"size": 2}}, "population.seeds[1] must be in"),
        ({"max_loss_factor": 0.5}, "config.max_loss_factor must be 0 (off) or a finite"),
        ({"data": {"validation_size": -1}}, "config.data.validation_size must be >= 0"),
        ({"model": {"activation": "swish"}}, "config.model: LeNet: unknown activation"),
        ({"loop": "while"}, "config.loop must be one of"),
    ],
)
def test_bad_values_raise_value_errors_naming_the_key(config, fragment):
    with pytest.raises(ValueError) as info:
        resolve_config(config)
    assert fragment in str(info.value)


def test_model_type_errors_from_lenet_stay_type_errors():
    with pytest.raises(ConfigTypeError, match=r"config.model: LeNet: channels\[1\] must be an int"):
        resolve_config({"model": {"channels": (6, "16")}})


@pytest.mark.parametrize("name", ["lenet", "lenet_modern", "lenet_sweep"])
def test_shipped_configs_are_valid(name):
    config = resolve_config(_load_config_file(name))
    assert (
        config.population.size
        == len(config.population.seeds)
        == len(config.population.learning_rates)
    )


def test_sweep_config_crosses_seeds_and_learning_rates():
    c = resolve_config(_load_config_file("lenet_sweep"))
    pairs = set(zip(c.population.seeds, c.population.learning_rates, strict=True))
    assert len(pairs) == c.population.size > 1
    assert len(set(c.population.seeds)) > 1 and len(set(c.population.learning_rates)) > 1


def _cli(tmp_path, *overrides):
    return subprocess.run(
        [
            sys.executable,
            "scripts/train.py",
            "--config=configs/lenet.py",
            f"--workdir={tmp_path / 'run'}",
            *overrides,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=subprocess_env(),
    )


def test_cli_rejects_unknown_key_and_wrong_type_before_training(tmp_path):
    unknown = _cli(tmp_path, "--config.optimizer.lr=0.1")
    assert unknown.returncode != 0
    assert (
        "error: config.optimizer: unknown key 'lr' (did you mean 'learning_rate'?)"
        in unknown.stderr
    )
    section = _cli(tmp_path, "--config.optimiser.lr=0.1")
    assert section.returncode != 0 and "Traceback" not in section.stderr
    assert "error: config: unknown key 'optimiser' (did you mean 'optimizer'?)" in section.stderr
    wrong_type = _cli(tmp_path, "--config.num_epochs=2.5")
    assert wrong_type.returncode != 0
    assert "--config.num_epochs=2.5" in wrong_type.stderr
    # Nothing was built: no run directory, so no data was loaded and nothing compiled.
    assert not (tmp_path / "run").exists()


def test_member_hyperparams_default_to_the_optimizers_values_and_stay_as_given():
    base = {"optimizer": {"name": "momentum", "momentum": 0.8, "weight_decay": 1e-4}}
    c = resolve_config({**base, "population": {"size": 2, "learning_rates": (0.1, 0.2)}})
    assert c.population.momentums == () and c.population.weight_decays == ()
    assert member_hyperparams(c) == {
        "learning_rate": (0.1, 0.2),
        "momentum": (0.8, 0.8),
        "weight_decay": (1e-4, 1e-4),
    }
    c = resolve_config({**base, "population": {"size": 2, "momentums": (0, 0.5)}})
    assert c.population.momentums == (0.0, 0.5)
    assert member_hyperparams(c)["momentum"] == (0.0, 0.5)
