"""Whole-process benchmark: ``scripts/train.py`` (cnnjax's CLI) against a plain PyTorch eager
script of the same recipe (``scripts/torch_train.py``), each run as a separate process.

    python scripts/bench_process.py [--epochs 10] [--repeats 2] [--data-dir DIR] [--out FILE]
    python scripts/bench_process.py --only cnnjax     # without PyTorch installed

What a user feels is the whole command, from process start to exit, so every measure here comes
from real processes, run alternately (cnnjax, PyTorch, cnnjax, PyTorch, ...) so machine noise hits
both alike; each measure is given as the median and min-max over all runs:

* **whole process** (s): from just before the process is spawned to its exit, measured here;
* **start to first step** (s): each script's own count from its first line (taken before its
  imports, so importing the framework counts) to its first training step, the number its
  ``first step after S.SS s`` line shows: cnnjax's ``first_step_seconds``, PyTorch's
  ``first_step_seconds``. Both count alike; the interpreter's own start before that first line
  is in neither (it is in the whole process);
* **training examples/s**: (N // batch) x batch examples over each epoch's training time as the
  script records it (cnnjax: ``epoch_time_s``; PyTorch: its epochs' ``seconds``), one value per
  epoch of every run;
* **forward examples/s** at batch 1024: further processes (alternated too) that evaluate the test
  split ``--forward-repeats`` times after one untimed pass -- cnnjax's trainer evaluation program
  (``cnnjax.train.make_eval_fn`` on the trainer's own :class:`~cnnjax.train.setup.Setup`, the
  ``lax.scan`` over padded, masked batches), PyTorch's evaluation loop under
  ``torch.inference_mode``; one value per timed pass.

Nothing is read from the processes' console output. A cnnjax run is read back through its run
directory (:class:`cnnjax.train.RunDir`: the summary, the run's data fingerprint for the split
sizes, the metric rows); ``torch_train.py`` and the cnnjax forward process write their numbers to
a JSON file given by ``--out``.

The recipe (``configs/lenet.py``): the book's LeNet (sigmoid, average pooling, Xavier-uniform
init), SGD lr 0.9, batch 256, shuffled in-memory batches, test evaluation after every epoch. The
cnnjax run also writes its checkpoint, metric files and plot every epoch, as users get it; the
PyTorch script writes nothing. Before the timed runs, ``--warmup`` untimed one-epoch runs of each
(page cache, bytecode, and any compilation cache the trainer keeps) are reported separately as the
cold start, so the table is what a second run of the same config costs.

Ratios are "x cnnjax": PyTorch's time / cnnjax's time, or cnnjax's rate / PyTorch's rate, so
above 1 means cnnjax is faster. The targets are issue 12's for the 10-epoch book run on the full
data; for shorter or smaller runs the "met" column stays empty.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import jax

from cnnjax import bench, train

REPO = pathlib.Path(__file__).resolve().parents[1]
FRAMEWORKS = ("cnnjax", "torch")
LABELS = {"cnnjax": "cnnjax", "torch": "PyTorch eager"}

# Issue 12's targets for the 10-epoch book run: (measure, threshold, "ratio" | "seconds").
TARGETS = {
    "whole": (1.5, "ratio"),
    "first_step": (3.0, "seconds"),
    "train": (2.0, "ratio"),
    "forward": (1.0, "ratio"),
}


class BenchError(RuntimeError):
    """A benchmarked process failed, or did not leave the numbers this script reads."""


@dataclasses.dataclass
class Process:
    """One finished process: what ran, its whole time (s, from just before the spawn to its
    exit) and where it left its numbers -- cnnjax's run directory (``workdir``) or a JSON file
    (``record``)."""

    framework: str
    kind: str  # "train" | "forward" | "warmup"
    argv: list[str]
    wall_s: float
    workdir: str | None = None
    record: str | None = None


def spawn(framework: str, kind: str, argv: list[str], **where: str | None) -> Process:
    """Runs ``argv`` to its end, timing it from just before the spawn to its exit; ``where``
    (``workdir``, ``record``) is kept in the returned :class:`Process`.

    Raises:
      BenchError: a non-zero exit status (the message carries the end of its output).
    """
    with tempfile.TemporaryFile("w+") as output:
        start = time.perf_counter()
        status = subprocess.run(argv, cwd=REPO, stdout=output, stderr=subprocess.STDOUT).returncode
        wall = time.perf_counter() - start
        if status:
            output.seek(0)
            tail = "\n".join(output.read().splitlines()[-20:])
            raise BenchError(
                f"{framework} {kind} process exited with status {status}: {' '.join(argv)}\n{tail}"
            )
    return Process(framework, kind, argv, wall, **where)


def command(
    framework: str, kind: str, args: argparse.Namespace, workdir: str | None, record: str | None
) -> list[str]:
    """The command line of one process; ``kind`` is "train", "warmup" or "forward". A cnnjax
    training process writes its run to ``workdir``, the others their numbers to ``record``."""
    epochs = 1 if kind == "warmup" else args.epochs
    if framework == "cnnjax" and kind == "forward":
        return [
            sys.executable,
            str(pathlib.Path(__file__).resolve()),
            "--forward-child",
            f"--data-dir={args.data_dir}",
            f"--train-limit={args.train_limit}",
            f"--test-limit={args.test_limit}",
            f"--forward-batch={args.forward_batch}",
            f"--forward-repeats={args.forward_repeats}",
            f"--out={record}",
        ]
    if framework == "cnnjax":
        argv = [
            sys.executable,
            str(REPO / "scripts" / "train.py"),
            f"--config={REPO / 'configs' / 'lenet.py'}",
            f"--workdir={workdir}",
            f"--config.num_epochs={epochs}",
            "--config.data.source=idx",
            f"--config.data.dir={args.data_dir}",
        ]
        if args.train_limit:
            argv.append(f"--config.data.train_limit={args.train_limit}")
        if args.test_limit:
            argv.append(f"--config.data.test_limit={args.test_limit}")
        return argv
    argv = [
        sys.executable,
        str(REPO / "scripts" / "torch_train.py"),
        f"--data-dir={args.data_dir}",
        f"--train-limit={args.train_limit}",
        f"--test-limit={args.test_limit}",
        f"--eval-batch-size={args.forward_batch}",
        f"--threads={args.torch_threads}",
        f"--memory-format={args.torch_memory_format}",
        f"--out={record}",
    ]
    if kind == "forward":
        return [*argv, "--epochs=0", f"--forward-repeats={args.forward_repeats}"]
    return [*argv, f"--epochs={epochs}"]


# ------------------------------------------------------------------------------------ reading


def _entry(record: dict[str, Any], key: str, proc: Process) -> Any:
    if key not in record:
        raise BenchError(f"{proc.framework} {proc.kind}: {proc.record} has no {key!r} entry")
    return record[key]


def read_record(proc: Process) -> dict[str, Any]:
    """The JSON numbers a PyTorch process or a cnnjax forward process wrote to ``--out``.

    Raises:
      BenchError: the file is missing or not JSON.
    """
    try:
        return json.loads(pathlib.Path(proc.record).read_text())
    except (OSError, ValueError) as e:
        raise BenchError(
            f"{proc.framework} {proc.kind}: cannot read its numbers from {proc.record}: {e}"
        ) from e


def read_cnnjax_run(proc: Process) -> dict[str, Any]:
    """The numbers of a cnnjax training process, from its run directory: start-up
    (``first_step_seconds`` of its summary), each epoch's training time (``epoch_time_s`` of
    its metric rows) and the split sizes (its data fingerprint).

    Raises:
      BenchError: the run directory or one of its files is missing or unreadable, or the run
        trained no epoch.
    """
    try:
        with train.RunDir(proc.workdir, read_only=True) as run:
            summary, info, rows = run.read_summary(), run.read_info(), run.read_metrics()
    except train.RunDirError as e:
        raise BenchError(f"cnnjax {proc.kind}: {e}") from e
    if summary.get("first_step_seconds") is None or not rows:
        raise BenchError(f"cnnjax {proc.kind}: the run in {proc.workdir} trained no epoch")
    # One row per (epoch, member); the members of an epoch share its time.
    seconds = {row["epoch"]: row["epoch_time_s"] for row in rows}
    return {
        "first_step_s": summary["first_step_seconds"],
        "epoch_seconds": [seconds[epoch] for epoch in sorted(seconds)],
        "num_train": info.data["num_train"],
        "num_test": info.data["num_test"],
        "threads": None,
    }


def read_torch_run(proc: Process) -> dict[str, Any]:
    """The numbers of a ``torch_train.py`` training process, from its ``--out`` JSON.

    Raises:
      BenchError: the file is missing, unreadable or lacks an entry, or no epoch was trained.
    """
    record = read_record(proc)
    first, epochs = (_entry(record, k, proc) for k in ("first_step_seconds", "epochs"))
    if first is None or not epochs:
        raise BenchError(f"torch {proc.kind}: {proc.record} records no epoch")
    return {
        "first_step_s": first,
        "epoch_seconds": [epoch["seconds"] for epoch in epochs],
        **{k: _entry(record, k, proc) for k in ("num_train", "num_test", "threads")},
    }


READERS: dict[str, Callable[[Process], dict[str, Any]]] = {
    "cnnjax": read_cnnjax_run,
    "torch": read_torch_run,
}


def read_train(proc: Process, batch_size: int) -> dict[str, Any]:
    """One training process's whole time, start-to-first-step time, per-epoch training seconds
    and examples/s, split sizes and (PyTorch) threads.

    Raises:
      BenchError: the process left no readable numbers (see :data:`READERS`).
    """
    numbers = READERS[proc.framework](proc)
    per_epoch = numbers["num_train"] // batch_size * batch_size
    return {
        "wall_s": proc.wall_s,
        **numbers,
        "train_rates": [per_epoch / s for s in numbers["epoch_seconds"] if s > 0],
    }


def read_forward(proc: Process) -> list[float]:
    """Examples/s of each timed evaluation pass of one forward process.

    Raises:
      BenchError: the process recorded no timed pass.
    """
    record = read_record(proc)
    seconds = _entry(record, "forward_seconds", proc)
    if not seconds:
        raise BenchError(f"{proc.framework} forward: {proc.record} records no timed pass")
    return [_entry(record, "num_test", proc) / s for s in seconds]


# ------------------------------------------------------------------------- the forward child


def forward_child(args: argparse.Namespace) -> int:
    """Times cnnjax's evaluation program on the test split, on the trainer's own set-up (its
    data loading, mesh, strategy and initial state), and writes the times to ``args.out``."""
    config = train.load_config_file(str(REPO / "configs" / "lenet.py"))
    config.eval_batch_size = args.forward_batch
    config.data.source, config.data.dir = "idx", args.data_dir
    config.data.train_limit, config.data.test_limit = args.train_limit, args.test_limit
    config.progress = False
    config = train.resolve_config(config)
    setup = train.set_up(config, train.make_run_mesh(config))
    evaluate = train.make_eval_fn(config, strategy=setup.strategy, mesh=setup.mesh)
    test = setup.inputs.test
    num_test = int(test.labels.shape[0])
    jax.block_until_ready(evaluate(setup.state, test))  # compile and warm up
    seconds = []
    for _ in range(args.forward_repeats):
        start = time.perf_counter()
        jax.block_until_ready(evaluate(setup.state, test))
        seconds.append(time.perf_counter() - start)
        print(
            f"forward batch {args.forward_batch}: {num_test} examples in {seconds[-1]:.4f} s",
            flush=True,
        )
    record = {"num_test": num_test, "forward_batch": args.forward_batch, "forward_seconds": seconds}
    pathlib.Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    return 0


# -------------------------------------------------------------------------------- reporting


def load_average() -> str:
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def versions(frameworks: list[str]) -> str:
    names = {"cnnjax": ("jax", "flax"), "torch": ("torch",)}
    found = []
    for fw in frameworks:
        for name in names[fw]:
            try:
                found.append(f"{name} {importlib.metadata.version(name)}")
            except importlib.metadata.PackageNotFoundError:
                found.append(f"{name} ?")
    return ", ".join(found)


def stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(results: dict[str, dict[str, list[Any]]]) -> dict[str, dict[str, Any]]:
    """Per framework, per measure: median, min, max over every run (or epoch, or pass)."""
    out: dict[str, dict[str, Any]] = {}
    for fw, r in results.items():
        runs = r["train"]
        out[fw] = {
            "whole": stats([t["wall_s"] for t in runs]),
            "first_step": stats([t["first_step_s"] for t in runs]),
            "train": stats([x for t in runs for x in t["train_rates"]]),
            "forward": stats([x for f in r["forward"] for x in f]),
        }
    return out


def ratio(measure: str, summary: dict[str, dict[str, Any]]) -> float | None:
    """PyTorch's time / cnnjax's (times), or cnnjax's rate / PyTorch's (rates)."""
    if "cnnjax" not in summary or "torch" not in summary:
        return None
    a, b = summary["cnnjax"][measure], summary["torch"][measure]
    if a is None or b is None:
        return None
    if measure in ("whole", "first_step"):
        return b["median"] / a["median"]
    return a["median"] / b["median"]


def target_met(measure: str, summary: dict[str, dict[str, Any]], full_run: bool) -> str:
    threshold, kind = TARGETS[measure]
    if not full_run:
        return ""
    if kind == "seconds":
        value = (summary.get("cnnjax") or {}).get(measure)
        return "" if value is None else ("yes" if value["median"] <= threshold else "no")
    value = ratio(measure, summary)
    return "" if value is None else ("yes" if value >= threshold else "no")


def table(summary: dict[str, dict[str, Any]], full_run: bool, forward_batch: int) -> list[str]:
    measures = [
        ("whole", "whole process (s)", ".1f"),
        ("first_step", "start to first step (s)", ".2f"),
        ("train", "training examples/s (per epoch)", ",.0f"),
        ("forward", "forward examples/s (batch {fb})", ",.0f"),
    ]
    target_text = {
        "whole": ">= 1.5x",
        "first_step": "cnnjax <= 3 s",
        "train": ">= 2x",
        "forward": ">= 1.0x",
    }
    frameworks = [fw for fw in FRAMEWORKS if fw in summary]
    head = ["measure", *(f"{LABELS[fw]} median [min-max]" for fw in frameworks)]
    head += ["x cnnjax", "target", "met"]
    rows = [head]
    for key, label, fmt in measures:
        row = [label.format(fb=forward_batch)]
        for fw in frameworks:
            s = summary[fw][key]
            row.append(
                "-" if s is None else f"{s['median']:{fmt}} [{s['min']:{fmt}}-{s['max']:{fmt}}]"
            )
        r = ratio(key, summary)
        row += [
            "" if r is None else f"{r:.2f}",
            target_text[key],
            target_met(key, summary, full_run),
        ]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return lines


# ------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2, help="alternations of timed training runs")
    p.add_argument(
        "--warmup", type=int, default=1, help="untimed one-epoch runs of each first (cold start)"
    )
    p.add_argument(
        "--data-dir",
        default=os.environ.get("CNNJAX_DATA_DIR", ""),
        help="directory of the Fashion-MNIST IDX files (default: $CNNJAX_DATA_DIR)",
    )
    p.add_argument("--train-limit", type=int, default=0, help="training images (0: all)")
    p.add_argument("--test-limit", type=int, default=0, help="test images (0: all)")
    p.add_argument("--forward-batch", type=int, default=1024)
    p.add_argument("--forward-repeats", type=int, default=5, help="timed passes per process")
    p.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="PyTorch intra-op threads (0: its default, one per core, what a user gets)",
    )
    p.add_argument(
        "--torch-memory-format",
        choices=bench.MEMORY_FORMATS,
        default="contiguous",
        help="PyTorch's tensor layout: the book's NCHW (default) or channels-last, oneDNN's "
        "faster one on CPU (see cnnjax/bench.py)",
    )
    p.add_argument("--only", choices=FRAMEWORKS, help="run one framework (no ratios)")
    p.add_argument(
        "--keep", action="store_true", help="keep cnnjax's run directories and the JSON records"
    )
    p.add_argument("--out", default="", help="write every run and the summary as JSON here")
    p.add_argument("--forward-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.forward_child and not args.out:
        p.error("--forward-child writes its times to --out FILE; give one")
    for name in ("epochs", "repeats", "forward_repeats", "forward_batch"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("warmup", "train_limit", "test_limit", "torch_threads"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if not args.data_dir or not pathlib.Path(args.data_dir).is_dir():
        p.error(
            f"--data-dir {args.data_dir!r} is not a directory: pass the directory of the "
            "Fashion-MNIST IDX files (e.g. ../shared/data/fashion_mnist) or set CNNJAX_DATA_DIR"
        )
    args.data_dir = str(pathlib.Path(args.data_dir).resolve())
    frameworks = [args.only] if args.only else list(FRAMEWORKS)
    if not args.forward_child and "torch" in frameworks and not bench.torch_available():
        p.error("PyTorch is not installed: pip install -e '.[bench]', or pass --only cnnjax")
    args.frameworks = frameworks
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.forward_child:
        return forward_child(args)
    # This process only spawns the measured ones and reads what they leave: it stays off the
    # accelerator (reading a run directory asks JAX for the process index, which starts a
    # backend, and a GPU backend would take memory the measured processes need).
    jax.config.update("jax_platforms", "cpu")
    batch_size = 256  # configs/lenet.py's; torch_train.py's default
    full_run = args.epochs == 10 and not args.train_limit and not args.test_limit
    root = tempfile.mkdtemp(prefix="bench_process_")
    runs: list[Process] = []
    results = {fw: {"train": [], "forward": []} for fw in args.frameworks}
    cold: dict[str, list[dict[str, Any]]] = {fw: [] for fw in args.frameworks}
    load_start = load_average()
    started = time.strftime("%Y-%m-%d %H:%M")
    print(
        f"whole-process benchmark, {started}: {bench.machine()}; load average {load_start}; "
        f"{versions(args.frameworks)}",
        flush=True,
    )
    counter = iter(range(1 << 30))

    def one(framework: str, kind: str) -> Process:
        name = os.path.join(root, f"{framework}_{kind}{next(counter)}")
        if framework == "cnnjax" and kind != "forward":
            where = {"workdir": name, "record": None}
        else:
            where = {"workdir": None, "record": f"{name}.json"}
        proc = spawn(framework, kind, command(framework, kind, args, **where), **where)
        runs.append(proc)
        return proc

    try:
        for i in range(args.warmup):
            for fw in args.frameworks:
                parsed = read_train(one(fw, "warmup"), batch_size)
                cold[fw].append(parsed)
                print(
                    f"  warm-up {i + 1}/{args.warmup} {LABELS[fw]}: 1 epoch, whole process "
                    f"{parsed['wall_s']:.1f} s, first step {parsed['first_step_s']:.2f} s",
                    flush=True,
                )
        for i in range(args.repeats):
            for fw in args.frameworks:
                parsed = read_train(one(fw, "train"), batch_size)
                results[fw]["train"].append(parsed)
                print(
                    f"  run {i + 1}/{args.repeats} {LABELS[fw]}: {args.epochs} epoch(s), whole "
                    f"process {parsed['wall_s']:.1f} s, first step {parsed['first_step_s']:.2f} s, "
                    f"median {statistics.median(parsed['train_rates']):,.0f} examples/s",
                    flush=True,
                )
        for i in range(args.repeats):
            for fw in args.frameworks:
                rates = read_forward(one(fw, "forward"))
                results[fw]["forward"].append(rates)
                print(
                    f"  forward {i + 1}/{args.repeats} {LABELS[fw]}: median "
                    f"{statistics.median(rates):,.0f} examples/s",
                    flush=True,
                )
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept the runs and records in {root}", flush=True)
        else:
            shutil.rmtree(root, ignore_errors=True)

    summary = summarise(results)
    first = results[args.frameworks[0]]["train"][0]
    print()
    print(
        f"Whole processes, alternated ({' / '.join(LABELS[fw] for fw in args.frameworks)}), "
        f"{args.repeats} run(s) each after {args.warmup} warm-up run(s): book LeNet, "
        f"{args.epochs} epoch(s), batch {batch_size}, {first['num_train']} train / "
        f"{first['num_test']} test images; forward: {args.forward_repeats} pass(es) per process"
    )
    if "torch" in results:
        threads = sorted({t["threads"] for t in results["torch"]["train"]} - {None})
        print(
            f"PyTorch intra-op threads: {', '.join(map(str, threads)) or '?'}; memory format: "
            f"{args.torch_memory_format}"
        )
    for line in table(summary, full_run, args.forward_batch):
        print(line)
    print(
        "x cnnjax: PyTorch time / cnnjax time, or cnnjax rate / PyTorch rate (> 1: cnnjax faster)."
    )
    if not full_run:
        print("met: only judged for the 10-epoch run on the full data (issue 12's targets).")
    for fw in args.frameworks:
        if cold[fw]:
            c = cold[fw][0]
            print(
                f"cold start ({LABELS[fw]}, first warm-up, 1 epoch): whole process "
                f"{c['wall_s']:.1f} s, first step {c['first_step_s']:.2f} s"
            )
    print(
        f"machine: {bench.machine()}; load average {load_start} at start, {load_average()} at end"
    )
    if args.out:
        path = pathlib.Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "date": started,
            "machine": bench.machine(),
            "load_average": {"start": load_start, "end": load_average()},
            "versions": versions(args.frameworks),
            "epochs": args.epochs,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "train_limit": args.train_limit,
            "test_limit": args.test_limit,
            "forward_batch": args.forward_batch,
            "torch_memory_format": args.torch_memory_format,
            "summary": summary,
            "ratios": {m: ratio(m, summary) for m in TARGETS},
            "targets_met": {m: target_met(m, summary, full_run) for m in TARGETS},
            "cold": cold,
            "results": results,
            "processes": [
                {"framework": p.framework, "kind": p.kind, "argv": p.argv, "wall_s": p.wall_s}
                for p in runs
            ],
        }
        path.write_text(json.dumps(record, indent=2))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
