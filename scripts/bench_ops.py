"""Time cnnjax.ops against the hand-rolled loop references (cnnjax.ops.reference).

    python scripts/bench_ops.py            # or: make bench-ops

Prints one table from one run: for each op and size, the jitted op's median time over
``--repeats`` calls (after a compiling warm-up call), the loop reference's time for one call,
and the speed-ups of each implementation over the reference and over "lax". Sizes follow
issue 2: single-channel corr2d on 32², 128², 512²; LeNet's two convolutions at batch 256; its
2x2 pooling. The references are deliberately naive Python loops, so the ratios show what
vectorised XLA buys, not how good XLA is.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax import ops
from cnnjax.ops import reference as ref


def _time_jitted(fn: Callable, args, repeats: int) -> float:
    f = jax.jit(fn)
    jax.block_until_ready(f(*args))  # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _time_once(fn: Callable, args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def _fwd_bwd(fn: Callable) -> Callable:
    """Forward and backward pass: the VJP of ``fn`` w.r.t. every input, cotangent last.

    The cotangent is an argument (not ``ones``) so XLA cannot fold the backward pass of a
    linear op into a constant.
    """

    def f(*args):
        y, vjp = jax.vjp(fn, *args[:-1])
        return y, vjp(args[-1])

    return f


def _grad_case(name, size, impls, args):
    out = jax.eval_shape(next(iter(impls.values())), *args)
    cotangent = jnp.asarray(np.random.default_rng(1).standard_normal(out.shape), out.dtype)
    return (
        name + " grad",
        size,
        {i: _fwd_bwd(f) for i, f in impls.items()},
        None,
        (*args, cotangent),
    )


def _cases(rng: np.random.Generator):
    """(op, size label, {impl: fast fn}, reference fn or None, args)."""

    def arr(*shape):
        return jnp.asarray(rng.standard_normal(shape), jnp.float32)

    k = arr(3, 3)
    for n in (32, 128, 512):
        yield "corr2d 3x3", f"{n}x{n}", {"lax": ops.corr2d}, ref.corr2d, (arr(n, n), k)

    lenet = [
        ("conv2d LeNet c1", (256, 28, 28, 1), (5, 5, 1, 6), 2),
        ("conv2d LeNet c2", (256, 14, 14, 6), (5, 5, 6, 16), 0),
    ]
    for name, x_shape, w_shape, pad in lenet:
        x, w, b = arr(*x_shape), arr(*w_shape), arr(w_shape[-1])
        impls = {
            impl: functools.partial(ops.conv2d, padding=pad, impl=impl)
            for impl in (*ops.IMPLS, "auto")
        }
        size = "x".join(map(str, x_shape))
        yield name, size, impls, functools.partial(ref.conv2d, padding=pad), (x, w, b)
        yield _grad_case(name, size, impls, (x, w, b))

    x = arr(256, 28, 28, 6)
    for name, op, r in (
        ("avg_pool2d 2x2", ops.avg_pool2d, ref.avg_pool2d),
        ("max_pool2d 2x2", ops.max_pool2d, ref.max_pool2d),
    ):
        impls = {
            impl: functools.partial(op, window=2, impl=impl) for impl in (*ops.POOL_IMPLS, "auto")
        }
        yield name, "256x28x28x6", impls, functools.partial(r, window=2), (x,)
        yield _grad_case(name, "256x28x28x6", impls, (x,))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per fast op (median)")
    args = parser.parse_args()

    device = jax.devices()[0].device_kind
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, device {device}")
    header = (
        f"| {'op':<20} | {'size':<13} | {'impl':<8} | {'fast ms':>9} | {'reference ms':>12}"
        f" | {'x reference':>11} | {'x lax':>6} |"
    )
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    rng = np.random.default_rng(0)
    for name, size, impls, reference, op_args in _cases(rng):
        # The references have no backward pass: their columns stay empty on "grad" rows.
        t_ref = None if reference is None else _time_once(reference, op_args)
        times = {impl: _time_jitted(fn, op_args, args.repeats) for impl, fn in impls.items()}
        for impl, t in times.items():
            ref_ms = f"{t_ref * 1e3:12.1f}" if t_ref else f"{'-':>12}"
            vs_ref = f"{t_ref / t:11.0f}" if t_ref else f"{'-':>11}"
            print(
                f"| {name:<20} | {size:<13} | {impl:<8} | {t * 1e3:9.3f} | {ref_ms} | {vs_ref} |"
                f" {times['lax'] / t:6.2f} |"
            )


if __name__ == "__main__":
    main()
