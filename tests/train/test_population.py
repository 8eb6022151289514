"""Populations: one step definition over a member axis; a population of N equals N single runs."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import data
from cnnjax.models import LeNet
from cnnjax.train import (
    create_population,
    make_eval_fn,
    make_train_epoch,
    make_train_step,
    member,
    population_map,
    resolve_config,
    resolve_strategy,
)
from tests.train.tiny import tiny_config

SMALL_MODEL = dict(channels=(2, 4), dense=(8,), num_classes=3)
SHAPE = (12, 12, 1)
SEEDS = (0, 3)
RATES = (0.1, 0.7)


def _split(n, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, *SHAPE), dtype=np.uint8)
    return data.to_device(images, rng.integers(0, 3, size=n, dtype=np.int32))


TRAIN, TEST = _split(96, 0), _split(50, 1)


def _config(seeds, rates, strategy="map", population=(), **overrides):
    return resolve_config(
        tiny_config(
            batch_size=16,
            eval_batch_size=16,
            model=SMALL_MODEL,
            population=dict(
                size=len(seeds),
                seeds=tuple(seeds),
                learning_rates=tuple(rates),
                strategy=strategy,
                **dict(population),
            ),
            **overrides,
        )
    )


_COMPILED = {}


def _train(config, epochs=2):
    model = LeNet.from_config(config.model)
    state = create_population(config, model, SHAPE)
    # Members' seeds and rates live in the state, so runs of one shape share compiled functions.
    shape_key = (config.population.strategy, config.population.size)
    if shape_key not in _COMPILED:
        _COMPILED[shape_key] = (make_train_epoch(config), make_eval_fn(config))
    train_epoch, evaluate = _COMPILED[shape_key]
    history = []
    for epoch in range(1, epochs + 1):
        state, metrics = train_epoch(state, TRAIN, data.epoch_key(config.seed, epoch))
        history.append(jax.device_get(metrics))
    return state, history, evaluate(state, TEST)


def test_auto_strategy_runs_members_in_turn_on_cpu():
    assert resolve_strategy("auto") == ("map" if jax.default_backend() == "cpu" else "vmap")
    assert resolve_strategy("vmap") == "vmap"
    with pytest.raises(ValueError, match="strategy must be one of"):
        population_map(lambda m, s: m, "pmap")


@pytest.mark.parametrize("strategy", ["vmap", "map"])
def test_population_map_maps_the_member_axis_and_shares_the_rest(strategy):
    def fn(member, shared):
        return {"out": member["w"] @ shared + member["b"], "n": jnp.sum(member["w"])}

    members = {"w": jnp.arange(24.0).reshape(4, 2, 3), "b": jnp.arange(8.0).reshape(4, 2)}
    shared = jnp.array([1.0, -1.0, 2.0])
    out = jax.jit(population_map(fn, strategy))(members, shared)
    for i in range(4):
        expected = fn({"w": members["w"][i], "b": members["b"][i]}, shared)
        np.testing.assert_allclose(out["out"][i], expected["out"])
        np.testing.assert_allclose(out["n"][i], expected["n"])


def test_create_population_stacks_members_that_equal_single_inits():
    config = _config(SEEDS, RATES)
    model = LeNet.from_config(config.model)
    pop = create_population(config, model, SHAPE)
    assert pop.step.shape == pop.diverged.shape == (2,)
    assert pop.params["conv1"]["kernel"].shape == (2, 5, 5, 1, 2)
    np.testing.assert_allclose(pop.opt_state.hyperparams["learning_rate"], RATES, rtol=1e-7)
    for i, (seed, rate) in enumerate(zip(SEEDS, RATES, strict=True)):
        single = member(create_population(_config([seed], [rate]), model, SHAPE), 0)
        got = member(pop, i)
        assert all(jax.tree.leaves(jax.tree.map(np.array_equal, got.params, single.params)))
        direct = jax.jit(model.init)(jax.random.PRNGKey(seed), jnp.zeros((1, *SHAPE)))["params"]
        assert all(jax.tree.leaves(jax.tree.map(np.array_equal, got.params, direct)))
    assert not np.allclose(pop.params["conv1"]["kernel"][0], pop.params["conv1"]["kernel"][1])


def test_create_population_validates_the_input_shape():
    config = _config(SEEDS, RATES)
    with pytest.raises(ValueError, match=r"input_shape must be \(H, W, C\)"):
        create_population(config, LeNet.from_config(config.model), (12, 12))


@pytest.mark.parametrize("strategy", ["map", "vmap"])
def test_population_of_n_equals_n_single_runs(strategy):
    pop_state, pop_history, pop_eval = _train(_config(SEEDS, RATES, strategy))
    for i, (seed, rate) in enumerate(zip(SEEDS, RATES, strict=True)):
        state, history, evaluated = _train(_config([seed], [rate], strategy))
        jax.tree.map(
            lambda a, b, i=i: np.testing.assert_allclose(a[i], b[0], rtol=2e-5, atol=2e-6),
            pop_state.params,
            state.params,
        )
        for p_m, s_m in zip(pop_history, history, strict=True):
            for name in ("loss", "accuracy", "grad_norm"):
                np.testing.assert_allclose(p_m[name][i], s_m[name][0], rtol=2e-5, atol=2e-6)
        for name in ("loss", "accuracy"):
            np.testing.assert_allclose(pop_eval[name][i], evaluated[name][0], rtol=2e-5, atol=2e-6)
    # Different seeds and rates really are different members.
    assert not np.allclose(
        pop_state.params["output"]["kernel"][0], pop_state.params["output"]["kernel"][1]
    )


MOMENTUMS = (0.5, 0.9)
DECAYS = (0.0, 0.05)


@pytest.mark.parametrize("name", ["momentum", "adam"])
def test_members_with_own_momentum_and_weight_decay_equal_single_runs_in_one_program(name):
    per_member = {"weight_decays": DECAYS} | (
        {"momentums": MOMENTUMS} if name == "momentum" else {}
    )
    pop_config = _config(SEEDS, RATES, population=per_member, optimizer__name=name)
    model = LeNet.from_config(pop_config.model)
    pop = create_population(pop_config, model, SHAPE)
    hparams = pop.opt_state.hyperparams
    np.testing.assert_allclose(hparams["weight_decay"], DECAYS, rtol=1e-7)
    if name == "momentum":
        np.testing.assert_allclose(hparams["momentum"], MOMENTUMS, rtol=1e-7)

    # One compiled program serves any values: run the one compiled for these members on a
    # population whose values are swapped -- a value baked in as a constant would not follow.
    train_epoch = make_train_epoch(pop_config)
    key = data.epoch_key(pop_config.seed, 1)
    compiled = train_epoch.lower(pop, TRAIN, key).compile()
    swapped = {k: tuple(reversed(v)) for k, v in per_member.items()}
    swapped_config = _config(SEEDS, RATES, population=swapped, optimizer__name=name)
    # The same static fields (model, optimizer), the swapped members' arrays.
    swapped_pop = pop.replace(
        **{
            k: getattr(create_population(swapped_config, model, SHAPE), k)
            for k in ("params", "opt_state")
        }
    )
    lowered = (train_epoch.lower(s, TRAIN, key).as_text() for s in (pop, swapped_pop))
    assert next(lowered) == next(lowered)
    results = []
    for config, state in ((pop_config, pop), (swapped_config, swapped_pop)):
        # The epoch donates its state: give it a copy, the originals are lowered above.
        trained, metrics = compiled(jax.tree.map(jnp.copy, state), TRAIN, key)
        results.append(trained)
        values = {k: config.population[k] for k in per_member}
        for i, (seed, rate) in enumerate(zip(SEEDS, RATES, strict=True)):
            single_values = {k: (v[i],) for k, v in values.items()}
            single_config = _config([seed], [rate], population=single_values, optimizer__name=name)
            single, single_metrics = make_train_epoch(single_config)(
                create_population(single_config, model, SHAPE), TRAIN, key
            )
            chex.assert_trees_all_close(
                member(trained, i).params, member(single, 0).params, rtol=2e-5, atol=2e-6
            )
            np.testing.assert_allclose(metrics["loss"][i], single_metrics["loss"][0], rtol=2e-5)
    # The values matter: member 1 of the two populations differs only in them.
    assert not np.allclose(*(r.params["output"]["kernel"][1] for r in results))


def test_data_order_depends_on_the_seed_and_the_epoch():
    base = _config([0], [0.4])
    other = _config([0], [0.4], seed=7)
    a, _, _ = _train(base, epochs=1)
    b, _, _ = _train(other, epochs=1)
    assert not np.allclose(a.params["conv1"]["kernel"], b.params["conv1"]["kernel"])
    k1, k2 = data.epoch_key(0, 1), data.epoch_key(0, 2)
    assert not np.array_equal(data.epoch_indices(k1, 96, 16), data.epoch_indices(k2, 96, 16))


def test_step_loop_trains_like_the_scanned_epoch():
    config = _config(SEEDS, RATES)
    model = LeNet.from_config(config.model)
    key = data.epoch_key(config.seed, 1)
    scanned, scan_metrics = make_train_epoch(config)(
        create_population(config, model, SHAPE), TRAIN, key
    )
    state, step = create_population(config, model, SHAPE), make_train_step(config)
    losses = []
    for idx in data.epoch_indices(key, 96, 16):
        state, metrics = step(state, *data.gather(TRAIN, idx))
        losses.append(metrics["loss"])
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6),
        state.params,
        scanned.params,
    )
    np.testing.assert_allclose(np.mean(losses, axis=0), scan_metrics["loss"], rtol=2e-5)
    assert scan_metrics["loss"].shape == (2,)


def test_eval_counts_every_test_example_once():
    config = _config(SEEDS, RATES)  # eval batches of 16: 50 = 3 * 16 + 2, padded
    model = LeNet.from_config(config.model)
    state = create_population(config, model, SHAPE)
    evaluated = make_eval_fn(config)(state, TEST)
    for i in range(2):
        logits = jax.jit(model.apply)({"params": member(state, i).params}, TEST.images)
        expected_acc = np.mean(np.argmax(logits, -1) == np.asarray(TEST.labels))
        logp = jax.nn.log_softmax(logits)
        expected_loss = -np.mean(
            np.take_along_axis(np.asarray(logp), np.asarray(TEST.labels)[:, None], 1)
        )
        np.testing.assert_allclose(evaluated["accuracy"][i], expected_acc, rtol=1e-6)
        np.testing.assert_allclose(evaluated["loss"][i], expected_loss, rtol=1e-5)
