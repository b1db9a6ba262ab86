"""Headless matplotlib, and figures saved atomically as PNG."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from latentcc.atomic import atomic_write_bytes


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
