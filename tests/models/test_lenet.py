"""LeNet (D2L 6.6): shapes, parameter counts, both implementations, configuration."""

import math

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from cnnjax.models import ACTIVATIONS, KERNEL_INITS, LeNet
from cnnjax.ops import reference

# The ops' "auto" conv may pick either implementation; "lax" makes the comparison exact.
BOOK = dict(conv_impl="lax")


# Init and apply run eagerly on purpose: each primitive is compiled once per shape and reused
# by every model in this file, where jitting each model would compile every variant whole
# (the random initializers alone take seconds to compile on a 2-core CPU).
def init(model, shape=(2, 28, 28, 1), seed=0):
    x = jax.random.uniform(jax.random.key(seed + 1), shape)
    return model.init(jax.random.key(seed), x)["params"], x


def apply(model, params, x):
    return model.apply({"params": params}, x)


def expected_param_shapes(channels, kernels, padding, pool, dense, classes, hw=28, c_in=1):
    """Layer shapes from the chapter's formulas, written independently of the model."""
    shapes, size, c = {}, hw, c_in
    for i, (co, k) in enumerate(zip(channels, kernels), start=1):
        shapes[f"conv{i}"] = {"kernel": (k, k, c, co), "bias": (co,)}
        size = (size + 2 * (padding if i == 1 else 0) - k + 1) // pool
        c = co
    width = size * size * c
    for i, d in enumerate((*dense, classes), start=1):
        name = f"dense{i}" if i <= len(dense) else "output"
        shapes[name] = {"kernel": (width, d), "bias": (d,)}
        width = d
    return shapes


def shapes_of(model, shape):
    """Parameter shapes and the logits' shape/dtype, by tracing only (nothing compiled)."""
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    params = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
    logits = jax.eval_shape(model.apply, {"params": params}, x)
    return jax.tree.map(lambda a: a.shape, params), logits


@pytest.fixture(scope="module")
def book():
    """The book's LeNet with initialised params and a batch of 4 inputs."""
    model = LeNet(**BOOK)
    params, x = init(model, (4, 28, 28, 1))
    return model, params, x


def test_book_lenet_shapes_and_61706_params(book):
    model, params, x = book
    got, logits = shapes_of(model, (2, 28, 28, 1))
    assert got == expected_param_shapes((6, 16), (5, 5), 2, 2, (120, 84), 10)
    assert sum(math.prod(s) for layer in got.values() for s in layer.values()) == 61_706
    assert (logits.shape, logits.dtype) == ((2, 10), jnp.float32)
    out = apply(model, params, x)
    chex.assert_shape(out, (4, 10))
    chex.assert_tree_all_finite(out)


@pytest.mark.parametrize("layers", ["cnnjax", "flax"])
def test_variant_shapes_and_counts(layers):
    cfg = dict(channels=(4, 8, 12), kernel_sizes=(3, 3, 3), padding=1, dense=(32,), num_classes=5)
    model = LeNet(**cfg, activation="relu", pooling="max", layers=layers, **BOOK)
    got, logits = shapes_of(model, (3, 28, 28, 1))
    assert got == expected_param_shapes(cfg["channels"], cfg["kernel_sizes"], 1, 2, cfg["dense"], 5)
    assert logits.shape == (3, 5)


def test_both_layer_kinds_initialise_identically(book):
    # Same tree, same initializers, same key: the same parameters.
    _, params, _ = book
    chex.assert_trees_all_equal(params, init(LeNet(layers="flax"), (4, 28, 28, 1))[0])


@pytest.mark.parametrize("pooling", ["avg", "max"])
@pytest.mark.parametrize("activation", ["sigmoid", "relu", "gelu"])
def test_cnnjax_and_flax_layers_identical(book, pooling, activation):
    _, params, x = book
    kw = dict(pooling=pooling, activation=activation)
    ours, theirs = LeNet(layers="cnnjax", conv_impl="lax", **kw), LeNet(layers="flax", **kw)
    reference = apply(theirs, params, x)
    # Both run lax.conv_general_dilated / reduce_window on the same arrays: bit-identical.
    np.testing.assert_array_equal(apply(ours, params, x), reference)
    # The Toeplitz GEMM sums in another order: equal to float32 rounding.
    toeplitz = LeNet(layers="cnnjax", conv_impl="toeplitz", **kw)
    np.testing.assert_allclose(apply(toeplitz, params, x), reference, rtol=1e-5, atol=1e-5)


def test_bfloat16_compute_float32_params_and_logits(book):
    _, params, x = book
    logits = apply(LeNet(dtype=jnp.bfloat16, **BOOK), params, x)
    chex.assert_type(logits, jnp.float32)
    # bfloat16 keeps 8 mantissa bits; the book's logits are O(1), so 0.05 is a few ulps.
    np.testing.assert_allclose(logits, apply(LeNet(**BOOK), params, x), atol=0.05)


def reference_lenet(params, x):
    """The book's LeNet forward pass in float64 NumPy, from :mod:`cnnjax.ops.reference`."""

    def sigmoid(v):
        return 1 / (1 + np.exp(-v))

    def dense(layer, v):
        return v @ np.asarray(layer["kernel"], np.float64) + np.asarray(layer["bias"], np.float64)

    h = np.asarray(x, np.float64)
    for name, padding in (("conv1", 2), ("conv2", 0)):
        layer = params[name]
        h = reference.conv(h, layer["kernel"], layer["bias"], padding=padding)
        h = reference.avg_pool(sigmoid(h), 2)
    h = h.reshape(h.shape[0], -1)  # (H, W, C) order, as the model flattens NHWC
    h = sigmoid(dense(params["dense2"], sigmoid(dense(params["dense1"], h))))
    return dense(params["output"], h)


def test_float64_is_refused_without_64_bit_mode_naming_how_to_enable_it():
    # Explicitly off, so the test means the same when the suite runs with JAX_ENABLE_X64=1.
    with jax.enable_x64(False):
        for build in (
            lambda: LeNet.from_config({"dtype": "float64"}),
            lambda: LeNet(dtype=jnp.float64),
        ):
            with pytest.raises(
                ValueError,
                match=r"^LeNet: dtype float64 needs JAX's 64-bit mode, which is off \(JAX would "
                r"compute in float32\); set JAX_ENABLE_X64=1 or call "
                r"jax.config.update\('jax_enable_x64', True\) at start-up, or use float32 or "
                r"bfloat16$",
            ):
                build()


@pytest.mark.parametrize("layers", ["cnnjax", "flax"])
def test_float64_under_64_bit_mode_computes_in_float64(layers):
    with jax.enable_x64(True):
        model = LeNet.from_config({"dtype": "float64", "layers": layers, **BOOK})
        params, x = init(model, shape=(1, 28, 28, 1))
        assert {a.dtype for a in jax.tree.leaves(params)} == {jnp.dtype(jnp.float64)}
        logits, state = model.apply({"params": params}, x, mutable=["intermediates"])
        chex.assert_type(logits, jnp.float64)
        stages = state["intermediates"]["stages"][0]
        assert {v.dtype for v in stages.values()} == {jnp.dtype(jnp.float64)}
        expected = reference_lenet(params, x)
        # float64 agrees with the float64 reference to ~1e-15; float32 only to ~1e-7.
        np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-12)
        single = LeNet(layers=layers, **BOOK)
        logits32 = apply(single, jax.tree.map(lambda a: a.astype(jnp.float32), params), x)
        assert np.abs(np.asarray(logits32, np.float64) - expected).max() > 1e-12


@pytest.mark.parametrize("layers", ["cnnjax", "flax"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_64_bit_mode_leaves_other_dtypes_with_float32_params_and_logits(layers, dtype):
    # Initializers default to float64 under x64: the parameters' dtype must not follow it.
    with jax.enable_x64(True):
        model = LeNet.from_config({"dtype": dtype, "layers": layers, **BOOK})
        x = jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32)
        variables = jax.eval_shape(model.init, jax.random.key(0), x)
        assert {a.dtype for a in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
        assert jax.eval_shape(model.apply, variables, x).dtype == jnp.float32


def test_jit_grad_and_vmap_over_params(book):
    model, params, x = book
    members = [jax.tree.map(lambda a, s=s: a * (1.0 + 0.5 * s), params) for s in range(3)]
    population = jax.tree.map(lambda *leaves: jnp.stack(leaves), *members)
    logits = jax.jit(jax.vmap(lambda p: model.apply({"params": p}, x)))(population)
    chex.assert_shape(logits, (3, 4, 10))
    for member, got in zip(members, logits):
        np.testing.assert_allclose(got, apply(model, member, x), rtol=1e-5, atol=1e-6)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(model.apply({"params": p}, x) ** 2)))(params)
    chex.assert_tree_all_finite(grads)
    assert float(jnp.abs(grads["conv1"]["kernel"]).sum()) > 0


def test_init_returns_only_params(book):
    model, _, x = book
    assert set(jax.eval_shape(model.init, jax.random.key(0), x)) == {"params"}


def test_input_must_be_4d_float(book):
    model, params, x = book
    with pytest.raises(
        ValueError, match=r"LeNet: x must be 4-D \(N, H, W, C\), got shape \(28, 28, 1\)"
    ):
        model.apply({"params": params}, x[0])
    with pytest.raises(TypeError, match="LeNet: x must be floating, got dtype uint8"):
        model.apply({"params": params}, x.astype(jnp.uint8))


def test_default_config_is_the_book_and_round_trips():
    cfg = LeNet.default_config()
    assert cfg == dict(
        channels=(6, 16),
        kernel_sizes=(5, 5),
        padding=2,
        activation="sigmoid",
        pooling="avg",
        pool_size=2,
        dense=(120, 84),
        num_classes=10,
        kernel_init="xavier_uniform",
        conv_impl="auto",
        layers="cnnjax",
        dtype="float32",
    )
    assert LeNet.from_config(cfg) == LeNet()


def test_from_config_accepts_config_dict_and_lists():
    cd = ml_collections.ConfigDict(dict(channels=[4, 8], activation="tanh", dtype="bfloat16"))
    model = LeNet.from_config(cd)
    assert model.channels == (4, 8) and model.activation == "tanh"
    assert jnp.dtype(model.dtype) == jnp.bfloat16


def test_from_config_rejects_unknown_key_and_lists_valid_ones():
    with pytest.raises(
        ValueError, match=r"unknown key\(s\) \['chanels'\]; valid keys: \['channels',"
    ):
        LeNet.from_config({"chanels": (6, 16)})
    with pytest.raises(TypeError, match="cfg must be a mapping"):
        LeNet.from_config([("channels", (6, 16))])


@pytest.mark.parametrize(
    "cfg, exc, msg",
    [
        ({"channels": "6,16"}, TypeError, "channels must be a sequence of ints"),
        ({"channels": (6, 0)}, ValueError, r"channels\[1\] must be >= 1"),
        ({"padding": 2.0}, TypeError, "padding must be an int, got float"),
        ({"padding": -1}, ValueError, "padding must be >= 0"),
        ({"pool_size": True}, TypeError, "pool_size must be an int, got bool"),
        ({"kernel_sizes": (5,)}, ValueError, "kernel_sizes must have one entry per conv layer"),
        ({"activation": "swishy"}, ValueError, r"unknown activation 'swishy'; expected one of \["),
        ({"activation": 3}, TypeError, "activation must be a str"),
        (
            {"pooling": "min"},
            ValueError,
            r"unknown pooling 'min'; expected one of \['avg', 'max'\]",
        ),
        ({"kernel_init": "zeros"}, ValueError, "unknown kernel_init 'zeros'"),
        ({"conv_impl": "fft"}, ValueError, "unknown conv_impl 'fft'"),
        ({"layers": "torch"}, ValueError, "unknown layers 'torch'"),
        ({"num_classes": 0}, ValueError, "num_classes must be >= 1, got 0"),
        ({"dtype": "int32"}, ValueError, "dtype must be a floating dtype, got int32"),
        ({"dtype": "floaty"}, ValueError, "unknown dtype 'floaty'"),
    ],
)
def test_from_config_rejects_bad_values(cfg, exc, msg):
    with pytest.raises(exc, match=msg):
        LeNet.from_config(cfg)


def test_every_listed_activation_and_init_builds():
    x = jnp.ones((1, 12, 12, 1))
    small = dict(channels=(2,), kernel_sizes=(3,), dense=(), **BOOK)
    params, _ = init(LeNet(**small), x.shape)
    outputs = {name: apply(LeNet(activation=name, **small), params, x) for name in ACTIVATIONS}
    chex.assert_tree_all_finite(outputs)
    assert not np.allclose(outputs["sigmoid"], outputs["relu"])
    kernels = {
        name: init(LeNet(kernel_init=name, **small), x.shape)[0]["conv1"]["kernel"]
        for name in KERNEL_INITS
    }
    chex.assert_tree_all_finite(kernels)
    # Xavier uniform on a (3, 3, 1, 2) kernel: fan_in 9, fan_out 18.
    assert float(jnp.abs(kernels["xavier_uniform"]).max()) <= math.sqrt(6 / (9 + 18))
    assert not np.allclose(kernels["xavier_uniform"], kernels["he_normal"])
