"""Clusterability metrics (docs/probes.md, Clusterability) against scikit-learn and brute-force references."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.cluster import AgglomerativeClustering, KMeans
from sklearn.metrics import (
    adjusted_mutual_info_score,
    adjusted_rand_score,
    normalized_mutual_info_score,
)

from latentcc.graph import communities, knn_graph
from latentcc.metrics import clustering
from latentcc.metrics.clustering import KMEANS_N_INIT, cluster, cluster_consistency, clusterability, purity
from latentcc.plumbing.errors import LatentccError


def brute_purity(y_true, y_pred):
    total = 0
    for c in set(y_pred.tolist()):
        in_c = y_pred == c
        total += max(int(np.sum(in_c & (y_true == t))) for t in set(y_true.tolist()))
    return total / len(y_true)


def sk_scores(y, pred):
    return {
        "ami": adjusted_mutual_info_score(y, pred, average_method="arithmetic"),
        "ari": adjusted_rand_score(y, pred),
        "nmi": normalized_mutual_info_score(y, pred, average_method="arithmetic"),
        "purity": brute_purity(y, pred),
    }


def blobs(n_per, n_labels, dim=8, spread=50.0, seed=0):
    """Well-separated Gaussian blobs, one per label, in shuffled order."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_labels, dim)) * spread
    y = np.repeat(np.arange(n_labels), n_per)
    rng.shuffle(y)
    return (centres[y] + rng.normal(size=(len(y), dim))).astype(np.float32), y


@pytest.fixture(scope="module")
def noisy():
    """Overlapping classes: the clustering is imperfect, so the scores are informative."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 240)
    centres = rng.normal(size=(4, 6)) * 1.5
    return (centres[y] + rng.normal(size=(240, 6))).astype(np.float32), y


# --------------------------------------------------------------------------- purity


@pytest.mark.parametrize("n", [1, 2, 7, 50, 300])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_purity_matches_brute_force(n, seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(-3, 5, n)  # negative and non-contiguous ids are fine
    y_pred = rng.integers(0, 9, n) * 7
    assert purity(y_true, y_pred) == pytest.approx(brute_purity(y_true, y_pred), abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(-2, 6)), min_size=1, max_size=60))
def test_purity_property(pairs):
    y_true, y_pred = (np.array(v) for v in zip(*pairs, strict=True))
    p = purity(y_true, y_pred)
    assert p == pytest.approx(brute_purity(y_true, y_pred), abs=1e-12)
    assert 0 < p <= 1
    assert purity(y_true, y_true) == 1.0


@pytest.mark.parametrize("seed", [0, 1])
def test_purity_sparse_counts_path(monkeypatch, seed):
    # Tables beyond the dense limit are counted from (cluster, class) pairs: shrink the limit to reach it.
    monkeypatch.setattr(clustering, "_DENSE_MAX_CELLS", 10)
    rng = np.random.default_rng(seed)
    y_true = rng.integers(-5, 40, 300)
    y_pred = rng.integers(0, 60, 300)
    assert purity(y_true, y_pred) == pytest.approx(brute_purity(y_true, y_pred), abs=1e-12)


def test_purity_accepts_tensors():
    y = torch.tensor([0, 0, 1, 1, 1])
    assert purity(y, torch.tensor([5, 5, 5, 2, 2])) == pytest.approx(4 / 5)


# --------------------------------------------------------------------------- cluster


def test_ward_and_kmeans_equal_sklearn(noisy):
    x, _ = noisy
    ward = AgglomerativeClustering(n_clusters=5, linkage="ward").fit_predict(x)
    np.testing.assert_array_equal(cluster(x, 5, clustering="ward"), ward)
    km = KMeans(n_clusters=5, n_init=KMEANS_N_INIT, random_state=3).fit_predict(x)
    np.testing.assert_array_equal(cluster(x, 5, clustering="kmeans", seed=3), km)


def test_leiden_equals_graph_pipeline(noisy):
    x, _ = noisy
    g = knn_graph(x, 10, metric="l2", seed=0)
    ref = communities(g, community="leiden", resolution=0.5, seed=0, leiden_iterations=-1)
    got = cluster(x, None, clustering="leiden", leiden_k=10, resolution=0.5)
    np.testing.assert_array_equal(got, ref)
    assert got.dtype == np.int64


def test_leiden_k_is_clipped_to_n_minus_1():
    x, _ = blobs(3, 2)
    got = cluster(x, None, clustering="leiden", leiden_k=50)  # 6 points: k = 5
    ref = communities(knn_graph(x, 5), community="leiden", seed=0, leiden_iterations=-1)
    np.testing.assert_array_equal(got, ref)


def test_cluster_accepts_torch_and_is_deterministic(noisy):
    x, _ = noisy
    a = cluster(torch.from_numpy(x), 4, clustering="kmeans", seed=1)
    np.testing.assert_array_equal(a, cluster(x, 4, clustering="kmeans", seed=1))


# --------------------------------------------------------------------------- clusterability


@pytest.mark.parametrize("algorithm", ["ward", "kmeans"])
def test_scores_equal_sklearn(noisy, algorithm):
    x, y = noisy
    out = clusterability(x, y, clustering=algorithm, seed=2)
    if algorithm == "ward":
        pred = AgglomerativeClustering(n_clusters=4, linkage="ward").fit_predict(x)
    else:
        pred = KMeans(n_clusters=4, n_init=KMEANS_N_INIT, random_state=2).fit_predict(x)
    ref = sk_scores(y, pred)
    for key in ("ami", "ari", "nmi", "purity"):
        assert out[key] == pytest.approx(ref[key], abs=1e-12), key
        assert isinstance(out[key], float)
    assert 0.1 < out["ami"] < 0.99  # informative: neither trivial nor perfect
    assert out["n_clusters"] == 4
    assert out["n_groups"] == 1 and out["n_groups_skipped"] == 0


def test_leiden_scores_equal_sklearn(noisy):
    x, y = noisy
    out = clusterability(x, y, clustering="leiden", leiden_k=10)
    pred = communities(knn_graph(x, 10), community="leiden", seed=0, leiden_iterations=-1)
    ref = sk_scores(y, pred)
    for key in ("ami", "ari", "nmi", "purity"):
        assert out[key] == pytest.approx(ref[key], abs=1e-12), key
    assert out["n_clusters"] == len(np.unique(pred))


def test_explicit_n_clusters(noisy):
    x, y = noisy
    out = clusterability(x, y, n_clusters=7)
    pred = AgglomerativeClustering(n_clusters=7, linkage="ward").fit_predict(x)
    assert out["ami"] == pytest.approx(adjusted_mutual_info_score(y, pred), abs=1e-12)
    assert out["n_clusters"] == 7


def test_groups_equal_manual_loop():
    rng = np.random.default_rng(4)
    n = 300
    groups = rng.integers(0, 4, n) * 10  # superclass ids 0, 10, 20, 30
    labels = groups + rng.integers(0, 3, n)  # 3 subclasses per superclass
    labels[groups == 30] = 30  # a superclass with a single subclass: skipped
    x = (rng.normal(size=(n, 5)) + 0.8 * rng.normal(size=(100, 5))[labels]).astype(np.float32)
    out = clusterability(x, labels, groups=groups, overcluster=2)
    rows, made = [], 0
    for g in (0, 10, 20):
        m = groups == g
        k = len(np.unique(labels[m])) * 2
        pred = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(x[m])
        rows.append(sk_scores(labels[m], pred))
        made += k
    for key in ("ami", "ari", "nmi", "purity"):
        assert out[key] == pytest.approx(np.mean([r[key] for r in rows]), abs=1e-12), key
    assert out["n_clusters"] == made == 18
    assert out["n_groups"] == 3 and out["n_groups_skipped"] == 1


def test_groups_clip_clusters_to_group_size():
    x, y = blobs(1, 6, seed=2)  # 6 samples, 6 labels, one group
    out = clusterability(x, y, groups=np.zeros(6, dtype=int), overcluster=3)
    assert out["n_clusters"] == 6  # 6 labels x 3 clipped to 6 samples
    assert out["purity"] == 1.0


@pytest.mark.parametrize("algorithm", ["ward", "kmeans", "leiden"])
def test_perfect_separation_scores_one(algorithm):
    x, y = blobs(40, 4, seed=5)
    out = clusterability(x, y, clustering=algorithm)
    for key in ("ami", "ari", "nmi", "purity"):
        assert out[key] == pytest.approx(1.0, abs=1e-12), (algorithm, key)
    assert out["n_clusters"] == 4
    # the same, within two superclasses of two labels each
    out = clusterability(x, y, clustering=algorithm, groups=y // 2)
    assert out["ami"] == pytest.approx(1.0, abs=1e-12) and out["n_groups"] == 2


def test_random_labels_score_near_zero():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(600, 8)).astype(np.float32)
    y = rng.integers(0, 5, 600)
    out = clusterability(x, y)
    assert abs(out["ami"]) < 0.05 and abs(out["ari"]) < 0.05


def test_overcluster_doubles_clusters_and_purity_does_not_drop(noisy):
    x, y = noisy
    one = clusterability(x, y, overcluster=1)
    two = clusterability(x, y, overcluster=2)
    assert (one["n_clusters"], two["n_clusters"]) == (4, 8)
    # Ward is hierarchical: 8 clusters refine the 4, so purity cannot drop.
    assert two["purity"] >= one["purity"]
    g = (y >= 2).astype(int)
    assert clusterability(x, y, groups=g, overcluster=2)["purity"] >= clusterability(x, y, groups=g)["purity"]


# --------------------------------------------------------------------------- consistency


def test_consistency():
    rng = np.random.default_rng(7)
    a = rng.integers(0, 5, 200)
    b = rng.integers(0, 5, 200)
    assert cluster_consistency(a, a) == 1.0
    perm = rng.permutation(5) + 100  # renaming the clusters changes nothing
    assert cluster_consistency(a, perm[a]) == 1.0
    assert cluster_consistency(a, b) == pytest.approx(adjusted_rand_score(a, b), abs=1e-15)
    assert cluster_consistency(a, b) == cluster_consistency(b, a)
    assert isinstance(cluster_consistency(a, b), float)


# --------------------------------------------------------------------------- errors


def test_ward_size_guard(monkeypatch, noisy):
    x, y = noisy
    monkeypatch.setattr(clustering, "WARD_MAX_N", 100)
    with pytest.raises(LatentccError, match=r"max_samples_per_split.*clustering='kmeans'"):
        cluster(x, 3)
    with pytest.raises(LatentccError, match="WARD_MAX_N"):
        clusterability(x, y)
    # within groups the limit applies per group
    assert clusterability(x, y, groups=np.arange(240) % 3)["n_groups"] == 3
    # a big group with a single label is skipped, not clustered: no guard
    labels = np.where(np.arange(240) < 150, 9, y)
    out = clusterability(x, labels, groups=(np.arange(240) >= 150).astype(int))
    assert (out["n_groups"], out["n_groups_skipped"]) == (1, 1)
    assert len(cluster(x, 3, clustering="kmeans")) == 240


def test_errors():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(20, 3)).astype(np.float32)
    y = np.arange(20) % 2
    cases = [
        (lambda: purity([0, 1], [0, 1, 2]), "labels_pred"),
        (lambda: purity([], []), "labels_true"),
        (lambda: purity(np.zeros((2, 2), int), [0, 1]), "labels_true"),
        (lambda: purity([0.5, 1], [0, 1]), "labels_true"),
        (lambda: cluster(x[:1], 1), "features"),
        (lambda: cluster(x, 0), "n_clusters"),
        (lambda: cluster(x, 21), "n_clusters"),
        (lambda: cluster(x, 2, clustering="dbscan"), "clustering"),
        (lambda: cluster(x, 2, seed=-1), "seed"),
        (lambda: cluster(x, None, clustering="leiden", leiden_k=0), "leiden_k"),
        (lambda: cluster(x, None, clustering="leiden", resolution=0.0), "resolution"),
        (lambda: clusterability(x[:1], y[:1]), "features"),
        (lambda: clusterability(np.where(np.eye(20, 3) > 0, np.nan, x), y), "features"),
        (lambda: clusterability(x, y[:19]), "labels"),
        (lambda: clusterability(x, np.zeros(20, int)), "labels"),
        (lambda: clusterability(x, y, overcluster=0), "overcluster"),
        (lambda: clusterability(x, y, overcluster=6), "overcluster"),
        (lambda: clusterability(x, y, overcluster=2.0), "overcluster"),
        (lambda: clusterability(x, y, n_clusters=3, overcluster=2), "overcluster"),
        (lambda: clusterability(x, y, n_clusters=3, groups=y), "n_clusters"),
        (lambda: clusterability(x, y, n_clusters=21), "n_clusters"),
        (lambda: clusterability(x, y, groups=y[:5]), "groups"),
        (lambda: clusterability(x, y, groups=y), "groups"),  # every group holds one label
        (lambda: clusterability(x, y, clustering="spectral"), "clustering"),
        (lambda: cluster_consistency([0], [0]), "labels_a"),
        (lambda: cluster_consistency([0, 1, 1], [0, 1]), "labels_b"),
    ]
    for call, param in cases:
        with pytest.raises(LatentccError, match=f"'{param}'"):
            call()


def test_defaults_are_the_probe_config_defaults():
    """The functions' defaults come from ProbeConfig (one home per default), not restated literals."""
    import inspect

    from latentcc.config import ProbeConfig

    cfg = ProbeConfig()
    for fn in (cluster, clusterability):
        params = inspect.signature(fn).parameters
        assert params["clustering"].default == cfg.clustering
        assert params["seed"].default == cfg.seed
    assert inspect.signature(clusterability).parameters["overcluster"].default == cfg.overcluster
