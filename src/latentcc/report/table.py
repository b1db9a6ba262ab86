"""Plain-text and Markdown result tables."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"  # a missing value (NaN, or null read back from JSON)
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def format_table(rows: Sequence[dict[str, Any]], *, markdown: bool = False) -> str:
    """Rows (dicts) as an aligned text table, or a Markdown table; columns are the union of the rows' keys.

    Missing values, NaN and None print as "-".
    """
    if not rows:
        return "(no rows)"
    keys = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_fmt(r.get(k)) for k in keys] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(keys) + " |", "|" + "|".join("---" for _ in keys) + "|"]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
        return "\n".join(lines)
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    line = "  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True))
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join([line, sep, *body])


def lcc_test_columns(gap: Mapping[str, float]) -> dict[str, float]:
    """``cc_mc_accuracy`` output on the test split as result columns.

    ``{layer}/cc_top1``, ``{layer}/mc_top1``, ``{layer}/mc_fraction`` become ``test_cc_top1``,
    ``test_mc_top1``, ``test_mc_fraction`` for one corrected layer, ``test_{layer}/cc_top1`` ... for several.
    """
    layers = list(dict.fromkeys(k.rsplit("/", 1)[0] for k in gap))
    out = {}
    for key, value in gap.items():
        layer, stat = key.rsplit("/", 1)
        out[f"test_{stat}" if len(layers) == 1 else f"test_{layer}/{stat}"] = float(value)
    return out
