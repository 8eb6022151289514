"""torch's int-or-tuple rule for every spatial hyper-parameter of the ops with torch's names.

An int or a one-element tuple/list means every spatial dim (torch's ``_pair``/``_triple``, and
its C++ ops' "a single int, or a tuple of r ints"); r values are one per dim; any other length
is the one-line error naming the argument.
"""

import re

import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import ops
from tests.ops import helpers as h

RNG = np.random.default_rng(0)


def _x(rank: int, n: int) -> jnp.ndarray:
    return h.random(RNG, (1, *(n,) * rank, 2))


def _cases():
    """name -> (op, rank, args, base keyword arguments, {argument: a value v}).

    Each argument is tried as v and as (v,), the others as in the base; the N-d forms run at
    rank 2, where (v,) is not already one per dim.
    """
    cases = {}
    for suffix, rank in (("1d", 1), ("2d", 2), ("3d", 3), ("", 2)):
        conv_x, conv_w = _x(rank, 7), h.random(RNG, (*(3,) * rank, 2, 3))
        cases[f"conv{suffix}"] = (
            getattr(ops, f"conv{suffix}"),
            rank,
            (conv_x, conv_w),
            dict(impl="lax"),
            dict(stride=2, padding=1, dilation=2),
        )
        tr_x, tr_w = _x(rank, 4), h.random(RNG, (*(3,) * rank, 2, 3))
        cases[f"conv_transpose{suffix}"] = (
            getattr(ops, f"conv_transpose{suffix}"),
            rank,
            (tr_x, tr_w),
            dict(stride=2),
            dict(stride=3, padding=1, output_padding=1, dilation=2),
        )
        pool_x = _x(rank, 6)
        cases[f"max_pool{suffix}"] = (
            getattr(ops, f"max_pool{suffix}"),
            rank,
            (pool_x,),
            dict(window=3),
            dict(window=2, stride=2, padding=1, dilation=2),
        )
        cases[f"avg_pool{suffix}"] = (
            getattr(ops, f"avg_pool{suffix}"),
            rank,
            (pool_x,),
            dict(window=3),
            dict(window=2, stride=2, padding=1),
        )
        for kind in ("avg", "max"):
            cases[f"adaptive_{kind}_pool{suffix}"] = (
                getattr(ops, f"adaptive_{kind}_pool{suffix}"),
                rank,
                (_x(rank, 5),),
                {},
                dict(output_size=3),
            )
        # Undoing a window-3, stride-2, padding-1 max pool of a size-4 input (default size 3).
        y, idx = ops.max_pool(_x(rank, 4), 3, 2, 1, return_indices=True)
        unpool = dict(window=3, stride=2, padding=1, output_size=4)
        cases[f"max_unpool{suffix}"] = (
            getattr(ops, f"max_unpool{suffix}"),
            rank,
            (y, idx),
            unpool,
            unpool,
        )
    return cases


CASES = _cases()
PAIRS = [(name, arg) for name, (*_, values) in CASES.items() for arg in values]


@pytest.mark.parametrize("name, arg", PAIRS, ids=[f"{n}-{a}" for n, a in PAIRS])
def test_one_element_tuple_means_every_dim(name, arg):
    op, _, args, base, values = CASES[name]
    v = values[arg]
    want = op(*args, **{**base, arg: v})
    for one in ((v,), [v], np.array([v])):
        np.testing.assert_array_equal(op(*args, **{**base, arg: one}), want)


@pytest.mark.parametrize("name, arg", PAIRS, ids=[f"{n}-{a}" for n, a in PAIRS])
def test_other_lengths_are_still_the_one_line_error(name, arg):
    op, rank, args, base, values = CASES[name]
    v = values[arg]
    # rank + 1 entries; for max_unpool's output_size rank + 2 is the full shape, so use rank + 3.
    wrong = (v,) * (rank + (3 if name.startswith("max_unpool") and arg == "output_size" else 1))
    with pytest.raises(ValueError, match=rf"^{re.escape(op.__name__)}: {arg} must be") as e:
        op(*args, **{**base, arg: wrong})
    assert "\n" not in str(e.value) and repr(wrong) in str(e.value)
    with pytest.raises(ValueError, match=rf"^{re.escape(op.__name__)}: {arg} must be"):
        op(*args, **{**base, arg: ()})


def test_torchs_own_case_avg_pool2d_padding_one_tuple():
    # Found by PyTorch's test suite: avg_pool2d(x, 3, stride=1, padding=(1,)).
    x = _x(2, 5)
    np.testing.assert_array_equal(
        ops.avg_pool2d(x, 3, stride=1, padding=(1,)), ops.avg_pool2d(x, 3, stride=1, padding=1)
    )


def test_forms_that_are_not_per_dim_ints_keep_their_meaning():
    x, w = _x(2, 7), h.random(RNG, (3, 3, 2, 3))
    # A lone (lo, hi) pair is one dim's padding: in 2-D it is still a length error ...
    with pytest.raises(ValueError, match=r"conv2d: padding must be an int, 2 ints"):
        ops.conv2d(x, w, padding=((1, 0),))
    with pytest.raises(ValueError, match=r"conv2d: padding must be an int, 2 ints"):
        ops.conv2d(x, w, padding=("same",))
    # ... and in 1-D it is the (lo, hi) pair it always was.
    x1, w1 = _x(1, 7), h.random(RNG, (3, 2, 3))
    np.testing.assert_array_equal(
        ops.conv1d(x1, w1, padding=((2, 0),)), ops.conv1d(x1, w1, padding="causal")
    )
    for padding, size in (("same", 7), ("SAME", 7), ("valid", 5)):
        assert ops.conv2d(x, w, padding=padding).shape == (1, size, size, 3)
    # A one-element output_size of None keeps every dim (2-D and 3-D); 1-D takes ints only.
    assert ops.adaptive_avg_pool2d(_x(2, 5), (None,)).shape == (1, 5, 5, 2)
    with pytest.raises(TypeError, match="adaptive_avg_pool1d: output_size must be an int"):
        ops.adaptive_avg_pool1d(_x(1, 5), (None,))


def test_max_unpool_output_size_as_a_numpy_int_is_an_int():
    # Regression: a NumPy integer output_size was iterated as if it were a tuple (TypeError:
    # 'numpy.int64' object is not iterable).
    y, idx = ops.max_pool2d(_x(2, 4), 2, return_indices=True)
    np.testing.assert_array_equal(
        ops.max_unpool2d(y, idx, 2, output_size=np.int64(4)),
        ops.max_unpool2d(y, idx, 2, output_size=4),
    )
    with pytest.raises(TypeError, match="max_unpool2d: output_size must be made of ints, got 4.5"):
        ops.max_unpool2d(y, idx, 2, output_size=4.5)
