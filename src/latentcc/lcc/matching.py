"""Cluster <-> class matching and the correctly-clustered (CC) / misclustered (MC) split.

docs/algorithms.md, LCC items 4-5. The LCC paper matches clusters to classes with a "one-to-many max-flow"
(source -> cluster, capacity 1; cluster -> class, capacity 1, cost -count; class -> sink, no
capacity). With no capacity on the class side the clusters do not compete, so the min-cost max-flow
gives every cluster to a class with the largest count in it: the cluster's *plurality* class. That is
an argmax per column of the class x cluster contingency table, O(N) with ``np.bincount``.

Sample order: every function here takes ``y_true`` and ``y_clst`` in the SAME sample order (row i of
both is dataset sample i). The original LCC code compared labels from two differently ordered passes
over the data and marked most samples misclustered; keep one index space.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np
import torch

from latentcc.plumbing.arrays import to_numpy
from latentcc.plumbing.errors import LatentccError, param_error

Labels: TypeAlias = np.ndarray | torch.Tensor | Sequence[int]

# Labels are combined as y_true * C + y_clst in int64; ids < 2**31 keep that far from overflow.
_MAX_LABEL = 2**31
# The dense contingency table holds K * C int64 counts; beyond this it is a sign of sparse cluster ids.
_MAX_CELLS = 2**28


def match_clusters(y_true: Labels, y_clst: Labels, *, num_classes: int | None = None) -> np.ndarray:
    """Owner class of each cluster: its plurality class (ties -> lowest class id).

    This is exactly the paper's one-to-many max-flow matching (no capacity on the class side): a
    class may own several clusters or none.

    Args:
        y_true: (N,) true class ids >= 0, in sample-index order.
        y_clst: (N,) cluster ids >= 0, in the SAME sample order as ``y_true``. Ids need not be
            contiguous (< 2**31).
        num_classes: K, optional; defaults to ``max(y_true) + 1``.

    Returns:
        owners: (C,) int64, C = ``max(y_clst) + 1``; ``owners[j]`` is the class owning cluster j, or -1
        for an id j that no sample carries (an empty cluster is owned by no class).
    """
    yt, yc = _check_pair(y_true, y_clst, "match_clusters")
    k = _num_labels(num_classes, yt, "num_classes", "match_clusters", "y_true")
    c = int(yc.max()) + 1
    _check_cells(k, c, "match_clusters")
    return _owners(_contingency(yt, yc, k, c))


def contingency(
    y_true: Labels, y_clst: Labels, num_classes: int | None = None, num_clusters: int | None = None
) -> np.ndarray:
    """Class x cluster count table: ``table[a, j]`` = number of samples of class a in cluster j.

    Args:
        y_true, y_clst: (N,) non-negative int labels, in the SAME sample order.
        num_classes, num_clusters: K and C, default ``max + 1`` of the respective labels.

    Returns:
        (K, C) int64 counts (sums to N).
    """
    yt, yc = _check_pair(y_true, y_clst, "contingency")
    k = _num_labels(num_classes, yt, "num_classes", "contingency", "y_true")
    c = _num_labels(num_clusters, yc, "num_clusters", "contingency", "y_clst")
    _check_cells(k, c, "contingency")
    return _contingency(yt, yc, k, c)


def cc_mask(y_true: Labels, y_clst: Labels, owners: Labels) -> np.ndarray:
    """Correctly-clustered mask: True where the sample's cluster is owned by its class.

    Args:
        y_true, y_clst: (N,) labels in the SAME sample order.
        owners: (C,) owner class per cluster (from :func:`match_clusters`; -1 = owned by no class),
            C > ``max(y_clst)``.

    Returns:
        (N,) bool; the misclustered (MC) mask is its negation.
    """
    yt, yc = _check_pair(y_true, y_clst, "cc_mask")
    own = check_owners(owners, "cc_mask", num_clusters=int(yc.max()) + 1)
    return own[yc] == yt


def orphan_classes(owners: Labels, num_classes: int) -> np.ndarray:
    """Classes in ``0..num_classes-1`` that own no cluster (docs/algorithms.md, LCC item 8).

    Args:
        owners: (C,) owner class per cluster (-1 = none), every owner < ``num_classes``.
        num_classes: K >= 1.

    Returns:
        (n_orphans,) int64 class ids, ascending.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer) or num_classes < 1:
        raise param_error("num_classes", "orphan_classes", "an int >= 1", num_classes)
    own = check_owners(owners, "orphan_classes")
    if own.size and int(own.max()) >= num_classes:
        raise param_error(
            "owners",
            "orphan_classes",
            f"class ids < num_classes={num_classes}",
            f"an owner {int(own.max())}",
            "Pass num_classes = the number of classes (max class id + 1).",
        )
    return _orphans(own, int(num_classes))


# ---------------------------------------------------------------- private: trust their inputs


def _contingency(yt: np.ndarray, yc: np.ndarray, k: int, c: int) -> np.ndarray:
    return np.bincount(yt * c + yc, minlength=k * c).reshape(k, c)


def _owners(table: np.ndarray) -> np.ndarray:
    # argmax returns the first maximum, i.e. the lowest class id on ties.
    owners = table.argmax(axis=0).astype(np.int64)
    owners[table.sum(axis=0) == 0] = -1
    return owners


def _orphans(owners: np.ndarray, k: int) -> np.ndarray:
    owned = np.zeros(k, dtype=bool)
    valid = owners[(owners >= 0) & (owners < k)]
    owned[valid] = True
    return np.flatnonzero(~owned).astype(np.int64)


# ---------------------------------------------------------------- validation (shared with targets.py)


def check_labels(x: Any, param: str, func: str) -> np.ndarray:
    """(N,) int64 labels (no copy when already int64 numpy); raises LatentccError naming ``param`` and ``func``."""
    arr = to_numpy(x, param, func)
    if arr.ndim != 1 or arr.size == 0:
        raise param_error(param, func, "a non-empty 1-D array of int labels, (N,)", f"shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise param_error(
            param, func, "an integer array", f"dtype {arr.dtype}", "Cast it, e.g. labels.astype(np.int64)."
        )
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= _MAX_LABEL:
        raise param_error(
            param,
            func,
            "labels in [0, 2**31)",
            f"labels in [{lo}, {hi}]",
            "Relabel, e.g. np.unique(labels, return_inverse=True)[1].",
        )
    return arr.astype(np.int64, copy=False)


def check_owners(owners: Any, func: str, *, num_clusters: int | None = None) -> np.ndarray:
    """(C,) int64 owners, values >= -1, with C >= ``num_clusters`` when given."""
    arr = to_numpy(owners, "owners", func)
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise param_error(
            "owners",
            func,
            "a 1-D integer array, one owner class per cluster",
            f"shape {arr.shape}, {arr.dtype}",
        )
    arr = arr.astype(np.int64, copy=False)
    if arr.size and int(arr.min()) < -1:
        raise param_error("owners", func, "class ids >= 0 (or -1 for no owner)", f"an owner {int(arr.min())}")
    if num_clusters is not None and arr.size < num_clusters:
        raise param_error(
            "owners",
            func,
            f"one entry per cluster id in y_clst (length >= max(y_clst) + 1 = {num_clusters})",
            f"length {arr.size}",
            "Compute owners with match_clusters on the same labels.",
        )
    return arr


def _check_pair(y_true: Any, y_clst: Any, func: str) -> tuple[np.ndarray, np.ndarray]:
    yt = check_labels(y_true, "y_true", func)
    yc = check_labels(y_clst, "y_clst", func)
    if yt.shape != yc.shape:
        raise param_error(
            "y_clst",
            func,
            f"the same length as y_true ({yt.size}), in the same sample order",
            f"length {yc.size}",
        )
    return yt, yc


def _num_labels(n: Any, labels: np.ndarray, param: str, func: str, of: str) -> int:
    need = int(labels.max()) + 1
    if n is None:
        return need
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < need:
        raise param_error(param, func, f"None or an int > max({of}) = {need - 1}", n)
    return int(n)


def _check_cells(k: int, c: int, func: str) -> None:
    if k * c > _MAX_CELLS:
        raise LatentccError(
            f"{func}: the class x cluster table would have {k} x {c} cells; cluster ids look sparse. "
            "Relabel them contiguously first: y_clst = np.unique(y_clst, return_inverse=True)[1]."
        )
