"""A packed population (members of different widths in one compiled step) trains each member as
its own, narrower LeNet would be trained alone: real runs compared member by member."""

import dataclasses

import chex
import jax
import numpy as np
import pytest

from cnnjax.models import LeNet
from cnnjax.train import (
    ConfigError,
    RunDir,
    TrainState,
    create_population,
    resolve_config,
    restore_model,
    train_and_evaluate,
)
from cnnjax.train.state import PackedHalvingState, PackedState, grad_mask, stopped_flags
from tests.train.tiny import tiny_config

# (channels, dense, seed, weight decay) of each member; the model, (6, 16) (40, 84), is wider
# than both in some layer: a packed population need not contain its widest network.
MEMBERS = [((4, 16), (20, 84), 0, 1e-3), ((6, 5), (40, 30), 2, 0.0)]


def _config(optimizer, **population):
    config = tiny_config(
        model__activation="sigmoid",  # sigmoid(0) = 0.5: the case that needs the gradient mask
        model__dense=(40, 84),
        optimizer__name=optimizer,
        optimizer__learning_rate=0.5 if optimizer == "momentum" else 3e-3,
        data__validation_size=64,
        evaluate_test=False,
    )
    config.population.update(population)
    return config


def _packed(optimizer):
    return _config(
        optimizer,
        size=len(MEMBERS),
        seeds=[m[2] for m in MEMBERS],
        weight_decays=[m[3] for m in MEMBERS],
        channels=[m[0] for m in MEMBERS],
        dense=[m[1] for m in MEMBERS],
    )


def _alone(optimizer, channels, dense, seed, decay):
    config = _config(optimizer, size=1, seeds=[seed], weight_decays=[decay])
    config.model.channels, config.model.dense = channels, dense
    return config


@pytest.mark.parametrize("optimizer", ["momentum", "adamw"])
def test_a_packed_population_trains_each_member_as_its_own_network(tmp_path, optimizer):
    packed = train_and_evaluate(_packed(optimizer), str(tmp_path / "packed"))
    for i, member in enumerate(MEMBERS):
        alone = train_and_evaluate(_alone(optimizer, *member), str(tmp_path / f"alone{i}"))
        for key in ("train_loss", "val_loss", "val_accuracy"):
            np.testing.assert_allclose(packed[key][i], alone[key][0], atol=2e-5, err_msg=key)
        # restore_model gives the member back as its own LeNet, parameters cut out of the padding.
        mine = restore_model(str(tmp_path / "packed"), i)
        ref = restore_model(str(tmp_path / f"alone{i}"))
        assert (
            (mine.model.channels, mine.model.dense)
            == member[:2]
            == (
                ref.model.channels,
                ref.model.dense,
            )
        )
        chex.assert_trees_all_close(mine.params, ref.params, atol=2e-5)

    # The padding is still exactly zero in the checkpoint: no optimizer ever moved it.
    config = resolve_config(_packed(optimizer))
    with RunDir(str(tmp_path / "packed"), read_only=True) as run:
        shapes = run.read_info().shapes
        target = create_population(
            config,
            LeNet.from_config(config.model),
            shapes.input_shape,
            steps_per_epoch=shapes.steps_per_epoch,
        )
        state = run.restore(target).state
    outside = jax.tree.map(
        lambda p, m: np.abs(np.asarray(p) * (1 - np.asarray(m))).max(),
        state.params,
        state.grad_mask,
    )
    assert max(jax.tree.leaves(outside)) == 0.0
    assert min(float(np.asarray(m).min()) for m in jax.tree.leaves(state.grad_mask)) == 0.0


def test_an_unpacked_state_is_as_before_and_older_checkpoints_restore(tmp_path):
    # Without per-member widths the state is a plain TrainState: its checkpoint tree is what it
    # was before packing existed. Orbax records even a None field, so a mask field that is None
    # when unpacked would make every older run directory unreadable.
    config = resolve_config(tiny_config())
    state = create_population(config, LeNet.from_config(config.model), (28, 28, 1))
    assert type(state) is TrainState and not hasattr(state, "grad_mask")
    fields = {f.name for f in dataclasses.fields(TrainState)}
    assert fields == {"step", "apply_fn", "params", "tx", "opt_state", "diverged", "max_loss"}
    packed = resolve_config(_packed("momentum"))
    state = create_population(packed, LeNet.from_config(packed.model), (28, 28, 1))
    assert type(state) is PackedState
    # With successive halving as well, both fields: each feature's field only where it is on.
    packed.unlock()
    packed.num_epochs, packed.population.halving.rungs = 3, (1,)
    state = create_population(packed, LeNet.from_config(packed.model), (28, 28, 1))
    assert type(state) is PackedHalvingState
    assert grad_mask(state) is not None and stopped_flags(state).shape == (len(MEMBERS),)


@pytest.mark.parametrize(
    ("population", "message"),
    [
        ({"channels": [[4, 8]]}, "population.channels must be empty or of length"),
        ({"channels": [[4, 8], [4]]}, r"population.channels\[1\] must be 2 int"),
        ({"channels": [[4, 8], [4, 32]]}, "the model is the widest member"),
        ({"dense": [[4, 8], [0, 8]]}, r"population.dense\[1\] must be 2 int"),
        ({"dense": [[4, 8], "wide"]}, "must be a sequence of ints"),
    ],
)
def test_bad_member_widths_are_one_line_errors(population, message):
    with pytest.raises(ConfigError, match=message) as e:
        resolve_config(_config("momentum", size=2, **population))
    assert "\n" not in str(e.value)
