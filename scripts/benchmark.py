"""LeNet training throughput: cnnjax's compiled programs against PyTorch eager, in one process.

    python scripts/benchmark.py [--repeats 5] [--steps 20] [--populations 8,32] [--out bench.json]

What is timed (book LeNet: sigmoid, 2x2 average pooling, SGD, batch 256, random 28x28 images held
in memory on the device; every variant trains the same number of steps per repeat):

  * cnnjax, single model: the trainer's own epoch (``cnnjax.train.make_epoch_runner`` on a
    ``cnnjax.train.Setup``, the program ``train.py`` runs each epoch) with ``loop="scan"`` (the
    whole epoch one compiled ``lax.scan``) and ``loop="step"`` (the per-step Python loop), with
    the default conv implementation ("auto") and with the one "auto" does not pick on this
    backend (``--compare-impl``), to show what the implementation switch buys (also for the
    largest population);
  * cnnjax, populations of K members trained on the same batches (``population.strategy`` "auto",
    and the other strategy for comparison), in example*models/s: K models trained one after another
    by the single-model step would reach the single-model examples/s, so pop/single is the ratio;
  * cnnjax, the largest population sharded over every device (``--populations``' last K on the
    mesh ``cnnjax.train.parallel.make_mesh`` picks for it, as the trainer does), when more than
    one device is present;
  * PyTorch eager (when installed: ``pip install -e '.[bench]'``), the same network and batch,
    with the book's NCHW tensors (the ratios' reference) and, on CPU, in channels-last memory
    format too (oneDNN's faster layout; see :mod:`cnnjax.bench`);
  * forward-only throughput at batch 1024, both frameworks.

The header names the devices and the meshes (``cnnjax.train.parallel.describe``).

Variants run round-robin, one repeat of each in turn, so machine noise hits all alike; the table
gives the median, min and max of examples/s, the ratio to PyTorch eager, the fraction of the
machine's measured matmul peak (float32 2048x2048 ``jnp.dot``) that the training FLOPs reach,
and each variant's compile time (for cnnjax's training, the epoch runner's). Runs unchanged on
CPU and GPU (on GPU, ``--steps`` defaults to a whole Fashion-MNIST epoch and the populations to
8,64).

What this measures, and what it does not: the steady-state speed of the compiled step and epoch
programs, with start-up, data loading, evaluation and file writes left out and both frameworks
alive in one process. Interleaving in one process makes the comparison fair against machine noise,
but the two runtimes' thread pools then live side by side and can slow each other; users run one
framework per process. ``scripts/bench_process.py`` measures that: whole ``train.py`` runs
against a PyTorch script as separate, alternated processes. Where the two disagree, trust this
one for the relative speed of cnnjax's own variants and ``bench_process.py`` for cnnjax against
PyTorch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax import bench, data, ops, train
from cnnjax.models import LeNet
from cnnjax.train import parallel
from cnnjax.train.inputs import Inputs
from cnnjax.train.runfiles import digest

IMAGE_SHAPE = (28, 28, 1)


@dataclasses.dataclass
class Variant:
    name: str
    run: Callable[[], None]
    examples: int  # examples (times models, for populations) per run()
    compile_s: float | None = None
    times: list[float] = dataclasses.field(default_factory=list)

    def rates(self) -> list[float]:
        return [self.examples / t for t in self.times]


def device_description() -> str:
    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return f"cpu: {bench.machine()}"
    return f"{dev.platform}: {dev.device_kind}"


def lenet_train_flops() -> float:
    """FLOPs of one training example of the book's LeNet: 2 x (forward + backward multiply-adds)."""
    c1 = ops.conv_cost((28, 28), 1, 6, 5, padding=2)
    c2 = ops.conv_cost((14, 14), 6, 16, 5)
    dense = [(400, 120), (120, 84), (84, 10)]
    macs = c1.forward_macs + c1.backward_macs + c2.forward_macs + c2.backward_macs
    macs += sum(3 * a * b for a, b in dense)  # forward, grad wrt input, grad wrt weights
    return 2.0 * macs


def matmul_peak_gflops(n: int = 2048, reps: int = 10) -> float:
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    dot(a, b).block_until_ready()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        dot(a, b).block_until_ready()
        times.append(time.perf_counter() - t)
    return 2 * n**3 / min(times) / 1e9


def make_config(population: int, strategy: str, conv_impl: str, batch_size: int, loop: str):
    config = train.default_config()
    config.batch_size = batch_size
    config.loop = loop
    config.population.size = population
    config.population.strategy = strategy
    config.model.conv_impl = conv_impl
    config.progress = False
    return train.resolve_config(config)


def in_memory_setup(config, mesh, images: np.ndarray, labels: np.ndarray) -> train.Setup:
    """The trainer's :class:`~cnnjax.train.Setup` for a resolved ``config`` on ``mesh``, with
    ``images`` (N, 28, 28, 1) uint8 and ``labels`` (N,) for its training split.

    The split is replicated over the mesh and normalised as ``config.data.normalize`` says, then
    handed to :func:`cnnjax.train.set_up` instead of ``config.data``'s files, so the model, the
    initial state and the strategy are the trainer's own. Nothing is evaluated, so the test split
    is the training split.
    """
    split = data.to_device(
        images, labels, normalize=config.data.normalize, device=parallel.replicated(mesh)
    )
    n = int(labels.shape[0])
    fingerprint = {
        "name": "random",
        "source": "memory",
        "num_train": n,
        "num_validation": 0,
        "num_test": n,
        "sha256": digest(images, labels),
    }
    inputs = Inputs(
        name="random",
        source="memory",
        train=split,
        validation=None,
        test=split,
        num_classes=config.model.num_classes,
        preprocess={"normalize": config.data.normalize},
        fingerprint=fingerprint,
    )
    return train.set_up(config, mesh, inputs=inputs)


def cnnjax_train_variant(
    name,
    images,
    labels,
    steps,
    batch_size,
    *,
    population=1,
    strategy="auto",
    conv_impl="auto",
    loop="scan",
    devices=None,
) -> Variant:
    """One cnnjax training variant: the trainer's epoch (:func:`cnnjax.train.make_epoch_runner`)
    over ``steps`` batches, one epoch per run. On one device unless ``devices`` are given; then
    on the mesh :func:`cnnjax.train.parallel.make_mesh` lays out over them, the state sharded
    along its member axis and the data replicated, as the trainer places them."""
    config = make_config(population, strategy, conv_impl, batch_size, loop)
    mesh = parallel.make_mesh(devices or jax.devices()[:1], population, batch_size)
    n = steps * batch_size
    setup = in_memory_setup(config, mesh, images[:n], labels[:n])
    epoch = iter(range(1 << 30))  # each run trains the next epoch, with that epoch's data order
    key = data.epoch_key(config.seed, next(epoch))
    run_epoch, compile_s = train.make_epoch_runner(setup, setup.state, key)
    holder = {"state": setup.state}

    def run():
        holder["state"], metrics = run_epoch(
            holder["state"], data.epoch_key(config.seed, next(epoch))
        )
        jax.block_until_ready(metrics)

    return Variant(name, run, n * population, compile_s)


def timed_compile(fn, *args):
    t = time.perf_counter()
    compiled = fn.lower(*args).compile()
    return compiled, time.perf_counter() - t


def cnnjax_forward_variant(images, steps, batch_size) -> Variant:
    model = LeNet()
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, *IMAGE_SHAPE)))
    x = jnp.asarray(images[: steps * batch_size])
    batches = [x[i * batch_size : (i + 1) * batch_size] for i in range(steps)]
    fn, compile_s = timed_compile(jax.jit(model.apply), params, batches[0])

    def run():
        for b in batches:
            out = fn(params, b)
        out.block_until_ready()

    return Variant(f"cnnjax forward (b={batch_size})", run, steps * batch_size, compile_s)


def main(argv=None) -> int:
    on_cpu = jax.default_backend() == "cpu"
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--steps",
        type=int,
        default=20 if on_cpu else 234,
        help="training steps per timed run (GPU default: one Fashion-MNIST epoch)",
    )
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--populations", default="8,32" if on_cpu else "8,64")
    p.add_argument("--forward-batch", type=int, default=1024)
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch yardstick")
    p.add_argument(
        "--compare-impl",
        default="lax" if on_cpu else "toeplitz",
        help="conv implementation to compare 'auto' against, for the single model and the "
        "largest population ('' to skip); default: the one 'auto' does not pick here",
    )
    p.add_argument("--out", default="", help="write the results as JSON here")
    args = p.parse_args(argv)

    rng = np.random.default_rng(0)
    n = max(args.steps * args.batch_size, 4 * args.forward_batch)
    images = rng.random((n, *IMAGE_SHAPE), dtype=np.float32)
    # to_device normalises uint8 pixels; hand it uint8 so the trainer sees its real input path.
    images_u8 = (images * 255).astype(np.uint8)
    labels = rng.integers(0, 10, size=n).astype(np.int32)
    populations = [int(k) for k in args.populations.split(",") if k]
    steps, bs = args.steps, args.batch_size

    print(f"device: {device_description()}; jax {jax.__version__}", flush=True)
    devices = jax.devices()
    single_mesh = parallel.describe(parallel.make_mesh(devices[:1], 1, bs))
    meshes = {"single model": single_mesh}
    sharded_k = populations[-1] if populations and len(devices) > 1 else None
    if sharded_k is not None:
        sharded_mesh = parallel.make_mesh(devices, sharded_k, bs)
        meshes[f"population {sharded_k} sharded"] = parallel.describe(sharded_mesh)
    print(f"devices: {describe_devices(devices)}; meshes: {describe_meshes(meshes)}", flush=True)
    peak = matmul_peak_gflops()
    print(f"measured float32 matmul peak: {peak:.0f} GFLOP/s; compiling...", flush=True)

    variants: list[Variant] = []
    torch_ok = not args.no_torch and bench.torch_available()
    if torch_ok:
        dev = "cuda" if (not on_cpu and _cuda_available()) else "cpu"
        variants.append(
            Variant(
                f"PyTorch eager ({dev})",
                bench.make_torch_train(images, labels, bs, steps, dev),
                steps * bs,
            )
        )
        if dev == "cpu":  # the stronger PyTorch layout on CPU; the ratios use the book's NCHW
            variants.append(
                Variant(
                    "PyTorch eager, channels_last",
                    bench.make_torch_train(images, labels, bs, steps, dev, "channels_last"),
                    steps * bs,
                )
            )
    variants.append(cnnjax_train_variant("cnnjax epoch scan", images_u8, labels, steps, bs))
    variants.append(
        cnnjax_train_variant("cnnjax step loop", images_u8, labels, steps, bs, loop="step")
    )
    if args.compare_impl:
        variants.append(
            cnnjax_train_variant(
                f"cnnjax epoch scan, {args.compare_impl} convs",
                images_u8,
                labels,
                steps,
                bs,
                conv_impl=args.compare_impl,
            )
        )
    default_strategy = train.resolve_strategy("auto")
    other = "vmap" if default_strategy == "map" else "map"
    for k in populations:
        # Fewer steps for big populations keep each timed run short; rates are per example.
        pop_steps = max(2, steps * 8 // k) if on_cpu else steps
        variants.append(
            cnnjax_train_variant(
                f"cnnjax population {k} ({default_strategy})",
                images_u8,
                labels,
                pop_steps,
                bs,
                population=k,
            )
        )
        if k == populations[0]:
            variants.append(
                cnnjax_train_variant(
                    f"cnnjax population {k} ({other})",
                    images_u8,
                    labels,
                    pop_steps,
                    bs,
                    population=k,
                    strategy=other,
                )
            )
        if args.compare_impl and k == populations[-1]:
            variants.append(
                cnnjax_train_variant(
                    f"cnnjax population {k} ({default_strategy}), {args.compare_impl}",
                    images_u8,
                    labels,
                    pop_steps,
                    bs,
                    population=k,
                    conv_impl=args.compare_impl,
                )
            )
    if sharded_k is not None:
        k = sharded_k
        pop_steps = max(2, steps * 8 // k) if on_cpu else steps
        strategy = parallel.population_strategy("auto", sharded_mesh)
        m = meshes[f"population {k} sharded"]["mesh"]
        variants.append(
            cnnjax_train_variant(
                f"cnnjax population {k} ({strategy}), {len(devices)} dev "
                f"{m['population']}x{m['data']}",
                images_u8,
                labels,
                pop_steps,
                bs,
                population=k,
                devices=devices,
            )
        )
    fwd_steps = max(2, steps * bs // args.forward_batch)
    if torch_ok:
        variants.append(
            Variant(
                f"PyTorch forward (b={args.forward_batch})",
                bench.make_torch_forward(images, args.forward_batch, fwd_steps, dev),
                fwd_steps * args.forward_batch,
            )
        )
        if dev == "cpu":
            variants.append(
                Variant(
                    f"PyTorch forward, channels_last (b={args.forward_batch})",
                    bench.make_torch_forward(
                        images, args.forward_batch, fwd_steps, dev, "channels_last"
                    ),
                    fwd_steps * args.forward_batch,
                )
            )
    variants.append(cnnjax_forward_variant(images, fwd_steps, args.forward_batch))

    for v in variants:  # warm-up: first runs pay allocation and thread start-up
        v.run()
    for r in range(args.repeats):
        for v in variants:
            t = time.perf_counter()
            v.run()
            v.times.append(time.perf_counter() - t)
        print(f"  repeat {r + 1}/{args.repeats} done", flush=True)

    flops = lenet_train_flops()
    med = {v.name: statistics.median(v.rates()) for v in variants}
    torch_train = med.get(f"PyTorch eager ({dev})") if torch_ok else None
    torch_fwd = med.get(f"PyTorch forward (b={args.forward_batch})") if torch_ok else None
    single = med["cnnjax epoch scan"]
    rows = []
    for v in variants:
        rates = v.rates()
        forward = "forward" in v.name
        ref = torch_fwd if forward else torch_train
        row = {
            "variant": v.name,
            "median": med[v.name],
            "min": min(rates),
            "max": max(rates),
            "vs_torch": med[v.name] / ref if ref else None,
            "vs_single": med[v.name] / single if "population" in v.name else None,
            "peak_fraction": None if forward else med[v.name] * flops / (peak * 1e9),
            "compile_s": v.compile_s,
        }
        rows.append(row)

    header = (
        f"{'variant':<46} {'median/s':>11} {'min':>10} {'max':>10} {'x torch':>8} "
        f"{'x single':>9} {'%peak':>6} {'compile':>8}"
    )
    print()
    print(
        f"LeNet, batch {bs} (forward: {args.forward_batch}), {args.repeats} repeats, "
        f"{steps} steps/run; {device_description()}"
    )
    print(f"devices: {describe_devices(devices)}; meshes: {describe_meshes(meshes)}")
    print(header)
    print("-" * len(header))
    fmt = lambda x, f: "" if x is None else format(x, f)  # noqa: E731
    for row in rows:
        print(
            f"{row['variant']:<46} {row['median']:>11,.0f} {row['min']:>10,.0f} "
            f"{row['max']:>10,.0f} "
            f"{fmt(row['vs_torch'], '.2f'):>8} {fmt(row['vs_single'], '.2f'):>9} "
            f"{fmt(row['peak_fraction'] and 100 * row['peak_fraction'], '.0f'):>6} "
            f"{fmt(row['compile_s'], '.1f') + ('s' if row['compile_s'] is not None else ''):>8}"
        )
    scan, step = med["cnnjax epoch scan"], med["cnnjax step loop"]
    print(
        f"\nscan / step loop: {scan / step:.2f}; training FLOPs/example {flops / 1e6:.2f} M; "
        f"matmul peak {peak:.0f} GFLOP/s; jax {jax.__version__}"
        + (f"; {bench.torch_version()}" if torch_ok else "")
    )
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(
                {
                    "device": device_description(),
                    "devices": describe_devices(devices),
                    "meshes": meshes,
                    "jax": jax.__version__,
                    "torch": bench.torch_version() if torch_ok else None,
                    "date": time.strftime("%Y-%m-%d"),
                    "batch_size": bs,
                    "steps": steps,
                    "repeats": args.repeats,
                    "matmul_peak_gflops": peak,
                    "train_flops_per_example": flops,
                    "rows": rows,
                },
                f,
                indent=2,
            )
        print(f"wrote {args.out}")
    return 0


def describe_devices(devices: list[jax.Device]) -> str:
    """E.g. ``"8 x cpu (cpu), 1 process(es)"``."""
    kinds = sorted({f"{d.device_kind} ({d.platform})" for d in devices})
    processes = len({d.process_index for d in devices})
    return f"{len(devices)} x {', '.join(kinds)}, {processes} process(es)"


def describe_meshes(meshes: dict[str, dict]) -> str:
    """E.g. ``"single model population=1 data=1; population 32 sharded population=8 data=1"``."""
    return "; ".join(
        f"{name} population={d['mesh']['population']} data={d['mesh']['data']}"
        for name, d in meshes.items()
    )


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    raise SystemExit(main())
