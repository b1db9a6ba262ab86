"""Training curves as PNGs (matplotlib, headless)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from latentcc.report.figure import pyplot, save_png

# Distinct line style, marker and width per series, so that equal curves stay visible: a wide, pale
# solid line first, then narrower dashed/dotted lines with hollow markers drawn on top of it.
_STYLES = (
    {"linestyle": "-", "marker": "o", "linewidth": 4.0, "alpha": 0.45, "markersize": 8},
    {
        "linestyle": "--",
        "marker": "s",
        "linewidth": 1.8,
        "alpha": 0.95,
        "markersize": 6,
        "markerfacecolor": "none",
    },
    {
        "linestyle": ":",
        "marker": "^",
        "linewidth": 1.8,
        "alpha": 0.95,
        "markersize": 6,
        "markerfacecolor": "none",
    },
    {
        "linestyle": "-.",
        "marker": "D",
        "linewidth": 1.5,
        "alpha": 0.95,
        "markersize": 5,
        "markerfacecolor": "none",
    },
)


def _series(history: list[dict[str, Any]], key: str) -> list[float]:
    """``key`` per epoch as floats; missing values and nulls (NaN in JSON) become NaN gaps."""
    out = []
    for r in history:
        v = r.get(key)
        out.append(float(v) if isinstance(v, int | float) else math.nan)
    return out


def _integer_epochs(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers: no 1.25, 1.5 ticks


def plot_training_curves(
    history: list[dict[str, Any]], path: str | Path, *, title: str | None = None
) -> Path:
    """Loss and top-1 accuracy per epoch; with LCC (or a penalty) also the separate loss terms.

    ``train_loss`` is what was minimised: the cross-entropy alone for plain fine-tuning, or
    ``CE + w * LCC (+ penalty)``, in which case ``train_ce`` and the unweighted ``train_lcc`` (and
    ``train_penalty``) are drawn separately in a third panel.
    """
    plt = pyplot()

    epochs = [r["epoch"] for r in history]
    terms = [k for k in ("train_lcc", "train_penalty") if any(k in r for r in history)]
    fig, axes = plt.subplots(1, 3 if terms else 2, figsize=(13.5 if terms else 9, 3.6))
    ax_l, ax_a = axes[0], axes[1]
    loss_series = [("train_loss", "train loss"), ("val_loss", "val loss (CE)")]
    if terms:  # train_loss is the sum that was minimised; train_ce its task-loss part
        added = " + ".join({"train_lcc": "w·LCC", "train_penalty": "penalty"}[t] for t in terms)
        loss_series[:1] = [("train_loss", f"train total (task + {added})"), ("train_ce", "train task loss")]
    for i, (key, label) in enumerate(loss_series):
        ax_l.plot(epochs, _series(history, key), label=label, **_STYLES[i])
    for i, (key, label) in enumerate((("train_top1", "train"), ("val_top1", "val"))):
        ax_a.plot(epochs, _series(history, key), label=label, **_STYLES[i])
    ax_l.set(xlabel="epoch", ylabel="loss per sample", title="loss")
    ax_a.set(xlabel="epoch", ylabel="top-1 accuracy", title="top-1 accuracy")
    if terms:
        ax_t = axes[2]
        names = {"train_lcc": "LCC term (unweighted)", "train_penalty": "penalty (as added)"}
        for i, key in enumerate(terms):
            ax_t.plot(epochs, _series(history, key), label=names[key], **_STYLES[i + 1])
        ax_t.set(xlabel="epoch", ylabel="per sample", title="added loss terms")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
        _integer_epochs(ax)
    if title:
        fig.suptitle(title)
    return save_png(fig, path, dpi=110)


def plot_compare(
    histories: dict[str, list[dict[str, Any]]],
    path: str | Path,
    *,
    key: str = "val_top1",
    title: str | None = None,
    ylabel: str | None = None,
) -> Path:
    """One line per run of ``key`` (default validation top-1) against the epoch.

    Rows may also hold ``{key}_min`` and ``{key}_max`` (e.g. over seeds): drawn as a shaded band.
    Each run gets its own line style and marker, so identical curves do not hide each other.
    """
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for i, (label, hist) in enumerate(histories.items()):
        style = _STYLES[i % len(_STYLES)]
        epochs = [r["epoch"] for r in hist]
        (line,) = ax.plot(epochs, _series(hist, key), label=label, **style)
        lo, hi = _series(hist, f"{key}_min"), _series(hist, f"{key}_max")
        if any(math.isfinite(v) for v in lo + hi):
            ax.fill_between(epochs, lo, hi, color=line.get_color(), alpha=0.12, linewidth=0)
    ax.set(xlabel="epoch", ylabel=ylabel or key.replace("_", " "), title=title or key.replace("_", " "))
    ax.grid(alpha=0.3)
    ax.legend()
    _integer_epochs(ax)
    return save_png(fig, path, dpi=110)
