"""Headless matplotlib, and figures saved atomically as PNG."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from latentcc.plumbing.atomic import atomic_write_bytes
from latentcc.plumbing.errors import param_error


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed); imported lazily."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: str | Path, *, dpi: int = 110) -> Path:
    """Lay out, render to PNG in memory, write atomically, close the figure."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    pyplot().close(fig)
    return atomic_write_bytes(path, buf.getvalue())


# tab20b (five hue groups x four shades): muted colours unlike tab10's, so a cluster is never read as
# "the class drawn in the same colour". Neighbouring ids alternate dark and light shades of different hues.
_CLUSTER_ORDER = (0, 6, 9, 15, 17, 2, 4, 11, 13, 19, 1, 7, 8, 14, 16, 3, 5, 10, 12, 18)


def palette(n: int, kind: str = "class") -> list[tuple[float, float, float, float]]:
    """``n`` distinct RGBA colours: ``kind="class"`` (tab10/tab20) or ``"cluster"`` (tab20b, muted).

    Classes and clusters get different palettes on purpose: cluster ids are arbitrary, and the same
    colour on both maps would suggest a cluster-class match that does not exist. Above 20 colours
    both sample the continuous 'turbo' map instead of repeating colours.
    """
    if kind not in ("class", "cluster"):
        raise param_error("kind", "palette", "'class' or 'cluster'", kind)
    plt = pyplot()
    if n > 20:
        turbo = plt.get_cmap("turbo")
        return [turbo(0.05 + 0.9 * i / (n - 1)) for i in range(n)]
    if kind == "cluster":
        cmap = plt.get_cmap("tab20b")
        return [cmap(_CLUSTER_ORDER[i]) for i in range(n)]
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i) for i in range(n)]
