"""Training curves as a PNG (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latentcc.report.figure import pyplot, save_png


def plot_training_curves(
    history: list[dict[str, Any]], path: str | Path, *, title: str | None = None
) -> Path:
    """Loss (train/val) and accuracy (train/val top-1) per epoch, side by side."""
    plt = pyplot()

    epochs = [r["epoch"] for r in history]
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(9, 3.4))
    for key, style in (("train_loss", "-o"), ("val_loss", "--s")):
        ax_l.plot(epochs, [float(r.get(key, "nan")) for r in history], style, label=key.replace("_", " "))
    for key, style in (("train_top1", "-o"), ("val_top1", "--s")):
        ax_a.plot(epochs, [float(r.get(key, "nan")) for r in history], style, label=key.replace("_", " "))
    ax_l.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_a.set(xlabel="epoch", ylabel="accuracy", title="top-1 accuracy")
    for ax in (ax_l, ax_a):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_xticks(epochs)
    if title:
        fig.suptitle(title)
    return save_png(fig, path, dpi=110)


def plot_compare(
    histories: dict[str, list[dict[str, Any]]],
    path: str | Path,
    *,
    key: str = "val_top1",
    title: str | None = None,
) -> Path:
    """One line per run of ``key`` (default validation top-1) against the epoch."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for label, hist in histories.items():
        ax.plot([r["epoch"] for r in hist], [float(r.get(key, "nan")) for r in hist], "-o", label=label)
    ax.set(xlabel="epoch", ylabel=key.replace("_", " "), title=title or key.replace("_", " "))
    ax.grid(alpha=0.3)
    ax.legend()
    return save_png(fig, path, dpi=110)
