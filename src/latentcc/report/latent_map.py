"""2-D maps of a layer's latents: coloured by class, misclustered samples marked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from latentcc.report.figure import palette, pyplot, save_png


def pca_2d(x: np.ndarray) -> np.ndarray:
    """(N, D) -> (N, 2) scores on the first two principal components (exact SVD of the centred data).

    Always two columns: with fewer than two components (D = 1, or a single sample) the missing one is 0,
    so a 1-wide layer (a binary head's logit) is drawn on a line instead of breaking the plot.
    """
    xc = x - x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    xy = xc @ vt[:2].T
    return np.pad(xy, ((0, 0), (0, 2 - xy.shape[1]))) if xy.shape[1] < 2 else xy


def plot_latent_maps(
    panels: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
    path: str | Path,
    *,
    classes: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """One scatter per panel ``(title, xy (N, 2), labels (N,), mc (N,) bool)``; MC samples drawn as black x."""
    plt = pyplot()

    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6), squeeze=False)
    colours = palette(
        max(int(p[2].max()) for p in panels) + 1, "class"
    )  # same class, same colour in every panel
    for ax, (name, xy, y, mc) in zip(axes[0], panels, strict=True):
        for c in np.unique(y):
            sel = (y == c) & ~mc
            label = classes[c] if classes is not None else str(c)
            ax.scatter(xy[sel, 0], xy[sel, 1], s=5, color=colours[int(c)], alpha=0.6, label=label)
        ax.scatter(
            xy[mc, 0], xy[mc, 1], s=12, marker="x", color="black", linewidths=0.7, label="misclustered"
        )
        ax.set(title=f"{name}: {mc.mean():.1%} misclustered", xticks=[], yticks=[])
    axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, markerscale=2, frameon=False)
    if title:
        fig.suptitle(title)
    return save_png(fig, path, dpi=100)
