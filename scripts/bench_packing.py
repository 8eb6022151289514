"""What packing costs and wins: a sweep's screening with ``pack=False`` against ``pack=True``.

    python scripts/bench_packing.py [--config configs/sweeps/lenet_variants.py] \\
        [--variants base,channels_8_20,channels_10_24] [--epochs 2] [--repeats 1]

The chosen variants must differ from one another only in LeNet's widths (``model.channels``,
``model.dense``), so that ``pack=True`` trains them as one population padded to the widest and
``pack=False`` as one population per width. Each side runs ``scripts/sweep.py --until=screening``
in a process of its own, from a fresh compilation cache, alternating (unpacked, packed, unpacked,
...) with ``--repeats``. Printed per side (median over repeats, and the range): the whole wall
time, the groups' compile seconds and training seconds summed (their summaries, read through
``RunDir``), the number of groups, and, as the check that packing changes no result, the
largest difference of any row's mean validation accuracy between the two sides.
"""

import argparse
import csv
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from bench_sweep import derived_sweep  # scripts/ is on the path of a script run from it

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _side(config: pathlib.Path, workdir: pathlib.Path, cache: pathlib.Path) -> dict:
    from cnnjax.train import RunDir

    env = dict(os.environ, PYTHONPATH=str(ROOT), CNNJAX_CACHE_DIR=str(cache))
    cmd = [
        sys.executable,
        "scripts/sweep.py",
        f"--config={config}",
        f"--workdir={workdir}",
        "--until=screening",
    ]
    start = time.perf_counter()
    result = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    compile_s = train_s = 0.0
    groups = sorted((workdir / "screening").iterdir())
    for group in groups:
        with RunDir(group, read_only=True) as run:
            summary = run.read_summary()
        compile_s += summary["compile_seconds"]
        train_s += summary["train_seconds"]
    with open(workdir / "results.csv", newline="") as f:
        rows = {r["variant"]: float(r["val_acc_mean"]) for r in csv.DictReader(f)}
    return {"wall": wall, "compile": compile_s, "train": train_s, "groups": len(groups)} | {
        "rows": rows
    }


def _fmt(values: list[float]) -> str:
    med = statistics.median(values)
    return f"{med:8.1f} s" + (f" [{min(values):.1f}-{max(values):.1f}]" if len(values) > 1 else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs/sweeps/lenet_variants.py"))
    parser.add_argument("--variants", default="base,channels_8_20,channels_10_24")
    parser.add_argument("--epochs", type=int, default=2, help="screening epochs (0: the config's)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--workdir", default="", help="where runs go (default: a temporary dir)")
    args = parser.parse_args()

    work = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="bench_packing-"))
    work.mkdir(parents=True, exist_ok=True)
    variants = [v for v in args.variants.split(",") if v]
    sides: dict[bool, list[dict]] = {False: [], True: []}
    for pack in (False, True):
        derived_sweep(
            args.config, variants, args.epochs, work / f"sweep_pack{pack}.py", (f"c.pack = {pack}",)
        )
    load_start = os.getloadavg()[0]
    for r in range(args.repeats):
        for pack in (False, True):
            name = f"pack{pack}-{r}"
            sides[pack].append(
                _side(work / f"sweep_pack{pack}.py", work / name, work / f"cache-{name}")
            )
    load_end = os.getloadavg()[0]

    import jax

    print(
        f"# bench_packing: {time.strftime('%Y-%m-%d %H:%M')} on {platform.node()}, "
        f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"jax {jax.__version__}, load average {load_start:.1f} -> {load_end:.1f}"
    )
    first = sides[False][0]["rows"]
    print(
        f"config {args.config}: variants {variants}, {len(first)} rows, screening epochs "
        f"{args.epochs or 'as configured'}, {args.repeats} repeat(s)"
    )
    print(f"{'':28}{'unpacked':>24}{'packed':>24}{'packed/unpacked':>18}")
    for key in ("wall", "compile", "train"):
        a = [s[key] for s in sides[False]]
        b = [s[key] for s in sides[True]]
        ratio = statistics.median(b) / statistics.median(a)
        print(f"{key + ' seconds':28}{_fmt(a):>24}{_fmt(b):>24}{ratio:18.3f}")
    print(f"{'groups':28}{sides[False][0]['groups']:>24}{sides[True][0]['groups']:>24}")
    diff = max(abs(s["rows"][v] - first[v]) for side in sides.values() for s in side for v in first)
    print(f"max |row val acc difference| between all runs: {diff:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
