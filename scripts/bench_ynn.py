"""XLA:CPU's YNNPACK fusion on (jaxlib's default) or off: does it help what cnnjax runs on CPU?

    python scripts/bench_ynn.py [--rounds 3] [--reps 7] [--only LeNet,population] [--out FILE]
    .venv-newest/bin/python scripts/bench_ynn.py     # the same on the `make test-newest` stack

jaxlib >= 0.10.2 hands some XLA:CPU fusions (dots, convolutions, reductions, elementwise work)
to YNNPACK; ``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=`` (empty) turns that off. Each
round starts one worker process with YNN on and one with it off (A B A B ...), so drift on a
shared machine hits both alike; each worker compiles every case, times ``--reps`` calls of each
and reports the median. The table gives, per case, the median over workers and their min-max,
the ratio on/off (> 1: turning YNN off is faster), both compile times and the number of YNN
fusions in the optimised program (a check that the flag took effect).

Cases, float32 at batch 256 on random data:

* ops, forward + both gradients (``jax.vjp``): LeNet's two convolutions (5x5, 1->6 padded on
  28x28; 6->16 on 14x14) with ``impl="lax"`` and ``impl="toeplitz"``, and 2x2 average pooling;
* the LeNet of ``configs/lenet.py`` trained for ``--steps`` steps as the trainer runs it (one
  compiled ``lax.scan`` epoch, ``make_train_epoch``), with the default conv ("auto": Toeplitz on
  CPU) and with ``conv_impl="lax"``;
* the same LeNet as a population of ``--population`` members (``population.strategy="auto"``).

A worker that dies (a signal, a non-zero exit) or runs past ``--timeout`` is reported as such and
its round counted, not retried: a crash or hang is a finding. The ratios are what carries over
between machines; the milliseconds describe this one only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
_YNN_FUSION = '"kind":"__ynn_fusion"'  # how a YNN fusion shows in the compiled HLO text
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def xla_flags(ynn: bool) -> str:
    """This process's ``XLA_FLAGS`` without any YNN setting, plus the off switch if not ``ynn``."""
    kept = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(YNN_FLAG)]
    return " ".join(kept + ([] if ynn else [f"{YNN_FLAG}="]))


# ---------------------------------------------------------------------------------------------
# Worker: one process, one YNN setting, every case.


def _cases(args):
    """(name, jitted fn, arguments, chained) for every case. A chained case (training) donates
    its first argument, the state, so each call takes the state the previous call returned."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from cnnjax import data, ops, train
    from cnnjax.models import LeNet

    rng = np.random.default_rng(0)
    b = args.batch_size

    def normal(*shape):
        return jnp.asarray(rng.standard_normal(shape), jnp.float32)

    def fwd_bwd(fn, *inputs):
        out = jax.eval_shape(fn, *inputs)
        cotangent = normal(*out.shape)

        def f(*a):
            y, vjp = jax.vjp(fn, *a[:-1])
            return y, vjp(a[-1])

        return jax.jit(f), (*inputs, cotangent)

    cases = []
    convs = {
        "conv1 5x5 1->6 pad 2": ((b, 28, 28, 1), (5, 5, 1, 6), 2),
        "conv2 5x5 6->16": ((b, 14, 14, 6), (5, 5, 6, 16), 0),
    }
    for name, (xs, ws, pad) in convs.items():
        x, w = normal(*xs), normal(*ws)
        for impl in ("lax", "toeplitz"):

            def conv(x, w, impl=impl, pad=pad):
                return ops.conv2d(x, w, padding=pad, impl=impl)

            fn, a = fwd_bwd(conv, x, w)
            cases.append((f"{name} {impl} fwd+grad", fn, a, False))
    fn, a = fwd_bwd(lambda x: ops.avg_pool2d(x, 2), normal(b, 28, 28, 6))
    cases.append(("avg_pool2d 2x2 fwd+grad", fn, a, False))

    images = rng.integers(0, 256, size=(args.steps * b, 28, 28, 1), dtype=np.uint8)
    labels = rng.integers(0, 10, size=args.steps * b).astype(np.int32)
    split = data.to_device(images, labels)
    base = train.load_config_file(os.path.join(_ROOT, "configs", "lenet.py"))
    base.progress = False
    training = [
        (f"LeNet epoch of {args.steps} steps, conv auto", 1, "auto"),
        (f"LeNet epoch of {args.steps} steps, conv lax", 1, "lax"),
        (f"population {args.population}, epoch of {args.steps} steps", args.population, "auto"),
    ]
    for name, size, impl in training:
        config = base.copy_and_resolve_references()
        config.model.conv_impl = impl
        config.population.size = size
        config = train.resolve_config(config)
        state = train.create_population(config, LeNet.from_config(config.model), (28, 28, 1))
        a = (state, split, data.epoch_key(0, 0))
        cases.append((name, train.make_train_epoch(config), a, True))
    return cases


def worker(args) -> dict:
    import jax

    results = {}
    for name, fn, a, chained in _cases(args):
        if args.only and not any(part in name for part in args.only.split(",")):
            continue
        t0 = time.perf_counter()
        compiled = fn.lower(*a).compile()
        compile_s = time.perf_counter() - t0
        ynn_fusions = compiled.as_text().count(_YNN_FUSION)
        times = []
        for _ in range(args.reps + 1):  # the first call warms caches and thread pools
            t0 = time.perf_counter()
            out = jax.block_until_ready(compiled(*a))
            times.append(time.perf_counter() - t0)
            if chained:
                a = (out[0], *a[1:])
        results[name] = {
            "ms": 1e3 * statistics.median(times[1:]),
            "compile_s": compile_s,
            "ynn_fusions": ynn_fusions,
        }
    import flax
    import jaxlib

    return {
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "versions": f"Python {platform.python_version()}, jax {jax.__version__}, "
        f"jaxlib {jaxlib.__version__}, flax {flax.__version__}",
        "cases": results,
    }


# ---------------------------------------------------------------------------------------------
# Driver: alternates worker processes and summarises.


def _run_worker(args, ynn: bool) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker"]
    cmd += ["--reps", str(args.reps), "--steps", str(args.steps)]
    cmd += ["--population", str(args.population), "--batch-size", str(args.batch_size)]
    cmd += ["--only", args.only]
    env = dict(os.environ, XLA_FLAGS=xla_flags(ynn))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"failure": f"hung: no result after {args.timeout:.0f} s"}
    wall = time.perf_counter() - t0
    if proc.returncode:
        code = proc.returncode
        what = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        print(proc.stderr[-3000:], file=sys.stderr, flush=True)
        return {"failure": what, "stderr": proc.stderr[-3000:]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = wall
    return result


def _span(xs, fmt):
    return f"{fmt(statistics.median(xs))} ({fmt(min(xs))}-{fmt(max(xs))})"


def summarise(runs: dict[str, list[dict]]) -> str:
    ok = {mode: [r for r in rs if "cases" in r] for mode, rs in runs.items()}
    lines = []
    for mode, rs in runs.items():
        failed = [r["failure"] for r in rs if "failure" in r]
        wall = [r["wall_s"] for r in rs if "wall_s" in r]
        lines.append(
            f"YNN {mode}: {len(rs) - len(failed)}/{len(rs)} workers finished"
            + (f", {_span(wall, lambda s: f'{s:.0f}')} s each" if wall else "")
            + (f"; failures: {', '.join(failed)}" if failed else "")
        )
    if not (ok["on"] and ok["off"]):
        return "\n".join(lines)
    header = ["case", "on ms", "off ms", "on/off", "compile on/off s", "YNN fusions on/off"]
    rows = []
    for name in ok["on"][0]["cases"]:
        on = [r["cases"][name] for r in ok["on"]]
        off = [r["cases"][name] for r in ok["off"]]
        ms_on, ms_off = [c["ms"] for c in on], [c["ms"] for c in off]
        rows.append(
            [
                name,
                _span(ms_on, lambda v: f"{v:.2f}"),
                _span(ms_off, lambda v: f"{v:.2f}"),
                f"{statistics.median(ms_on) / statistics.median(ms_off):.2f}",
                f"{statistics.median(c['compile_s'] for c in on):.2f} / "
                f"{statistics.median(c['compile_s'] for c in off):.2f}",
                f"{on[0]['ynn_fusions']} / {off[0]['ynn_fusions']}",
            ]
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        lines.append(" | ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            model = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} cores"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="worker pairs (on, off) to alternate")
    p.add_argument("--reps", type=int, default=7, help="timed calls of each case per worker")
    p.add_argument("--steps", type=int, default=8, help="training steps per timed epoch")
    p.add_argument("--population", type=int, default=8, help="members of the population case")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument(
        "--only", default="", help="comma-separated parts of case names: run only those cases"
    )
    p.add_argument("--timeout", type=float, default=600, help="seconds before a worker is hung")
    p.add_argument("--out", default="", help="also write every worker's results here (JSON)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("rounds", "reps", "steps", "population", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")

    if args.worker:
        print(json.dumps(worker(args)), flush=True)
        return 0

    runs: dict[str, list[dict]] = {"on": [], "off": []}
    for i in range(args.rounds):
        for mode in ("on", "off"):
            result = _run_worker(args, ynn=mode == "on")
            runs[mode].append(result)
            status = result.get("failure") or f"{result['wall_s']:.0f} s"
            print(f"round {i + 1}/{args.rounds}, YNN {mode}: {status}", flush=True)
    versions = next((r["versions"] for rs in runs.values() for r in rs if "versions" in r), "?")
    print(f"\n{_cpu()}; {versions}")
    print(f"YNN off: XLA_FLAGS='{xla_flags(False)}'\n")
    print(summarise(runs))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"machine": _cpu(), "versions": versions, "runs": runs}, f, indent=1)
    failed = any("failure" in r for rs in runs.values() for r in rs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
