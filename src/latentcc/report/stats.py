"""Summary statistics over seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the t confidence interval (NaN half-width for a single value)."""
    from scipy import stats

    a = np.asarray(values, dtype=float)
    if a.size < 2:
        return float(a.mean()), float("nan")
    half = stats.t.ppf(0.5 + level / 2, a.size - 1) * a.std(ddof=1) / math.sqrt(a.size)
    return float(a.mean()), float(half)


def paired_difference(treated: Sequence[float], baseline: Sequence[float]) -> dict[str, Any]:
    """Per-seed ``treated - baseline`` with its mean and 95 % t interval, as plain numbers.

    Returns ``{"mean", "ci95_half", "ci95_low", "ci95_high", "n", "per_seed"}``; the interval fields are
    NaN with fewer than two pairs (one difference has no spread to estimate).
    """
    diffs = [float(a) - float(b) for a, b in zip(treated, baseline, strict=True)]
    mean, half = mean_ci(diffs)
    return {
        "mean": mean,
        "ci95_half": half,
        "ci95_low": mean - half,
        "ci95_high": mean + half,
        "n": len(diffs),
        "per_seed": diffs,
    }


def conclusion(diff: dict[str, Any], *, treated: str, baseline: str, metric: str) -> str:
    """One plain sentence on a :func:`paired_difference` of accuracies (shown in percentage points)."""
    n, lo, hi = diff["n"], diff["ci95_low"], diff["ci95_high"]
    if n < 2 or not (math.isfinite(lo) and math.isfinite(hi)):
        return (
            f"With {n} seed there is no confidence interval, so no conclusion: run more seeds "
            f"to compare {treated} with {baseline}."
        )
    ci = f"95% CI [{100 * lo:+.2f}, {100 * hi:+.2f}] points over {n} seeds"
    if lo > 0:
        return f"{treated} improved {metric} over {baseline} by {100 * diff['mean']:.2f} points on average ({ci})."
    if hi < 0:
        return (
            f"{treated} lowered {metric} compared with {baseline} by {-100 * diff['mean']:.2f} points ({ci})."
        )
    return (
        f"No difference detected between {treated} and {baseline} in {metric}: mean difference "
        f"{100 * diff['mean']:+.2f} points, {ci}, which includes 0."
    )
