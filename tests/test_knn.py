"""k-NN search, k-NN graph and dimensionality reduction against brute-force numpy / scikit-learn references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("faiss")

from latentcc.graph import knn, knn_graph, knn_graph_from_indices, knn_recall, knn_search, reduce_dim
from latentcc.plumbing.errors import LatentccError

CUDA = torch.cuda.is_available()


def brute_knn(x: np.ndarray, k: int, metric: str = "l2") -> tuple[np.ndarray, np.ndarray]:
    """Full float64 distance matrix, self masked, argsort."""
    x = x.astype(np.float64)
    if metric == "cosine":
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        d = 1.0 - xn @ xn.T
    else:
        d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(d, idx, axis=1)


def gaussian_mixture(
    n: int, d: int, classes: int, seed: int = 0, spread: float = 4.0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=spread, size=(classes, d))
    y = rng.integers(0, classes, size=n)
    return (centres[y] + rng.normal(size=(n, d))).astype(np.float32), y


@pytest.fixture(scope="module")
def small() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(200, 12)).astype(np.float32)


# --------------------------------------------------------------------------- knn_search


@pytest.mark.parametrize("backend", ["faiss", "torch"])
@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_exact_backends_equal_brute_force(small, backend, metric):
    idx, dist = knn_search(small, 7, metric=metric, backend=backend)
    ref_idx, ref_dist = brute_knn(small, 7, metric)
    assert idx.dtype == np.int64 and dist.dtype == np.float32 and idx.shape == (200, 7)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-4, atol=1e-5)
    assert (np.diff(dist, axis=1) >= 0).all()


def test_inputs_torch_float64_and_non_contiguous(small):
    ref_idx, _ = brute_knn(small, 5)
    t = torch.from_numpy(small.astype(np.float64))
    for x in (t, small.astype(np.float64), np.asfortranarray(small)):
        for backend in ("faiss", "torch"):
            np.testing.assert_array_equal(knn_search(x, 5, backend=backend)[0], ref_idx)


def test_torch_backend_blocks_of_rows(small, monkeypatch):
    # 200 * 7 floats per block -> 7 rows per block: checks the per-block self mask offsets.
    monkeypatch.setattr(knn, "_TORCH_BLOCK_ELEMS", 200 * 7)
    ref_idx, ref_dist = brute_knn(small, 6)
    idx, dist = knn_search(small, 6, backend="torch")
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", ["faiss", "torch", "hnsw"])
def test_duplicate_points_never_list_themselves(backend):
    rng = np.random.default_rng(0)
    base = rng.normal(size=(30, 6)).astype(np.float32)
    x = np.concatenate(
        [np.repeat(base, 3, axis=0), np.repeat(base[:1], 12, axis=0)]
    )  # 3 copies; one point x15
    n, k = len(x), 5
    idx, dist = knn_search(x, k, backend=backend)
    assert not (idx == np.arange(n)[:, None]).any()
    assert (np.sort(idx, axis=1)[:, 1:] != np.sort(idx, axis=1)[:, :-1]).all()  # distinct
    # Every point's 2 other copies come first at distance 0 (exactly, up to float cancellation).
    assert np.allclose(dist[:, :2], 0.0, atol=1e-5)
    big = np.flatnonzero((x == base[0]).all(axis=1))  # the 15 identical points
    assert np.isin(idx[big], big).all() and np.allclose(dist[big], 0.0, atol=1e-5)


def test_approximate_backends_recall():
    x, _ = gaussian_mixture(5000, 32, 20, seed=3, spread=1.0)  # overlapping: recall 1.0 would test nothing
    exact, _ = knn_search(x, 10, backend="faiss")
    for backend in ("hnsw", "ivf"):
        approx, dist = knn_search(x, 10, backend=backend, seed=0)
        r = knn_recall(approx, exact)
        print(f"{backend} recall@10 on 5k x 32: {r:.4f}")
        assert r >= 0.9
        assert not (approx == np.arange(len(x))[:, None]).any() and (np.diff(dist, axis=1) >= 0).all()


def test_ivf_is_seeded_and_refills_short_lists():
    x, _ = gaussian_mixture(
        800, 8, 5, seed=4
    )  # k = N-1: the calibrated scan covers every list, so IVF falls back to the exact search
    k = len(x) - 1
    a, _ = knn_search(x, k, backend="ivf", seed=5)
    exact, _ = knn_search(x, k, backend="faiss")
    assert (a >= 0).all() and knn_recall(a, exact) == 1.0
    b1, _ = knn_search(x, 10, backend="ivf", seed=7)
    b2, _ = knn_search(x, 10, backend="ivf", seed=7)
    np.testing.assert_array_equal(b1, b2)


def test_include_self_when_asked(small):
    idx, dist = knn_search(small, 3, exclude_self=False, backend="faiss")
    np.testing.assert_array_equal(idx[:, 0], np.arange(len(small)))
    assert np.allclose(dist[:, 0], 0.0, atol=1e-4)


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_torch_backend_on_cuda_matches_cpu(small):
    idx, dist = knn_search(torch.from_numpy(small).cuda(), 7)  # auto -> torch on the GPU
    ref_idx, ref_dist = brute_knn(small, 7)
    assert isinstance(idx, np.ndarray)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-3, atol=1e-4)


# --------------------------------------------------------------------------- knn_recall


def test_knn_recall_hand_made():
    exact = np.array([[1, 2, 5], [3, 9, 8]])
    assert knn_recall(np.array([[0, 1, 2], [3, 4, -1]]), exact) == pytest.approx(3 / 6)
    assert knn_recall(exact, exact) == 1.0
    assert knn_recall(np.array([[7, 0, 4], [0, 1, 2]]), exact) == 0.0
    # approx repeating a true neighbour counts it once; k_approx may differ from k_exact
    assert knn_recall(np.array([[1, 1, 1, 1], [8, 9, 3, 0]]), exact) == pytest.approx((1 + 3) / 6)
    # ids of another row never count (the per-row offset must not leak between rows)
    assert knn_recall(np.array([[3, 9, 8], [1, 2, 5]]), exact) == 0.0


# --------------------------------------------------------------------------- knn_graph


def test_knn_graph_is_the_union_of_neighbour_lists():
    x = np.random.default_rng(2).normal(size=(50, 5)).astype(np.float32)
    k = 4
    a = knn_graph(x, k)
    ref_idx, _ = brute_knn(x, k)
    expected = set()
    for i in range(50):
        for j in ref_idx[i]:
            expected.add((i, int(j)))
            expected.add((int(j), i))
    coo = a.tocoo()
    got = set(zip(coo.row.tolist(), coo.col.tolist(), strict=True))
    assert got == expected
    assert a.shape == (50, 50) and a.dtype == np.float32 and a.format == "csr"
    assert (a != a.T).nnz == 0 and a.diagonal().sum() == 0
    assert (a.data == 1.0).all() and a.nnz == len(expected)  # no duplicate entries
    assert (np.diff(a.indptr) >= k).all()


def test_knn_graph_weighted_fuzzy_union_matches_loop_reference():
    x = np.random.default_rng(3).normal(size=(30, 4)).astype(np.float32)
    k = 5
    w = knn_graph(x, k, weighted=True)
    idx, d2 = brute_knn(x, k)
    d = np.sqrt(d2)
    directed: dict[tuple[int, int], float] = {}
    for i in range(30):
        rho, sigma = d[i].min(), d[i].mean() - d[i].min()
        for j in range(k):
            directed[(i, int(idx[i, j]))] = math.exp(-(d[i, j] - rho) / sigma)
    ref = {}
    for i, j in list(directed):
        a, b = directed.get((i, j), 0.0), directed.get((j, i), 0.0)
        ref[(i, j)] = ref[(j, i)] = a + b - a * b
    coo = w.tocoo()
    got = dict(zip(zip(coo.row.tolist(), coo.col.tolist(), strict=True), coo.data.tolist(), strict=True))
    assert got.keys() == ref.keys()
    np.testing.assert_allclose([got[e] for e in ref], list(ref.values()), rtol=1e-5)
    assert (w != w.T).nnz == 0 and w.diagonal().sum() == 0
    assert w.data.min() > 0 and w.data.max() <= 1.0
    np.testing.assert_allclose(w.max(axis=1).toarray().ravel(), 1.0)  # the nearest neighbour has weight 1
    assert (knn_graph(x, k) != (w > 0)).nnz == 0  # same edges as the unweighted graph


def test_knn_graph_from_indices_reuses_a_larger_search():
    x, _ = gaussian_mixture(300, 10, 4, seed=5)
    idx20, _ = knn_search(x, 20, backend="faiss")
    assert (knn_graph_from_indices(idx20[:, :6], 300) != knn_graph(x, 6)).nnz == 0
    # self entries (a search that kept the point itself) are dropped
    with_self = np.concatenate([np.arange(300)[:, None], idx20[:, :6]], axis=1)
    assert (knn_graph_from_indices(with_self) != knn_graph(x, 6)).nnz == 0
    with pytest.raises(LatentccError, match="repeated"):
        knn_graph_from_indices(np.array([[1, 1], [0, 2], [0, 1]]))
    with pytest.raises(LatentccError, match=r"'indices'.*\[0, 3\)"):
        knn_graph_from_indices(np.array([[1], [3], [0]]))
    with pytest.raises(LatentccError, match="'n'"):
        knn_graph_from_indices(idx20, 299)


# --------------------------------------------------------------------------- validation


def test_errors_name_parameter_value_and_fix(small):
    with pytest.raises(LatentccError, match=r"'k' parameter of knn_search.*Got 200.*k <= 199"):
        knn_search(small, 200)
    with pytest.raises(LatentccError, match=r"'k'.*Got 0"):
        knn_graph(small, 0)
    with pytest.raises(LatentccError, match=r"'k'.*Got 2.5"):
        knn_search(small, 2.5)  # type: ignore[arg-type]
    with pytest.raises(LatentccError, match=r"'x'.*N >= 2"):
        knn_search(small[:1], 1)
    with pytest.raises(LatentccError, match=r"'x'.*2-D"):
        knn_search(small[0], 1)
    with pytest.raises(LatentccError, match=r"'backend'.*'annoy'"):
        knn_search(small, 3, backend="annoy")  # type: ignore[arg-type]
    with pytest.raises(LatentccError, match=r"'metric'.*'dot'"):
        knn_search(small, 3, metric="dot")  # type: ignore[arg-type]
    bad = small.copy()
    bad[[3, 17], 0] = np.nan
    bad[40, 5] = np.inf
    with pytest.raises(LatentccError, match=r"knn_graph \(for 'layer4'\).*3 of 200 rows.*first: 3, 17, 40"):
        knn_graph(bad, 3, name="layer4")
    with pytest.raises(LatentccError, match=r"3 of 200 rows"):
        knn_search(torch.from_numpy(bad), 3)
    zero = small.copy()
    zero[5] = 0
    with pytest.raises(LatentccError, match=r"all-zero rows"):
        knn_search(zero, 3, metric="cosine")


@pytest.mark.skipif(CUDA, reason="checks the no-GPU message")
def test_faiss_gpu_without_gpu_is_a_clear_error(small):
    with pytest.raises(LatentccError, match=r"faiss-gpu.*get_num_gpus\(\) == 0.*backend='torch'"):
        knn_search(small, 3, backend="faiss-gpu")


# --------------------------------------------------------------------------- reduce_dim


@pytest.mark.parametrize("route", ["covariance", "randomized"])
def test_pca_equals_sklearn_up_to_sign(route, monkeypatch):
    from sklearn.decomposition import PCA

    import latentcc.graph.reduce as reduce_module

    if route == "randomized":  # the path for wide latents (D > 4096)
        monkeypatch.setattr(reduce_module, "_COVARIANCE_MAX_D", 0)

    rng = np.random.default_rng(4)
    x = (rng.normal(size=(300, 40)) * 0.8 ** np.arange(40) + 3.0).astype(np.float32)
    ours = reduce_dim(x, 5, method="pca", seed=0)
    ref = PCA(n_components=5, svd_solver="full").fit_transform(x.astype(np.float64))
    assert ours.shape == (300, 5) and ours.dtype == np.float32
    signs = np.sign((ours * ref).sum(axis=0))
    np.testing.assert_allclose(ours * signs, ref, atol=2e-4 * np.abs(ref).max())


@pytest.mark.parametrize("method", ["pca", "random"])
def test_reduce_dim_is_deterministic_per_seed(method):
    x = np.random.default_rng(5).normal(size=(120, 64)).astype(np.float32)
    a = reduce_dim(x, 8, method=method, seed=3)
    np.testing.assert_array_equal(a, reduce_dim(torch.from_numpy(x), 8, method=method, seed=3))
    assert a.shape == (120, 8) and a.dtype == np.float32
    if method == "random":
        assert not np.array_equal(a, reduce_dim(x, 8, method=method, seed=4))


def test_random_projection_preserves_squared_distances_on_average():
    x = np.random.default_rng(6).normal(size=(200, 512)).astype(np.float32)
    y = reduce_dim(x, 256, method="random", seed=0)
    i, j = np.triu_indices(200, 1)
    ratio = ((y[i] - y[j]) ** 2).sum(axis=1) / ((x[i] - x[j]) ** 2).sum(axis=1)
    assert abs(ratio.mean() - 1.0) < 0.05 and ratio.std() < 0.15  # Johnson-Lindenstrauss, k = 256


def test_reduce_dim_passthrough_and_errors():
    x = np.random.default_rng(7).normal(size=(20, 6))
    for dim in (None, 6, 50):
        out = reduce_dim(x, dim)
        assert out.dtype == np.float32 and out.shape == (20, 6)
        np.testing.assert_array_equal(out, x.astype(np.float32))
    with pytest.raises(LatentccError, match=r"'dim'.*Got 0"):
        reduce_dim(x, 0)
    with pytest.raises(LatentccError, match=r"'method'.*'umap'"):
        reduce_dim(x, 2, method="umap")  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["pca", "random"])
def test_reduce_dim_of_tiny_and_huge_values(method):
    """The arithmetic runs on x times a power of two and the result is scaled back, exactly: the scores
    of x * 2^e are those of x times 2^e. A result float32 cannot hold raises instead of coming back as
    zeros (before the fix: reduce_dim(1e-60 * x) returned all zeros) or inf."""
    x = np.random.default_rng(8).normal(size=(60, 6))
    ref = reduce_dim(x, 3, method=method)
    for e in (-110, 110):
        np.testing.assert_array_equal(reduce_dim(x * 2.0**e, 3, method=method), ref * np.float32(2.0**e))
    for dim in (3, None):
        for factor, fix in ((1e-60, r"2\.0\*\*19\d"), (1e39, r"2\.0\*\*-1[23]\d")):
            with pytest.raises(
                LatentccError,
                match=r"'x' parameter of reduce_dim must be data whose float32 result .*normal range.*"
                rf"Got 'a result with largest \|value\| .*Fix: rescale x by a power of two first, e\.g\. x \* {fix}",
            ):
                reduce_dim(x * factor, dim, method=method)
    with pytest.raises(LatentccError) as info:
        reduce_dim(x * 1e-60, 3, method=method)
    e = int(str(info.value).split("x * 2.0**")[1].split(" ")[0])
    out = reduce_dim(x * 1e-60 * 2.0**e, 3, method=method)  # the suggested rescale works
    assert 0.5 < np.abs(out).max() < 100
    # constant rows: their scores are exactly 0 (a true result, not an underflow)
    np.testing.assert_array_equal(reduce_dim(np.full((5, 4), 1e-60), 2, method=method), np.zeros((5, 2)))


def test_blocked_faiss_search_equals_one_shot_search(monkeypatch):
    """Queries run in row blocks (bounded memory); results equal a brute-force search, self dropped per block."""
    import latentcc.graph.knn as knn_module

    rng = np.random.default_rng(7)
    x = rng.normal(size=(2600, 6)).astype(np.float32)
    x[2000] = x[5]  # a duplicate pair across two blocks
    monkeypatch.setattr(knn_module, "_QUERY_BLOCK_ELEMS", 1)  # -> blocks of 1024 rows: 3 blocks
    idx, dist = knn_search(x, 4, backend="faiss")
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    ref = np.argsort(d2, axis=1, kind="stable")[:, :4]
    assert not (idx == np.arange(len(x))[:, None]).any()
    np.testing.assert_allclose(dist, np.take_along_axis(d2, ref, axis=1), rtol=1e-4, atol=1e-5)
    assert (idx == ref).mean() > 0.999  # index ties (the duplicate pair) may order differently
    assert idx[5, 0] == 2000 and idx[2000, 0] == 5


def test_default_ivf_recall_is_calibrated_and_reproducible(monkeypatch):
    """Above EXACT_MAX_N, "auto" runs the IVF scan whose nprobe is measured to reach recall@k 0.96 on a
    sample: on the whole set its recall against exact faiss must be >= 0.95, its neighbours identical
    from call to call (seeded k-means, fixed matmul shapes), and it must really be approximate (the scan
    did not fall back to exact)."""
    import latentcc.graph.knn as knn_module

    monkeypatch.setattr(knn_module, "EXACT_MAX_N", 1000)  # the 8000-point set below is "large"
    calls: list[bool] = []
    ivf = knn_module._ivf_search
    monkeypatch.setattr(knn_module, "_ivf_search", lambda *a: calls.append((r := ivf(*a)) is not None) or r)
    x, _ = gaussian_mixture(8000, 16, 20, seed=11, spread=1.0)  # overlapping: recall 1.0 would test nothing
    exact, exact_d = knn_search(x, 10, backend="faiss")
    a, da = knn_search(x, 10, seed=0)
    b, db = knn_search(x, 10, seed=0)
    assert calls == [True, True]  # both calls scanned lists (no exact fallback)
    r = knn_recall(a, exact)
    assert 0.95 <= r < 1.0, r
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(da, db)
    assert not (a == np.arange(len(x))[:, None]).any() and (np.diff(da, axis=1) >= 0).all()
    # distances are the true squared distances of the ids returned
    true = ((x[a] - x[:, None, :]).astype(np.float64) ** 2).sum(-1)
    np.testing.assert_allclose(da, true, rtol=1e-4, atol=1e-4)
    # where a true neighbour was found, its distance equals the exact search's
    np.testing.assert_allclose(
        da[:, 0][a[:, 0] == exact[:, 0]], exact_d[:, 0][a[:, 0] == exact[:, 0]], rtol=1e-5
    )


# --------------------------------------------------------------------------- one search: queries, backends, threads


def brute_queries(base: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    d = ((q[:, None, :].astype(np.float64) - base[None, :, :].astype(np.float64)) ** 2).sum(-1)
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(d, idx, axis=1)


@pytest.mark.parametrize("backend", ["faiss", "torch", "hnsw", "ivf", "auto"])
def test_queries_against_brute_force(backend):
    """knn_search(x, k, queries=q): every backend finds each query's neighbours among x (none excluded)."""
    x, _ = gaussian_mixture(1500, 8, 6, seed=3)
    x += np.float32(1e4)  # far from the origin: the translation (one frame for x and q) keeps the ranks
    q = np.random.default_rng(4).normal(scale=4.0, size=(300, 8)).astype(np.float32) + np.float32(1e4)
    idx, dist = knn_search(x, 6, queries=q, backend=backend)
    ref_idx, ref_d = brute_queries(x, q, 6)
    assert idx.shape == dist.shape == (300, 6)
    if backend in ("hnsw", "ivf"):
        assert knn_recall(idx, ref_idx) >= 0.95
    else:
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_allclose(dist, ref_d, rtol=1e-3, atol=1e-3)


def test_queries_validation(small):
    with pytest.raises(
        LatentccError, match=r"'exclude_self' parameter of knn_search must be False or None when"
    ):
        knn_search(small, 3, queries=small[:5], exclude_self=True)
    with pytest.raises(LatentccError, match=r"'queries'.*width of x, D = 12"):
        knn_search(small, 3, queries=small[:5, :4])
    with pytest.raises(LatentccError, match=r"'k'.*k <= 200 \(N = 200 points\)"):
        knn_search(small, 201, queries=small[:5])
    # a query equal to a row of x finds that row first (distance 0): nothing is excluded
    idx, dist = knn_search(small, 1, queries=small[7:9])
    np.testing.assert_array_equal(idx[:, 0], [7, 8])
    np.testing.assert_allclose(dist[:, 0], 0.0, atol=1e-5)


def test_backend_names_are_lccconfig_choices():
    import typing

    from latentcc.config import LCCConfig

    hint = typing.get_type_hints(LCCConfig)["knn_backend"]
    assert set(typing.get_args(hint)) == set(knn.BACKENDS) == {"auto", *knn.KNN_BACKENDS}
    for name, backend in knn.KNN_BACKENDS.items():
        assert backend.name == name and backend.exact == (name not in ("hnsw", "ivf"))


def test_auto_never_picks_an_approximate_backend_for_exact_searches(monkeypatch):
    monkeypatch.setattr(knn, "EXACT_MAX_N", 10)
    big = np.zeros((100, 3), dtype=np.float32)
    assert knn.choose_backend("auto", big, 100, exact=False).name == "ivf"
    assert knn.choose_backend("auto", big, 100, exact=True).name == "torch"  # 10^4 pairs: small
    assert knn.choose_backend("auto", big, 2**20, exact=True).name == "faiss"
    # an approximate choice is kept where approximation is allowed (the graph), exact faiss where it is not
    assert knn.choose_backend("hnsw", big, 100, exact=False).name == "hnsw"
    assert [knn.choose_backend(b, big, 100, exact=True).name for b in ("hnsw", "ivf")] == ["faiss", "faiss"]
    assert knn.choose_backend("torch", big, 100, exact=True).name == "torch"


@pytest.mark.parametrize("backend", ["faiss", "hnsw", "ivf"])
def test_faiss_thread_count_is_restored(backend, monkeypatch):
    """Every faiss call sizes faiss's OpenMP pool to torch's intra-op count for its duration, then restores
    the process-wide count it found (before: each call left it at torch's count)."""
    import faiss

    monkeypatch.setattr(knn, "EXACT_MAX_N", 100)  # "auto" would pick ivf: here the backend is explicit
    seen: list[int] = []
    add = faiss.IndexFlatL2.add
    monkeypatch.setattr(
        faiss.IndexFlatL2, "add", lambda self, a: seen.append(faiss.omp_get_max_threads()) or add(self, a)
    )
    before = faiss.omp_get_max_threads()
    other = 3 if torch.get_num_threads() != 3 else 4
    faiss.omp_set_num_threads(other)
    try:
        # faiss and torch may share one OpenMP runtime (then this is `other` too): the count a search uses
        torch_threads = torch.get_num_threads()
        x, _ = gaussian_mixture(3000, 8, 6, seed=5, spread=1.0)
        knn_search(x, 5, backend=backend)
        assert faiss.omp_get_max_threads() == other and torch.get_num_threads() == torch_threads
        if backend != "hnsw":  # the flat index of "faiss" and ivf's quantizer were filled at torch's count
            assert seen and set(seen) == {torch_threads}
        with knn.faiss_threads("a test", 1) as f:  # the scoped setter itself
            assert f.omp_get_max_threads() == 1
        assert faiss.omp_get_max_threads() == other
    finally:
        faiss.omp_set_num_threads(before)
