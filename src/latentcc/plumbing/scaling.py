"""Exact power-of-two rescaling for data whose squared distances would overflow or underflow.

k-NN search, clustering and neural collapse depend on the data only up to a global scale, and
squares are where floats break first: float32 squares overflow beyond |x| ~ 1e19 (faiss then
returns "not found" ids) and vanish below ~1e-19 (every distance ties at 0); float64 fails near
1e154. Multiplying by a power of two changes the exponent only, so the rescaled data has exactly
the same neighbours, clusters and ratios. Data within [2^-24, 2^24] is left untouched (bitwise).
The engine applies it to rows already translated to centre each column's range on 0
(:mod:`latentcc.plumbing.arrays`): a translation is the other change that leaves distances alone.
"""

from __future__ import annotations

import math

SAFE_ABS = (2.0**-24, 2.0**24)


def pow2_scale(max_abs: float) -> float:
    """1.0 when ``max_abs`` (max |x|) is 0, non-finite or within [2^-24, 2^24]; else the power of two
    2^-e with ``max_abs * 2^-e`` in [1, 2)."""
    if max_abs == 0.0 or not math.isfinite(max_abs) or SAFE_ABS[0] <= max_abs <= SAFE_ABS[1]:
        return 1.0
    exponent = 1 - math.frexp(max_abs)[1]
    return math.ldexp(1.0, max(-1000, min(1000, exponent)))  # finite in float64 even for subnormal data
