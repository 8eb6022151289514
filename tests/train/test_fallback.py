"""The offline default: when ``auto`` falls back to the bundled set, the run still learns.

The book's recipe needs more than one pass over Fashion-MNIST's 60,000 images before it leaves
chance (NOTES.md), so 10 epochs of the 4,000 bundled images would never learn; the trainer keeps
the number of SGD steps instead (``data.fallback_epochs="match_steps"``).
"""

import pytest

from cnnjax.train import ConfigError, RunDir, resolve_config, train_and_evaluate
from tests.support import go_offline
from tests.train.tiny import tiny_config


@pytest.fixture
def offline_fresh_machine(monkeypatch, tmp_path):
    """No IDX directory, an empty tfds data dir, and host names that do not resolve."""
    go_offline(monkeypatch)
    monkeypatch.delenv("CNNJAX_DATA_DIR", raising=False)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))


def _fallback_config(**overrides):
    # 8,192 Fashion-MNIST images at batch 1024 would be 8 steps an epoch; the bundled 4,000
    # give 3, so one configured epoch becomes ceil(8 / 3) = 3.
    return tiny_config(
        num_epochs=1,
        batch_size=1024,
        eval_batch_size=1024,
        data__source="auto",
        data__name="fashion_mnist",
        data__train_limit=8192,
        **overrides,
    )


def test_fallback_trains_as_many_steps_as_asked_for(offline_fresh_machine, tmp_path, capsys):
    summary = train_and_evaluate(_fallback_config(), tmp_path / "run")
    assert summary["epochs"] == 3
    with RunDir(tmp_path / "run", read_only=True) as run:
        assert run.read_config().num_epochs == 3
        assert run.read_info().data["name"] == "mnist_5k"
    out = capsys.readouterr().out
    assert "training 3 epochs instead of 1" in out and "fallback_epochs='as_configured'" in out


def test_fallback_as_configured_keeps_the_epochs(offline_fresh_machine, tmp_path):
    config = _fallback_config(data__fallback_epochs="as_configured")
    assert train_and_evaluate(config, tmp_path / "run")["epochs"] == 1


def test_fallback_epochs_choice_is_validated():
    with pytest.raises(ConfigError, match="data.fallback_epochs"):
        resolve_config(tiny_config(data__fallback_epochs="more"))
