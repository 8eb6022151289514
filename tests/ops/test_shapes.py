"""Shape, receptive-field and cost formulas, checked against what the ops actually do."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnjax import ops
from tests.ops import helpers as h


@pytest.mark.parametrize(
    "in_shape, kw, expected",
    [
        # D2L 6.3 examples.
        ((8, 8), dict(kernel=3, padding=1), (8, 8)),
        ((8, 8), dict(kernel=(5, 3), padding=(2, 1)), (8, 8)),
        ((8, 8), dict(kernel=3, padding=1, stride=2), (4, 4)),
        ((8, 8), dict(kernel=(3, 5), padding=(0, 1), stride=(3, 4)), (2, 2)),
        # LeNet's layers.
        ((28, 28), dict(kernel=5, padding=2), (28, 28)),
        ((14, 14), dict(kernel=5), (10, 10)),
    ],
)
def test_book_output_shapes(in_shape, kw, expected):
    assert ops.conv_output_shape(in_shape, **kw) == expected


@h.FAST
@given(case=h.conv_cases(rank=2))
def test_conv_output_shape_is_the_ops_output_shape(case):
    x_shape, w_shape, kw, _, _, _ = case
    out = jax.eval_shape(
        functools.partial(ops.conv2d, impl="lax", **kw),
        jax.ShapeDtypeStruct(x_shape, jnp.float32),
        jax.ShapeDtypeStruct(w_shape, jnp.float32),
    )
    shape = ops.conv_output_shape(
        x_shape[1:-1], w_shape[:2], kw["stride"], kw["padding"], kw["dilation"]
    )
    assert out.shape == (x_shape[0], *shape, w_shape[-1])


@pytest.mark.parametrize("rank", [2, 3])
@h.FAST
@given(data=st.data())
def test_pool_output_shape_is_the_ops_output_shape(rank, data):
    x_shape, window, stride, padding, _, _ = data.draw(h.pool_cases(rank=rank))
    out = jax.eval_shape(
        functools.partial(ops.max_pool, window=window, stride=stride, padding=padding),
        jax.ShapeDtypeStruct(x_shape, jnp.float32),
    )
    assert out.shape == (
        x_shape[0],
        *ops.pool_output_shape(x_shape[1:-1], window, stride, padding),
        x_shape[-1],
    )


def _footprint(stack, in_shape, out_index):
    """Input pixels that influence output ``out_index`` of a conv/avg-pool stack (1 channel)."""

    def f(x):
        for kind, kw in stack:
            if kind == "conv":
                k = kw["kernel"]
                w = jnp.ones((*k, 1, 1))
                x = ops.conv2d(
                    x,
                    w,
                    stride=kw["stride"],
                    padding=kw["padding"],
                    dilation=kw["dilation"],
                    impl="lax",
                )
            else:
                x = ops.avg_pool2d(x, kw["kernel"], kw["stride"], kw["padding"])
        return x[0, out_index[0], out_index[1], 0]

    g = jax.jit(jax.grad(f))(jnp.ones((1, *in_shape, 1)))[0, :, :, 0]
    rows, cols = np.nonzero(np.asarray(g))
    return (rows.min(), cols.min()), (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)


@st.composite
def layer_stacks(draw):
    stack = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["conv", "pool"]))
        k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        d = (draw(st.integers(1, 2)), 1) if kind == "conv" else (1, 1)
        s = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
        p = tuple(draw(st.integers(0, ki // 2)) for ki in k)
        stack.append((kind, dict(kernel=k, stride=s, dilation=d, padding=p)))
    return stack


@h.FEW
@given(stack=layer_stacks())
def test_receptive_field_is_the_gradient_footprint(stack):
    rf = ops.receptive_field(
        [
            kw if kind == "conv" else {k: v for k, v in kw.items() if k != "dilation"}
            for kind, kw in stack
        ]
    )
    # An input large enough that the chosen output pixel's region lies inside it, away from padding.
    in_shape = tuple(2 * sz + 4 * j + 4 for sz, j in zip(rf.size, rf.jump))
    # One past the first output whose region starts inside the input (ceil(-start / jump)).
    out_index = tuple(-(st // j) + 1 for st, j in zip(rf.start, rf.jump))
    corner, size = _footprint(stack, in_shape, out_index)
    assert size == rf.size
    assert corner == tuple(st + i * j for st, i, j in zip(rf.start, out_index, rf.jump))


def test_receptive_field_of_lenet():
    # conv 5x5 (pad 2), pool 2/2, conv 5x5, pool 2/2.
    layers = [dict(kernel=5, padding=2), (2, 2), (5, 1), (2, 2)]
    assert ops.receptive_field(layers) == ops.ReceptiveField(
        size=(16, 16), jump=(4, 4), start=(-2, -2)
    )
    assert ops.receptive_field([(3, 1, 2)], ndim=1) == ops.ReceptiveField((5,), (1,), (0,))
    assert ops.receptive_field([]) == ops.ReceptiveField((1, 1), (1, 1), (0, 0))


def _nonzeros(jacobian) -> int:
    return int(np.count_nonzero(np.asarray(jacobian)))


@settings(h.FEW, max_examples=4)
@given(
    groups=st.integers(1, 2),
    cg=st.integers(1, 2),
    og=st.integers(1, 2),
    k=st.tuples(st.integers(1, 3), st.integers(1, 2)),
    s=st.integers(1, 2),
    d=st.integers(1, 2),
    n=st.integers(1, 2),
    seed=st.integers(0, 2**16),
)
def test_conv_cost_counts_the_products_the_conv_makes(groups, cg, og, k, s, d, n, seed):
    ci, co = groups * cg, groups * og
    in_shape = (4, 5)
    rng = np.random.default_rng(seed)
    # Strictly positive data: every product that exists is a nonzero Jacobian entry.
    x = jnp.asarray(rng.uniform(0.5, 1.5, (n, *in_shape, ci)), jnp.float32)
    w = jnp.asarray(rng.uniform(0.5, 1.5, (*k, cg, co)), jnp.float32)
    f = functools.partial(ops.conv2d, stride=s, dilation=d, groups=groups, impl="lax")
    cost = ops.conv_cost(in_shape, ci, co, k, stride=s, dilation=d, groups=groups, batch_size=n)
    y = f(x, w)
    assert y.shape[1:3] == cost.output_shape
    # d y / d w has one entry per (output element, weight it multiplies): the weight-gradient work.
    assert cost.backward_weight_macs == _nonzeros(jax.jit(jax.jacfwd(f, argnums=1))(x, w))
    assert cost.backward_input_macs == _nonzeros(jax.jit(jax.jacfwd(f, argnums=0))(x, w))
    assert cost.forward_macs == cost.backward_weight_macs
    assert cost.backward_macs == cost.backward_input_macs + cost.backward_weight_macs
    assert cost.params == w.size + co
    assert cost.activation_bytes == y.nbytes
    assert cost.input_bytes == x.nbytes


def test_conv_cost_of_lenet_first_layer():
    cost = ops.conv_cost((28, 28), 1, 6, 5, padding=2, batch_size=256, dtype="bfloat16", bias=False)
    assert cost.forward_macs == 256 * 28 * 28 * 6 * 25
    assert cost.params == 6 * 25
    assert cost.activation_bytes == 256 * 28 * 28 * 6 * 2


@pytest.mark.parametrize("window, stride", [(2, None), ((3, 2), (1, 2))])
def test_pool_cost_counts_window_elements(window, stride):
    x = jnp.asarray(np.random.default_rng(0).uniform(0.5, 1.5, (2, 6, 7, 3)), jnp.float32)
    f = functools.partial(ops.avg_pool2d, window=window, stride=stride)
    cost = ops.pool_cost((6, 7), 3, window, stride=stride, batch_size=2)
    y = f(x)
    assert cost.output_shape == y.shape[1:3]
    assert cost.forward_ops == _nonzeros(jax.jit(jax.jacfwd(f))(x))
    assert cost.backward_ops == cost.forward_ops
    assert (cost.params, cost.activation_bytes, cost.input_bytes) == (0, y.nbytes, x.nbytes)
