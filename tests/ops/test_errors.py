"""Every bad input raises ValueError/TypeError naming the argument, also under jit."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import ops

X2 = jnp.ones((4, 5))
K2 = jnp.ones((2, 2))
X3 = jnp.ones((2, 4, 5))
X4 = jnp.ones((2, 6, 6, 4))
W4 = jnp.ones((3, 3, 4, 8))

CASES = [
    # corr2d and friends: ndim, emptiness, size, dtype, channels, modes.
    (ops.corr2d, (X2, jnp.ones(3)), ValueError, "corr2d: K must be 2-D (kh, kw), got shape (3,)"),
    (ops.corr2d, (X3, K2), ValueError, "corr2d: X must be 2-D (H, W), got shape (2, 4, 5)"),
    (
        ops.corr2d,
        (X2, jnp.ones((5, 2))),
        ValueError,
        "corr2d: kernel (kh, kw) = (5, 2) must fit in the input (H, W) = (4, 5)",
    ),
    (
        ops.corr2d,
        (jnp.ones((0, 3)), K2),
        ValueError,
        "corr2d: X must not be empty, got shape (0, 3)",
    ),
    (ops.corr2d, (X2, jnp.ones((2, 0))), ValueError, "corr2d: K must not be empty"),
    (
        ops.corr2d,
        (np.array([["a", "b"], ["c", "d"]]), K2),
        TypeError,
        "corr2d: X must have a real numeric dtype, got <U1",
    ),
    (
        ops.corr2d,
        (X2, jnp.ones((2, 2), bool)),
        TypeError,
        "corr2d: K must have a real numeric dtype, got bool",
    ),
    (
        ops.corr2d,
        (X2, jnp.ones((2, 2), jnp.complex64)),
        TypeError,
        "corr2d: K must have a real numeric dtype, got complex64",
    ),
    (
        ops.corr2d,
        ([[1.0, 2.0], [3.0]], K2),
        TypeError,
        "corr2d: X must be a numeric array, got list",
    ),
    (ops.corr2d, ("image", K2), TypeError, "corr2d: X must have a real numeric dtype"),
    (
        ops.convolve2d,
        (X2, K2, "same"),
        ValueError,
        "convolve2d: mode must be one of ('valid', 'full'), got 'same'",
    ),
    (
        ops.convolve2d,
        (X2, jnp.ones((5, 1)), "valid"),
        ValueError,
        "convolve2d: kernel (kh, kw) = (5, 1) must fit",
    ),
    (
        ops.corr2d_multi_in,
        (X3, jnp.ones((3, 2, 2))),
        ValueError,
        "corr2d_multi_in: K has 3 input channels but X has 2",
    ),
    (
        ops.corr2d_multi_in,
        (X3, K2),
        ValueError,
        "corr2d_multi_in: K must be 3-D (Ci, kh, kw), got shape (2, 2)",
    ),
    (
        ops.corr2d_multi_in_out,
        (X3, jnp.ones((3, 1, 2, 2))),
        ValueError,
        "corr2d_multi_in_out: K has 1 input channels but X has 2",
    ),
    (
        ops.corr2d_multi_in_out,
        (X3, jnp.ones((2, 2, 2))),
        ValueError,
        "corr2d_multi_in_out: K must be 4-D (Co, Ci, kh, kw)",
    ),
    (
        ops.corr2d_multi_in_out,
        (X3, jnp.ones((1, 2, 5, 2))),
        ValueError,
        "corr2d_multi_in_out: kernel (kh, kw) = (5, 2) must fit",
    ),
    (
        ops.corr2d_multi_in_out_1x1,
        (X3, jnp.ones((3, 2, 2, 1))),
        ValueError,
        "corr2d_multi_in_out_1x1: K must be (Co, Ci, 1, 1), got shape (3, 2, 2, 1)",
    ),
    (
        ops.corr2d_multi_in_out_1x1,
        (X3, jnp.ones((3, 4, 1, 1))),
        ValueError,
        "corr2d_multi_in_out_1x1: K has 4 input channels but X has 2",
    ),
    (
        lambda: ops.corr2d_as_matmul(X2, K2, method="fft"),
        (),
        ValueError,
        "corr2d_as_matmul: method must be one of ('toeplitz', 'im2col'), got 'fft'",
    ),
    (
        ops.corr2d_kernel_matrix,
        (K2, (1, 5)),
        ValueError,
        "corr2d_kernel_matrix: kernel (kh, kw) = (2, 2) must fit in the input (H, W) = (1, 5)",
    ),
    (
        ops.corr2d_kernel_matrix,
        (K2, (4,)),
        ValueError,
        "corr2d_kernel_matrix: input_shape must be an int or 2 ints",
    ),
    # pool2d.
    (
        ops.pool2d,
        (X2, 2, "min"),
        ValueError,
        "pool2d: mode must be one of ('max', 'avg'), got 'min'",
    ),
    (ops.pool2d, (X2, 0), ValueError, "pool2d: pool_size must be >= 1 in every dim, got 0"),
    (
        ops.pool2d,
        (X2, (5, 1)),
        ValueError,
        "pool2d: pool_size (5, 1) must fit in X (H, W) = (4, 5)",
    ),
    (ops.pool2d, (X2, 1.5), TypeError, "pool2d: pool_size must be made of ints, got 1.5"),
    (ops.pool2d, (X3, 2), ValueError, "pool2d: X must be 2-D (H, W)"),
    # conv2d / conv / conv1d / conv3d.
    (
        ops.conv2d,
        (X2, W4),
        ValueError,
        "conv2d: x must be 4-D (N, H, W, C) or 3-D unbatched (H, W, C), got shape (4, 5)",
    ),
    (
        ops.conv1d,
        (X4, W4),
        ValueError,
        "conv1d: x must be 3-D (N, L, C) or 2-D unbatched (L, C), got shape (2, 6, 6, 4)",
    ),
    (ops.conv3d, (X2, W4), ValueError, "conv3d: x must be 5-D (N, D, H, W, C) or 4-D unbatched"),
    (
        lambda: ops.conv2d(X2, W4, layout="NCHW"),
        (),
        ValueError,
        "conv2d: x must be 4-D (N, C, H, W) or 3-D unbatched (C, H, W), got shape (4, 5)",
    ),
    (
        ops.conv,
        (X2, K2),
        ValueError,
        "conv: w must be (*kernel, Ci/groups, Co) (or torch's (Co, Ci/groups, *kernel) with"
        " layout='NCHW') with >= 1 kernel dim, got shape (2, 2)",
    ),
    (ops.conv, (X2, W4), ValueError, "conv: x must be 4-D (N, H, W, C) or 3-D unbatched"),
    (
        ops.conv2d,
        (X4, jnp.ones((3, 4, 8))),
        ValueError,
        "conv2d: w must be 4-D (*kernel, Ci/groups, Co) for a 2-D conv, got shape (3, 4, 8)",
    ),
    (
        ops.conv2d,
        (X4, jnp.ones((3, 3, 3, 8))),
        ValueError,
        "conv2d: w has 3 input channels per group, expected Ci/groups = 4/1 = 4",
    ),
    (
        lambda: ops.conv2d(X4, jnp.ones((3, 3, 1, 8)), groups=3),
        (),
        ValueError,
        "conv2d: groups=3 must divide both input channels (4) and output channels (8)",
    ),
    (
        lambda: ops.conv2d(X4, jnp.ones((3, 3, 2, 5)), groups=2),
        (),
        ValueError,
        "conv2d: groups=2 must divide both input channels (4) and output channels (5)",
    ),
    (
        lambda: ops.conv2d(X4, jnp.ones((3, 3, 4, 8)), groups=2),
        (),
        ValueError,
        "conv2d: w has 4 input channels per group, expected Ci/groups = 4/2 = 2",
    ),
    (lambda: ops.conv2d(X4, W4, groups=0), (), ValueError, "conv2d: groups must be >= 1, got 0"),
    (
        lambda: ops.conv2d(X4, W4, groups=2.0),
        (),
        TypeError,
        "conv2d: groups must be an int, got 2.0",
    ),
    (
        ops.conv2d,
        (X4, W4, jnp.ones(4)),
        ValueError,
        "conv2d: b must have shape (Co,) = (8,), got (4,)",
    ),
    (
        ops.conv2d,
        (X4, W4, jnp.ones((1, 8))),
        ValueError,
        "conv2d: b must have shape (Co,) = (8,), got (1, 8)",
    ),
    (ops.conv2d, (X4, W4, "bias"), TypeError, "conv2d: b must have a real numeric dtype"),
    (
        lambda: ops.conv2d(X4, W4, stride=0),
        (),
        ValueError,
        "conv2d: stride must be >= 1 in every dim, got 0",
    ),
    (
        lambda: ops.conv2d(X4, W4, stride=(1, -2)),
        (),
        ValueError,
        "conv2d: stride must be >= 1 in every dim, got (1, -2)",
    ),
    (
        lambda: ops.conv2d(X4, W4, stride=(1, 2, 1)),
        (),
        ValueError,
        "conv2d: stride must be an int or 2 ints (one per spatial dim), got (1, 2, 1)",
    ),
    (
        lambda: ops.conv2d(X4, W4, stride=1.0),
        (),
        TypeError,
        "conv2d: stride must be made of ints, got 1.0",
    ),
    (
        lambda: ops.conv2d(X4, W4, dilation=0),
        (),
        ValueError,
        "conv2d: dilation must be >= 1 in every dim, got 0",
    ),
    (
        lambda: ops.conv2d(X4, W4, padding=-1),
        (),
        ValueError,
        "conv2d: padding must be >= 0, got -1",
    ),
    (
        lambda: ops.conv2d(X4, W4, padding=((0, 1), (-1, 0))),
        (),
        ValueError,
        "conv2d: padding must be >= 0",
    ),
    (
        lambda: ops.conv2d(X4, W4, padding=(1, 1, 1)),
        (),
        ValueError,
        "conv2d: padding must be an int, 2 ints, 2 (lo, hi) pairs, 'SAME' or 'VALID',"
        " got (1, 1, 1)",
    ),
    (
        lambda: ops.conv2d(X4, W4, padding=((1, 1, 1), (0, 0))),
        (),
        ValueError,
        "conv2d: padding must be an int, 2 ints",
    ),
    (
        lambda: ops.conv2d(X4, W4, padding="full"),
        (),
        ValueError,
        "conv2d: padding string must be 'SAME' or 'VALID', got 'full'",
    ),
    (
        lambda: ops.conv2d(X4, W4, padding=0.5),
        (),
        TypeError,
        "conv2d: padding must be made of ints, got 0.5",
    ),
    (
        ops.conv2d,
        (X4, jnp.ones((7, 3, 4, 8))),
        ValueError,
        "conv2d: dilated kernel (7, 3) must fit in the padded input (6, 6)",
    ),
    (
        lambda: ops.conv2d(X4, W4, dilation=(3, 1)),
        (),
        ValueError,
        "conv2d: dilated kernel (7, 3) must fit in the padded input (6, 6)",
    ),
    (
        ops.conv2d,
        (jnp.ones((2, 0, 6, 4)), W4),
        ValueError,
        "conv2d: x must not be empty (only the batch may be 0), got shape (2, 0, 6, 4)",
    ),
    # An empty batch is valid, so every other argument is still checked (torch's order).
    (
        lambda: ops.conv2d(jnp.ones((0, 6, 6, 4)), W4, stride=0),
        (),
        ValueError,
        "conv2d: stride must be >= 1 in every dim, got 0",
    ),
    (
        lambda: ops.conv2d(jnp.ones((0, 6, 6, 4)), jnp.ones((3, 3, 3, 8))),
        (),
        ValueError,
        "conv2d: w has 3 input channels per group, expected Ci/groups = 4/1 = 4",
    ),
    # torch's string paddings, padding modes and layouts (issue 11).
    (
        lambda: ops.conv2d(X4, W4, stride=2, padding="same"),
        (),
        ValueError,
        "conv2d: padding='same' is PyTorch's 'same', which needs stride 1, got stride (2, 2);"
        " for XLA's rule (ceil(n / stride) outputs, extra padding after) pass padding='SAME'",
    ),
    (
        lambda: ops.conv2d(X4, W4, padding="causal"),
        (),
        ValueError,
        "conv2d: padding='causal' is for 1-D convs",
    ),
    (
        lambda: ops.conv2d(X4, W4, padding=1, padding_mode="mirror"),
        (),
        ValueError,
        "conv2d: padding_mode must be one of ('zeros', 'reflect', 'replicate', 'circular'),"
        " got 'mirror'",
    ),
    (
        lambda: ops.conv2d(X4, W4, padding=6, padding_mode="reflect"),
        (),
        ValueError,
        "conv2d: padding_mode='reflect' needs padding < the input size in every dim, got"
        " padding ((6, 6), (6, 6)) for input (6, 6)",
    ),
    (
        lambda: ops.conv2d(X4, W4, padding=7, padding_mode="circular"),
        (),
        ValueError,
        "conv2d: padding_mode='circular' needs padding <= the input size in every dim",
    ),
    (
        lambda: ops.conv2d(X4, W4, layout="CHWN"),
        (),
        ValueError,
        "conv2d: layout must be one of ('NHWC', 'NCHW'), got 'CHWN'",
    ),
    (
        ops.conv2d,
        (jnp.ones((2, 8, 8, 3)), jnp.ones((64, 3, 3, 3))),
        ValueError,
        "conv2d: w (64, 3, 3, 3) reads as a (64, 3) HWIO kernel with 3 -> 3 channels, but looks"
        " like a PyTorch (Co, Ci/groups, *kernel) weight (3 -> 64 channels, (3, 3) kernel). Pass"
        " layout='NCHW' (with x channels-first) or transpose it with w.transpose((2, 3, 1, 0));"
        " if you do mean that HWIO kernel, pass layout='NHWC'",
    ),
    (
        ops.conv2d,
        (X4, jnp.ones((8, 4, 3, 3))),
        ValueError,
        "conv2d: w has 3 input channels per group, expected Ci/groups = 4/1 = 4 (w shape"
        " (8, 4, 3, 3), x shape (2, 6, 6, 4)); w looks like a PyTorch (Co, Ci/groups, *kernel)"
        " weight: pass layout='NCHW' (with x channels-first) or transpose it with"
        " w.transpose((2, 3, 1, 0))",
    ),
    (
        lambda: ops.conv2d(jnp.ones((2, 4, 6, 6)), W4, layout="NCHW"),
        (),
        ValueError,
        "conv2d: w has 3 input channels per group, expected Ci/groups = 4/1 = 4 (w shape"
        " (3, 3, 4, 8), x shape (2, 4, 6, 6)); w looks like a JAX (*kernel, Ci/groups, Co)"
        " weight: pass layout='NHWC'",
    ),
    (ops.conv2d, (X4, jnp.ones((3, 3, 4, 0))), ValueError, "conv2d: w must not be empty"),
    (
        ops.conv2d,
        (X4.astype(bool), W4),
        TypeError,
        "conv2d: x must have a real numeric dtype, got bool",
    ),
    (
        lambda: ops.conv2d(X4, W4, impl="cudnn"),
        (),
        ValueError,
        "conv2d: impl must be 'auto' or one of ('lax', 'toeplitz'), got 'cudnn'",
    ),
    (
        lambda: ops.conv2d(X4, jnp.ones((3, 3, 2, 8)), groups=2, impl="toeplitz"),
        (),
        ValueError,
        "conv2d: impl='toeplitz' needs a 2-D conv with groups=1, got 2-D with groups=2;"
        " use impl='lax'",
    ),
    (
        lambda: ops.conv1d(jnp.ones((1, 5, 2)), jnp.ones((2, 2, 3)), impl="toeplitz"),
        (),
        ValueError,
        "conv1d: impl='toeplitz' needs a 2-D conv with groups=1, got 1-D",
    ),
    # Pooling.
    (ops.max_pool2d, (X4, 0), ValueError, "max_pool2d: window must be >= 1 in every dim, got 0"),
    (
        lambda: ops.avg_pool2d(X4, 2, stride=0),
        (),
        ValueError,
        "avg_pool2d: stride must be >= 1 in every dim, got 0",
    ),
    (
        lambda: ops.max_pool2d(X4, 2, padding=-1),
        (),
        ValueError,
        "max_pool2d: padding must be >= 0, got -1",
    ),
    (
        lambda: ops.max_pool2d(X4, 3, padding=2),
        (),
        ValueError,
        "max_pool2d: padding must be at most half the window (3, 3), got ((2, 2), (2, 2))",
    ),
    (
        lambda: ops.avg_pool2d(X4, (2, 2), padding=((0, 0), (0, 2))),
        (),
        ValueError,
        "avg_pool2d: padding must be at most half the window",
    ),
    (
        ops.max_pool2d,
        (X4, 7),
        ValueError,
        "max_pool2d: window (7, 7) must fit in the padded input (6, 6)",
    ),
    (
        lambda: ops.max_pool2d(X4, 2, stride=1, impl="reshape"),
        (),
        ValueError,
        "max_pool2d: impl='reshape' needs stride == window and no padding",
    ),
    (
        lambda: ops.avg_pool2d(X4, 2, padding=1, impl="reshape"),
        (),
        ValueError,
        "avg_pool2d: impl='reshape' needs stride == window",
    ),
    (
        lambda: ops.max_pool2d(X4, 2, impl="fast"),
        (),
        ValueError,
        "max_pool2d: impl must be one of ('auto', 'lax', 'reshape'), got 'fast'",
    ),
    (
        lambda: ops.avg_pool2d(X4, 2, count_include_pad=1),
        (),
        TypeError,
        "avg_pool2d: count_include_pad must be a bool, got 1",
    ),
    # Pooling takes one unbatched example too (torch's convention), so 3-D is fine for 2-D.
    (
        ops.max_pool2d,
        (X2, 2),
        ValueError,
        "max_pool2d: x must be 4-D (N, H, W, C) or 3-D unbatched (H, W, C), got shape (4, 5)",
    ),
    (ops.avg_pool1d, (X4, 2), ValueError, "avg_pool1d: x must be 3-D (N, L, C)"),
    (ops.max_pool3d, (X2, 2), ValueError, "max_pool3d: x must be 5-D (N, D, H, W, C)"),
    (ops.max_pool, (X2, 2), ValueError, "max_pool: x must be (N, *spatial, C)"),
    (ops.avg_pool2d, (jnp.ones((1, 0, 4, 1)), 2), ValueError, "avg_pool2d: x must not be empty"),
    (
        ops.max_pool2d,
        (np.array(["x"] * 16).reshape(1, 4, 4, 1), 2),
        TypeError,
        "max_pool2d: x must have a real numeric dtype",
    ),
    # Formulas.
    (
        ops.conv_output_shape,
        ((4, 4), 5),
        ValueError,
        "conv_output_shape: kernel (5, 5) must fit in the padded input (4, 4)",
    ),
    (
        ops.conv_output_shape,
        ((4, 4), 3, 1, -1),
        ValueError,
        "conv_output_shape: padding must be >= 0",
    ),
    (
        ops.conv_output_shape,
        ((), 3),
        ValueError,
        "conv_output_shape: in_shape must hold at least one spatial size",
    ),
    (
        ops.pool_output_shape,
        ((4, 4), (2, 2, 2)),
        ValueError,
        "pool_output_shape: window must be an int or 2 ints",
    ),
    (
        ops.receptive_field,
        ([(3,)],),
        ValueError,
        "receptive_field: layers[0] must be (kernel, stride[, dilation]) or a dict, got (3,)",
    ),
    (
        ops.receptive_field,
        ([{"stride": 2}],),
        ValueError,
        "receptive_field: layers[0] must have key 'kernel'",
    ),
    (
        ops.receptive_field,
        ([{"kernel": 3, "pad": 1}],),
        ValueError,
        "receptive_field: layers[0] must have key 'kernel'",
    ),
    (
        ops.receptive_field,
        ([((3, 3), 1), ((3, 3, 3), 1)],),
        ValueError,
        "receptive_field: per-dim entries disagree on the spatial rank: lengths [2, 3]",
    ),
    (
        ops.receptive_field,
        ([dict(kernel=3, padding="SAME")],),
        ValueError,
        "receptive_field: padding must be ints or (lo, hi) pairs, got 'SAME'",
    ),
    (ops.receptive_field, ([(3, 0)],), ValueError, "receptive_field: stride must be >= 1"),
    (
        ops.receptive_field,
        ("conv",),
        TypeError,
        "receptive_field: layers must be a sequence of layers, got str",
    ),
    (
        lambda: ops.conv_cost((8, 8), 3, 4, 3, groups=2),
        (),
        ValueError,
        "conv_cost: groups=2 must divide in_channels (3) and out_channels (4)",
    ),
    (
        lambda: ops.conv_cost((8, 8), 3, 4, 3, batch_size=0),
        (),
        ValueError,
        "conv_cost: batch_size must be >= 1, got 0",
    ),
    (
        lambda: ops.conv_cost((8, 8), 3, 4.0, 3),
        (),
        TypeError,
        "conv_cost: out_channels must be an int, got 4.0",
    ),
    (
        lambda: ops.conv_cost((8, 8), 3, 4, 3, dtype="float17"),
        (),
        TypeError,
        "conv_cost: dtype must be a dtype such as 'float32', got 'float17'",
    ),
    (
        lambda: ops.pool_cost((8, 8), 0, 2),
        (),
        ValueError,
        "pool_cost: channels must be >= 1, got 0",
    ),
]


@pytest.mark.parametrize(
    "fn, args, exc, message", CASES, ids=[f"{i}-{c[3][:40]}" for i, c in enumerate(CASES)]
)
def test_bad_input_raises_with_a_message_naming_the_argument(fn, args, exc, message):
    with pytest.raises(exc, match=re.escape(message)):
        fn(*args)


@pytest.mark.parametrize(
    "fn, args, message",
    [
        (ops.corr2d, (X2, jnp.ones((5, 2))), "corr2d: kernel (kh, kw) = (5, 2) must fit"),
        (
            ops.corr2d_multi_in_out,
            (X3, jnp.ones((3, 1, 2, 2))),
            "K has 1 input channels but X has 2",
        ),
        (ops.conv2d, (X4, jnp.ones((3, 3, 3, 8))), "conv2d: w has 3 input channels per group"),
        (ops.conv2d, (X4, W4, jnp.ones(4)), "conv2d: b must have shape (Co,) = (8,), got (4,)"),
        (
            lambda x: ops.max_pool2d(x, 3, padding=2),
            (X4,),
            "max_pool2d: padding must be at most half the window",
        ),
        (lambda x: ops.avg_pool2d(x, 7), (X4,), "avg_pool2d: window (7, 7) must fit"),
    ],
)
def test_checks_fire_at_trace_time_under_jit(fn, args, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        jax.jit(fn)(*args)
    # Tracing alone (no compilation, no data) is enough to raise.
    with pytest.raises(ValueError, match=re.escape(message)):
        jax.eval_shape(fn, *args)


def test_valid_edge_cases_are_accepted():
    # "full" convolution with a kernel larger than the image is well defined.
    assert ops.convolve2d(K2, X2, "full").shape == (5, 6)
    # Padding exactly half the window, and a window equal to the padded input.
    assert ops.max_pool2d(X4, 2, padding=1).shape == (2, 4, 4, 4)
    assert ops.avg_pool2d(X4, 6).shape == (2, 1, 1, 4)
    assert ops.conv2d(X4, jnp.ones((8, 8, 4, 1)), padding=1, impl="lax").shape == (2, 1, 1, 1)
    # NumPy integers and integer arrays are accepted as hyper-parameters.
    assert ops.conv2d(
        X4, W4, stride=np.array([2, 1]), padding=np.array([[1, 0], [0, 0]]), impl="lax"
    ).shape == (2, 3, 4, 8)
    assert ops.conv2d(X4, W4, stride=np.int64(2), groups=np.int32(1), impl="lax").shape == (
        2,
        2,
        2,
        8,
    )
