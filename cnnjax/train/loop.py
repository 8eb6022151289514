"""``train_and_evaluate``: the one training loop (D2L 6.6's ``train_ch6``), driven by a config.

Everything with side effects lives here: loading the data onto the device, the epoch loop with
its progress bar and one printed line per epoch, the metric files, the learning-curve figure,
per-epoch checkpoints, resuming, and stopping on divergence. The computation itself is the pure
step of :mod:`cnnjax.train.steps`, compiled for a whole population by :mod:`cnnjax.train.epoch`.

A run's ``workdir`` holds:

* ``config.json``: the resolved config (every key, per-member seeds and learning rates);
* ``run.json``: facts the config does not fix (input shape, split sizes, steps per epoch, and
  the per-channel ``mean`` / ``std`` used when ``data.normalize`` is "standardize");
* ``metrics.jsonl`` / ``metrics.csv``: one record per (epoch, member);
* ``learning_curves.png``: the book's figure, one curve per member;
* ``summary.json``: final per-member metrics, throughput, device and timings;
* ``checkpoints/<epoch>``: Orbax checkpoints (epoch 0 is the initial state).
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from cnnjax import data
from cnnjax.models import LeNet
from cnnjax.train import checkpoint
from cnnjax.train.config import ConfigError, resolve_config
from cnnjax.train.epoch import make_eval_fn, make_train_epoch, make_train_step, summarize_steps
from cnnjax.train.plotting import plot_learning_curves
from cnnjax.train.population import resolve_strategy
from cnnjax.train.state import TrainState, create_population

__all__ = ["TrainingDiverged", "restore_model", "train_and_evaluate"]

# Config keys that may change when a run is resumed: they do not affect what is computed.
_RESUMABLE_CHANGES = ("num_epochs", "progress")


class TrainingDiverged(RuntimeError):
    """Training stopped because a member's loss or gradient became NaN or infinite."""


# --------------------------------------------------------------------------------------------
# Files.


def _write_atomic(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` via a temporary file and rename, so readers never see half."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _json_value(v: Any) -> Any:
    """JSON for numbers that may be NaN/inf (written as null, which JSON can parse)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _config_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
    return json.loads(json.dumps(config.to_dict()))


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _check_resumable(saved: dict[str, Any], config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError if ``config`` would not continue the run described by ``saved``."""
    old, new = _flatten(saved), _flatten(_config_json(config))
    allowed = set(_RESUMABLE_CHANGES)
    if config.optimizer.schedule != "constant":
        allowed.discard("num_epochs")  # the schedule's length depends on it
    changed = sorted(
        k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in allowed
    )
    if changed:
        diffs = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        raise ConfigError(
            f"workdir holds checkpoints of a run with a different config ({diffs}); "
            f"resume with the same config or use a new --workdir"
        )


def _records(history: dict[str, list], config: ml_collections.ConfigDict) -> list[dict[str, Any]]:
    """One flat record per (epoch, member) from the (E, P) history."""
    records = []
    metric_names = [k for k in history if k not in ("epoch", "epoch_time_s")]
    for e, epoch in enumerate(history["epoch"]):
        for m in range(config.population.size):
            rec = {
                "epoch": epoch,
                "member": m,
                "seed": config.population.seeds[m],
                "learning_rate": config.population.learning_rates[m],
            }
            rec.update({k: _json_value(history[k][e][m]) for k in metric_names})
            rec["epoch_time_s"] = history["epoch_time_s"][e]
            records.append(rec)
    return records


def _write_metrics(
    workdir: str, history: dict[str, list], config: ml_collections.ConfigDict, dataset_name: str
) -> None:
    records = _records(history, config)
    _write_atomic(
        os.path.join(workdir, "metrics.jsonl"), "".join(json.dumps(r) + "\n" for r in records)
    )
    if not records:
        return
    path = os.path.join(workdir, "metrics.csv")
    fd, tmp = tempfile.mkstemp(dir=workdir, prefix=".tmp-")
    with os.fdopen(fd, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    os.replace(tmp, path)
    labels = [
        f"seed {s}, lr {lr:g}"
        for s, lr in zip(config.population.seeds, config.population.learning_rates, strict=True)
    ]
    plot_learning_curves(
        history,
        os.path.join(workdir, "learning_curves.png"),
        labels=labels,
        title=f"LeNet on {dataset_name}",  # what was loaded, not what was asked for
    )


# --------------------------------------------------------------------------------------------
# Data.


def _subset(images: np.ndarray, labels: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """``limit`` examples (all if 0), the same pseudo-random ones for every run and seed.

    Random rather than the first ``limit``: a data set stored sorted by class (the bundled
    MNIST subset is) would otherwise give a single class.
    """
    if not limit or limit >= labels.shape[0]:
        return images, labels
    keep = np.sort(np.random.default_rng(0).permutation(labels.shape[0])[:limit])
    return images[keep], labels[keep]


def _load_splits(config: ml_collections.ConfigDict):
    """(dataset, train DeviceSplit, test DeviceSplit, normalisation stats) as ``config.data`` asks.

    The stats are ``{"mean": [...], "std": [...]}`` per channel for "standardize", else empty.
    """
    cfg = config.data
    dataset = data.load(cfg.name, source=cfg.source, data_dir=cfg.dir or None)
    train_x, train_y = _subset(dataset.train_images, dataset.train_labels, cfg.train_limit)
    test_x, test_y = _subset(dataset.test_images, dataset.test_labels, cfg.test_limit)
    if train_x.shape[0] < config.batch_size:
        raise ConfigError(
            f"config.batch_size={config.batch_size} exceeds the {train_x.shape[0]} training "
            f"examples of {dataset.name!r} ({dataset.source})"
        )
    if dataset.num_classes > config.model.num_classes:
        raise ConfigError(
            f"config.model.num_classes={config.model.num_classes} is less than the "
            f"{dataset.num_classes} classes of {dataset.name!r}"
        )
    stats = {}
    if cfg.normalize == "standardize":
        # Statistics of the (limited) training split, applied to both splits.
        stats = dict(zip(("mean", "std"), data.channel_stats(train_x), strict=True))
    train = data.to_device(train_x, train_y, normalize=cfg.normalize, **stats)
    test = data.to_device(test_x, test_y, normalize=cfg.normalize, **stats)
    return dataset, train, test, {k: np.asarray(v).tolist() for k, v in stats.items()}


def _match_fallback_steps(
    config: ml_collections.ConfigDict, dataset: data.Dataset, num_train: int
) -> None:
    """Scales ``num_epochs`` (in place) when ``auto`` fell back to a smaller data set.

    With ``data.fallback_epochs="match_steps"`` the run then takes as many SGD steps as it would
    have on the data set asked for (warmup epochs scale alike, so the schedule keeps its shape).
    The resolved config written to the workdir records the epochs actually trained.
    """
    fell_back = config.data.source == "auto" and dataset.name != config.data.name
    if not fell_back or config.data.fallback_epochs != "match_steps":
        return
    wanted = data.get_spec(config.data.name).num_train
    if config.data.train_limit:
        wanted = min(wanted, config.data.train_limit)
    factor = (wanted // config.batch_size) / (num_train // config.batch_size)
    if factor <= 1:
        return
    epochs = math.ceil(config.num_epochs * factor)
    print(
        f"fallback data: {dataset.name} has {num_train} training images, not the {wanted} of "
        f"{config.data.name}; training {epochs} epochs instead of {config.num_epochs} so the run "
        f"takes the same number of SGD steps (config.data.fallback_epochs='as_configured' keeps "
        f"{config.num_epochs})"
    )
    config.optimizer.warmup_epochs = round(config.optimizer.warmup_epochs * factor)
    config.num_epochs = epochs


# --------------------------------------------------------------------------------------------
# Reporting.


def _fmt(value: float) -> str:
    return f"{value:.3f}" if abs(value) < 1e4 else f"{value:.2e}"


def _fmt_mean(values: np.ndarray) -> str:
    if values.size == 1:
        return _fmt(values[0])
    return f"{_fmt(values.mean())} ± {_fmt(values.std())}"


def _epoch_line(
    epoch: int, num_epochs: int, m: dict[str, np.ndarray], healthy: np.ndarray, seconds: float
) -> str:
    """The book's per-epoch line; for a population, mean ± std over healthy members and the best."""
    shown = healthy if healthy.any() else np.ones_like(healthy)
    loss, train_acc, test_acc = (
        m[k][shown] for k in ("train_loss", "train_accuracy", "test_accuracy")
    )
    line = (
        f"epoch {epoch:>{len(str(num_epochs))}}/{num_epochs}: loss {_fmt_mean(loss)}, "
        f"train acc {_fmt_mean(train_acc)}, test acc {_fmt_mean(test_acc)}"
    )
    if not healthy.any():
        line += " (diverged)"
    elif shown.size > 1:
        best = int(np.flatnonzero(shown)[np.argmax(test_acc)])
        line += f" (best {m['test_accuracy'][best]:.3f}, member {best}"
        line += f"; {int((~healthy).sum())} diverged)" if (~healthy).any() else ")"
    return line + f"  [{seconds:.1f} s]"


def _final_report(
    final: dict[str, np.ndarray],
    config: ml_collections.ConfigDict,
    diverged_epoch: list[int | None],
) -> list[str]:
    """The per-member table and mean ± std / best (a single line for a single model)."""
    pop = config.population
    if pop.size == 1:
        line = (
            f"loss {final['train_loss'][0]:.3f}, train acc {final['train_accuracy'][0]:.3f}, "
            f"test acc {final['test_accuracy'][0]:.3f}"
        )
        return [line]
    lines = [
        f"{'member':>6}  {'seed':>5}  {'lr':>9}  {'loss':>7}  {'train acc':>9}  "
        f"{'test acc':>8}  status"
    ]
    for i in range(pop.size):
        status = (
            "ok" if diverged_epoch[i] is None else f"diverged in epoch {diverged_epoch[i]} (frozen)"
        )
        lines.append(
            f"{i:>6}  {pop.seeds[i]:>5}  {pop.learning_rates[i]:>9.4g}  "
            f"{_fmt(final['train_loss'][i]):>7}  {final['train_accuracy'][i]:>9.3f}  "
            f"{final['test_accuracy'][i]:>8.3f}  {status}"
        )
    healthy = np.array([d is None for d in diverged_epoch])
    if healthy.any():
        acc = final["test_accuracy"][healthy]
        best = int(np.flatnonzero(healthy)[np.argmax(acc)])
        lines.append(
            f"mean ± std over {int(healthy.sum())} healthy member(s): "
            f"loss {_fmt_mean(final['train_loss'][healthy])}, "
            f"train acc {_fmt_mean(final['train_accuracy'][healthy])}, "
            f"test acc {_fmt_mean(acc)}; min test acc {acc.min():.3f}; "
            f"best: member {best} (seed {pop.seeds[best]}, lr {pop.learning_rates[best]:g}) "
            f"test acc {final['test_accuracy'][best]:.3f}"
        )
    return lines


def _device_name() -> str:
    device = jax.devices()[0]
    if device.platform == "cpu":
        return f"cpu ({os.cpu_count()} cores)"
    return f"{device.platform} ({device.device_kind})"


# --------------------------------------------------------------------------------------------
# The loop.


def _epoch_runner(
    config: ml_collections.ConfigDict,
    state: TrainState,
    train: data.DeviceSplit,
    key: jax.Array,
    bar: tqdm | None,
) -> tuple[Callable, float]:
    """``run(state, key) -> (state, metrics)`` for ``config.loop`` and its compile time (s)."""
    start = time.perf_counter()
    if config.loop == "scan":
        epoch_fn = make_train_epoch(config).lower(state, train, key).compile()
        return (lambda state, key: epoch_fn(state, train, key)), time.perf_counter() - start

    step = make_train_step(config)
    batches = jax.jit(data.gather)
    num_train = train.images.shape[0]
    x, y = batches(train, data.epoch_indices(key, num_train, config.batch_size)[0])
    compiled = step.lower(state, x, y).compile()

    def run(state: TrainState, key: jax.Array):
        steps = []
        indices = data.epoch_indices(key, num_train, config.batch_size)
        if bar is not None:
            bar.reset(total=indices.shape[0])
        for idx in indices:
            state, metrics = compiled(state, *batches(train, idx))
            steps.append(metrics)
            if bar is not None:
                bar.update()
        stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *steps)
        return state, summarize_steps(stacked)

    return run, time.perf_counter() - start


def train_and_evaluate(config: Any, workdir: str | os.PathLike) -> dict[str, Any]:
    """Trains and evaluates the population ``config`` describes, writing everything to ``workdir``.

    If ``workdir`` holds checkpoints of the same config, training resumes after the latest one
    (``num_epochs`` may be raised to train longer when the schedule is "constant"); the data order
    of epoch ``e`` is ``fold_in(key(seed), e)``, so a resumed run replays an uninterrupted one
    exactly. Prints one line per epoch and a final report (per-member table, throughput, device).

    Args:
      config: a ``ConfigDict`` or mapping (see :mod:`cnnjax.train.config`); validated first.
      workdir: the run's directory (created if needed); see the module docstring for its files.

    Returns:
      Final per-member metrics as (P,) numpy arrays -- ``train_loss``, ``train_accuracy``,
      ``test_loss``, ``test_accuracy``, ``diverged`` (bool) and the other per-epoch metrics of
      the last epoch -- plus ``epochs`` (completed), ``examples_per_second`` (examples x members
      per second of training in this process, compile excluded; NaN if nothing was trained),
      ``compile_seconds`` and ``device``.

    Raises:
      ConfigError / ConfigTypeError (ValueError / TypeError): a bad config, or one that differs
        from the config of the checkpoints in ``workdir``.
      TrainingDiverged: a member's loss or gradient became non-finite and either
        ``population.freeze_diverged`` is False or every member has diverged. The message names
        the members, the epoch and their learning rates; that epoch is not checkpointed.
    """
    config = resolve_config(config)
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    dataset, train, test, stats = _load_splits(config)
    _match_fallback_steps(config, dataset, train.images.shape[0])
    manager = checkpoint.open_manager(workdir)
    config_path = os.path.join(workdir, "config.json")
    if checkpoint.latest_epoch(manager) is not None and os.path.exists(config_path):
        with open(config_path) as f:
            _check_resumable(json.load(f), config)
    model = LeNet.from_config(config.model)
    steps_per_epoch = train.images.shape[0] // config.batch_size
    input_shape = tuple(int(d) for d in train.images.shape[1:])
    state = create_population(config, model, input_shape, steps_per_epoch=steps_per_epoch)

    _write_atomic(config_path, json.dumps(_config_json(config), indent=2) + "\n")
    run_info = {
        "dataset": dataset.name,
        "source": dataset.source,
        "input_shape": list(input_shape),
        "num_train": int(train.images.shape[0]),
        "num_test": int(test.images.shape[0]),
        "steps_per_epoch": steps_per_epoch,
        "strategy": resolve_strategy(config.population.strategy),
        "device": _device_name(),
        "normalize": config.data.normalize,
        **stats,
    }
    _write_atomic(os.path.join(workdir, "run.json"), json.dumps(run_info, indent=2) + "\n")

    latest = checkpoint.latest_epoch(manager)
    if latest is None:
        history: dict[str, list] = {"epoch": [], "epoch_time_s": []}
        checkpoint.save(manager, 0, state, {"epoch": 0, "history": history})
        start_epoch = 0
    else:
        start_epoch, state, meta = checkpoint.restore(manager, state)
        history = meta["history"]

    pop = config.population
    num_members = pop.size
    print(
        f"{dataset.name} ({dataset.source}): {run_info['num_train']} train / "
        f"{run_info['num_test']} test images; {num_members} member(s), strategy "
        f"{run_info['strategy']}, on {run_info['device']}"
        + (f"; resuming after epoch {start_epoch}" if start_epoch else "")
    )
    evaluate = make_eval_fn(config)
    epoch_bar = tqdm(
        total=config.num_epochs,
        initial=start_epoch,
        desc="epochs",
        unit="epoch",
        disable=not config.progress,
        dynamic_ncols=True,
    )
    step_bar = (
        tqdm(desc="steps", unit="step", leave=False, dynamic_ncols=True)
        if config.progress and config.loop == "step"
        else None
    )
    run_epoch, compile_seconds = (None, 0.0)
    train_seconds, trained_epochs = 0.0, 0
    try:
        for epoch in range(start_epoch + 1, config.num_epochs + 1):
            key = data.epoch_key(config.seed, epoch)
            if run_epoch is None:
                run_epoch, compile_seconds = _epoch_runner(config, state, train, key, step_bar)
            was_diverged = np.asarray(state.diverged)
            start = time.perf_counter()
            state, train_metrics = run_epoch(state, key)
            train_metrics = jax.device_get(train_metrics)
            seconds = time.perf_counter() - start
            train_seconds += seconds
            trained_epochs += 1
            test_metrics = jax.device_get(evaluate(state, test))

            epoch_metrics = {
                "train_loss": train_metrics.pop("loss"),
                "train_accuracy": train_metrics.pop("accuracy"),
                "test_loss": test_metrics["loss"],
                "test_accuracy": test_metrics["accuracy"],
                **{k: v for k, v in train_metrics.items() if k != "finite"},
                "diverged": np.asarray(state.diverged),
            }
            history["epoch"].append(epoch)
            history["epoch_time_s"].append(seconds)
            for k, v in epoch_metrics.items():
                history.setdefault(k, []).append(np.asarray(v).tolist())
            diverged = epoch_metrics["diverged"]
            tqdm.write(_epoch_line(epoch, config.num_epochs, epoch_metrics, ~diverged, seconds))

            newly = np.flatnonzero(diverged & ~was_diverged)
            if newly.size:
                who = ", ".join(
                    f"member {i} (seed {pop.seeds[i]}, learning rate {pop.learning_rates[i]:g})"
                    for i in newly
                )
                message = f"epoch {epoch}: {who} diverged (non-finite loss or gradient)"
                if not pop.freeze_diverged or diverged.all():
                    _write_metrics(workdir, history, config, dataset.name)
                    raise TrainingDiverged(
                        f"{message}; training stopped, the last good checkpoint is epoch "
                        f"{checkpoint.latest_epoch(manager)} in "
                        f"{checkpoint.checkpoint_dir(workdir)}"
                    )
                tqdm.write(f"warning: {message}; frozen, the other members continue")

            checkpoint.save(manager, epoch, state, {"epoch": epoch, "history": history})
            _write_metrics(workdir, history, config, dataset.name)
            epoch_bar.update()
    finally:
        epoch_bar.close()
        if step_bar is not None:
            step_bar.close()
        manager.close()

    return _finish(
        workdir,
        config,
        history,
        trained_epochs,
        train_seconds,
        compile_seconds,
        steps_per_epoch,
        run_info["device"],
    )


def _finish(
    workdir: str,
    config: ml_collections.ConfigDict,
    history: dict[str, list],
    trained_epochs: int,
    train_seconds: float,
    compile_seconds: float,
    steps_per_epoch: int,
    device: str,
) -> dict[str, Any]:
    """Prints the final report, writes ``summary.json`` and returns the final metrics."""
    num_members = config.population.size
    if not history["epoch"]:
        return {"epochs": 0}
    final = {k: np.asarray(v[-1]) for k, v in history.items() if k not in ("epoch", "epoch_time_s")}
    diverged_history = np.asarray(history["diverged"])  # (E, P)
    diverged_epoch = [
        int(history["epoch"][int(np.argmax(diverged_history[:, m]))])
        if diverged_history[:, m].any()
        else None
        for m in range(num_members)
    ]
    examples = trained_epochs * steps_per_epoch * config.batch_size * num_members
    rate = examples / train_seconds if train_seconds else math.nan
    for line in _final_report(final, config, diverged_epoch):
        tqdm.write(line)
    if trained_epochs:
        unit = "examples/s" if num_members == 1 else f"example·models/s ({num_members} members)"
        tqdm.write(
            f"{rate:,.0f} {unit} on {device}; compile {compile_seconds:.1f} s, "
            f"{trained_epochs} epoch(s) in {train_seconds:.1f} s"
        )
    result: dict[str, Any] = dict(final)
    result.update(
        epochs=int(history["epoch"][-1]),
        examples_per_second=rate,
        compile_seconds=compile_seconds,
        device=device,
    )
    summary = {
        k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else v) for k, v in result.items()
    }
    summary["diverged_epoch"] = diverged_epoch
    summary = json.loads(json.dumps(summary), parse_constant=lambda _: None)
    _write_atomic(os.path.join(workdir, "summary.json"), json.dumps(summary, indent=2) + "\n")
    return result


def restore_model(workdir: str | os.PathLike, member: int = 0) -> tuple[LeNet, Any]:
    """The model and trained parameters of one member of the run in ``workdir``.

    Reads ``config.json`` and ``run.json`` and restores the latest checkpoint.

    Returns:
      ``(model, params)``: a :class:`~cnnjax.models.LeNet` and its parameter tree (no member
      axis), ready for ``model.apply({"params": params}, x)`` with x: (N, H, W, C) float32
      normalised as in training: ``x / 255``, then for "standardize" ``(x - mean) / std`` with
      the ``mean`` / ``std`` recorded in ``run.json``.

    Raises:
      FileNotFoundError: ``workdir`` holds no run or no checkpoint.
      ValueError: ``member`` is not in ``[0, population.size)``.
    """
    workdir = os.path.abspath(workdir)
    paths = [os.path.join(workdir, name) for name in ("config.json", "run.json")]
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"restore_model: {path} not found; is {workdir} a run's workdir?"
            )
    with open(paths[0]) as f:
        config = resolve_config(json.load(f))
    with open(paths[1]) as f:
        run_info = json.load(f)
    size = config.population.size
    if isinstance(member, bool) or not isinstance(member, int) or not 0 <= member < size:
        raise ValueError(f"restore_model: member must be an int in [0, {size}), got {member!r}")
    model = LeNet.from_config(config.model)
    target = create_population(
        config, model, tuple(run_info["input_shape"]), steps_per_epoch=run_info["steps_per_epoch"]
    )
    manager = checkpoint.open_manager(workdir, read_only=True)
    try:
        _, state, _ = checkpoint.restore(manager, target)
    finally:
        manager.close()
    return model, jax.tree.map(lambda x: x[member], state.params)
