"""k-nearest-neighbour search: the one search of latentcc (LCC step 2, the targets, the k-NN probe).

Every neighbour search of the package runs here, behind one small protocol (:class:`KnnBackend`: a name, whether
it is exact, and ``search(base, queries, k)``, as scanpy's ``KnnTransformerLike``): the k-NN graph that
community detection runs on (:mod:`latentcc.graph.knn_graph`), the LCC targets (:mod:`latentcc.lcc.targets`)
and the k-NN probe (:mod:`latentcc.metrics.probes`). A new backend is a class with ``name``, ``exact`` and
``search`` added to :data:`KNN_BACKENDS` (and to ``LCCConfig.knn_backend``'s choices).

Backends (:data:`KNN_BACKENDS`; docs/benchmarks.md has the measurements behind the defaults):

- ``"faiss"``: exact ``IndexFlatL2``; deterministic.
- ``"hnsw"``: faiss ``IndexHNSWFlat`` (M=32), approximate; multi-threaded inserts are not bit-reproducible.
- ``"ivf"``: inverted lists from a seeded k-means (~sqrt(N)/2 lists), each query searched exactly within
  the lists nearest to it; how many lists (nprobe) is *measured* on every call: the smallest count whose
  recall@k against an exact search of 1000 seeded sample queries reaches 0.96 (a margin for the sample's
  error: at 50k the sample's and the whole set's recall agreed to 0.002; only the cost adapts). Lists are
  scanned by BLAS matmuls into faiss heaps (3-5x faster per distance than faiss's ``IndexIVFFlat``); when
  the scan would cover more than 60 % of the points the exact search runs instead. Deterministic: same
  seed, same neighbours.
- ``"torch"``: exact blocked matmul + topk on the data's device.
- ``"faiss-gpu"``: exact ``GpuIndexFlatL2``; needs a faiss build with GPU support.

``"auto"`` (:func:`choose_backend`) picks ``"torch"`` for CUDA tensors and when faiss is not installed;
otherwise, for a search that may be approximate (the k-NN graph), exact faiss up to ``EXACT_MAX_N`` (30k)
base points and the calibrated IVF above; for a search that must be exact (the LCC targets, the k-NN
probe), the torch matmul when the search is small (at most 2^20 query x base pairs, where faiss's per-call
setup costs more than the search) and exact faiss otherwise.

Threads: every faiss call runs inside :func:`faiss_threads`, which sizes faiss's OpenMP pool to torch's
intra-op pool (the two pools would otherwise both take every core) and restores the previous size after.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal, Protocol

import numpy as np
import torch

from latentcc.config import LCCConfig
from latentcc.plumbing.arrays import Matrix, joint_frame, joint_unit_frame
from latentcc.plumbing.errors import LatentccError, param_error, require
from latentcc.plumbing.validate import as_matrix, check_bool, check_choice, check_int, to_numpy

Metric = Literal["l2", "cosine"]
Backend = Literal["auto", "faiss", "hnsw", "ivf", "torch", "faiss-gpu"]
METRICS: tuple[str, ...] = ("l2", "cosine")

# Exact search costs N^2 D multiply-adds; above this many points "auto" runs the calibrated IVF scan
# (recall@k >= 0.95, deterministic) where approximate neighbours are allowed. Measured at D=128, k=50 on
# an overlapping 100-class mixture (2 cores): at 20k points the scan needed for 0.96 recall covered > 60 %
# of the points, so IVF fell back to exact anyway (0.8 s); at 50k it scanned 43 % and took 3.0 s against
# exact's 4.0-4.2 s.
EXACT_MAX_N = 30_000
# Exact searches of at most this many query x base pairs run on torch under "auto": below it building a
# faiss index and its thread pool costs more than the search (the LCC targets' many per-cluster searches).
SMALL_SEARCH = 2**20
# The torch backend materialises a (rows, N) float32 distance block: 2^27 floats = 512 MiB peak.
_TORCH_BLOCK_ELEMS = 2**27
_TORCH_MAX_ROWS = 4096
# faiss GPU flat search supports at most 2048 neighbours per query.
_FAISS_GPU_MAX_K = 2048

ArrayLike = np.ndarray | torch.Tensor
Rows = np.ndarray | torch.Tensor  # prepared float32 C-contiguous rows (a tensor only for "torch")


# --------------------------------------------------------------------------- backends


@contextmanager
def faiss_threads(purpose: str, threads: int | None = None) -> Iterator[Any]:
    """The faiss module, with its OpenMP pool set to ``threads`` (default: torch's intra-op thread count)
    inside the block and restored after: the one place latentcc sets faiss's process-wide thread count."""
    faiss = require("faiss", "graph", purpose=purpose, pip_name="faiss-cpu")
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(torch.get_num_threads() if threads is None else threads)
    try:
        yield faiss
    finally:
        faiss.omp_set_num_threads(before)


class KnnBackend(Protocol):
    """A neighbour search. ``search`` trusts its inputs (they come from :func:`knn_search`'s door or from
    a caller that prepared them): ``base`` (N, D) and ``queries`` (M, D) float32 C-contiguous rows (numpy;
    a tensor on any device for ``"torch"``), ``queries=None`` for a self-search of ``base``, 1 <= k <= N
    (N - 1 with ``exclude_self``). Returns (M, k) int64 indices into ``base`` and (M, k) float32 squared
    L2 distances, nearest first; ``exclude_self`` (self-searches only) drops each row's own index
    wherever it ranks (the farthest of k + 1 when exact duplicates push it out)."""

    name: str
    exact: bool

    def search(
        self, base: Rows, queries: Rows | None, k: int, *, exclude_self: bool = False, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray]: ...


class FaissFlat:
    """Exact ``IndexFlatL2`` (``"faiss"``) or ``GpuIndexFlatL2`` (``"faiss-gpu"``)."""

    exact = True

    def __init__(self, gpu: bool = False) -> None:
        self.gpu = gpu
        self.name = "faiss-gpu" if gpu else "faiss"

    def search(
        self, base: Rows, queries: Rows | None, k: int, *, exclude_self: bool = False, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        def build(faiss: Any, b: np.ndarray, kq: int) -> Any:
            index = _gpu_flat(faiss, b.shape[1]) if self.gpu else faiss.IndexFlatL2(b.shape[1])
            index.add(b)
            return index

        return _index_search(self.name, base, queries, k, exclude_self, build)


class FaissHNSW:
    """faiss ``IndexHNSWFlat`` (M=32, efConstruction 64, efSearch max(2 k, 64)): approximate."""

    name, exact = "hnsw", False

    def search(
        self, base: Rows, queries: Rows | None, k: int, *, exclude_self: bool = False, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        def build(faiss: Any, b: np.ndarray, kq: int) -> Any:
            index = faiss.IndexHNSWFlat(b.shape[1], 32)
            index.hnsw.efConstruction = 64
            index.add(b)
            index.hnsw.efSearch = max(2 * kq, 64)
            return index

        return _index_search(self.name, base, queries, k, exclude_self, build)


def _index_search(
    name: str, base: Rows, queries: Rows | None, k: int, exclude_self: bool, build: Callable[..., Any]
) -> tuple[np.ndarray, np.ndarray]:
    """A search through the faiss index ``build(faiss, base, kq)`` returns (base added), in query blocks."""
    b, q = _numpy(base), None if queries is None else _numpy(queries)
    kq = k + int(exclude_self)
    with faiss_threads(f"k-NN search with backend={name!r}") as faiss:
        index = build(faiss, b, kq)
        rows = b if q is None else q
        return _collect(faiss, b, q, lambda s, e: index.search(rows[s:e], kq), k, kq, exclude_self)


class IVFScan:
    """The calibrated IVF scan (module docstring; :func:`_ivf_search`): approximate, deterministic."""

    name, exact = "ivf", False

    def search(
        self, base: Rows, queries: Rows | None, k: int, *, exclude_self: bool = False, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        b, q = _numpy(base), None if queries is None else _numpy(queries)
        kq = k + int(exclude_self)
        with faiss_threads("k-NN search with backend='ivf'") as faiss:
            found = _ivf_search(faiss, b, b if q is None else q, kq, seed)
            if found is None:  # the calibrated scan would cover most points: exact costs less, and is exact
                return FaissFlat().search(b, q, k, exclude_self=exclude_self)
            return _collect(faiss, b, q, lambda s, e: (found[0][s:e], found[1][s:e]), k, kq, exclude_self)


class TorchExact:
    """Exact blocked ``|b|^2 - 2 q.b`` matmul + topk on the rows' device (:func:`_torch_search`)."""

    name, exact = "torch", True

    def search(
        self, base: Rows, queries: Rows | None, k: int, *, exclude_self: bool = False, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        q = None if queries is None else _tensor(queries)
        idx, dist = _torch_search(_tensor(base), q, k, exclude_self)
        return idx.cpu().numpy(), dist.cpu().numpy()


KNN_BACKENDS: dict[str, KnnBackend] = {
    b.name: b for b in (FaissFlat(), FaissHNSW(), IVFScan(), TorchExact(), FaissFlat(gpu=True))
}
BACKENDS: tuple[str, ...] = ("auto", *KNN_BACKENDS)


def choose_backend(backend: str, base: Rows, n_queries: int, *, exact: bool) -> KnnBackend:
    """The backend object for ``backend``, resolving ``"auto"`` (module docstring) for a search of
    ``n_queries`` queries in ``base`` that must be exact (``exact=True``) or may be approximate.

    With ``exact=True`` an approximate backend ("hnsw", "ivf") is replaced by exact faiss: the LCC targets and
    the k-NN probe need the true neighbours (and reproducible ones); only the graph may be approximate.
    """
    if backend != "auto":
        chosen = KNN_BACKENDS[backend]
        return KNN_BACKENDS["faiss"] if exact and not chosen.exact else chosen
    if (isinstance(base, torch.Tensor) and base.is_cuda) or importlib.util.find_spec("faiss") is None:
        return KNN_BACKENDS["torch"]  # on the data's GPU; without faiss exact and ~1.5-2x slower on CPU
    n = int(base.shape[0])
    if exact:
        return KNN_BACKENDS["torch" if n * n_queries <= SMALL_SEARCH else "faiss"]
    return KNN_BACKENDS["faiss" if n <= EXACT_MAX_N else "ivf"]


def _numpy(x: Rows) -> np.ndarray:
    return x.cpu().numpy() if isinstance(x, torch.Tensor) else x


def _tensor(x: Rows) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(x)


def _gpu_flat(faiss: Any, d: int) -> Any:
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        raise LatentccError(
            "backend='faiss-gpu' needs a faiss build with GPU support and a visible GPU, but "
            f"faiss.get_num_gpus() == {faiss.get_num_gpus()}. Fix: pass a CUDA tensor with backend='torch' "
            "(exact, no extra dependency), or install faiss-gpu instead of faiss-cpu (never both)."
        )
    res = faiss.StandardGpuResources()
    index = faiss.GpuIndexFlatL2(res, d)
    index.latentcc_resources = res  # the GPU memory the index uses lives as long as the index
    return index


# --------------------------------------------------------------------------- public API


def _where(func: str, name: str | None) -> str:
    return f"{func} (for {name!r})" if name else func


def knn_search(
    x: ArrayLike,
    k: int,
    *,
    queries: ArrayLike | None = None,
    metric: Metric = LCCConfig.metric,
    backend: Backend = LCCConfig.knn_backend,
    seed: int = LCCConfig.seed,
    exclude_self: bool | None = None,
    name: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's k nearest points of x, nearest first; without ``queries``, each point's k nearest others.

    Args:
        x: (N, D) numpy array, torch tensor or nested list, any real dtype (:mod:`latentcc.plumbing.validate`);
            searched as float32. A CUDA tensor stays on its GPU with ``backend="torch"`` (the ``"auto"``
            choice for CUDA tensors). For ``"l2"`` the rows are first translated in float64 so each
            column's range is centred on 0 (then multiplied by a power of two if still extreme): the
            neighbours and distances do not depend on where the data sits in space, e.g. latents around
            1e5 with a spread of 1e-3 are searched as precisely as the same latents around 0. For
            ``"cosine"`` (which does depend on where the data sits) the rows as given are normalised in
            float64 and the *unit rows* are translated the same way: nearly parallel rows (latents
            around 1e12 with a spread of 1e-2) keep their cosine neighbours to float64's precision.
        k: neighbours per query, 1 <= k <= N (N - 1 when each point excludes itself).
        queries: (M, D) rows to find neighbours for, translated together with x (one frame for both);
            None: x itself.
        metric: ``"l2"`` (squared Euclidean distance) or ``"cosine"`` (1 - cosine similarity, computed as
            half the squared L2 distance of unit-normalised rows; all-zero rows are rejected).
        backend: ``"auto"``, ``"faiss"``, ``"hnsw"``, ``"ivf"``, ``"torch"`` or ``"faiss-gpu"`` (module
            docstring; ``"auto"`` may pick the approximate IVF scan above 30k points).
        seed: seeds the IVF k-means, its training subsample and the recall sample; exact backends ignore it.
        exclude_self: drop each point from its own list (robust to duplicate points: the point itself
            is removed wherever it ranks, else the last of k+1 results is dropped). None: True without
            ``queries``, False with them (a query is not a row of x, so True is refused there).
        name: what x is (e.g. a layer name), quoted in error messages.

    Returns:
        indices: (M, k) int64, distances: (M, k) float32, both sorted by increasing distance (numpy);
        distances beyond float32's range (|x| ~ 1e19 and more) are inf, the indices stay exact.
    """
    func = _where("knn_search", name)
    m = as_matrix(x, "x", func, min_rows=1 if queries is not None else 2, keep_device=True)
    mq = None if queries is None else _as_queries(queries, m, func)
    exclude = queries is None if exclude_self is None else check_bool(exclude_self, "exclude_self", func)
    if exclude and mq is not None:
        raise param_error(
            "exclude_self", func, "False or None when queries are given (a query is not a row of x)", True
        )
    k = check_k(k, len(m), exclude, func)
    metric = check_choice(metric, "metric", func, METRICS)
    backend = check_choice(backend, "backend", func, BACKENDS)
    seed = check_int(seed, "seed", func, 0)
    return knn_search_trusted(
        m, mq, k, metric=metric, backend=backend, seed=seed, exclude_self=exclude, func=func
    )


def _as_queries(queries: Any, m: Matrix, func: str) -> Matrix:
    mq = as_matrix(queries, "queries", func, keep_device=True)
    if mq.shape[1] != m.shape[1]:
        raise param_error(
            "queries", func, f"an (M, D) array with the width of x, D = {m.shape[1]}", f"shape {mq.shape}"
        )
    where = [d.device if isinstance(d, torch.Tensor) else torch.device("cpu") for d in (m.data, mq.data)]
    if where[0] != where[1]:  # one search runs on one device
        raise param_error(
            "queries", func, f"on the device of x ({where[0]})", f"queries on {where[1]}",
            f"Fix: move them first, e.g. queries.to('{where[0]}') (or x to the queries' device).",
        )  # fmt: skip
    return mq


def check_k(k: Any, n: int, exclude_self: bool, func: str) -> int:
    """``k`` validated for a search among n points (n - 1 when each point excludes itself)."""
    hi = n - 1 if exclude_self else n
    fix = f"Fix: use k <= {hi} (N = {n} points{', excluding the point itself' if exclude_self else ''})."
    return check_int(k, "k", func, 1, hi, fix)


def knn_search_trusted(
    m: Matrix,
    queries: Matrix | None,
    k: int,
    *,
    metric: str,
    backend: str,
    seed: int,
    exclude_self: bool,
    exact: bool = False,
    func: str = "knn_search",
    data_units: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`knn_search` of validated inputs (matrices from :func:`~latentcc.plumbing.validate.as_matrix`,
    k, metric and backend checked); ``exact=True``: ``"auto"`` never picks an approximate backend.
    ``data_units=False``: distances in the units of the searched rows (times their power-of-two scale
    squared, so they cannot overflow; cosine: halved squared L2 of the unit rows, unclipped), for callers
    that use only their ratios (the fuzzy graph weights)."""
    base, rows, scale = _search_rows(m, queries, metric)
    chosen = choose_backend(backend, base, len(base if rows is None else rows), exact=exact)
    if chosen.name == "faiss-gpu" and k + int(exclude_self) > _FAISS_GPU_MAX_K:
        raise param_error(
            "k", func, f"<= {_FAISS_GPU_MAX_K - int(exclude_self)} with backend='faiss-gpu'", k,
            "Fix: use backend='torch'.",
        )  # fmt: skip
    idx, dist = chosen.search(base, rows, k, exclude_self=exclude_self, seed=seed)
    idx, dist = idx.astype(np.int64, copy=False), dist.astype(np.float32, copy=False)
    if metric == "cosine":
        dist = np.maximum(dist * 0.5, 0.0)  # ||a - b||^2 = 2 - 2 cos for unit rows
    if not data_units:
        return idx, dist
    if scale != 1.0:  # distances of the data as given (l2: inf beyond float32's range)
        with np.errstate(over="ignore"):
            dist = (dist.astype(np.float64) / (scale * scale)).astype(np.float32)
    if metric == "cosine":
        np.clip(dist, 0.0, 2.0, out=dist)  # rounding can step just outside 1 - cos's range
    return idx, dist


def _search_rows(m: Matrix, mq: Matrix | None, metric: str) -> tuple[Rows, Rows | None, float]:
    """(base rows, query rows or None, scale): float32 C-contiguous matrices to search with squared L2, see
    :mod:`latentcc.plumbing.arrays`:

    - l2: the rows translated to centre each column's range on 0, times ``scale``;
    - cosine: the rows *as given* normalised to unit length in float64, and only then translated
      (by the unit rows' midranges, :meth:`~latentcc.plumbing.arrays.Matrix.unit_rows`) and multiplied by
      ``scale``. Squared L2 between unit rows is 2 - 2 cos, so the ranks are the cosine ranks; the
      translation keeps nearly parallel rows (data far from the origin) apart in float32, which
      would round their unit rows to the same vector.

    Queries share the base's frame (one translation for both, a scale that keeps both finite). Both keep
    every neighbour rank: L2 distances do not change under a translation, and ``scale`` is a power of two
    (1.0 unless the spread is extreme) that :func:`knn_search` divides back out of distances.
    """
    if mq is None:
        if metric == "cosine":
            frame = m.unit_frame()
            return m.unit_rows(frame=frame), None, frame[2]
        return m.centred(), None, m.scale
    if metric == "cosine":
        uframe = joint_unit_frame(m, mq)
        return m.unit_rows(frame=uframe), mq.unit_rows(frame=uframe), uframe[2]
    shift, scale = joint_frame(m, mq)
    return m.centred(shift=shift, scale=scale), mq.centred(shift=shift, scale=scale), scale


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


def _drop_self(idx: np.ndarray, dist: np.ndarray, first: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, k+1) -> (n, k) for rows first..first+n-1: drop each row's own index where present, else its last entry."""
    n = idx.shape[0]
    drop = idx == np.arange(first, first + n)[:, None]
    no_self = ~drop.any(axis=1)  # self pushed out of the top k+1 by exact duplicates
    drop[no_self, -1] = True
    keep = ~drop
    k = idx.shape[1] - 1
    return idx[keep].reshape(n, k), dist[keep].reshape(n, k)


def _collect(
    faiss: Any,
    base: np.ndarray,
    queries: np.ndarray | None,
    search: Callable[[int, int], tuple[np.ndarray, np.ndarray]],
    k: int,
    kq: int,
    exclude_self: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """(M, k) ids and distances from ``search(s, e)``, the (e - s, kq) (distances, ids) of query rows s..e-1."""
    # A self-search goes in row blocks written straight into the (N, k) results, so the (N, k+1) arrays of
    # a whole-set search never coexist with their trimmed copies (at N=40k, k=500: 0.24 GiB less peak);
    # faiss blocks exact searches internally anyway (4096 queries), so the arithmetic is unchanged. Other
    # queries go in one call: nothing to trim.
    rows = base if queries is None else queries
    n, d = rows.shape
    dist = np.empty((n, k), dtype=np.float32)
    idx = np.empty((n, k), dtype=np.int64)
    flat = None
    step = max(1024, _QUERY_BLOCK_ELEMS // kq) if queries is None else max(1, n)
    for s in range(0, n, step):
        e = min(n, s + step)
        bd, bi = search(s, e)
        missing = np.flatnonzero((bi < 0).any(axis=1))
        if missing.size:
            # Approximate indexes can return fewer than kq hits (-1) in sparse regions: redo those rows exactly.
            if flat is None:
                flat = faiss.IndexFlatL2(d)
                flat.add(base)
            bd, bi = bd.copy(), bi.copy()
            bd[missing], bi[missing] = flat.search(rows[s:e][missing], kq)
        if exclude_self:
            bi, bd = _drop_self(bi, bd, first=s)
        dist[s:e], idx[s:e] = bd, bi
    return idx, dist


_QUERY_BLOCK_ELEMS = 1 << 23  # query rows x neighbours per faiss search call


def _ivf_nlist(n: int) -> int:
    # ~sqrt(N)/2 lists (112 at 50k, 500 at 1M): lists of ~2 sqrt(N) points keep each list's matmul large
    # enough for BLAS; at 50k, 224 lists scanned 17 % fewer points for the same recall but took longer
    # (more, smaller calls). At least 39 training points per list (faiss's k-means minimum).
    return max(1, min(int(0.5 * math.sqrt(n)), n // 39))


def _ivf_search(
    faiss: Any, x: np.ndarray, q: np.ndarray, kq: int, seed: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """IVF search of the queries ``q`` (``x`` itself for a self-search) among the rows ``x``, scanned with
    BLAS: the (M, kq) squared distances and ids, each row sorted ascending (-1 where a row's lists held
    fewer than kq points); None when the scan needed for ``_IVF_RECALL`` would cover > ``_IVF_MAX_SCAN``
    of the points (then exact search is cheaper).

    1. Lists: seeded k-means (``_ivf_nlist`` centroids, trained on a seeded subsample); every point goes
       to its nearest centroid.
    2. nprobe is *measured*, not guessed: for ``_IVF_SAMPLE`` seeded sample queries the exact neighbours
       are searched, and a true neighbour is found iff its list is among the query's nprobe nearest lists
       (the scan within a list is exact). nprobe is the smallest count whose recall on the sample reaches
       ``_IVF_RECALL``. So recall holds on any data; only the cost adapts (overlapping classes need more
       lists scanned than well separated latents).
    3. Scan (:func:`_ivf_scan`): queries are grouped by the lists they probe, and each (queries x list)
       block is one BLAS matmul of [q, 1] with [-2 b, |b|^2] (the squared distance minus |q|^2, which
       ranks the same) merged into per-query faiss heaps. faiss's IndexIVFFlat scans list by list with
       per-query SIMD loops instead, 3-5x slower per distance than BLAS (measured at N=50k, D=128).
    Deterministic: same seed, same lists, same nprobe, same matmul shapes, same neighbours.
    """
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
    nprobe, scan = _ivf_nprobe(faiss, x, q, kq, quantizer, lists, np.diff(bounds), rng)
    if scan > _IVF_MAX_SCAN:
        return None
    # [-2 b, |b|^2] in list order (each list one contiguous slice), queries as [q, 1]
    base = np.empty((n, d + 1), dtype=np.float32)
    np.multiply(x[order], -2.0, out=base[:, :d])
    norms = np.einsum("ij,ij->i", x, x)
    base[:, d] = norms[order]
    dist, ids = _ivf_scan(faiss, base, q, kq, quantizer, nprobe, order, bounds)
    dist += (norms if q is x else np.einsum("ij,ij->i", q, q))[:, None]
    np.maximum(dist, 0.0, out=dist)  # cancellation can leave tiny negatives
    return dist, ids


def _ivf_scan(
    faiss: Any,
    base: np.ndarray,
    q: np.ndarray,
    kq: int,
    quantizer: Any,
    nprobe: int,
    order: np.ndarray,
    bounds: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Step 3 of :func:`_ivf_search`: (M, kq) ``|b|^2 - 2 q.b`` heaps (ascending) and ids of each query."""
    from faiss import swig_ptr

    m, d = q.shape
    nlist = len(bounds) - 1
    dist = np.full((m, kq), np.inf, dtype=np.float32)
    ids = np.full((m, kq), -1, dtype=np.int64)
    heap = faiss.float_maxheap_array_t()
    heap.nh, heap.k, heap.val, heap.ids = m, kq, swig_ptr(dist), swig_ptr(ids)
    rows = _IVF_QUERY_ROWS
    longest = int(np.diff(bounds).max())
    # Reused buffers: fresh arrays per block would page-fault GiBs in (2x slower on this VM).
    qbuf = np.ones((rows, d + 1), dtype=np.float32)
    out = np.empty(rows * longest, dtype=np.float32)
    # numpy's BLAS pool and faiss's OpenMP pool alternate thousands of times here; both spin-wait for
    # work, so each steals cores from the other (2x slower at 2 threads): the heap merges run on one.
    with faiss_threads("the IVF scan", 1):
        for s in range(0, m, _IVF_QUERY_CHUNK):
            probes = quantizer.search(q[s : s + _IVF_QUERY_CHUNK], nprobe)[1]
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
                    qi = queries[r : min(r + rows, cut[b + 1])]
                    np.take(q, qi, axis=0, out=qbuf[: len(qi), :d])
                    res = out[: len(qi) * len(members)].reshape(len(qi), len(members))
                    np.matmul(qbuf[: len(qi)], block, out=res)
                    heap.addn_query_subset_with_ids(
                        len(qi), swig_ptr(qi), len(members), swig_ptr(res), swig_ptr(members), 0
                    )
    heap.reorder()  # ascending distance per row
    return dist, ids


def _ivf_nprobe(
    faiss: Any,
    x: np.ndarray,
    q: np.ndarray,
    kq: int,
    quantizer: Any,
    lists: np.ndarray,
    sizes: np.ndarray,
    rng: Any,
) -> tuple[int, float]:
    """(the smallest nprobe whose recall@kq on ``_IVF_SAMPLE`` seeded queries reaches ``_IVF_RECALL``, the
    mean fraction of the points those queries' nprobe lists hold: the share of an exact search's work)."""
    n, nq = len(x), len(q)
    nlist = quantizer.ntotal
    sample = np.sort(rng.choice(nq, size=min(nq, _IVF_SAMPLE), replace=False))
    true_ids = faiss.knn(q[sample], x, kq)[1]  # exact: ~SAMPLE/M of an exact search's cost
    ranked = quantizer.search(q[sample], nlist)[1]  # every list, nearest first
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


def _torch_search(
    b: torch.Tensor, q: torch.Tensor | None, k: int, exclude_self: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k-NN of the rows of q (b itself when None) among b, on b's device: ``|b|^2 - 2 q.b`` by
    blocked addmm, topk, then ``+ |q|^2`` on the k kept values only (a constant per row ranks nothing).
    Peak ~rows * N floats per block."""
    rows_q = b if q is None else q
    n, m = b.shape[0], rows_q.shape[0]
    rows = max(1, min(_TORCH_MAX_ROWS, _TORCH_BLOCK_ELEMS // n))
    bn = (b * b).sum(dim=1)
    qn = bn if q is None else (q * q).sum(dim=1)
    out_i = torch.empty((m, k), dtype=torch.int64, device=b.device)
    out_d = torch.empty((m, k), dtype=torch.float32, device=b.device)
    ar = torch.arange(rows, device=b.device)
    for s in range(0, m, rows):
        e = min(m, s + rows)
        score = torch.addmm(bn, rows_q[s:e], b.T, alpha=-2.0)
        if exclude_self:
            score[ar[: e - s], ar[: e - s] + s] = float("inf")  # self excluded exactly, duplicates or not
        d, i = torch.topk(score, k, dim=1, largest=False, sorted=True)
        out_i[s:e] = i
        out_d[s:e] = (d + qn[s:e, None]).clamp_min_(0.0)  # cancellation can leave tiny negatives
    return out_i, out_d
