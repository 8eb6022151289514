"""The pure one-model steps and the optimizer: checked against plain re-implementations."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnjax.models import LeNet
from cnnjax.train import (
    create_population,
    eval_step,
    make_optimizer,
    member,
    resolve_config,
    train_step,
)
from cnnjax.train.steps import cross_entropy
from tests.train.tiny import tiny_config

SMALL_MODEL = dict(channels=(2, 4), dense=(8,), num_classes=3, layers="flax")
SHAPE = (12, 12, 1)


def _one_member(lr=0.5, seed=0, **optimizer):
    config = tiny_config(model=SMALL_MODEL)
    config.optimizer.learning_rate = lr
    config.seed = seed
    config.optimizer.update(optimizer)
    config = resolve_config(config)
    model = LeNet.from_config(config.model)
    return model, member(create_population(config, model, SHAPE, steps_per_epoch=4), 0)


def _batch(n=6, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, *SHAPE)).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(rng.integers(0, 3, size=n, dtype=np.int32))


def test_train_step_is_one_sgd_step_on_the_mean_cross_entropy():
    model, state = _one_member(lr=0.5)
    x, y = _batch()

    def loss(p):
        logits = model.apply({"params": p}, x)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

    grads = jax.jit(jax.grad(loss))(state.params)
    expected = jax.tree.map(lambda p, g: p - 0.5 * g, state.params, grads)
    new, metrics = jax.jit(train_step)(state, (x, y))
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), new.params, expected
    )
    np.testing.assert_allclose(metrics["loss"], jax.jit(loss)(state.params), rtol=1e-6)
    np.testing.assert_allclose(
        metrics["grad_norm"],
        np.sqrt(sum(np.sum(np.square(g)) for g in jax.tree.leaves(grads))),
        rtol=1e-5,
    )
    logits = jax.jit(model.apply)({"params": state.params}, x)
    np.testing.assert_allclose(metrics["accuracy"], np.mean(np.argmax(logits, -1) == y))
    assert int(new.step) == 1 and not bool(new.diverged) and bool(metrics["finite"])


def test_per_example_grads_give_the_same_update_and_their_norms():
    model, state = _one_member()
    x, y = _batch()
    plain, _ = jax.jit(train_step)(state, (x, y))
    per_ex, metrics = jax.jit(lambda s, b: train_step(s, b, per_example_grads=True))(state, (x, y))
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        per_ex.params,
        plain.params,
    )

    @jax.jit
    def grad_of_one(xi, yi):
        return jax.grad(lambda p: jnp.sum(cross_entropy(model.apply({"params": p}, xi), yi)))(
            state.params
        )

    norms = np.array(
        [
            np.sqrt(
                sum(
                    np.sum(np.square(g))
                    for g in jax.tree.leaves(grad_of_one(x[i : i + 1], y[i : i + 1]))
                )
            )
            for i in range(x.shape[0])
        ]
    )
    np.testing.assert_allclose(metrics["example_grad_norm_mean"], norms.mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["example_grad_norm_max"], norms.max(), rtol=1e-5)


def test_a_non_finite_step_freezes_the_state_or_poisons_it_when_not_freezing():
    _, state = _one_member()
    x, y = _batch()
    x = x.at[0, 0, 0, 0].set(jnp.nan)
    frozen, metrics = jax.jit(train_step)(state, (x, y))
    assert bool(frozen.diverged) and not bool(metrics["finite"])
    chex_equal = jax.tree.map(
        lambda a, b: np.array_equal(a, b),
        (frozen.params, frozen.opt_state, frozen.step),
        (state.params, state.opt_state, state.step),
    )
    assert all(jax.tree.leaves(chex_equal))
    # Once diverged, a member stays frozen even on a finite batch.
    again, metrics = jax.jit(train_step)(frozen, _batch(seed=2))
    assert bool(again.diverged) and bool(metrics["finite"])
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, again.params, state.params)))

    poisoned, _ = jax.jit(lambda s, b: train_step(s, b, freeze_diverged=False))(state, (x, y))
    assert bool(poisoned.diverged)
    assert not np.isfinite(np.asarray(poisoned.params["conv1"]["kernel"])).all()


def test_the_first_step_sets_the_divergence_bound_from_its_own_loss():
    _, state = _one_member(lr=0.5)
    assert np.isinf(state.max_loss)
    step = jax.jit(lambda s, b: train_step(s, b, max_loss_factor=10.0))
    first, metrics = step(state, _batch())
    np.testing.assert_allclose(first.max_loss, 10.0 * metrics["loss"], rtol=1e-6)
    second, _ = step(first, _batch(seed=2))
    assert second.max_loss == first.max_loss  # measured once, at initialisation
    unbounded, _ = jax.jit(train_step)(state, _batch())
    assert np.isinf(unbounded.max_loss)
    # A loss above the bound is divergence, though finite.
    runaway, metrics = step(first.replace(max_loss=jnp.float32(1e-3)), _batch(seed=3))
    assert bool(runaway.diverged) and not bool(metrics["finite"])


def test_eval_step_counts_only_masked_in_examples():
    model, state = _one_member()
    x, y = _batch(n=5)
    mask = jnp.array([True, True, False, True, False])
    x = x.at[2].set(jnp.inf)  # a padding row's garbage must not leak into the sums
    sums = jax.jit(eval_step)(state, (x, y, mask))
    keep = np.asarray(mask)
    logits = np.asarray(jax.jit(model.apply)({"params": state.params}, x[keep]))
    assert float(sums["count"]) == 3.0
    assert float(sums["correct"]) == float(np.sum(np.argmax(logits, -1) == np.asarray(y)[keep]))
    np.testing.assert_allclose(sums["loss_sum"], np.sum(cross_entropy(logits, y[keep])), rtol=1e-6)


# ---- optimizer: injected learning rate and schedules against plain optax --------------------


def _run(tx, params, steps=3):
    state, trajectory = tx.init(params), []
    for i in range(steps):
        grads = jax.tree.map(lambda p, i=i: jnp.sin(p * (i + 1)) + 0.1 * p, params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        trajectory.append(params)
    return trajectory


PARAMS = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.array([0.5, -0.25])}
BASE = dict(
    name="sgd",
    learning_rate=0.1,
    momentum=0.8,
    weight_decay=0.0,
    schedule="constant",
    warmup_epochs=0,
)


@pytest.mark.parametrize(
    "overrides, reference",
    [
        ({}, optax.sgd(0.1)),
        ({"name": "momentum"}, optax.sgd(0.1, momentum=0.8)),
        ({"name": "adam"}, optax.adam(0.1)),
        ({"name": "adamw", "weight_decay": 0.01}, optax.adamw(0.1, weight_decay=0.01)),
        ({"schedule": "cosine"}, optax.sgd(optax.cosine_decay_schedule(0.1, 4 * 2))),
        (
            {"name": "adam", "schedule": "warmup_cosine", "warmup_epochs": 1},
            optax.adam(optax.warmup_cosine_decay_schedule(0.0, 0.1, 4, 8, end_value=0.0)),
        ),
    ],
)
def test_make_optimizer_matches_plain_optax(overrides, reference):
    tx = make_optimizer({**BASE, **overrides}, steps_per_epoch=4, num_epochs=2)
    for ours, theirs in zip(_run(tx, PARAMS), _run(reference, PARAMS), strict=True):
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), ours, theirs
        )


def test_sgd_weight_decay_is_l2_added_to_the_gradient():
    tx = make_optimizer({**BASE, "weight_decay": 0.05})
    params = PARAMS
    g = jax.tree.map(lambda p: jnp.sin(p) + 0.1 * p, params)
    expected = jax.tree.map(lambda p, gi: p - 0.1 * (gi + 0.05 * p), params, g)
    np.testing.assert_allclose(_run(tx, params, steps=1)[0]["w"], expected["w"], rtol=1e-6)


def test_update_reads_the_learning_rate_from_the_state():
    shared_tx = make_optimizer(BASE)
    state = make_optimizer(BASE, learning_rate=0.02).init(PARAMS)
    assert float(state.hyperparams["learning_rate"]) == pytest.approx(0.02)
    grads = jax.tree.map(jnp.ones_like, PARAMS)
    updates, _ = shared_tx.update(grads, state, PARAMS)
    np.testing.assert_allclose(updates["w"], -0.02 * np.ones((2, 3)), rtol=1e-6)


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam"])
def test_update_reads_momentum_and_coupled_weight_decay_from_the_state(name):
    # One transformation (what a population's compiled step holds), states made with other
    # values: every step must follow the state's values, as a transformation built with them.
    opt = {**BASE, "name": name}
    shared_tx = make_optimizer(opt, decays=True)
    for momentum, decay in ((0.3, 0.05), (0.9, 0.0)):
        member = make_optimizer(opt, momentum=momentum, weight_decay=decay, decays=True)
        alone = make_optimizer({**opt, "momentum": momentum, "weight_decay": decay})
        state = member.init(PARAMS)
        assert float(state.hyperparams["weight_decay"]) == pytest.approx(decay)
        assert ("momentum" in state.hyperparams) == (name == "momentum")
        shared = optax.GradientTransformation(member.init, shared_tx.update)
        for ours, theirs in zip(_run(shared, PARAMS), _run(alone, PARAMS), strict=True):
            jax.tree.map(
                lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), ours, theirs
            )


def test_a_shared_coupled_decay_keeps_the_state_structure_of_older_checkpoints():
    # Without per-member decays the decay stays a constant of the update: the state holds only
    # the learning rate, as checkpoints written before per-member decays existed do (with a
    # "weight_decay" entry their restore fails and the run would start over).
    for name in ("sgd", "momentum", "adam"):
        state = make_optimizer({**BASE, "name": name, "weight_decay": 0.05}).init(PARAMS)
        assert set(state.hyperparams) == {"learning_rate"} | ({"momentum"} & {name})


def test_schedules_need_the_number_of_steps():
    with pytest.raises(ValueError, match="needs steps_per_epoch and num_epochs"):
        make_optimizer({**BASE, "schedule": "cosine"})
