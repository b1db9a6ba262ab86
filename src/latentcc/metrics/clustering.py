"""Clusterability of latents (docs/probes.md, Clusterability; the probing paper): cluster, then score against labels.

``cluster`` partitions features with a clustering algorithm (``clustering=``: Ward, the paper's choice,
k-means or Leiden on a k-NN graph; the probes' one name for it, ``ProbeConfig.clustering``);
``clusterability`` scores such a partition against the true (sub)class labels with AMI, ARI, NMI and
purity, optionally *within each superclass* (``groups=``) and averaged over superclasses as in the paper;
``cluster_consistency`` is the ARI between two clusterings of the same samples (run-to-run or
checkpoint-to-checkpoint); ``purity`` is (1/N) sum over clusters of the size of its largest class.

A finding to reproduce with these (the paper's): superclasses made of *unrelated* (shuffled) subclasses
cluster much better than natural hierarchies, and clusterability does not track linear-probe accuracy.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np

from latentcc.config import ProbeConfig
from latentcc.graph import communities, knn_graph
from latentcc.lcc.matching import contingency
from latentcc.plumbing.errors import LatentccError, param_error
from latentcc.plumbing.validate import as_labels, as_matrix, check_choice, check_float, check_int

Clustering = Literal["ward", "kmeans", "leiden"]
CLUSTERINGS: tuple[str, ...] = typing.get_args(Clustering)

# Ward (scipy's nearest-neighbour chain under scikit-learn) holds O(N^2) float64 distances: measured peak
# ~8 N^2 bytes (N=7000, D=128: +0.5 GiB, 4 s; N=14000: +1.6 GiB, 11 s on 2 cores), so 20k points ~ 3 GiB.
# Beyond that, subsample (ProbeConfig.max_samples_per_split) or use kmeans / leiden. Per-superclass runs count
# per group.
WARD_MAX_N = 20_000
# k-means restarts from 10 k-means++ seeds and keeps the best inertia (scikit-learn's classic default; its
# "auto" is 1 run for k-means++): fewer seed-dependent partitions, so consistency measures the features.
KMEANS_N_INIT = 10
MAX_OVERCLUSTER = 5
# Leiden's k-NN graph (neighbours per point) and modularity resolution: knobs of these functions only (the
# probes always use these values).
LEIDEN_K = 15
LEIDEN_RESOLUTION = 1.0
# purity's class x cluster table is dense up to this many cells, else counted from sorted (class, cluster) pairs.
_DENSE_MAX_CELLS = 1 << 24


# --------------------------------------------------------------------------- validation (the door)


def _length(x: Any, param: str, func: str) -> int:
    shape = np.shape(x)
    if len(shape) != 1:
        raise param_error(param, func, "a 1-D array of int labels, (N,)", f"shape {shape}")
    return int(shape[0])


def _label_pair(a: Any, b: Any, func: str, pa: str, pb: str, min_n: int) -> tuple[np.ndarray, np.ndarray]:
    n = _length(a, pa, func)
    if n < min_n:
        raise param_error(pa, func, f"at least {min_n} labels", f"{n} labels")
    return as_labels(a, n, func, pa), as_labels(b, n, func, pb)


def _check_features(features: Any, func: str) -> np.ndarray:
    m = as_matrix(features, "features", func, min_rows=2)
    # Ward, k-means and k-NN graphs do not change under a translation or a global scale, but their float
    # arithmetic does: squares of |x| ~ 1e20 (float32) overflow, and a large common offset (latents around
    # 1e5 with a spread of 1e-3) drowns the distances in rounding. So features are clustered translated
    # (in float64) to centre each column's range on 0, and rescaled by a power of two when extreme.
    out = m.centred(m.work_dtype)
    assert isinstance(out, np.ndarray)  # validated without keep_device: numpy
    return out


# --------------------------------------------------------------------------- public API


def purity(labels_true: Any, labels_pred: Any) -> float:
    """Purity = (1/N) sum over predicted clusters of the size of its largest true class, in (0, 1].

    Args:
        labels_true: (N,) int class ids (any integers), N >= 1.
        labels_pred: (N,) int cluster ids, in the SAME sample order.

    Purity rises with the number of clusters (N singletons score 1): compare it at equal cluster counts.
    """
    yt, yp = _label_pair(labels_true, labels_pred, "purity", "labels_true", "labels_pred", 1)
    return _purity(yt, yp)


def cluster(
    features: Any,
    n_clusters: int | None,
    *,
    clustering: Clustering = ProbeConfig.clustering,
    seed: int = ProbeConfig.seed,
    leiden_k: int = LEIDEN_K,
    resolution: float = LEIDEN_RESOLUTION,
) -> np.ndarray:
    """Cluster the rows of ``features``; returns (N,) int64 cluster ids.

    Args:
        features: (N, D) float array or tensor, N >= 2, finite.
        n_clusters: clusters wanted, 1 <= n_clusters <= N, for ``"ward"`` and ``"kmeans"``. Ignored by
            ``"leiden"`` (pass None): there ``resolution`` decides how many communities come out.
        clustering: the algorithm: ``"ward"`` (scikit-learn AgglomerativeClustering, Euclidean Ward
            linkage; deterministic; O(N^2) memory, N <= ``WARD_MAX_N``), ``"kmeans"`` (scikit-learn KMeans,
            ``KMEANS_N_INIT`` k-means++ restarts) or ``"leiden"`` (symmetric unweighted Euclidean k-NN graph
            with k = min(leiden_k, N-1), then Leiden modularity communities; see :mod:`latentcc.graph`).
        seed: seeds k-means and Leiden (and the k-NN backend); Ward ignores it.
        leiden_k: neighbours per point of the Leiden graph.
        resolution: Leiden modularity resolution (> 0; larger gives more, smaller communities).
    """
    func = "cluster"
    x = _check_features(features, func)
    how = check_choice(clustering, "clustering", func, CLUSTERINGS)
    seed = check_int(seed, "seed", func, 0)
    n = len(x)
    if how == "leiden":
        if n_clusters is not None:
            check_int(n_clusters, "n_clusters", func, 1)  # a typo is still an error, though unused
        leiden_k = check_int(leiden_k, "leiden_k", func, 1)
        return _leiden(
            x, min(leiden_k, n - 1), check_float(resolution, "resolution", func, positive=True), seed
        )
    fix = f"Fix: at most one cluster per sample (N = {n})."
    n_clusters = check_int(n_clusters, "n_clusters", func, 1, n, fix)
    if how == "ward":
        _check_ward_size(n, func)
    return _cluster(x, n_clusters, how, seed)


def clusterability(
    features: Any,
    labels: Any,
    *,
    clustering: Clustering = ProbeConfig.clustering,
    n_clusters: int | None = None,
    groups: Any = None,
    overcluster: int = ProbeConfig.overcluster,
    seed: int = ProbeConfig.seed,
    leiden_k: int = LEIDEN_K,
    resolution: float = LEIDEN_RESOLUTION,
) -> dict[str, float]:
    """How well clustering the features recovers ``labels``: AMI, ARI, NMI and purity.

    Without ``groups``: one clustering of all N samples into ``n_clusters`` clusters (default
    ``#distinct labels * overcluster``, clipped to N), scored against ``labels``. ``labels`` needs at
    least 2 distinct values (AMI/ARI are degenerate otherwise).

    With ``groups`` (the probing paper's protocol; ``labels`` = subclass, ``groups`` = superclass per
    sample): each superclass is clustered on its own into ``#subclasses in it * overcluster`` clusters
    (clipped to the group's size), scored against its subclasses, and the scores are averaged over
    superclasses, unweighted. A superclass with a single subclass has nothing to recover (AMI is
    degenerate) and is skipped; ``n_groups`` / ``n_groups_skipped`` report how many were scored / not.
    If no superclass has 2 subclasses, LatentccError. ``n_clusters`` must then be None.

    Args:
        features: (N, D) float array or tensor, N >= 2, finite.
        labels: (N,) int (sub)class ids, same sample order.
        clustering, seed, leiden_k, resolution: as :func:`cluster` (Leiden ignores the cluster count).
        n_clusters: explicit cluster count (1..N) without ``groups``; then ``overcluster`` must be 1.
        groups: (N,) int superclass ids, or None.
        overcluster: clusters per (sub)class, an int in 1..5.

    Returns:
        ``{"ami", "ari", "nmi", "purity"}`` as floats (AMI and NMI with arithmetic normalisation, as
        scikit-learn), ``"n_clusters"`` (distinct clusters produced, summed over groups), ``"n_groups"``
        (groups scored; 1 without ``groups``) and ``"n_groups_skipped"``.
    """
    func = "clusterability"
    x = _check_features(features, func)
    n = len(x)
    y = as_labels(labels, n, func, "labels")
    how = check_choice(clustering, "clustering", func, CLUSTERINGS)
    seed = check_int(seed, "seed", func, 0)
    leiden_k = check_int(leiden_k, "leiden_k", func, 1)
    resolution = check_float(resolution, "resolution", func, positive=True)
    overcluster = check_int(overcluster, "overcluster", func, 1, MAX_OVERCLUSTER)
    n_clusters = _check_cluster_count(n_clusters, groups, overcluster, n, func)
    members, n_groups = _parts(y, None if groups is None else as_labels(groups, n, func, "groups"), func)
    if how == "ward":
        _check_ward_size(max(len(m) for m in members) if members is not None else n, func)  # before any work
    scores, made = _clusterability(x, y, members, how, n_clusters, overcluster, seed, leiden_k, resolution)
    ami, ari, nmi, pur = (float(v) for v in np.mean(np.asarray(scores), axis=0))
    return {
        "ami": ami,
        "ari": ari,
        "nmi": nmi,
        "purity": pur,
        "n_clusters": made,
        "n_groups": len(scores),
        "n_groups_skipped": n_groups - len(scores),
    }


def _check_cluster_count(n_clusters: Any, groups: Any, overcluster: int, n: int, func: str) -> int | None:
    """An explicit cluster count: only without groups and with overcluster 1, an int in 1..N; or None."""
    if n_clusters is None:
        return None
    if groups is not None:
        raise param_error(
            "n_clusters", func, "None when groups is given (each group gets #subclasses * overcluster)",
            n_clusters,
        )  # fmt: skip
    if overcluster != 1:
        raise param_error(
            "overcluster", func, "1 when n_clusters is given (the count is then explicit)", overcluster
        )
    return check_int(n_clusters, "n_clusters", func, 1, n, f"Fix: at most N = {n} clusters.")


def _parts(y: np.ndarray, groups: np.ndarray | None, func: str) -> tuple[list[np.ndarray] | None, int]:
    """The sample indices of each group that has 2+ labels (None: no groups, one part of all samples), and
    the number of groups; refuses labels or groups with nothing to recover."""
    if groups is None:
        if len(np.unique(y)) < 2:
            raise param_error(
                "labels", func, "labels with at least 2 distinct classes", "1 distinct class",
                "Clusterability against a single class is degenerate (AMI/ARI undefined).",
            )  # fmt: skip
        return None, 1
    members = _group_members(groups)
    n_groups = len(members)
    # A one-subclass superclass has nothing to recover (AMI degenerate): it is skipped (docstring).
    members = [m for m in members if y[m].min() != y[m].max()]
    if not members:
        raise param_error(
            "groups", func, "at least one group containing 2 or more distinct labels",
            f"{n_groups} group(s), each with a single label",
            "Clusterability within a group needs subclasses to recover; check labels vs groups.",
        )  # fmt: skip
    return members, n_groups


def _clusterability(
    x: np.ndarray,
    y: np.ndarray,
    members: list[np.ndarray] | None,
    how: str,
    n_clusters: int | None,
    overcluster: int,
    seed: int,
    leiden_k: int,
    resolution: float,
) -> tuple[list[tuple[float, float, float, float]], int]:
    """The scores (AMI, ARI, NMI, purity) of each part, and the distinct clusters made over all parts."""
    scores: list[tuple[float, float, float, float]] = []
    made = 0
    # Without groups the caller's array is clustered as is; with groups one group's copy exists at a time.
    parts: Iterable[tuple[np.ndarray, np.ndarray]] = (
        [(x, y)] if members is None else ((x[m], y[m]) for m in members)
    )
    for xg, yg in parts:
        if how == "leiden":
            pred = _leiden(xg, min(leiden_k, len(xg) - 1), resolution, seed)
        else:
            k = n_clusters or min(len(np.unique(yg)) * overcluster, len(xg))
            pred = _cluster(xg, k, how, seed)
        made += len(np.unique(pred))
        scores.append(_scores(yg, pred))
    return scores, made


def cluster_consistency(labels_a: Any, labels_b: Any) -> float:
    """Adjusted Rand index between two clusterings of the SAME samples (same order), in [-0.5, 1].

    1 = identical partitions up to renaming the clusters; ~0 = no more agreement than chance. Used for
    run-to-run and checkpoint-to-checkpoint consistency of cluster assignments (docs/probes.md, Clusterability).
    """
    a, b = _label_pair(labels_a, labels_b, "cluster_consistency", "labels_a", "labels_b", 2)
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(a, b))


# --------------------------------------------------------------------------- private (trust their inputs)


def _check_ward_size(n: int, func: str) -> None:
    if n > WARD_MAX_N:
        gib = 8 * n * n / 2**30  # the measured peak, see WARD_MAX_N
        raise LatentccError(
            f"{func}: clustering='ward' on {n} samples needs an O(N^2) distance matrix (~{gib:.1f} GiB); the "
            f"limit is WARD_MAX_N = {WARD_MAX_N}. Fix: subsample (ProbeConfig.max_samples_per_split / "
            "--max-samples-per-split), or use clustering='kmeans' or clustering='leiden'."
        )


def _group_members(groups: np.ndarray) -> list[np.ndarray]:
    """Sample indices of each group, groups in ascending id order, indices ascending (one stable sort)."""
    order = np.argsort(groups, kind="stable")
    bounds = np.flatnonzero(np.diff(groups[order])) + 1
    return np.split(order, bounds)


def _cluster(x: np.ndarray, n_clusters: int, clustering: str, seed: int) -> np.ndarray:
    if clustering == "ward":
        from sklearn.cluster import AgglomerativeClustering

        model: Any = AgglomerativeClustering(n_clusters=n_clusters, linkage="ward")
    else:
        from sklearn.cluster import KMeans

        model = KMeans(n_clusters=n_clusters, n_init=KMEANS_N_INIT, random_state=seed)
    return np.asarray(model.fit_predict(x), dtype=np.int64)


def _leiden(x: np.ndarray, k: int, resolution: float, seed: int) -> np.ndarray:
    graph = knn_graph(x, k, metric="l2", seed=seed)
    # until stable (-1), as the probe always ran; the LCC epoch start caps Leiden at LCCConfig.leiden_iterations
    return communities(graph, community="leiden", resolution=resolution, seed=seed, leiden_iterations=-1)


def _scores(y: np.ndarray, pred: np.ndarray) -> tuple[float, float, float, float]:
    from sklearn.metrics import (
        adjusted_mutual_info_score,
        adjusted_rand_score,
        normalized_mutual_info_score,
    )

    return (
        float(adjusted_mutual_info_score(y, pred, average_method="arithmetic")),
        float(adjusted_rand_score(y, pred)),
        float(normalized_mutual_info_score(y, pred, average_method="arithmetic")),
        _purity(y, pred),
    )


def _purity(yt: np.ndarray, yp: np.ndarray) -> float:
    # Compact ids to 0..K-1 / 0..C-1: contingency() wants non-negative ids and a table no larger than needed.
    yt = np.unique(yt, return_inverse=True)[1].reshape(-1)
    yp = np.unique(yp, return_inverse=True)[1].reshape(-1)
    k, c = int(yt.max()) + 1, int(yp.max()) + 1
    if k * c <= _DENSE_MAX_CELLS:
        largest = contingency(yt, yp, k, c).max(axis=0)
    else:  # many classes and clusters: count each (cluster, class) pair present, take the max per cluster
        pairs, counts = np.unique(yp * k + yt, return_counts=True)
        largest = np.zeros(c, dtype=np.int64)
        np.maximum.at(largest, pairs // k, counts)
    return float(largest.sum() / len(yt))
