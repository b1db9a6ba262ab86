"""Community detection on the k-NN graph (LCC step 3): seeded Leiden / Louvain maximising modularity.

Labels are canonical: 0 is the largest community, ties broken by the smallest member index, so equal
partitions give equal arrays whatever the algorithm's internal numbering.
"""

from __future__ import annotations

import random
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from latentcc.config import LCCConfig
from latentcc.plumbing.errors import param_error, require
from latentcc.plumbing.validate import as_adjacency, as_labels, check_choice, check_float, check_int

Community = Literal["leiden", "louvain", "leidenalg"]
COMMUNITIES: tuple[str, ...] = ("leiden", "louvain", "leidenalg")


# --------------------------------------------------------------------------- public API


def communities(
    graph: sp.spmatrix | sp.sparray,
    *,
    community: Community = LCCConfig.community,
    resolution: float = LCCConfig.resolution,
    seed: int = LCCConfig.seed,
    initial: np.ndarray | None = None,
    leiden_iterations: int = LCCConfig.leiden_iterations,
) -> np.ndarray:
    """Partition a graph into communities maximising (generalised) modularity; seeded and deterministic.

    Args:
        graph: (N, N) symmetric scipy sparse adjacency (e.g. :func:`~latentcc.graph.knn_graph`); weights are
            used unless every entry is 1; the diagonal (self loops) is ignored.
        community: the algorithm: ``"leiden"`` (igraph's built-in ``community_leiden``, modularity
            objective; the fastest), ``"louvain"`` (igraph ``community_multilevel``) or ``"leidenalg"``
            (the leidenalg package).
        resolution: modularity resolution gamma > 0; larger gives more, smaller communities.
        seed: seeds the algorithm; the caller's ``random`` module state is left untouched.
        initial: (N,) non-negative ids, a previous partition to start from (warm start; leiden and
            leidenalg only: Louvain cannot start from a partition and raises).
        leiden_iterations: Leiden passes; -1 = until a pass changes nothing (leiden, leidenalg). Louvain
            always runs to convergence: with it, leave this at its default.

    Returns:
        (N,) int64 labels 0..C-1, numbered by decreasing community size (ties: smallest member index).
    """
    func = "communities"
    community = check_choice(community, "community", func, COMMUNITIES)
    g = as_adjacency(graph, func)
    n = g.shape[0]
    res = check_float(resolution, "resolution", func, positive=True, what=_RESOLUTION)
    seed = check_int(seed, "seed", func, 0)
    iterations = check_int(leiden_iterations, "leiden_iterations", func, -1, fix=_ITERATIONS_FIX)
    if iterations == 0:
        raise param_error("leiden_iterations", func, _ITERATIONS, iterations, _ITERATIONS_FIX)
    if community == "louvain" and iterations != LCCConfig.leiden_iterations:
        raise param_error(
            "leiden_iterations", func,
            f"left at its default ({LCCConfig.leiden_iterations}) with community='louvain' (it runs to convergence)",
            iterations,
        )  # fmt: skip
    init = None
    if initial is not None:
        if community == "louvain":
            raise param_error(
                "initial", func, "None with community='louvain' (igraph's Louvain has no warm start)", "an array",
                "Fix: use community='leiden' to start from a previous partition.",
            )  # fmt: skip
        init = as_labels(initial, n, func, "initial", non_negative=True)
    return communities_trusted(g, community, res, seed, init, iterations)


_RESOLUTION = "a finite float > 0 (1.0 = standard modularity)"
_ITERATIONS = "a non-zero int (-1 = until stable)"
_ITERATIONS_FIX = "Fix: a positive number of passes, or -1 (until stable)."


def modularity(
    graph: sp.spmatrix | sp.sparray, labels: np.ndarray, resolution: float = LCCConfig.resolution
) -> float:
    """Newman modularity Q = sum_c [ L_c / 2m - gamma (K_c / 2m)^2 ] of a partition of an undirected graph.

    L_c: sum of the adjacency within community c over ordered pairs; K_c: its total (weighted) degree;
    2m: the sum of all entries. Self loops are ignored, as in :func:`communities`. NaN for a graph with no edges.

    Args:
        graph: (N, N) symmetric scipy sparse adjacency with non-negative weights.
        labels: (N,) non-negative integer community ids.
        resolution: gamma > 0.
    """
    func = "modularity"
    g = as_adjacency(graph, func)
    lab = as_labels(labels, g.shape[0], func, "labels", non_negative=True)
    return _modularity(g, lab, check_float(resolution, "resolution", func, positive=True, what=_RESOLUTION))


# --------------------------------------------------------------------------- private fast path (trusts inputs)


def _modularity(g: sp.csr_matrix, labels: np.ndarray, resolution: float) -> float:
    coo = g.tocoo()
    off = coo.row != coo.col
    row, col, w = coo.row[off], coo.col[off], coo.data[off]
    two_m = w.sum()
    if two_m == 0:
        return float("nan")
    c = int(labels.max()) + 1
    same = labels[row] == labels[col]
    internal = np.bincount(labels[row[same]], weights=w[same], minlength=c)
    strength = np.bincount(labels, weights=np.bincount(row, weights=w, minlength=g.shape[0]), minlength=c)
    return float(internal.sum() / two_m - resolution * np.square(strength / two_m).sum())


def _to_igraph(graph: sp.csr_matrix) -> Any:
    """igraph.Graph with each undirected edge once (upper triangle) and a "weight" attribute if weighted.

    Edges are streamed to igraph as Python int pairs, generated from the CSR arrays a block of rows at a
    time. igraph reads an (E, 2) ndarray row by row as Python objects (slower), and one ``tolist()`` of
    all edges holds every pair as Python ints at once. Measured (igraph 1.0, 2 shared cores): 1.83M edges
    (k=50, N=50k) 0.31 s with one zip of ``tolist()`` vs 1.50 s for the ndarray; 19.8M edges (k=500,
    N=40k) 4.3 s and +0.55 GiB peak streamed in blocks vs 7.5 s and +1.3 GiB for one ``tolist()``.
    """
    ig = require("igraph", "graph", purpose="community detection")
    n = graph.shape[0]
    weighted = graph.nnz > 0 and not np.all(graph.data == 1.0)
    weights: list[np.ndarray] = []

    def upper_edges() -> Any:  # each undirected edge once: (i,j) and (j,i) would be a multi-edge
        indptr, indices = graph.indptr, graph.indices
        for start in range(0, n, _EDGE_BLOCK_ROWS):
            stop = min(n, start + _EDGE_BLOCK_ROWS)
            lo, hi = indptr[start], indptr[stop]
            rows = np.repeat(np.arange(start, stop), np.diff(indptr[start : stop + 1]))
            cols = indices[lo:hi]
            keep = cols > rows
            if weighted:
                weights.append(graph.data[lo:hi][keep])
            yield from zip(rows[keep].tolist(), cols[keep].tolist(), strict=True)

    g = ig.Graph(n=n, edges=upper_edges())
    if weighted:
        g.es["weight"] = np.concatenate(weights).astype(np.float64).tolist()
    return g


# Rows of the CSR matrix turned into Python edge pairs at a time (bounds the transient Python objects).
_EDGE_BLOCK_ROWS = 4096


def _canonical(labels: np.ndarray) -> np.ndarray:
    """Renumber communities by decreasing size, ties by smallest member index."""
    uniq, first, inverse, sizes = np.unique(
        labels, return_index=True, return_inverse=True, return_counts=True
    )
    order = np.lexsort((first, -sizes))  # last key is primary
    rank = np.empty(uniq.size, dtype=np.int64)
    rank[order] = np.arange(uniq.size)
    return rank[inverse.reshape(-1)]


def communities_trusted(
    graph: sp.csr_matrix,
    community: str,
    resolution: float,
    seed: int,
    initial: np.ndarray | None,
    leiden_iterations: int,
) -> np.ndarray:
    """:func:`communities` of validated inputs: a canonical symmetric CSR graph with non-negative finite
    weights (:func:`~latentcc.plumbing.validate.as_adjacency`, or :func:`~latentcc.graph.knn_graph`'s output),
    non-negative int64 ``initial`` ids or None (never with Louvain)."""
    g = _to_igraph(graph)
    weights = "weight" if "weight" in g.es.attributes() else None
    # Compact ids to 0..C-1: igraph and leidenalg index their community tables by id.
    init = None if initial is None else np.unique(initial, return_inverse=True)[1].reshape(-1).tolist()
    if community == "leidenalg":
        la = require("leidenalg", "graph", purpose="community detection with community='leidenalg'")
        if resolution == 1.0:
            kind, kw = la.ModularityVertexPartition, {}
        else:
            kind, kw = la.RBConfigurationVertexPartition, {"resolution_parameter": resolution}
        part = la.find_partition(
            g, kind, initial_membership=init, weights=weights, n_iterations=leiden_iterations, seed=seed, **kw
        )
        return _canonical(np.asarray(part.membership, dtype=np.int64))
    ig = require("igraph", "graph", purpose="community detection")
    # igraph's algorithms draw from a Python RNG object (the `random` module by default, checked in igraph 1.0:
    # seeding `random` makes runs repeat). Give it a private generator seeded here, so the result depends on
    # `seed` only and the caller's `random` state is never touched, then hand back the default module.
    ig.set_random_number_generator(random.Random(seed))
    try:
        if community == "leiden":
            # objective_function="modularity" is essential: igraph's default (CPM) at resolution 1 on an
            # unweighted graph returns N singletons.
            cl = g.community_leiden(
                objective_function="modularity",
                weights=weights,
                resolution=resolution,
                initial_membership=init,
                n_iterations=leiden_iterations,
            )
        else:
            cl = g.community_multilevel(weights=weights, resolution=resolution)
    finally:
        ig.set_random_number_generator(random)
    return _canonical(np.asarray(cl.membership, dtype=np.int64))
