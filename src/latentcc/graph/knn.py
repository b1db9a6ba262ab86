"""k-nearest-neighbour search and the symmetric k-NN graph (LCC step 2).

``knn_search`` returns each point's k nearest *other* points; ``knn_graph`` turns them into the
union-symmetrised, unweighted (or UMAP-style fuzzy) sparse adjacency matrix that community detection
runs on. The graph is built by index arithmetic into CSR arrays, never edge by edge.

Backends (docs/benchmarks.md has the measurements behind the defaults):

- ``"faiss"``: exact ``IndexFlatL2``; the CPU default up to ``EXACT_MAX_N`` (30k) points (deterministic).
- ``"hnsw"``: faiss ``IndexHNSWFlat`` (M=32), approximate; multi-threaded inserts are not bit-reproducible.
- ``"ivf"``: inverted lists from a seeded k-means (~sqrt(N)/2 lists), each point searched exactly within
  the lists nearest to it; how many lists (nprobe) is *measured* on every call: the smallest count whose
  recall@k against an exact search of 1000 seeded sample rows reaches 0.96 (a margin for the sample's
  error: at 50k the sample's and the whole set's recall agreed to 0.002; only the cost adapts). Lists are scanned by BLAS matmuls into faiss heaps (3-5x faster per
  distance than faiss's ``IndexIVFFlat``); when the scan would cover more than 60 % of the points the
  exact search runs instead. Deterministic: same seed, same neighbours. The CPU default above
  ``EXACT_MAX_N`` points.
- ``"torch"``: exact blocked matmul + topk on x's device; the default for CUDA tensors (and on CPU when
  faiss is not installed).
- ``"faiss-gpu"``: exact ``GpuIndexFlatL2``; needs a faiss build with GPU support.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch

from latentcc.plumbing.arrays import Matrix, as_matrix, to_numpy
from latentcc.plumbing.errors import LatentccError, check_int, param_error, require

Metric = Literal["l2", "cosine"]
Backend = Literal["auto", "faiss", "hnsw", "ivf", "torch", "faiss-gpu"]
METRICS: tuple[str, ...] = ("l2", "cosine")
BACKENDS: tuple[str, ...] = ("auto", "faiss", "hnsw", "ivf", "torch", "faiss-gpu")

# Exact search costs N^2 D multiply-adds; above this many points "auto" runs the calibrated IVF scan
# (recall@k >= 0.95, deterministic). Measured at D=128, k=50 on an overlapping 100-class mixture
# (2 cores): at 20k points the scan needed for 0.96 recall covered > 60 % of the points, so IVF fell
# back to exact anyway (0.8 s); at 50k it scanned 43 % and took 3.0 s against exact's 4.0-4.2 s.
EXACT_MAX_N = 30_000
# The torch backend materialises a (rows, N) float32 distance block: 2^27 floats = 512 MiB peak.
_TORCH_BLOCK_ELEMS = 2**27
_TORCH_MAX_ROWS = 4096
# faiss GPU flat search supports at most 2048 neighbours per query.
_FAISS_GPU_MAX_K = 2048
# Fuzzy weights are floored here so every k-NN edge stays an edge even when exp() underflows (large k).
_MIN_WEIGHT = 1e-12

ArrayLike = np.ndarray | torch.Tensor


# --------------------------------------------------------------------------- validation (the door)


def _where(func: str, name: str | None) -> str:
    return f"{func} (for {name!r})" if name else func


def _check_choice(value: Any, param: str, func: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise param_error(param, func, f"one of {list(choices)}", value)
    return str(value)


def _search_matrix(m: Matrix, metric: str) -> tuple[np.ndarray | torch.Tensor, float]:
    """(float32 C-contiguous matrix to search with squared L2, scale), see :mod:`latentcc.plumbing.arrays`:

    - l2: the rows translated to centre each column's range on 0, times ``scale``;
    - cosine: the rows *as given* normalised to unit length in float64, and only then translated
      (by the unit rows' midranges, :meth:`~latentcc.plumbing.arrays.Matrix.unit_rows`) and multiplied by
      ``scale``. Squared L2 between unit rows is 2 - 2 cos, so the ranks are the cosine ranks; the
      translation keeps nearly parallel rows (data far from the origin) apart in float32, which
      would round their unit rows to the same vector.

    Both keep every neighbour rank: L2 distances do not change under a translation, and ``scale`` is a
    power of two (1.0 unless the spread is extreme) that ``knn_search`` divides back out of distances.
    """
    if metric == "cosine":
        frame = m.unit_frame()
        return m.unit_rows(frame=frame), frame[2]
    return m.centred(), m.scale


def _resolve_backend(backend: str, x: np.ndarray | torch.Tensor) -> str:
    if backend != "auto":
        return backend
    if isinstance(x, torch.Tensor) and x.is_cuda:
        return "torch"
    try:
        import faiss  # noqa: F401
    except ImportError:
        return "torch"  # exact and dependency-free, ~1.5-2x slower than faiss on CPU
    return "faiss" if x.shape[0] <= EXACT_MAX_N else "ivf"


# --------------------------------------------------------------------------- public API


def knn_search(
    x: ArrayLike,
    k: int,
    *,
    metric: Metric = "l2",
    backend: Backend = "auto",
    seed: int = 0,
    exclude_self: bool = True,
    name: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each point's k nearest other points, nearest first.

    Args:
        x: (N, D) numpy array, torch tensor or nested list, any real dtype (:mod:`latentcc.plumbing.arrays`);
            searched as float32. A CUDA tensor stays on its GPU with ``backend="torch"`` (the ``"auto"``
            choice for CUDA tensors). For ``"l2"`` the rows are first translated in float64 so each
            column's range is centred on 0 (then multiplied by a power of two if still extreme): the
            neighbours and distances do not depend on where the data sits in space, e.g. latents around
            1e5 with a spread of 1e-3 are searched as precisely as the same latents around 0. For
            ``"cosine"`` (which does depend on where the data sits) the rows as given are normalised in
            float64 and the *unit rows* are translated the same way: nearly parallel rows (latents
            around 1e12 with a spread of 1e-2) keep their cosine neighbours to float64's precision.
        k: neighbours per point, 1 <= k <= N-1.
        metric: ``"l2"`` (squared Euclidean distance) or ``"cosine"`` (1 - cosine similarity, computed as
            half the squared L2 distance of unit-normalised rows; all-zero rows are rejected).
        backend: ``"auto"``, ``"faiss"``, ``"hnsw"``, ``"ivf"``, ``"torch"`` or ``"faiss-gpu"`` (module docstring).
        seed: seeds the IVF k-means, its training subsample and the recall sample; exact backends ignore it.
        exclude_self: drop each point from its own list (robust to duplicate points: the point itself
            is removed wherever it ranks, else the last of k+1 results is dropped).
        name: what x is (e.g. a layer name), quoted in error messages.

    Returns:
        indices: (N, k) int64, distances: (N, k) float32, both sorted by increasing distance (numpy);
        distances beyond float32's range (|x| ~ 1e19 and more) are inf, the indices stay exact.
    """
    func = _where("knn_search", name)
    m = as_matrix(x, "x", func, min_rows=2, keep_device=True)
    xm, scale, k, chosen, seed = _prepare(m, k, metric, backend, seed, exclude_self, func)
    idx, dist = _knn(xm, k, metric, chosen, seed, exclude_self)
    if scale != 1.0:  # distances of the data as given (l2: inf beyond float32's range)
        with np.errstate(over="ignore"):
            dist = (dist.astype(np.float64) / (scale * scale)).astype(np.float32)
    if metric == "cosine":
        np.clip(dist, 0.0, 2.0, out=dist)  # rounding can step just outside 1 - cos's range
    return idx, dist


def _prepare(
    m: Matrix, k: Any, metric: Any, backend: Any, seed: Any, exclude_self: bool, func: str
) -> tuple[np.ndarray | torch.Tensor, float, int, str, int]:
    """Validate knn_search's arguments; return (float32 matrix, its scale, k, concrete backend, seed)."""
    n = len(m)
    hi = n - 1 if exclude_self else n
    fix = f"Fix: use k <= {hi} (N = {n} points{', excluding the point itself' if exclude_self else ''})."
    k = check_int(k, "k", func, 1, hi, fix)
    metric = _check_choice(metric, "metric", func, METRICS)
    backend = _check_choice(backend, "backend", func, BACKENDS)
    seed = check_int(seed, "seed", func, 0)
    xm, scale = _search_matrix(m, metric)
    chosen = _resolve_backend(backend, xm)
    if chosen == "faiss-gpu" and k + int(exclude_self) > _FAISS_GPU_MAX_K:
        raise param_error(
            "k",
            func,
            f"<= {_FAISS_GPU_MAX_K - int(exclude_self)} with backend='faiss-gpu'",
            k,
            "Fix: use backend='torch'.",
        )
    return xm, scale, k, chosen, seed


def knn_graph(
    x: ArrayLike,
    k: int,
    *,
    metric: Metric = "l2",
    backend: Backend = "auto",
    seed: int = 0,
    weighted: bool = False,
    name: str | None = None,
) -> sp.csr_matrix:
    """The symmetric k-NN graph of x as an (N, N) float32 CSR matrix.

    Edge (i, j) exists iff j is among i's k nearest others or i among j's (union); no self loops, no
    duplicate entries, sorted indices. Unweighted (every entry 1.0) by default, as in the LCC paper.

    ``weighted=True`` gives UMAP-style fuzzy weights, which separate classes better when there are many
    (in our k-NN/community benchmarks): with d the Euclidean distance (sqrt of the squared L2 that
    :func:`knn_search` returns; 1 - cos for ``metric="cosine"``), ``w_ij = exp(-(d_ij - rho_i) / sigma_i)``
    where ``rho_i`` is i's nearest distance and ``sigma_i`` the mean of its k distances minus ``rho_i``;
    then the fuzzy union ``w + w^T - w * w^T``. Weights lie in (0, 1], the nearest neighbour gets 1.

    Args: as :func:`knn_search`, plus ``weighted``.
    """
    func = _where("knn_graph", name)
    if not isinstance(weighted, bool):
        raise param_error("weighted", func, "a bool", weighted)
    m = as_matrix(x, "x", func, min_rows=2, keep_device=True)
    return _knn_graph(m, k, metric, backend, seed, weighted, func)


def _knn_graph(
    m: Matrix, k: Any, metric: Any, backend: Any, seed: Any, weighted: bool, func: str
) -> sp.csr_matrix:
    """knn_graph of an already validated matrix (the epoch start passes the one it validated)."""
    # The fuzzy weights depend on distance ratios only, so they ignore the power-of-two scale.
    xm, _, k, chosen, seed = _prepare(m, k, metric, backend, seed, True, func)
    indices, distances = _knn(xm, k, metric, chosen, seed, True)
    if not weighted:
        return _graph_from_indices(indices, None)
    d = np.sqrt(distances, dtype=np.float64) if metric == "l2" else distances.astype(np.float64)
    return _graph_from_indices(indices, d)


def knn_graph_from_indices(
    indices: np.ndarray, n: int | None = None, *, distances: np.ndarray | None = None
) -> sp.csr_matrix:
    """The union-symmetrised graph of a precomputed neighbour array, as :func:`knn_graph` builds it.

    Reuses an expensive search: ``knn_graph_from_indices(idx50[:, :10])`` is the k=10 graph of a k=50
    search (exact for exact searches, and better recall than a direct approximate k=10 search).

    Args:
        indices: (N, k) integer array, row i = the neighbours of point i; entries equal to i (self) are
            dropped; entries within a row must be distinct and in [0, N).
        n: number of points; must equal N when given.
        distances: optional (N, k) non-negative distances matching ``indices``: when given, the graph gets
            the fuzzy weights described in :func:`knn_graph` computed from them (pass metric distances,
            e.g. Euclidean rather than squared, to match UMAP).

    Returns:
        (N, N) float32 CSR matrix, symmetric, zero diagonal.
    """
    func = "knn_graph_from_indices"
    idx = to_numpy(indices, "indices", func)
    if idx.ndim != 2 or not np.issubdtype(idx.dtype, np.integer):
        raise param_error(
            "indices", func, "a 2-D integer array (N, k)", f"{idx.dtype} array of shape {idx.shape}"
        )
    nrows = idx.shape[0]
    if n is not None:
        check_int(n, "n", func, 1)
        if n != nrows:
            raise param_error("n", func, f"equal to indices.shape[0] = {nrows}", n, "Fix: pass n=None.")
    if nrows < 1 or idx.shape[1] < 1:
        raise param_error(
            "indices", func, "non-empty with shape (N, k), N >= 1, k >= 1", f"shape {idx.shape}"
        )
    if idx.min() < 0 or idx.max() >= nrows:
        raise param_error("indices", func, f"in [0, {nrows})", f"values in [{idx.min()}, {idx.max()}]")
    srt = np.sort(idx, axis=1)
    dup_rows = np.flatnonzero((srt[:, 1:] == srt[:, :-1]).any(axis=1))
    if dup_rows.size:
        raise param_error(
            "indices",
            func,
            "free of repeated neighbours within a row",
            f"{dup_rows.size} rows with repeats (first: {dup_rows[0]})",
        )
    d = None
    if distances is not None:
        d = np.asarray(to_numpy(distances, "distances", func), dtype=np.float64)
        if d.shape != idx.shape:
            raise param_error(
                "distances", func, f"of the same shape as indices {idx.shape}", f"shape {d.shape}"
            )
        if not np.isfinite(d).all() or (d < 0).any():
            raise param_error("distances", func, "finite and >= 0", "negative or non-finite values")
    return _graph_from_indices(idx.astype(np.int64, copy=False), d)


def knn_recall(approx_indices: np.ndarray, exact_indices: np.ndarray) -> float:
    """Mean over rows of the fraction of true neighbours found: |approx_i ∩ exact_i| / k_exact.

    Args:
        approx_indices: (N, k_a) integer array (negative entries, faiss's "not found", never match).
        exact_indices: (N, k_e) integer array of the true neighbours (distinct within a row).
    """
    func = "knn_recall"
    a = to_numpy(approx_indices, "approx_indices", func)
    e = to_numpy(exact_indices, "exact_indices", func)
    for param, arr in (("approx_indices", a), ("exact_indices", e)):
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer) or arr.shape[1] < 1:
            raise param_error(
                param,
                func,
                "a 2-D integer array (N, k) with k >= 1",
                f"{arr.dtype} array of shape {arr.shape}",
            )
    if a.shape[0] != e.shape[0]:
        raise param_error(
            "approx_indices", func, f"{e.shape[0]} rows like exact_indices", f"{a.shape[0]} rows"
        )
    if a.shape[0] == 0:
        return float("nan")
    # Offset each row's ids into its own range so one global np.isin does every per-row intersection.
    span = int(max(a.max(), e.max())) + 2
    rows = np.arange(a.shape[0], dtype=np.int64)[:, None] * span
    a_off = (
        np.where(a >= 0, a.astype(np.int64) + 1, 0) + rows
    )  # +1: a "not found" -1 maps to 0, matching nothing
    e_off = e.astype(np.int64) + 1 + rows
    hits = np.isin(e_off, a_off)  # each true neighbour counted once, even if approx repeats it
    return float(hits.mean())


# --------------------------------------------------------------------------- private fast path (trusts inputs)


def _knn(
    x: np.ndarray | torch.Tensor, k: int, metric: str, backend: str, seed: int, exclude_self: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Search the prepared float32 matrix (:func:`_search_matrix`); distances in its units (times its
    scale squared): squared L2, or half of it for cosine (unit rows: squared L2 = 2 - 2 cos)."""
    if backend == "torch":
        xt = x if isinstance(x, torch.Tensor) else torch.from_numpy(x)
        idx_t, dist_t = _torch_knn(xt, k, exclude_self)
        idx, dist = idx_t.cpu().numpy(), dist_t.cpu().numpy()
    else:
        xn = x.cpu().numpy() if isinstance(x, torch.Tensor) else x
        dist, idx = _faiss_search(xn, k, backend, seed, exclude_self)
    if metric == "cosine":
        dist = np.maximum(dist * 0.5, 0.0)  # ||a - b||^2 = 2 - 2 cos for unit rows
    return idx.astype(np.int64, copy=False), dist.astype(np.float32, copy=False)


def _drop_self(idx: np.ndarray, dist: np.ndarray, first: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, k+1) -> (n, k) for rows first..first+n-1: drop each row's own index where present, else its last entry."""
    n = idx.shape[0]
    drop = idx == np.arange(first, first + n)[:, None]
    no_self = ~drop.any(axis=1)  # self pushed out of the top k+1 by exact duplicates
    drop[no_self, -1] = True
    keep = ~drop
    k = idx.shape[1] - 1
    return idx[keep].reshape(n, k), dist[keep].reshape(n, k)


def _faiss(purpose: str) -> Any:
    faiss = require("faiss", "graph", purpose=purpose, pip_name="faiss-cpu")
    # faiss's OpenMP pool and torch's intra-op pool would otherwise both take every core.
    faiss.omp_set_num_threads(torch.get_num_threads())
    return faiss


def _faiss_search(
    x: np.ndarray, k: int, backend: str, seed: int, exclude_self: bool
) -> tuple[np.ndarray, np.ndarray]:
    faiss = _faiss(f"k-NN search with backend={backend!r}")
    kq = k + 1 if exclude_self else k
    d = x.shape[1]
    if backend == "ivf":
        found = _ivf_search(faiss, x, kq, seed)
        if found is not None:
            return _collect(faiss, x, lambda s, e: (found[0][s:e], found[1][s:e]), k, kq, exclude_self)
        backend = "faiss"  # the calibrated scan would cover most points: exact costs less, and is exact
    index: Any
    if backend == "faiss":
        index = faiss.IndexFlatL2(d)
    elif backend == "faiss-gpu":
        if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
            raise LatentccError(
                "backend='faiss-gpu' needs a faiss build with GPU support and a visible GPU, but "
                f"faiss.get_num_gpus() == {faiss.get_num_gpus()}. Fix: pass a CUDA tensor with backend='torch' "
                "(exact, no extra dependency), or install faiss-gpu instead of faiss-cpu (never both)."
            )
        res = faiss.StandardGpuResources()
        index = faiss.GpuIndexFlatL2(res, d)
    else:  # hnsw
        index = faiss.IndexHNSWFlat(d, 32)
        index.hnsw.efConstruction = 64
    index.add(x)
    if backend == "hnsw":
        index.hnsw.efSearch = max(2 * kq, 64)
    return _collect(faiss, x, lambda s, e: index.search(x[s:e], kq), k, kq, exclude_self)


def _collect(
    faiss: Any, x: np.ndarray, search: Any, k: int, kq: int, exclude_self: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(N, k) distances and ids from ``search(s, e)`` -> the (e - s, kq) results of rows s..e-1."""
    # Queries go in row blocks written straight into the (N, k) results, so the (N, k+1) arrays of a
    # whole-set search never coexist with their trimmed copies (at N=40k, k=500: 0.24 GiB less peak).
    # faiss blocks exact searches internally anyway (4096 queries), so the arithmetic is unchanged.
    n, d = x.shape
    dist = np.empty((n, k), dtype=np.float32)
    idx = np.empty((n, k), dtype=np.int64)
    flat = None
    step = max(1024, _QUERY_BLOCK_ELEMS // kq)
    for s in range(0, n, step):
        e = min(n, s + step)
        bd, bi = search(s, e)
        missing = np.flatnonzero((bi < 0).any(axis=1))
        if missing.size:
            # Approximate indexes can return fewer than kq hits (-1) in sparse regions: redo those rows exactly.
            if flat is None:
                flat = faiss.IndexFlatL2(d)
                flat.add(x)
            bd, bi = bd.copy(), bi.copy()
            bd[missing], bi[missing] = flat.search(x[s:e][missing], kq)
        if exclude_self:
            bi, bd = _drop_self(bi, bd, first=s)
        dist[s:e], idx[s:e] = bd, bi
    return dist, idx


_QUERY_BLOCK_ELEMS = 1 << 23  # query rows x neighbours per faiss search call


def _ivf_nlist(n: int) -> int:
    # ~sqrt(N)/2 lists (112 at 50k, 500 at 1M): lists of ~2 sqrt(N) points keep each list's matmul large
    # enough for BLAS; at 50k, 224 lists scanned 17 % fewer points for the same recall but took longer
    # (more, smaller calls). At least 39 training points per list (faiss's k-means minimum).
    return max(1, min(int(0.5 * math.sqrt(n)), n // 39))


def _ivf_search(faiss: Any, x: np.ndarray, kq: int, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """IVF search scanned with BLAS: the (N, kq) squared distances and ids, each row sorted ascending
    (-1 where a row's lists held fewer than kq points); None when the scan needed for ``_IVF_RECALL`` would cover > ``_IVF_MAX_SCAN`` of
    the points (then exact search is cheaper).

    1. Lists: seeded k-means (``_ivf_nlist`` centroids, trained on a seeded subsample); every point goes
       to its nearest centroid.
    2. nprobe is *measured*, not guessed: for ``_IVF_SAMPLE`` seeded sample rows the exact neighbours are
       searched, and a true neighbour is found iff its list is among the row's nprobe nearest lists
       (the scan within a list is exact). nprobe is the smallest count whose recall on the sample reaches
       ``_IVF_RECALL``. So recall holds on any data; only the cost adapts (overlapping classes need more
       lists scanned than well separated latents).
    3. Scan: queries are grouped by the lists they probe, and each (queries x list) block is one BLAS
       matmul of [x, 1] with [-2 b, |b|^2] (the squared distance minus |x|^2, which ranks the same)
       merged into per-query faiss heaps. faiss's IndexIVFFlat scans list by list with per-query SIMD
       loops instead, 3-5x slower per distance than BLAS (measured at N=50k, D=128).
    Deterministic: same seed, same lists, same nprobe, same matmul shapes, same neighbours.
    """
    from faiss import swig_ptr

    n, d = x.shape
    nlist = _ivf_nlist(n)
    km = faiss.Kmeans(d, nlist, niter=10, seed=seed, max_points_per_centroid=64)
    rng = np.random.default_rng(seed)
    km.train(x[np.sort(rng.choice(n, size=min(n, 64 * nlist), replace=False))])
    quantizer = faiss.IndexFlatL2(d)
    quantizer.add(km.centroids)
    lists = quantizer.search(x, 1)[1][:, 0]
    order = np.argsort(lists, kind="stable")
    bounds = np.searchsorted(lists[order], np.arange(nlist + 1))
    nprobe, scan = _ivf_nprobe(faiss, x, kq, quantizer, lists, np.diff(bounds), rng)
    if scan > _IVF_MAX_SCAN:
        return None
    # [-2 b, |b|^2] in list order (each list one contiguous slice), queries as [x, 1]
    base = np.empty((n, d + 1), dtype=np.float32)
    np.multiply(x[order], -2.0, out=base[:, :d])
    norms = np.einsum("ij,ij->i", x, x)
    base[:, d] = norms[order]
    dist = np.full((n, kq), np.inf, dtype=np.float32)
    ids = np.full((n, kq), -1, dtype=np.int64)
    heap = faiss.float_maxheap_array_t()
    heap.nh, heap.k, heap.val, heap.ids = n, kq, swig_ptr(dist), swig_ptr(ids)
    rows = _IVF_QUERY_ROWS
    longest = int(np.diff(bounds).max())
    # Reused buffers: fresh arrays per block would page-fault GiBs in (2x slower on this VM).
    qbuf = np.ones((rows, d + 1), dtype=np.float32)
    out = np.empty(rows * longest, dtype=np.float32)
    threads = faiss.omp_get_max_threads()
    # numpy's BLAS pool and faiss's OpenMP pool alternate thousands of times here; both spin-wait for
    # work, so each steals cores from the other (2x slower at 2 threads): the heap merges run on one.
    faiss.omp_set_num_threads(1)
    try:
        for s in range(0, n, _IVF_QUERY_CHUNK):
            probes = quantizer.search(x[s : s + _IVF_QUERY_CHUNK], nprobe)[1]
            # each row's nearest list first, then the others: the first pass fills the heaps with close
            # points, so the later blocks mostly fail the heap's top test (fewer inserts)
            key = probes + nlist * (np.arange(nprobe) > 0)
            flat = np.argsort(key.ravel(), kind="stable")
            queries = (flat // nprobe + s).astype(np.int64)
            cut = np.searchsorted(key.ravel()[flat], np.arange(2 * nlist + 1))
            for b in range(2 * nlist):
                j = b % nlist
                members = order[bounds[j] : bounds[j + 1]]
                block = base[bounds[j] : bounds[j + 1]].T
                for r in range(cut[b], cut[b + 1], rows):
                    q = queries[r : min(r + rows, cut[b + 1])]
                    np.take(x, q, axis=0, out=qbuf[: len(q), :d])
                    res = out[: len(q) * len(members)].reshape(len(q), len(members))
                    np.matmul(qbuf[: len(q)], block, out=res)
                    heap.addn_query_subset_with_ids(
                        len(q), swig_ptr(q), len(members), swig_ptr(res), swig_ptr(members), 0
                    )
    finally:
        faiss.omp_set_num_threads(threads)
    heap.reorder()  # ascending distance per row
    dist += norms[:, None]
    np.maximum(dist, 0.0, out=dist)  # cancellation can leave tiny negatives
    return dist, ids


def _ivf_nprobe(
    faiss: Any, x: np.ndarray, kq: int, quantizer: Any, lists: np.ndarray, sizes: np.ndarray, rng: Any
) -> tuple[int, float]:
    """(the smallest nprobe whose recall@kq on ``_IVF_SAMPLE`` seeded rows reaches ``_IVF_RECALL``, the
    mean fraction of the points those rows' nprobe lists hold: the share of an exact search's work)."""
    n = len(x)
    nlist = quantizer.ntotal
    sample = np.sort(rng.choice(n, size=min(n, _IVF_SAMPLE), replace=False))
    true_ids = faiss.knn(x[sample], x, kq)[1]  # exact: ~SAMPLE/N of an exact search's cost
    ranked = quantizer.search(x[sample], nlist)[1]  # every list, nearest first
    rank = np.empty_like(ranked)
    np.put_along_axis(rank, ranked, np.arange(nlist)[None, :], axis=1)
    needed = np.sort(np.take_along_axis(rank, lists[true_ids], axis=1), axis=None)
    nprobe = int(needed[math.ceil(_IVF_RECALL * needed.size) - 1]) + 1
    # k-means lists are unbalanced (at 1M: the 170 largest of 500 lists hold 83 % of the points, the
    # lists a row actually probes 34 %), so the cost is measured on the sample too
    return nprobe, float(sizes[ranked[:, :nprobe]].sum(axis=1).mean() / n)


# Recall@k the IVF scan is calibrated to on its sample (0.96 so that the whole set, a different sample,
# stays >= 0.95: at 50k the sample and the full recall agreed to 0.002), the sample size, and the largest
# scanned fraction worth it (at 50k x 128, k=50 the BLAS scan of 43 % of the points took ~0.6 of exact).
_IVF_RECALL = 0.96
_IVF_SAMPLE = 1000
_IVF_MAX_SCAN = 0.6
_IVF_QUERY_CHUNK = 65536  # queries whose probes are grouped at once (65536 x nprobe ids)
_IVF_QUERY_ROWS = 4096  # query rows per matmul


def _torch_knn(x: torch.Tensor, k: int, exclude_self: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k-NN by blocked ||a||^2 + ||b||^2 - 2ab and topk on x's device; peak ~rows*N floats per block."""
    n = x.shape[0]
    rows = max(1, min(_TORCH_MAX_ROWS, _TORCH_BLOCK_ELEMS // n))
    sq = (x * x).sum(dim=1)
    out_i = torch.empty((n, k), dtype=torch.int64, device=x.device)
    out_d = torch.empty((n, k), dtype=torch.float32, device=x.device)
    ar = torch.arange(rows, device=x.device)
    for s in range(0, n, rows):
        e = min(n, s + rows)
        block = torch.addmm(sq[None, :], x[s:e], x.T, beta=1.0, alpha=-2.0)
        block += sq[s:e, None]
        if exclude_self:
            block[ar[: e - s], ar[: e - s] + s] = float("inf")  # self excluded exactly, duplicates or not
        d, i = torch.topk(block, k, dim=1, largest=False, sorted=True)
        out_i[s:e] = i
        out_d[s:e] = d.clamp_min_(0.0)  # cancellation can leave tiny negatives
    return out_i, out_d


def _graph_from_indices(idx: np.ndarray, dist: np.ndarray | None) -> sp.csr_matrix:
    """Union-symmetrised CSR from distinct-per-row neighbour ids; fuzzy weights when dist is given."""
    n = idx.shape[0]
    # int32 ids halve the transient memory (N k entries: 20M at N=40k, k=500); CSR uses int32 anyway.
    ids = idx.astype(np.int32 if n < 2**31 else np.int64, copy=False)
    rows = np.arange(n, dtype=ids.dtype)[:, None]
    if dist is None:
        cols = np.sort(ids, axis=1)  # unweighted: sorting the ids is all CSR needs (no argsort)
        keep = cols != rows  # no self loops
        data = None
    else:
        order = np.argsort(ids, axis=1, kind="stable")
        cols = np.take_along_axis(ids, order, axis=1)
        keep = cols != rows
        data = np.take_along_axis(_fuzzy_weights(dist, ids != rows), order, axis=1)[keep]
        del order
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(keep.sum(axis=1), out=indptr[1:])
    kept = cols[keep]
    del cols, keep
    if data is None:
        data = np.ones(kept.size, dtype=np.float32)
    # Rows already sorted and duplicate-free: build CSR directly (3x faster than COO -> CSR at N=50k, k=50).
    a = sp.csr_matrix((data, kept, indptr), shape=(n, n))
    del data, kept
    if dist is None:
        g = a.maximum(a.T)
    else:
        at = a.T.tocsr()
        g = a + at - a.multiply(at)  # fuzzy union 1 - (1 - w)(1 - w^T): symmetric, in (0, 1]
    g = sp.csr_matrix(g, dtype=np.float32)
    g.sort_indices()
    return g


def _fuzzy_weights(dist: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """exp(-(d - rho) / sigma) per row over the valid (non-self) entries; invalid entries are discarded later."""
    d = dist.astype(np.float64, copy=False)
    count = valid.sum(axis=1, keepdims=True)
    rho = np.where(valid, d, np.inf).min(axis=1, keepdims=True)
    rho = np.where(count > 0, rho, 0.0)
    mean = np.where(valid, d, 0.0).sum(axis=1, keepdims=True) / np.maximum(count, 1)
    sigma = mean - rho
    sigma = np.where(sigma > 0, sigma, 1.0)  # all k distances equal: every weight is exp(0) = 1 anyway
    w = np.exp(-np.maximum(d - rho, 0.0) / sigma)
    return np.maximum(w, _MIN_WEIGHT)
