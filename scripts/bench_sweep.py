"""A sweep's screening as one command against the same members as separate training processes.

    python scripts/bench_sweep.py --config configs/sweeps/lenet_variants.py \\
        [--variants base,kernel_3x3] [--epochs 6] [--workdir DIR]

Both sides train exactly the screening's members (every variant x numeric point x screening
seed), with the same resolved training configs, on the same data (``$CNNJAX_DATA_DIR`` or the
config's), each side from a fresh compilation cache of its own:

* **sweep**: ``scripts/sweep.py --until=screening``, one process: each variant is one compiled
  population of its learning rates and seeds;
* **processes**: one ``scripts/train.py`` per member, one after another, as a user without sweeps
  would run them; each member's config is its group's config with a population of one.

The wall time of each side is from spawning its first process to the exit of its last. Printed:
both times, their ratio (sweep / processes; below 1 the sweep is faster) and, as a check that
both trained the same members, the largest difference of any member's final validation accuracy
between the two sides (a population member and a single run differ only by float rounding in
the vmapped step). ``--variants`` and ``--epochs`` shrink the measurement (the ratio is printed
with what was measured). ``--halving 2,4`` makes the sweep screen with successive halving at
those rungs (``screening.halving``, keep 0.5) while the processes still train every member in
full: what a user saves by halving, not the same work (only members the sweep did not stop are
compared).
"""

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def derived_sweep(
    path: str,
    variants: list[str] | None,
    epochs: int | None,
    out: pathlib.Path,
    settings: tuple[str, ...] = (),
) -> None:
    """Writes ``out``, a sweep config file that loads ``path``, keeps only ``variants`` (all if
    None), sets ``screening.num_epochs`` to ``epochs`` (the config's if None or 0) and runs each
    of ``settings`` on the config ``c``, e.g. ``"c.pack = True"``."""
    out.write_text(
        "from cnnjax.train import load_config_file\n\n\n"
        "def get_config():\n"
        f"    c = load_config_file({str(pathlib.Path(path).resolve())!r})\n"
        + (
            "    c.variants = {k: v for k, v in c.variants.to_dict().items() "
            f"if k in {variants!r}}}\n"
            if variants
            else ""
        )
        + (f"    c.screening.num_epochs = {epochs}\n" if epochs else "")
        + "".join(f"    {line}\n" for line in settings)
        + "    return c\n"
    )


def _member_configs(sweep_path: pathlib.Path, out: pathlib.Path) -> list[tuple[str, pathlib.Path]]:
    """One training config file per screening member: (label, path)."""
    from cnnjax.train import load_config_file
    from cnnjax.train.sweep import plan_groups, resolve_sweep

    sweep = resolve_sweep(load_config_file(str(sweep_path)))
    rows = [(v, p) for v in sweep.variants for p in sweep.points]
    members = []
    for group in plan_groups(sweep, "screening", rows):
        config = group.config.to_dict()
        pop = config["population"]
        for i, member in enumerate(group.members):
            one = json.loads(json.dumps(config, default=list))
            one["population"].update(
                size=1,
                seeds=[pop["seeds"][i]],
                learning_rates=[pop["learning_rates"][i]],
                weight_decays=[pop["weight_decays"][i]],
                momentums=[pop["momentums"][i]] if pop["momentums"] else [],
            )
            label = f"{group.name}-m{i}"
            path = out / f"{label}.py"
            path.write_text(
                "import json\n\nimport ml_collections\n\n\ndef get_config():\n"
                f"    return ml_collections.ConfigDict(json.loads({json.dumps(one)!r}))\n"
            )
            members.append((f"{member.variant} {dict(member.point)} seed {member.seed}", path))
    return members


def _val_accuracies(run_dir: pathlib.Path) -> list[float]:
    from cnnjax.train import RunDir

    with RunDir(run_dir, read_only=True) as run:
        return [float(v) for v in run.read_summary()["val_accuracy"]]


def _stopped_epochs(run_dir: pathlib.Path) -> list[int]:
    from cnnjax.train import RunDir

    with RunDir(run_dir, read_only=True) as run:
        summary = run.read_summary()
    return [int(v) for v in summary.get("stopped_epoch", [0] * len(summary["val_accuracy"]))]


def _run(cmd: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr[-2000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs/sweeps/lenet_variants.py"))
    parser.add_argument("--variants", default="", help="comma-separated variant names to keep")
    parser.add_argument("--epochs", type=int, default=0, help="screening epochs (0: the config's)")
    parser.add_argument("--workdir", default="", help="where runs go (default: a temporary dir)")
    parser.add_argument(
        "--halving",
        default="",
        help="comma-separated rung epochs: the sweep screens with successive halving (keep 0.5); "
        "the processes still train every member in full",
    )
    args = parser.parse_args()
    rungs = tuple(int(r) for r in args.halving.split(",") if r)

    work = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="bench_sweep-"))
    work.mkdir(parents=True, exist_ok=True)
    sweep_path = work / "sweep_config.py"
    variants = [v for v in args.variants.split(",") if v] or None
    derived_sweep(args.config, variants, args.epochs or None, sweep_path)
    (work / "members").mkdir(exist_ok=True)
    members = _member_configs(sweep_path, work / "members")
    if rungs:  # the members come from the sweep without halving; the sweep itself halves
        halving = f"c.screening.halving = {{'rungs': {rungs!r}}}"
        derived_sweep(args.config, variants, args.epochs or None, sweep_path, (halving,))

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env["CNNJAX_CACHE_DIR"] = str(work / "cache-sweep")
    start = time.perf_counter()
    _run(
        [
            sys.executable,
            "scripts/sweep.py",
            f"--config={sweep_path}",
            f"--workdir={work / 'sweep'}",
            "--until=screening",
        ],
        env,
    )
    sweep_s = time.perf_counter() - start

    env["CNNJAX_CACHE_DIR"] = str(work / "cache-processes")
    start = time.perf_counter()
    for _, path in members:
        _run(
            [
                sys.executable,
                "scripts/train.py",
                f"--config={path}",
                f"--workdir={work / 'processes' / path.stem}",
            ],
            env,
        )
    processes_s = time.perf_counter() - start

    # The same member in both: the sweep's group run holds it at its index in the group.
    diffs, stopped = [], 0
    for _, path in members:
        group, index = path.stem.rsplit("-m", 1)
        if _stopped_epochs(work / "sweep" / "screening" / group)[int(index)]:
            stopped += 1  # halving stopped it: its accuracy is of its rung, not comparable
            continue
        together = _val_accuracies(work / "sweep" / "screening" / group)[int(index)]
        alone = _val_accuracies(work / "processes" / path.stem)[0]
        diffs.append(abs(together - alone))

    import jax

    groups = len({p.stem.rsplit("-m", 1)[0] for _, p in members})
    print(
        f"# bench_sweep: {time.strftime('%Y-%m-%d %H:%M')} on {platform.node()}, "
        f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"jax {jax.__version__}"
    )
    print(
        f"config {args.config}: {len(members)} members in {groups} groups, "
        f"variants {variants or 'all'}, screening epochs {args.epochs or 'as configured'}"
        + (f", sweep with halving at rungs {rungs} ({stopped} members stopped)" if rungs else "")
    )
    print(f"sweep (one process, --until=screening):  {sweep_s:8.1f} s")
    print(f"processes ({len(members)} x train.py):      {processes_s:8.1f} s")
    print(f"ratio sweep / processes:                 {sweep_s / processes_s:8.3f}")
    print(f"max |val acc difference| of a member:    {max(diffs):8.4f} (members not stopped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
