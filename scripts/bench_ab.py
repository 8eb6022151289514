"""Whole-process A/B of two checkouts of cnnjax: the same ``train.py`` command, alternated.

    python scripts/bench_ab.py --before ../old-checkout --after . --repeats 4 \\
        --data-dir ../shared/data/fashion_mnist --epochs 3

Each run is a fresh process with ``PYTHONPATH`` set to its checkout (so one virtualenv serves
both) and a compilation cache of its own; runs alternate (before, after, before, ...) so that
machine noise hits both. Prints every run and the medians, min-max and ratio of medians.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="checkout measured first in each pair")
    parser.add_argument("--after", required=True, help="checkout measured second")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--data-dir", required=True, help="directory of the Fashion-MNIST IDX files"
    )
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="cnnjax-ab-")
    trees = {"before": os.path.abspath(args.before), "after": os.path.abspath(args.after)}
    times: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(args.repeats):
        for name, tree in trees.items():
            workdir = os.path.join(scratch, name)
            shutil.rmtree(workdir, ignore_errors=True)
            env = {
                **os.environ,
                "PYTHONPATH": tree,
                "CNNJAX_CACHE_DIR": os.path.join(scratch, f"cache-{name}"),
            }
            command = [
                sys.executable,
                "scripts/train.py",
                "--config=configs/lenet.py",
                f"--workdir={workdir}",
                f"--config.num_epochs={args.epochs}",
                "--config.progress=False",
                "--config.data.source=idx",
                f"--config.data.dir={os.path.abspath(args.data_dir)}",
            ]
            start = time.perf_counter()
            subprocess.run(command, cwd=tree, env=env, check=True, capture_output=True)
            times[name].append(time.perf_counter() - start)
            print(f"{name}: {times[name][-1]:.2f} s", flush=True)
    shutil.rmtree(scratch, ignore_errors=True)
    for name, values in times.items():
        print(
            f"{name}: median {statistics.median(values):.2f} s, "
            f"min-max {min(values):.2f}-{max(values):.2f} s"
        )
    ratio = statistics.median(times["after"]) / statistics.median(times["before"])
    print(f"after/before (medians): {ratio:.3f}")


if __name__ == "__main__":
    main()
