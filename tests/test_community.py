"""Community detection on k-NN graphs: recovery of known blobs, seeding, pitfalls, modularity vs networkx."""

from __future__ import annotations

import random

import numpy as np
import pytest
import scipy.sparse as sp

pytest.importorskip("igraph")
pytest.importorskip("faiss")

from sklearn.metrics import adjusted_mutual_info_score as ami

from latentcc.graph import communities, knn_graph, modularity
from latentcc.graph.community import _canonical, _to_igraph
from latentcc.plumbing.errors import LatentccError

COMMUNITIES = ["leiden", "louvain", "leidenalg"]


@pytest.fixture(scope="module")
def blob_points() -> tuple[np.ndarray, np.ndarray]:
    """8 well-separated Gaussian blobs x 150 points in 16-d, and the blob ids."""
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=6.0, size=(8, 16))
    y = np.repeat(np.arange(8), 150)
    return (centres[y] + rng.normal(size=(len(y), 16))).astype(np.float32), y


@pytest.fixture(scope="module")
def blobs(blob_points) -> tuple[sp.csr_matrix, np.ndarray]:
    """The blobs' unweighted k=10 graph and the blob ids."""
    x, y = blob_points
    return knn_graph(x, 10), y


def ring(n: int) -> sp.csr_matrix:
    i = np.arange(n)
    return sp.csr_matrix((np.ones(2 * n), (np.r_[i, (i + 1) % n], np.r_[(i + 1) % n, i])), shape=(n, n))


@pytest.mark.parametrize("method", COMMUNITIES)
def test_recovers_blobs(blobs, method):
    if method == "leidenalg":
        pytest.importorskip("leidenalg")
    graph, y = blobs
    labels = communities(graph, community=method, seed=0)
    score = ami(y, labels)
    print(f"{method}: {labels.max() + 1} communities, AMI {score:.4f}")
    assert score > 0.95
    assert labels.dtype == np.int64 and labels.shape == y.shape
    sizes = np.bincount(labels)
    assert labels.min() == 0 and (sizes > 0).all() and (np.diff(sizes) <= 0).all()  # canonical numbering


def test_weighted_graph_recovers_blobs(blob_points):
    x, y = blob_points
    labels = communities(knn_graph(x, 10, weighted=True))
    assert ami(y, labels) > 0.95


@pytest.mark.parametrize("method", COMMUNITIES)
def test_seeded_deterministic_and_callers_random_untouched(blobs, method):
    if method == "leidenalg":
        pytest.importorskip("leidenalg")
    graph, _ = blobs
    random.seed(123)
    state = random.getstate()
    a = communities(graph, community=method, seed=7)
    assert random.getstate() == state  # the caller's RNG neither advanced nor reseeded
    random.seed(999)  # the result depends on `seed` only, not on the global RNG
    b = communities(graph, community=method, seed=7)
    np.testing.assert_array_equal(a, b)


def test_seed_changes_the_run_on_an_ambiguous_graph():
    # A ring of 60 nodes has many equally good partitions: different seeds pick different ones.
    g = ring(60)
    runs = {tuple(communities(g, seed=s)) for s in range(6)}
    assert len(runs) > 1
    assert len({tuple(communities(g, seed=3)) for _ in range(3)}) == 1


def test_cpm_default_gives_singletons_but_we_use_modularity(blobs):
    graph, _ = blobs
    g = _to_igraph(graph)
    random.seed(0)
    cpm = g.community_leiden()  # igraph's default objective: CPM, resolution 1
    assert len(set(cpm.membership)) == graph.shape[0]  # every node alone
    ours = communities(graph)
    assert ours.max() + 1 == 8


def test_each_undirected_edge_passed_once(blobs):
    graph, _ = blobs
    g = _to_igraph(graph)
    assert g.vcount() == graph.shape[0] and g.ecount() == graph.nnz // 2
    assert not g.is_directed() and not any(g.is_multiple()) and not any(g.is_loop())
    assert "weight" not in g.es.attributes()  # all-ones graph: unweighted
    w = graph.copy()
    w.data = w.data * 0.5
    assert _to_igraph(w).es["weight"] == [0.5] * g.ecount()


def test_warm_start_does_not_lower_modularity(blobs):
    graph, y = blobs
    merged = y // 2  # a decent but suboptimal partition: pairs of blobs merged
    q0 = modularity(graph, merged)
    for method in ("leiden", "leidenalg"):
        if method == "leidenalg":
            pytest.importorskip("leidenalg")
        warm = communities(graph, community=method, initial=merged, seed=1)
        assert modularity(graph, warm) >= q0 - 1e-12
        assert ami(y, warm) > 0.95
    prev = communities(graph, seed=2)
    again = communities(graph, initial=prev, seed=3)
    assert modularity(graph, again) >= modularity(graph, prev) - 1e-12
    # one iteration from arbitrary non-compact ids works too
    assert communities(graph, initial=merged * 10 + 5, leiden_iterations=1).shape == y.shape


def test_resolution_controls_granularity(blobs):
    counts = [communities(ring(120), resolution=r).max() + 1 for r in (0.2, 1.0, 5.0)]
    assert counts[0] < counts[1] < counts[2]
    # disconnected blobs are never merged, whatever the resolution (merging lowers modularity), but split
    graph, _ = blobs
    assert communities(graph, resolution=0.05).max() + 1 == 8 < communities(graph, resolution=5.0).max() + 1


def test_defaults_come_from_lccconfig():
    """communities() with no settings is the LCC epoch start's clustering: the same defaults."""
    import inspect

    from latentcc.config import LCCConfig

    params = inspect.signature(communities).parameters
    cfg = LCCConfig()
    assert params["community"].default == cfg.community == "leiden"
    assert params["leiden_iterations"].default == cfg.leiden_iterations == 2
    assert (params["resolution"].default, params["seed"].default) == (cfg.resolution, cfg.seed)


def test_canonical_labels():
    np.testing.assert_array_equal(_canonical(np.array([5, 5, 2, 9, 9, 9, 2])), [1, 1, 2, 0, 0, 0, 2])


def test_modularity_matches_networkx_and_igraph():
    nx = pytest.importorskip("networkx")
    g = nx.karate_club_graph()  # weighted (interaction counts)
    a = nx.to_scipy_sparse_array(g, weight="weight", format="csr")
    labels = np.array([0 if g.nodes[v]["club"] == "Mr. Hi" else 1 for v in g.nodes])
    labels[[0, 33]] = 2  # three communities, one tiny
    groups = [set(np.flatnonzero(labels == c).tolist()) for c in range(3)]
    for weight in ("weight", None):
        adj = a if weight else (a > 0).astype(np.float64)
        for gamma in (1.0, 0.5, 2.0):
            ref = nx.community.modularity(g, groups, weight=weight, resolution=gamma)
            assert modularity(adj, labels, resolution=gamma) == pytest.approx(ref, abs=1e-12)
    ours = communities(a)
    ig_graph = _to_igraph(a)
    assert modularity(a, ours) == pytest.approx(
        ig_graph.modularity(ours.tolist(), weights="weight"), abs=1e-12
    )


def test_validation_messages(blobs):
    graph, _ = blobs
    n = graph.shape[0]
    with pytest.raises(LatentccError, match=r"'graph'.*scipy.sparse.*ndarray.*csr_matrix"):
        communities(graph.toarray())
    with pytest.raises(LatentccError, match=r"'graph'.*square"):
        communities(graph[:, :10])
    with pytest.raises(LatentccError, match=r"'graph'.*N >= 2"):
        communities(sp.csr_matrix((1, 1)))
    with pytest.raises(LatentccError, match=r"'graph'.*symmetric"):
        communities(sp.triu(graph, k=1).tocsr())
    with pytest.raises(LatentccError, match=r"'graph'.*non-negative"):
        communities(-graph)
    with pytest.raises(LatentccError, match=r"'resolution'.*Got 0"):
        communities(graph, resolution=0)
    with pytest.raises(LatentccError, match=r"'community'.*'spectral'"):
        communities(graph, community="spectral")  # type: ignore[arg-type]
    with pytest.raises(LatentccError, match=r"'initial'.*louvain.*community='leiden'"):
        communities(graph, community="louvain", initial=np.zeros(n, dtype=np.int64))
    with pytest.raises(
        LatentccError, match=r"'leiden_iterations'.*default \(2\) with community='louvain'.*Got 5"
    ):
        communities(graph, community="louvain", leiden_iterations=5)
    with pytest.raises(LatentccError, match=rf"'initial'.*1-D array of {n} labels"):
        communities(graph, initial=np.zeros(n - 1, dtype=np.int64))
    with pytest.raises(LatentccError, match=r"'initial'.*integer class labels"):
        communities(graph, initial=np.full(n, 0.5))
    with pytest.raises(LatentccError, match=r"'initial'.*labels in \[0, 2\*\*31\)"):
        communities(graph, initial=-np.ones(n, dtype=np.int64))
    for bad in (0, -2, 1.0):
        with pytest.raises(LatentccError, match=r"'leiden_iterations'"):
            communities(graph, leiden_iterations=bad)  # type: ignore[arg-type]
    with pytest.raises(LatentccError, match=r"'labels' parameter of modularity"):
        modularity(graph, np.zeros(3, dtype=np.int64))
