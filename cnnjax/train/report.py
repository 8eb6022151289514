"""What a run tells its user and leaves on disk: console lines, metric files, figure, summary.

:class:`Reporter` is the run's one writer. It formats the book's per-epoch line (for a population:
mean ± std over healthy members and the best one), the final per-member table, and turns the
metrics history into ``metrics.jsonl``/``metrics.csv``, ``learning_curves.png`` and
``summary.json`` through the :class:`~cnnjax.train.rundir.RunDir`.

The history is a list of epoch records ``{"epoch": e, "seconds": s, "metrics": {name: [P]}}``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from cnnjax.train.rundir import RunDir

__all__ = ["Reporter"]


def _fmt(value: float) -> str:
    return f"{value:.3f}" if abs(value) < 1e4 else f"{value:.2e}"


def _fmt_mean(values: np.ndarray) -> str:
    if values.size == 1:
        return _fmt(values[0])
    return f"{_fmt(values.mean())} ± {_fmt(values.std())}"


class Reporter:
    """The run's console and files.

    Args:
      rundir: where files go.
      seeds, learning_rates: per member (P), for labels and records.
      dataset: the name of the data set actually loaded (titles say what was trained on).
      eval_split: "test", or "val" when a validation split is evaluated each epoch.
      progress: show tqdm bars (lines are then written through ``tqdm.write``).
    """

    def __init__(
        self,
        rundir: RunDir,
        *,
        seeds: Sequence[int],
        learning_rates: Sequence[float],
        dataset: str,
        eval_split: str,
        progress: bool,
    ):
        self.rundir = rundir
        self.seeds, self.learning_rates = list(seeds), list(learning_rates)
        self.dataset, self.eval_split = dataset, eval_split
        self.progress = progress
        self.epoch_bar: tqdm | None = None

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

    # -- progress ------------------------------------------------------------------------------

    def open_bars(self, num_epochs: int, start_epoch: int) -> None:
        if self.progress and self.rundir.primary:
            self.epoch_bar = tqdm(
                total=num_epochs, initial=start_epoch, desc="epochs", unit="epoch", leave=False
            )

    def step_bar(self) -> tqdm | None:
        if not self.progress or not self.rundir.primary:
            return None
        return tqdm(desc="steps", unit="step", leave=False)

    def close_bars(self) -> None:
        if self.epoch_bar is not None:
            self.epoch_bar.close()
            self.epoch_bar = None

    # -- per epoch -----------------------------------------------------------------------------

    def epoch_line(self, record: dict[str, Any], num_epochs: int) -> None:
        m = {k: np.asarray(v) for k, v in record["metrics"].items()}
        healthy = ~m["diverged"]
        shown = healthy if healthy.any() else np.ones_like(healthy)
        acc = f"{self.eval_split}_accuracy"
        line = (
            f"epoch {record['epoch']:>{len(str(num_epochs))}}/{num_epochs}: "
            f"loss {_fmt_mean(m['train_loss'][shown])}, "
            f"train acc {_fmt_mean(m['train_accuracy'][shown])}, "
            f"{self.eval_split} acc {_fmt_mean(m[acc][shown])}"
        )
        if not healthy.any():
            line += " (diverged)"
        elif shown.size > 1:
            best = int(np.flatnonzero(shown)[np.argmax(m[acc][shown])])
            line += f" (best {m[acc][best]:.3f}, member {best}"
            line += f"; {int((~healthy).sum())} diverged)" if (~healthy).any() else ")"
        self.line(line + f"  [{record['seconds']:.1f} s]")
        if self.epoch_bar is not None:
            self.epoch_bar.update()

    def member_name(self, i: int) -> str:
        return f"member {i} (seed {self.seeds[i]}, learning rate {self.learning_rates[i]:g})"

    # -- files ---------------------------------------------------------------------------------

    def write_history(self, history: list[dict[str, Any]], *, figure: bool = True) -> None:
        """``metrics.jsonl``, ``metrics.csv`` and (with ``figure``) ``learning_curves.png`` from
        the history. The figure costs far more than the metrics (matplotlib), so the trainer
        draws it once per run, at the end."""
        records = []
        for rec in history:
            for i in range(self.size):
                row = {
                    "epoch": rec["epoch"],
                    "member": i,
                    "seed": self.seeds[i],
                    "learning_rate": self.learning_rates[i],
                }
                row.update({k: v[i] for k, v in rec["metrics"].items()})
                row["epoch_time_s"] = rec["seconds"]
                records.append(row)
        self.rundir.write_metrics(records)
        if not history or not figure or not self.rundir.primary:
            return
        from cnnjax.train.plotting import learning_curves  # matplotlib: off the start-up path

        curves = {
            k: [rec["metrics"][k] for rec in history]
            for k in ("train_loss", "train_accuracy", f"{self.eval_split}_accuracy")
        }
        labels = [
            f"seed {s}, lr {lr:g}" for s, lr in zip(self.seeds, self.learning_rates, strict=True)
        ]
        figure = learning_curves(
            curves, labels=labels, title=f"LeNet on {self.dataset}", eval_split=self.eval_split
        )
        self.rundir.write_figure("learning_curves.png", figure)

    def summary(
        self,
        history: list[dict[str, Any]],
        final_eval: dict[str, np.ndarray],
        timing: dict[str, Any],
    ) -> dict[str, Any]:
        """Prints the final table and writes ``summary.json``; returns the summary.

        ``final_eval`` holds ``test_loss`` / ``test_accuracy`` (P,) of the final state.
        """
        last = {k: np.asarray(v) for k, v in history[-1]["metrics"].items()}
        final = {**last, **{k: np.asarray(v) for k, v in final_eval.items()}}
        diverged = np.asarray([[bool(d) for d in rec["metrics"]["diverged"]] for rec in history])
        diverged_epoch = [
            int(history[int(np.argmax(diverged[:, i]))]["epoch"]) if diverged[:, i].any() else None
            for i in range(self.size)
        ]
        healthy = np.array([d is None for d in diverged_epoch])
        for line in self._final_table(final, diverged_epoch, healthy):
            self.line(line)
        if timing.get("trained_epochs"):
            unit = "examples/s" if self.size == 1 else f"example·models/s ({self.size} members)"
            self.line(
                f"{timing['examples_per_second']:,.0f} {unit} on {timing['device']}; compile "
                f"{timing['compile_seconds']:.1f} s, {timing['trained_epochs']} epoch(s) in "
                f"{timing['train_seconds']:.1f} s"
            )
        best = None
        if healthy.any():
            acc = final["test_accuracy"]
            best = int(np.flatnonzero(healthy)[np.argmax(acc[healthy])])
        summary = {
            **final,
            "epochs": int(history[-1]["epoch"]),
            "diverged_epoch": diverged_epoch,
            "best_member": best,
            **timing,
        }
        self.rundir.write_json("summary.json", summary)
        return summary

    def _final_table(
        self, final: dict[str, np.ndarray], diverged_epoch: list[int | None], healthy: np.ndarray
    ) -> list[str]:
        if self.size == 1:
            status = "" if healthy[0] else f" (diverged in epoch {diverged_epoch[0]})"
            return [
                f"loss {_fmt(final['train_loss'][0])}, train acc "
                f"{final['train_accuracy'][0]:.3f}, test acc {final['test_accuracy'][0]:.3f}"
                + status
            ]
        lines = [
            f"{'member':>6}  {'seed':>5}  {'lr':>9}  {'loss':>8}  {'train acc':>9}  "
            f"{'test acc':>8}  status"
        ]
        for i in range(self.size):
            status = "ok" if healthy[i] else f"diverged in epoch {diverged_epoch[i]} (frozen)"
            lines.append(
                f"{i:>6}  {self.seeds[i]:>5}  {self.learning_rates[i]:>9.4g}  "
                f"{_fmt(final['train_loss'][i]):>8}  {final['train_accuracy'][i]:>9.3f}  "
                f"{final['test_accuracy'][i]:>8.3f}  {status}"
            )
        if healthy.any():
            acc = final["test_accuracy"][healthy]
            best = int(np.flatnonzero(healthy)[np.argmax(acc)])
            lines.append(
                f"mean ± std over {int(healthy.sum())} healthy member(s): "
                f"loss {_fmt_mean(final['train_loss'][healthy])}, "
                f"train acc {_fmt_mean(final['train_accuracy'][healthy])}, "
                f"test acc {_fmt_mean(acc)}; min test acc {acc.min():.3f}; "
                f"best: member {best} (seed {self.seeds[best]}, lr "
                f"{self.learning_rates[best]:g}) test acc {final['test_accuracy'][best]:.3f}"
            )
        else:
            lines.append("every member diverged; no best member")
        return lines
