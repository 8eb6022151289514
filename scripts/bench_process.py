"""Whole-process benchmark: ``scripts/train.py`` (cnnjax's CLI) against a plain PyTorch eager
script of the same recipe (``scripts/torch_train.py``), each run as a separate process.

    python scripts/bench_process.py [--epochs 10] [--repeats 2] [--data-dir DIR] [--out FILE]
    python scripts/bench_process.py --only cnnjax     # without PyTorch installed

What a user feels is the whole command, from process start to exit, so every measure here comes
from real processes, run alternately (cnnjax, PyTorch, cnnjax, PyTorch, ...) so machine noise hits
both alike; each measure is given as the median and min-max over all runs:

* **whole process** (s): from just before the process is spawned to its exit, measured here;
* **start to first step** (s): each script prints ``first step after S.SS s`` (flushed) just
  before its first training step; the time is when that line arrives here, measured from the
  spawn like the whole process, so both scripts are timed on one clock (what each script printed,
  from its own idea of its start, is kept in the JSON). A ``train.py`` without that line is
  *estimated* as the arrival of its first ``epoch 1/E ... [S s]`` line less S, the epoch's
  training time -- an over-estimate by the first evaluation, which runs in between; the table
  says which was used;
* **training examples/s**: (N // batch) x batch examples over each epoch's training time as the
  script reports it (cnnjax: ``metrics.jsonl``'s ``epoch_time_s``; PyTorch: its epoch line), one
  value per epoch of every run;
* **forward examples/s** at batch 1024: further processes (alternated too) that evaluate the test
  split ``--forward-repeats`` times after one untimed pass -- cnnjax's trainer evaluation program
  (``cnnjax.train.make_eval_fn``, the ``lax.scan`` over padded, masked batches), PyTorch's
  evaluation loop under ``torch.inference_mode``; one value per timed pass.

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
import importlib.util
import json
import os
import pathlib
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _torch_lenet  # noqa: E402  (the script's sibling; imports torch only when used)

REPO = pathlib.Path(__file__).resolve().parents[1]
FRAMEWORKS = ("cnnjax", "torch")
LABELS = {"cnnjax": "cnnjax", "torch": "PyTorch eager"}

EPOCH_LINE = re.compile(r"^epoch\s+(\d+)/(\d+):.*\[([0-9.]+) s\]\s*$")
FIRST_STEP = re.compile(r"first step after ([0-9.]+) s")
FORWARD = re.compile(r"^forward batch (\d+): (\d+) examples in ([0-9.]+) s")
SIZES = re.compile(r"(\d+) train(?: / \d+ validation)? / (\d+) test images")
THREADS = re.compile(r"(\d+) threads")

# Issue 12's targets for the 10-epoch book run: (measure, threshold, "ratio" | "seconds").
TARGETS = {
    "whole": (1.5, "ratio"),
    "first_step": (3.0, "seconds"),
    "train": (2.0, "ratio"),
    "forward": (1.0, "ratio"),
}


class BenchError(RuntimeError):
    """A benchmarked process failed or printed something this script cannot read."""


@dataclasses.dataclass
class Process:
    """One finished process: its output lines with arrival times (s after the spawn)."""

    framework: str
    kind: str  # "train" | "forward" | "warmup"
    argv: list[str]
    wall_s: float
    lines: list[tuple[float, str]]
    workdir: str | None = None

    def texts(self) -> list[str]:
        return [text for _, text in self.lines]


def spawn(framework: str, kind: str, argv: list[str], workdir: str | None = None) -> Process:
    """Runs ``argv`` to its end, timing it from just before the spawn to its exit.

    Raises:
      BenchError: a non-zero exit status (the message carries the end of its stderr).
    """
    lines: list[tuple[float, str]] = []
    with tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv, cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.perf_counter() - start, line.rstrip("\n")))
        status = proc.wait()
        wall = time.perf_counter() - start
        if status:
            err.seek(0)
            tail = "\n".join(err.read().splitlines()[-15:] + [t for _, t in lines[-5:]])
            raise BenchError(
                f"{framework} {kind} process exited with status {status}: {' '.join(argv)}\n{tail}"
            )
    return Process(framework, kind, argv, wall, lines, workdir)


def command(framework: str, kind: str, args: argparse.Namespace, workdir: str | None) -> list[str]:
    """The command line of one process; ``kind`` is "train", "warmup" or "forward"."""
    epochs = 1 if kind == "warmup" else args.epochs
    if framework == "cnnjax" and kind == "forward":
        return [
            sys.executable,
            str(pathlib.Path(__file__).resolve()),
            "--forward-child",
            f"--data-dir={args.data_dir}",
            f"--test-limit={args.test_limit}",
            f"--forward-batch={args.forward_batch}",
            f"--forward-repeats={args.forward_repeats}",
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
    ]
    if kind == "forward":
        return [*argv, "--epochs=0", f"--forward-repeats={args.forward_repeats}"]
    return [*argv, f"--epochs={epochs}"]


# ------------------------------------------------------------------------------------ parsing


def parse_train(proc: Process, batch_size: int) -> dict[str, Any]:
    """Whole-process time, start-to-first-step time (and where it came from) and per-epoch
    training examples/s of one training process.

    Raises:
      BenchError: the output lacks the sizes line or the epoch lines.
    """
    sizes = next((m for t in proc.texts() if (m := SIZES.search(t))), None)
    epochs = [(t, m) for t, text in proc.lines if (m := EPOCH_LINE.match(text))]
    if sizes is None or not epochs:
        raise BenchError(
            f"{proc.framework}: no '<N> train / <M> test images' line or no epoch lines in "
            f"its output:\n" + "\n".join(proc.texts()[-10:])
        )
    per_epoch = int(sizes.group(1)) // batch_size * batch_size
    seconds = [float(m.group(3)) for _, m in epochs]
    if proc.workdir is not None:  # cnnjax's metric file holds the unrounded epoch times
        path = pathlib.Path(proc.workdir) / "metrics.jsonl"
        if path.is_file():
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            by_epoch = {row["epoch"]: row["epoch_time_s"] for row in rows}
            seconds = [by_epoch.get(int(m.group(1)), s) for (_, m), s in zip(epochs, seconds)]
    marker = next(((t, m) for t, text in proc.lines if (m := FIRST_STEP.search(text))), None)
    if marker is not None:  # when the line arrived: the same clock for both scripts
        first, source = marker[0], "marker"
    else:
        first, source = epochs[0][0] - seconds[0], "estimated"
    return {
        "wall_s": proc.wall_s,
        "first_step_s": first,
        "first_step_source": source,
        # What the script itself printed (its own idea of its start), for comparison.
        "first_step_reported_s": float(marker[1].group(1)) if marker else None,
        "epoch_seconds": seconds,
        "train_rates": [per_epoch / s for s in seconds if s > 0],
        "num_train": int(sizes.group(1)),
        "num_test": int(sizes.group(2)),
        "threads": int(threads.group(1)) if (threads := THREADS.search(sizes.string)) else None,
    }


def parse_forward(proc: Process) -> list[float]:
    """Examples/s of each timed evaluation pass of one forward process."""
    rates = [int(m.group(2)) / float(m.group(3)) for t in proc.texts() if (m := FORWARD.match(t))]
    if not rates:
        raise BenchError(f"{proc.framework}: no 'forward batch' lines:\n" + "\n".join(proc.texts()))
    return rates


# ------------------------------------------------------------------------- the forward child


def forward_child(args: argparse.Namespace) -> int:
    """Times cnnjax's evaluation program on the test split, as the trainer runs it."""
    import jax

    from cnnjax import data, train
    from cnnjax.models import LeNet

    config = train.load_config_file(str(REPO / "configs" / "lenet.py"))
    config.eval_batch_size = args.forward_batch
    config = train.resolve_config(config)
    dataset = data.load(config.data.name, source="idx", data_dir=args.data_dir)
    images, labels = dataset.test_images, dataset.test_labels
    if args.test_limit:
        images, labels = images[: args.test_limit], labels[: args.test_limit]
    split = data.to_device(images, labels, normalize=config.data.normalize)
    model = LeNet.from_config(config.model)
    state = train.create_population(config, model, images.shape[1:])
    evaluate = train.make_eval_fn(config)
    jax.block_until_ready(evaluate(state, split))  # compile and warm up
    for _ in range(args.forward_repeats):
        start = time.perf_counter()
        jax.block_until_ready(evaluate(state, split))
        seconds = time.perf_counter() - start
        print(
            f"forward batch {args.forward_batch}: {len(labels)} examples in {seconds:.4f} s",
            flush=True,
        )
    return 0


# -------------------------------------------------------------------------------- reporting


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores"


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
        train = r["train"]
        out[fw] = {
            "whole": stats([t["wall_s"] for t in train]),
            "first_step": stats([t["first_step_s"] for t in train]),
            "first_step_source": sorted({t["first_step_source"] for t in train}),
            "train": stats([x for t in train for x in t["train_rates"]]),
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
                "-"
                if s is None
                else f"{s['median']:{fmt}} [{s['min']:{fmt}}-{s['max']:{fmt}}]"
                + (
                    " (est.)"
                    if key == "first_step" and "estimated" in summary[fw][f"{key}_source"]
                    else ""
                )
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
        choices=_torch_lenet.MEMORY_FORMATS,
        default="contiguous",
        help="PyTorch's tensor layout: the book's NCHW (default) or channels-last, oneDNN's "
        "faster one on CPU (see scripts/_torch_lenet.py)",
    )
    p.add_argument("--only", choices=FRAMEWORKS, help="run one framework (no ratios)")
    p.add_argument("--keep", action="store_true", help="keep cnnjax's run directories")
    p.add_argument("--out", default="", help="write every run and the summary as JSON here")
    p.add_argument("--forward-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
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
    if (
        not args.forward_child
        and "torch" in frameworks
        and importlib.util.find_spec("torch") is None
    ):
        p.error("PyTorch is not installed: pip install -e '.[bench]', or pass --only cnnjax")
    args.frameworks = frameworks
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.forward_child:
        return forward_child(args)
    batch_size = 256  # configs/lenet.py's; torch_train.py's default
    full_run = args.epochs == 10 and not args.train_limit and not args.test_limit
    root = tempfile.mkdtemp(prefix="bench_process_")
    runs: list[Process] = []
    results = {fw: {"train": [], "forward": []} for fw in args.frameworks}
    cold: dict[str, list[dict[str, Any]]] = {fw: [] for fw in args.frameworks}
    load_start = load_average()
    started = time.strftime("%Y-%m-%d %H:%M")
    print(
        f"whole-process benchmark, {started}: {machine()}; load average {load_start}; "
        f"{versions(args.frameworks)}",
        flush=True,
    )
    counter = iter(range(1 << 30))

    def one(framework: str, kind: str) -> Process:
        workdir = None
        if framework == "cnnjax" and kind != "forward":
            workdir = os.path.join(root, f"run{next(counter)}")
        proc = spawn(framework, kind, command(framework, kind, args, workdir), workdir)
        runs.append(proc)
        return proc

    try:
        for i in range(args.warmup):
            for fw in args.frameworks:
                parsed = parse_train(one(fw, "warmup"), batch_size)
                cold[fw].append(parsed)
                print(
                    f"  warm-up {i + 1}/{args.warmup} {LABELS[fw]}: 1 epoch, whole process "
                    f"{parsed['wall_s']:.1f} s, first step {parsed['first_step_s']:.2f} s",
                    flush=True,
                )
        for i in range(args.repeats):
            for fw in args.frameworks:
                parsed = parse_train(one(fw, "train"), batch_size)
                results[fw]["train"].append(parsed)
                print(
                    f"  run {i + 1}/{args.repeats} {LABELS[fw]}: {args.epochs} epoch(s), whole "
                    f"process {parsed['wall_s']:.1f} s, first step {parsed['first_step_s']:.2f} s"
                    f" ({parsed['first_step_source']}), median "
                    f"{statistics.median(parsed['train_rates']):,.0f} examples/s",
                    flush=True,
                )
        for i in range(args.repeats):
            for fw in args.frameworks:
                rates = parse_forward(one(fw, "forward"))
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
        if not args.keep:
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
    if "cnnjax" in summary and "estimated" in summary["cnnjax"]["first_step_source"]:
        print(
            "(est.): train.py printed no 'first step after' line; estimated as its first epoch "
            "line's arrival less the epoch's training time (includes the first evaluation)."
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
    print(f"machine: {machine()}; load average {load_start} at start, {load_average()} at end")
    if args.out:
        path = pathlib.Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "date": started,
            "machine": machine(),
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
                {
                    "framework": p.framework,
                    "kind": p.kind,
                    "argv": p.argv,
                    "wall_s": p.wall_s,
                    "lines": p.lines,
                }
                for p in runs
            ],
        }
        path.write_text(json.dumps(record, indent=2))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
