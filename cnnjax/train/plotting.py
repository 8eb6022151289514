"""The learning-curve figure of D2L 6.6: loss, train accuracy and test accuracy per epoch."""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure

__all__ = ["plot_learning_curves"]

_CURVES = (
    ("train_loss", "train loss", "-"),
    ("train_accuracy", "train acc", "--"),
    ("test_accuracy", "test acc", "-."),
)


def plot_learning_curves(
    history: dict[str, Sequence[Sequence[float]]],
    path: str | os.PathLike,
    *,
    labels: Sequence[str] | None = None,
    title: str = "",
) -> None:
    """Writes the learning curves to ``path`` (format from its suffix, e.g. ``.png``).

    Args:
      history: ``train_loss``, ``train_accuracy`` and ``test_accuracy``, each a list over epochs
        of per-member values (E, P).
      labels: one legend label per member (P); default "member i".
      title: the figure title.

    A single model is drawn as the book draws it: the three curves on one axis over epochs 1..E.
    A population gets one panel per quantity and one curve per member. Non-finite values
    (a diverged member) are left out of the curves.
    """
    curves = {key: np.asarray(history[key], dtype=float) for key, _, _ in _CURVES}
    num_epochs, num_members = curves["train_loss"].shape
    epochs = np.arange(1, num_epochs + 1)
    labels = list(labels) if labels is not None else [f"member {i}" for i in range(num_members)]
    if num_members == 1:
        fig = Figure(figsize=(4.5, 3.5), layout="constrained")
        ax = fig.add_subplot()
        for key, label, style in _CURVES:
            ax.plot(epochs, curves[key][:, 0], style, label=label)
        ax.set_xlabel("epoch")
        ax.set_xlim(1, max(num_epochs, 2))
        ax.grid(True, alpha=0.3)
        ax.legend()
        axes = [ax]
    else:
        fig = Figure(figsize=(12, 3.8), layout="constrained")
        # A qualitative map while its colours last, then a sequential one: no colour repeats.
        cmap = matplotlib.colormaps[
            "tab10" if num_members <= 10 else "tab20" if num_members <= 20 else "viridis"
        ]
        colors = cmap(np.linspace(0, 1, num_members)) if cmap.N > 20 else cmap.colors
        axes = fig.subplots(1, len(_CURVES))
        for ax, (key, label, _) in zip(axes, _CURVES, strict=True):
            for m in range(num_members):
                ax.plot(epochs, curves[key][:, m], marker=".", label=labels[m], color=colors[m])
            ax.set_title(label)
            ax.set_xlabel("epoch")
            ax.set_xlim(1, max(num_epochs, 2))
            ax.grid(True, alpha=0.3)
        handles, names = axes[0].get_legend_handles_labels()
        fig.legend(
            handles, names, loc="outside right upper", fontsize="small", ncol=1 + num_members // 16
        )
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=120)
