"""What a run tells its user and leaves on disk: console lines, metric files, figure, TensorBoard,
summary.

:class:`Reporter` is the run's one writer. It formats the book's per-epoch line (for a population:
mean ± std over healthy members and the best one) and the final per-member table, appends each
epoch's rows to ``metrics.jsonl``/``metrics.csv`` and its scalars to TensorBoard, and at the end
draws ``learning_curves.png`` and writes ``summary.json`` -- every file through the
:class:`~cnnjax.train.rundir.RunDir`, every record typed by :mod:`cnnjax.train.runfiles`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from cnnjax.train.config import member_hyperparams
from cnnjax.train.optim import schedule_factor
from cnnjax.train.rundir import RunDir
from cnnjax.train.runfiles import EpochRecord, Summary, best_member, metric_rows
from cnnjax.train.setup import Setup, device_name
from cnnjax.train.tensorboard import TensorBoardWriter

__all__ = ["Reporter"]

# The scalars TensorBoard's HParams view compares members by.
_HPARAM_METRICS = ("train/loss", "train/accuracy", "val/accuracy", "test/accuracy")


def _fmt(value: float) -> str:
    return f"{value:.3f}" if abs(value) < 1e4 or not np.isfinite(value) else f"{value:.2e}"


def _fmt_mean(values: np.ndarray) -> str:
    if values.size == 1:
        return _fmt(values[0])
    return f"{_fmt(np.mean(values))} ± {_fmt(np.std(values))}"


class Reporter:
    """The run's console and files.

    Args:
      rundir: where files go.
      setup: the run's :class:`~cnnjax.train.setup.Setup` (members, data, devices).

    Use as a context manager: leaving it closes the progress bars and TensorBoard's files.
    """

    def __init__(self, rundir: RunDir, setup: Setup):
        self.rundir, self.setup = rundir, setup
        config = setup.config
        self.seeds = list(config.population.seeds)
        self.learning_rates = list(config.population.learning_rates)
        self.eval_split = setup.eval_split
        self.progress = config.progress and rundir.primary
        self.epoch_bar: tqdm | None = None
        self.step_bar: tqdm | None = None
        self.tensorboard: TensorBoardWriter | None = None
        factor = schedule_factor(
            config.optimizer.schedule,
            setup.shapes.steps_per_epoch * config.num_epochs,
            setup.shapes.steps_per_epoch * config.optimizer.warmup_epochs,
        )
        self._factor = factor or (lambda step: 1.0)

    @property
    def size(self) -> int:
        return len(self.seeds)

    def line(self, text: str) -> None:
        """One line on stdout (above the progress bars, if any); process 0 speaks for all."""
        if not self.rundir.primary:
            return
        if self.epoch_bar is not None:
            tqdm.write(text, file=sys.stdout)
        else:
            print(text, flush=True)

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        for bar in (self.epoch_bar, self.step_bar):
            if bar is not None:
                bar.close()
        self.epoch_bar = self.step_bar = None
        if self.tensorboard is not None:
            self.tensorboard.close()

    # -- start ---------------------------------------------------------------------------------

    def start(self, history: Sequence[EpochRecord]) -> None:
        """Writes ``config.json`` and ``run.json``, rebuilds the metric files from ``history``
        (rows lost since the last checkpoint), opens TensorBoard's files, prints the first line
        and opens the bars."""
        setup, start_epoch = self.setup, len(history)
        self.tensorboard = TensorBoardWriter(
            self.rundir.file("tensorboard"),
            self.size,
            {
                "seed": self.seeds,
                # Every value a member may have of its own (member_hyperparams), so that
                # TensorBoard's HParams view can compare the members of a sweep's population.
                **{
                    k: v
                    for k, v in member_hyperparams(setup.config).items()
                    if k != "momentum" or setup.config.optimizer.name == "momentum"
                },
                # A packed population's members differ in widths too ("6,16").
                **{
                    k: [",".join(map(str, w)) for w in setup.config.population[k]]
                    for k in ("channels", "dense")
                    if setup.config.population[k]
                },
            },
            metrics=(*_HPARAM_METRICS, "diverged"),
            start_epoch=start_epoch,
            enabled=self.rundir.primary,
        )
        self.rundir.write_config(setup.config)
        self.rundir.write_info(setup.info)
        self.rundir.write_metrics(
            [row for rec in history for row in metric_rows(rec, self.seeds, self.learning_rates)]
        )
        fp = setup.inputs.fingerprint
        self.line(
            f"{setup.inputs.name} ({setup.inputs.source}): {fp['num_train']} train"
            + (f" / {fp['num_validation']} validation" if fp["num_validation"] else "")
            + f" / {fp['num_test']} test images; {self.size} member(s), strategy "
            + f"{setup.strategy}, on {device_name(setup.devices)}"
            + (f"; resuming after epoch {start_epoch}" if start_epoch else "")
        )
        if self.progress:
            num_epochs = setup.config.num_epochs
            self.epoch_bar = tqdm(
                total=num_epochs, initial=start_epoch, desc="epochs", unit="epoch", leave=False
            )
            if setup.config.loop == "step":
                self.step_bar = tqdm(desc="steps", unit="step", leave=False)

    # -- per epoch -----------------------------------------------------------------------------

    def epoch(self, record: EpochRecord) -> None:
        """The epoch's console line, metric rows and TensorBoard scalars."""
        self.line(self._epoch_line(record))
        if self.epoch_bar is not None:
            self.epoch_bar.update()
        self.rundir.append_metrics(metric_rows(record, self.seeds, self.learning_rates))
        steps_per_epoch = self.setup.shapes.steps_per_epoch
        steps = record.epoch * steps_per_epoch
        examples = steps_per_epoch * self.setup.config.batch_size * self.size
        self.tensorboard.write_epoch(
            record.epoch,
            record.metrics,
            learning_rate=[lr * float(self._factor(steps - 1)) for lr in self.learning_rates],
            examples_per_second=examples / record.seconds if record.seconds else float("nan"),
        )

    def _epoch_line(self, record: EpochRecord) -> str:
        m, num_epochs = record.metrics, self.setup.config.num_epochs
        healthy = ~m["diverged"]
        shown = healthy if healthy.any() else np.ones_like(healthy)
        acc = m[f"{self.eval_split}_accuracy"]
        line = (
            f"epoch {record.epoch:>{len(str(num_epochs))}}/{num_epochs}: "
            f"loss {_fmt_mean(m['train_loss'][shown])}, "
            f"train acc {_fmt_mean(m['train_accuracy'][shown])}, "
            f"{self.eval_split} acc {_fmt_mean(acc[shown])}"
        )
        if not healthy.any():
            line += " (diverged)"
        elif shown.size > 1:
            best = best_member(acc, _running(m, healthy))
            line += f" (best {acc[best]:.3f}, member {best}"
            line += f"; {int((~healthy).sum())} diverged)" if (~healthy).any() else ")"
        return line + f"  [{record.seconds:.1f} s]"

    def member_name(self, i: int) -> str:
        return f"member {i} (seed {self.seeds[i]}, learning rate {self.learning_rates[i]:g})"

    # -- end -----------------------------------------------------------------------------------

    def figure(self, history: Sequence[EpochRecord]) -> None:
        """``learning_curves.png`` (and the same image in TensorBoard) from the history. It costs
        far more than the metrics (matplotlib), so the trainer draws it once per run, at the end
        (or when a run stops on divergence)."""
        if not history or not self.rundir.primary:
            return
        from cnnjax.train.plotting import learning_curves  # matplotlib: off the start-up path

        curves = {
            k: [rec.metrics[k] for rec in history]
            for k in ("train_loss", "train_accuracy", f"{self.eval_split}_accuracy")
        }
        labels = [
            f"seed {s}, lr {lr:g}" for s, lr in zip(self.seeds, self.learning_rates, strict=True)
        ]
        figure = learning_curves(
            curves,
            labels=labels,
            title=f"LeNet on {self.setup.inputs.name}",
            eval_split=self.eval_split,
        )
        self.rundir.write_figure("learning_curves.png", figure)
        self.tensorboard.write_figure("learning_curves", figure, history[-1].epoch)

    def summary(
        self, history: Sequence[EpochRecord], final_eval: dict[str, np.ndarray], timing: dict
    ) -> Summary:
        """Prints the final table and writes ``summary.json``; returns the summary.

        ``final_eval`` holds ``test_loss`` / ``test_accuracy`` (P,) of the final state, or is
        empty when the run does not touch the test set (``evaluate_test=False``); the final
        table and the best member then go by the validation split.
        """
        final = {**history[-1].metrics, **{k: np.asarray(v) for k, v in final_eval.items()}}
        diverged = np.stack([rec.metrics["diverged"] for rec in history])
        diverged_epoch = [
            history[int(np.argmax(diverged[:, i]))].epoch if diverged[:, i].any() else None
            for i in range(self.size)
        ]
        healthy = np.array([d is None for d in diverged_epoch])
        split = "test" if final_eval else self.eval_split
        best = best_member(final[f"{split}_accuracy"], _running(final, healthy))
        for line in self._final_table(final, diverged_epoch, healthy, best, split):
            self.line(line)
        if timing.get("trained_epochs"):
            unit = "examples/s" if self.size == 1 else f"example·models/s ({self.size} members)"
            self.line(
                f"{timing['examples_per_second']:,.0f} {unit} on {timing['device']}; compile "
                f"{timing['compile_seconds']:.1f} s, {timing['trained_epochs']} epoch(s) in "
                f"{timing['train_seconds']:.1f} s"
            )
        summary = {
            **final,
            "epochs": history[-1].epoch,
            "diverged_epoch": diverged_epoch,
            "best_member": best,
            **timing,
        }
        self.rundir.write_summary(summary)
        if final_eval and self.eval_split != "test":  # else the last epoch's scalars hold them
            self.tensorboard.write_epoch(history[-1].epoch, final_eval)
        return summary

    def _final_table(self, final, diverged_epoch, healthy, best, split) -> list[str]:
        acc = final[f"{split}_accuracy"]
        if self.size == 1:
            status = "" if healthy[0] else f" (diverged in epoch {diverged_epoch[0]})"
            return [
                f"loss {_fmt(final['train_loss'][0])}, train acc "
                f"{final['train_accuracy'][0]:.3f}, {split} acc {acc[0]:.3f}" + status
            ]
        lines = [
            f"{'member':>6}  {'seed':>5}  {'lr':>9}  {'loss':>8}  {'train acc':>9}  "
            f"{split + ' acc':>8}  status"
        ]
        for i in range(self.size):
            status = "ok" if healthy[i] else f"diverged in epoch {diverged_epoch[i]} (frozen)"
            stopped = int(np.asarray(final.get("stopped_epoch", np.zeros(self.size)))[i])
            if healthy[i] and stopped:
                status = f"stopped after epoch {stopped} (halving)"
            lines.append(
                f"{i:>6}  {self.seeds[i]:>5}  {self.learning_rates[i]:>9.4g}  "
                f"{_fmt(final['train_loss'][i]):>8}  {final['train_accuracy'][i]:>9.3f}  "
                f"{acc[i]:>8.3f}  {status}"
            )
        if best is None:
            return [*lines, "every member diverged; no best member"]
        return [
            *lines,
            f"mean ± std over {int(healthy.sum())} healthy member(s): "
            f"loss {_fmt_mean(final['train_loss'][healthy])}, "
            f"train acc {_fmt_mean(final['train_accuracy'][healthy])}, "
            f"{split} acc {_fmt_mean(acc[healthy])}; min {split} acc {acc[healthy].min():.3f}; "
            f"best: member {best} (seed {self.seeds[best]}, lr {self.learning_rates[best]:g}) "
            f"{split} acc {acc[best]:.3f}",
        ]


def _running(metrics: dict, healthy: np.ndarray) -> np.ndarray:
    """The healthy members that successive halving did not stop (their metrics are of the last
    epoch; a stopped member's are of its rung), or all healthy ones if halving stopped each."""
    if "stopped_epoch" not in metrics:
        return healthy
    running = healthy & (np.asarray(metrics["stopped_epoch"]) == 0)
    return running if running.any() else healthy
