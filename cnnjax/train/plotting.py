"""The learning-curve figure of D2L 6.6: loss, train accuracy and test (or validation) accuracy
per epoch."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure

__all__ = ["learning_curves"]


def learning_curves(
    history: dict[str, Sequence[Sequence[float]]],
    *,
    labels: Sequence[str] | None = None,
    title: str = "",
    eval_split: str = "test",
) -> Figure:
    """The learning-curve figure (the caller saves it, e.g. through the run directory).

    Args:
      history: ``train_loss``, ``train_accuracy`` and ``<eval_split>_accuracy``, each a list over
        epochs of per-member values (E, P).
      labels: one legend label per member (P); default "member i".
      title: the figure title.
      eval_split: the split evaluated each epoch: "test", or "val" when a validation split is
        held out.

    A single model is drawn as the book draws it: the three curves on one axis over epochs 1..E.
    A population gets one panel per quantity and one curve per member. Non-finite values
    (a diverged member) are left out of the curves.
    """
    curve_specs = (
        ("train_loss", "train loss", "-"),
        ("train_accuracy", "train acc", "--"),
        (f"{eval_split}_accuracy", f"{eval_split} acc", "-."),
    )
    curves = {key: np.asarray(history[key], dtype=float) for key, _, _ in curve_specs}
    num_epochs, num_members = curves["train_loss"].shape
    epochs = np.arange(1, num_epochs + 1)
    labels = list(labels) if labels is not None else [f"member {i}" for i in range(num_members)]
    if num_members == 1:
        fig = Figure(figsize=(4.5, 3.5), layout="constrained")
        ax = fig.add_subplot()
        for key, label, style in curve_specs:
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
        axes = fig.subplots(1, len(curve_specs))
        for ax, (key, label, _) in zip(axes, curve_specs, strict=True):
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
    return fig
