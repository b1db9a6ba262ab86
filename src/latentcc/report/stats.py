"""Summary statistics over seeds."""

from __future__ import annotations

import math

import numpy as np


def mean_ci(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the t confidence interval (NaN half-width for a single value)."""
    from scipy import stats

    a = np.asarray(values, dtype=float)
    if a.size < 2:
        return float(a.mean()), float("nan")
    half = stats.t.ppf(0.5 + level / 2, a.size - 1) * a.std(ddof=1) / math.sqrt(a.size)
    return float(a.mean()), float(half)
