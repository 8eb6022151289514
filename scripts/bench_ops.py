"""Time cnnjax's conv "auto" against "lax", and the ops against their loop references.

    python scripts/bench_ops.py                    # auto vs lax (issue 11), ~5 min on 2 cores
    python scripts/bench_ops.py --reference        # also: ops vs the loop references (issue 2)
    nice -n 10 python scripts/bench_ops.py --repeats 9   # on a shared machine

Auto vs lax: for a fixed list of convolutions (LeNet's two, MNIST-CNN's 3x3 1->32 and 32->64,
a ResNet 3x3 64->64 on 32x32, a CIFAR 3x3 stem, an ImageNet 7x7/2 stem at 224), each of four
modes (forward, forward + both gradients; jitted, eager) is timed for ``impl="lax"`` and
``impl="auto"`` in alternation (A B A B ..., ``--repeats`` rounds), and the table gives the
medians, min-max, the ratio lax/auto (>= 0.95 is the target: auto never much slower), the
compile seconds of each jitted program, and which implementation "auto" ran. The ratios are
what carries over between machines; the milliseconds describe this one only.

The reference table times the jitted ops against the hand-rolled loops of
``cnnjax.ops.reference`` (single-channel corr2d on 32², 128², 512²; LeNet's convs and 2x2
pooling at batch 256); the loops are deliberately naive, so those ratios show what vectorised
XLA buys, not how good XLA is.
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


# (name, x (N, H, W, C), w (kh, kw, C, O), stride, padding)
AUTO_CASES = [
    ("LeNet conv1", (256, 28, 28, 1), (5, 5, 1, 6), 1, 2),
    ("LeNet conv2", (256, 14, 14, 6), (5, 5, 6, 16), 1, 0),
    ("MNIST-CNN 3x3 1->32", (128, 28, 28, 1), (3, 3, 1, 32), 1, 0),
    ("MNIST-CNN 3x3 32->64", (128, 26, 26, 32), (3, 3, 32, 64), 1, 0),
    ("ResNet 3x3 64->64 @32", (32, 32, 32, 64), (3, 3, 64, 64), 1, 1),
    ("CIFAR stem 3x3 3->64", (64, 32, 32, 3), (3, 3, 3, 64), 1, 1),
    ("7x7/2 stem @224", (8, 224, 224, 3), (7, 7, 3, 64), 2, 3),
]
MODES = ("fwd jit", "fwd+grad jit", "fwd eager", "fwd+grad eager")


def _auto_choice(x, w, stride, pad) -> str:
    """What "auto" runs forward-only / differentiated, from the jaxprs of a traced call."""
    f = functools.partial(ops.conv2d, stride=stride, padding=pad)
    fwd = str(jax.make_jaxpr(f)(x, w))
    grad = str(jax.make_jaxpr(jax.grad(lambda w: f(x, w).sum()))(w))
    name = {True: "toeplitz", False: "lax"}
    return f"{name['dot_general' in fwd]} / {name['dot_general' in grad]}"


def _programs(x, w, stride, pad, impl, ct):
    """{mode: (callable of no arguments, jitted fn or None)} for one impl."""
    f = functools.partial(ops.conv2d, stride=stride, padding=pad, impl=impl)

    def grads(x, w, ct):
        return jax.grad(lambda x, w: jnp.sum(f(x, w) * ct), argnums=(0, 1))(x, w)

    fj, gj = jax.jit(f), jax.jit(grads)
    return {
        "fwd jit": (lambda: fj(x, w), (fj, (x, w))),
        "fwd+grad jit": (lambda: gj(x, w, ct), (gj, (x, w, ct))),
        "fwd eager": (lambda: f(x, w), None),
        "fwd+grad eager": (lambda: grads(x, w, ct), None),
    }


def _compile_seconds(jitted) -> float:
    fn, args = jitted
    t0 = time.perf_counter()
    fn.lower(*args).compile()
    return time.perf_counter() - t0


def _sample(call, min_seconds: float = 0.05) -> float:
    """Seconds per call, averaged over enough calls to last ``min_seconds``."""
    t0, calls = time.perf_counter(), 0
    while True:
        jax.block_until_ready(call())
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            return elapsed / calls


def auto_vs_lax(repeats: int) -> None:
    print("\n## conv2d impl='auto' vs impl='lax' (float32)\n")
    header = (
        "| conv | x | mode | lax ms (min-max) | auto ms (min-max) | lax/auto |"
        " compile s lax / auto | auto runs (fwd / grad) |"
    )
    print(header)
    print("|" + "|".join("---" for _ in header.split("|")[1:-1]) + "|")
    rng = np.random.default_rng(0)
    worst = []
    for name, x_shape, w_shape, stride, pad in AUTO_CASES:
        x = jnp.asarray(rng.standard_normal(x_shape), jnp.float32)
        w = jnp.asarray(rng.standard_normal(w_shape), jnp.float32)
        y_shape = jax.eval_shape(functools.partial(ops.conv2d, stride=stride, padding=pad), x, w)
        ct = jnp.asarray(rng.standard_normal(y_shape.shape), jnp.float32)
        choice = _auto_choice(x, w, stride, pad)
        progs = {impl: _programs(x, w, stride, pad, impl, ct) for impl in ("lax", "auto")}
        for mode in MODES:
            compile_s = {
                impl: _compile_seconds(p[mode][1]) if p[mode][1] else None
                for impl, p in progs.items()
            }
            for impl in progs:  # warm-up: compile, caches
                jax.block_until_ready(progs[impl][mode][0]())
            times = {"lax": [], "auto": []}
            for _ in range(repeats):  # alternate A B A B
                for impl in ("lax", "auto"):
                    times[impl].append(_sample(progs[impl][mode][0]))
            med = {impl: statistics.median(t) for impl, t in times.items()}
            ratio = med["lax"] / med["auto"]
            worst.append((ratio, name, mode))
            cells = {
                impl: f"{med[impl] * 1e3:.2f} ({min(t) * 1e3:.2f}-{max(t) * 1e3:.2f})"
                for impl, t in times.items()
            }
            comp = f"{compile_s['lax']:.2f} / {compile_s['auto']:.2f}" if compile_s["lax"] else "-"
            size = "x".join(map(str, x_shape))
            print(
                f"| {name} | {size} | {mode} | {cells['lax']} | {cells['auto']} | {ratio:.2f} |"
                f" {comp} | {'lax (untraced call)' if mode == 'fwd eager' else choice} |",
                flush=True,
            )
    ratio, name, mode = min(worst)
    met = "met" if ratio >= 0.95 else "NOT met"
    print(f"\nworst lax/auto: {ratio:.2f} ({name}, {mode}); target >= 0.95 on every row: {met}")


def reference_table(repeats: int) -> None:
    print("\n## ops vs loop references\n")
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
        times = {impl: _time_jitted(fn, op_args, repeats) for impl, fn in impls.items()}
        for impl, t in times.items():
            ref_ms = f"{t_ref * 1e3:12.1f}" if t_ref else f"{'-':>12}"
            vs_ref = f"{t_ref / t:11.0f}" if t_ref else f"{'-':>11}"
            print(
                f"| {name:<20} | {size:<13} | {impl:<8} | {t * 1e3:9.3f} | {ref_ms} | {vs_ref} |"
                f" {times['lax'] / t:6.2f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="alternating rounds (median)")
    parser.add_argument(
        "--reference", action="store_true", help="also time the ops against the loop references"
    )
    args = parser.parse_args()

    device = jax.devices()[0].device_kind
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, device {device}")
    auto_vs_lax(args.repeats)
    if args.reference:
        reference_table(args.repeats)


if __name__ == "__main__":
    main()
