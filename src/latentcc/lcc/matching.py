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

from typing import Any

import numpy as np

from latentcc.plumbing.errors import param_error
from latentcc.plumbing.validate import Labels, as_label_pair, as_owners, check_int, check_table_size


def match_clusters(y_true: Labels, y_clst: Labels, *, num_classes: int | None = None) -> np.ndarray:
    """Owner class of each cluster: its plurality class (ties -> lowest class id).

    This is exactly the paper's one-to-many max-flow matching (no capacity on the class side): a
    class may own several clusters or none.

    Args:
        y_true: (N,) true class ids >= 0, in sample-index order (labels: :mod:`latentcc.plumbing.validate`).
        y_clst: (N,) cluster ids >= 0, in the SAME sample order as ``y_true``. Ids need not be
            contiguous (< 2**31).
        num_classes: K, optional; defaults to ``max(y_true) + 1``.

    Returns:
        owners: (C,) int64, C = ``max(y_clst) + 1``; ``owners[j]`` is the class owning cluster j, or -1
        for an id j that no sample carries (an empty cluster is owned by no class).
    """
    yt, yc = as_label_pair(y_true, y_clst, "match_clusters")
    k = _num_labels(num_classes, yt, "num_classes", "match_clusters", "y_true")
    check_table_size(k, int(yc.max()) + 1, "match_clusters")
    return match_clusters_trusted(yt, yc, k)


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
    yt, yc = as_label_pair(y_true, y_clst, "contingency")
    k = _num_labels(num_classes, yt, "num_classes", "contingency", "y_true")
    c = _num_labels(num_clusters, yc, "num_clusters", "contingency", "y_clst")
    check_table_size(k, c, "contingency")
    return contingency_trusted(yt, yc, k, c)


def cc_mask(y_true: Labels, y_clst: Labels, owners: Labels) -> np.ndarray:
    """Correctly-clustered mask: True where the sample's cluster is owned by its class.

    Args:
        y_true, y_clst: (N,) labels in the SAME sample order.
        owners: (C,) owner class per cluster (from :func:`match_clusters`; -1 = owned by no class),
            C > ``max(y_clst)``.

    Returns:
        (N,) bool; the misclustered (MC) mask is its negation.
    """
    yt, yc = as_label_pair(y_true, y_clst, "cc_mask")
    return cc_mask_trusted(yt, yc, as_owners(owners, "cc_mask", num_clusters=int(yc.max()) + 1))


def orphan_classes(owners: Labels, num_classes: int) -> np.ndarray:
    """Classes in ``0..num_classes-1`` that own no cluster (docs/algorithms.md, LCC item 8).

    Args:
        owners: (C,) owner class per cluster (-1 = none), every owner < ``num_classes``.
        num_classes: K >= 1.

    Returns:
        (n_orphans,) int64 class ids, ascending.
    """
    num_classes = check_int(num_classes, "num_classes", "orphan_classes", 1)
    own = as_owners(owners, "orphan_classes")
    if own.size and int(own.max()) >= num_classes:
        raise param_error(
            "owners", "orphan_classes", f"class ids < num_classes={num_classes}", f"an owner {int(own.max())}",
            "Pass num_classes = the number of classes (max class id + 1).",
        )  # fmt: skip
    return orphan_classes_trusted(own, num_classes)


def _num_labels(n: Any, labels: np.ndarray, param: str, func: str, of: str) -> int:
    need = int(labels.max()) + 1
    if n is None:
        return need
    return check_int(n, param, func, need, fix=f"Pass None or an int > max({of}) = {need - 1}.")


# ---------------------------------------------------------------- trusting twins (validated int64 inputs)


def contingency_trusted(yt: np.ndarray, yc: np.ndarray, k: int, c: int) -> np.ndarray:
    """:func:`contingency` of int64 labels in ``[0, k)`` and ``[0, c)``."""
    return np.bincount(yt * c + yc, minlength=k * c).reshape(k, c)


def match_clusters_trusted(yt: np.ndarray, yc: np.ndarray, k: int | None = None) -> np.ndarray:
    """:func:`match_clusters` of validated int64 labels (the epoch start and ``lcc_targets`` call it)."""
    table = contingency_trusted(yt, yc, int(yt.max()) + 1 if k is None else k, int(yc.max()) + 1)
    # argmax returns the first maximum, i.e. the lowest class id on ties.
    owners = table.argmax(axis=0).astype(np.int64)
    owners[table.sum(axis=0) == 0] = -1
    return owners


def cc_mask_trusted(yt: np.ndarray, yc: np.ndarray, owners: np.ndarray) -> np.ndarray:
    """:func:`cc_mask` of validated labels and owners (C > max(yc))."""
    return owners[yc] == yt


def orphan_classes_trusted(owners: np.ndarray, k: int) -> np.ndarray:
    """:func:`orphan_classes` of validated owners; owners >= k are ignored."""
    owned = np.zeros(k, dtype=bool)
    valid = owners[(owners >= 0) & (owners < k)]
    owned[valid] = True
    return np.flatnonzero(~owned).astype(np.int64)
