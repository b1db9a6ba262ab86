"""The one door for latents and features (latentcc.plumbing.validate): the same dtypes everywhere, clear errors for the
rest, and results that do not depend on where the data sits in space (against exact float64 references)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from latentcc import LCCConfig, epoch_start, knn_graph, knn_search, lcc_loss, lcc_targets, reduce_dim
from latentcc.metrics import cluster, clusterability, knn_probe, linear_probe, neural_collapse
from latentcc.plumbing.arrays import Matrix
from latentcc.plumbing.errors import LatentccError
from latentcc.plumbing.validate import as_matrix

pytest.importorskip("faiss")


def blobs(
    offset: float = 0.0, *, c: int = 7, n_per: int = 30, d: int = 8, spread: float = 1e-3, seed: int = 0
):
    """(N, D) float64 blobs of size ``spread`` around ``offset`` (the issue's example: 7 blobs, 1e5, 1e-3)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(c, d)) * 10
    y = np.repeat(np.arange(c), n_per)
    return (centres[y] + rng.normal(size=(len(y), d))) * spread + offset, y


def brute_knn(x: np.ndarray, k: int) -> np.ndarray:
    """Exact neighbours from explicit float64 differences (no |a|^2 + |b|^2 - 2ab cancellation)."""
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1, kind="stable")[:, :k]


# ----------------------------------------------------------------------------- precision: the offset


def test_knn_of_offset_blobs_equals_exact_neighbours():
    x0, _ = blobs(0.0)
    x1, _ = blobs(1e5)
    ref = brute_knn(x1, 5)  # explicit float64 differences are exact at this offset
    assert np.array_equal(ref, brute_knn(x0, 5))
    for backend in ("faiss", "torch"):
        i0, d0 = knn_search(x0, 5, backend=backend)
        i1, d1 = knn_search(x1, 5, backend=backend)
        np.testing.assert_array_equal(i1, ref)
        np.testing.assert_array_equal(i1, i0)
        # float32 search arithmetic on the centred rows: distances to float32 precision of the exact ones,
        # as at offset 0 (the |a|^2 + |b|^2 - 2ab rounding is relative to the spread, no longer to 1e5)
        exact = np.take_along_axis(((x1[:, None] - x1[None]) ** 2).sum(-1), ref, axis=1)
        np.testing.assert_allclose(d1, exact, rtol=1e-3)
        np.testing.assert_allclose(d0, exact, rtol=1e-3)
        assert d1.min() > 0  # before the fix every distance was 0 and neighbours arbitrary
    assert (knn_graph(x1, 5) != knn_graph(x0, 5)).nnz == 0
    w0, w1 = knn_graph(x0, 5, weighted=True), knn_graph(x1, 5, weighted=True)
    np.testing.assert_allclose(w1.toarray(), w0.toarray(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("graph_dim", [None, 4])
def test_epoch_start_on_offset_blobs_finds_the_same_seven_communities(graph_dim):
    cfg = LCCConfig(k=5, graph_dim=graph_dim)
    x0, y = blobs(0.0)
    a, b = epoch_start(x0, y, cfg), epoch_start(blobs(1e5)[0], y, cfg)
    assert len(np.unique(a.clusters)) == 7  # the issue: 2 communities instead of 7 at offset 1e5
    np.testing.assert_array_equal(b.clusters, a.clusters)
    np.testing.assert_array_equal(b.cc, a.cc)


def test_targets_at_an_offset_are_the_offset_targets():
    x0, y = blobs(0.0)
    yc = (y + (np.arange(len(y)) % 5 == 0)) % 7  # every 5th sample in a neighbouring cluster: MC
    a, b = lcc_targets(x0, y, yc, k_target=3), lcc_targets(x0 + 1e5, y, yc, k_target=3)
    assert a.num_with_target > 0
    assert torch.equal(a.slot, b.slot) and torch.equal(a.mc_mask, b.mc_mask)
    # float32 targets hold 1e5 to its ulp (2^-7): the same targets, translated, up to that rounding
    np.testing.assert_allclose(b.vectors.double() - 1e5, a.vectors.double(), atol=2.0**-7)


def test_float32_latents_with_an_offset_match_an_exact_search_of_their_values():
    """float32 values around 1e4: the search's own |x|^2 arithmetic no longer drowns distances of ~1."""
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(300, 6)) + 1e4).astype(np.float32)
    ref = brute_knn(x.astype(np.float64), 4)
    for backend in ("faiss", "torch"):
        np.testing.assert_array_equal(knn_search(x, 4, backend=backend)[0], ref)


def test_wide_integers_are_searched_in_float64():
    """int64 latents around 2^40 differ in their last bits, which float32 (24-bit mantissa) cannot hold."""
    rng = np.random.default_rng(4)
    x = rng.integers(0, 1000, size=(80, 3)).astype(np.int64) + 2**40
    np.testing.assert_array_equal(knn_search(x, 3)[0], brute_knn(x.astype(np.float64), 3))


def test_metrics_do_not_depend_on_the_offset():
    x0, y = blobs(0.0)
    x1 = x0 + 1e5
    for method in ("ward", "kmeans", "leiden"):
        np.testing.assert_array_equal(cluster(x1, 7, clustering=method), cluster(x0, 7, clustering=method))
    assert clusterability(x1, y) == clusterability(x0, y)
    tr = np.arange(len(y)) % 2 == 0
    # (cosine is not translation invariant, so only l2 is compared across offsets)
    assert knn_probe(x1[tr], y[tr], x1[~tr], y[~tr], k=5, metric="l2") == 1.0
    assert knn_probe(x0[tr], y[tr], x0[~tr], y[~tr], k=5, metric="l2") == 1.0
    for std in (True, False):
        a = linear_probe(x0[tr], y[tr], x0[~tr], y[~tr], standardize=std)
        assert linear_probe(x1[tr], y[tr], x1[~tr], y[~tr], standardize=std) == pytest.approx(a)
    n0, n1 = neural_collapse(x0, y), neural_collapse(x1, y)
    for key in ("nc1", "nc1_trace_ratio", "cdnv", "nc2_equinorm", "nc2_etf"):
        assert n1[key] == pytest.approx(n0[key], rel=1e-7), key
    w = np.random.default_rng(0).normal(size=(7, 8))
    # NC4 compares the classifier with the nearest class mean: the bias moves with the features
    b0 = np.zeros(7)
    assert neural_collapse(x1, y, classifier_weight=w, classifier_bias=b0 - w @ np.full(8, 1e5))[
        "nc4"
    ] == pytest.approx(neural_collapse(x0, y, classifier_weight=w, classifier_bias=b0)["nc4"])


def test_reduce_dim_of_offset_latents():
    x0, _ = blobs(0.0)
    for method in ("pca", "random"):
        a, b = reduce_dim(x0, 3, method=method), reduce_dim(x0 + 1e5, 3, method=method)
        np.testing.assert_allclose(b, a, atol=1e-6 * np.abs(a).max())
        assert np.abs(a).max() > 1e-3  # not collapsed to the float32 grid of 1e5


# ----------------------------------------------------------------------------- precision: cosine far from 0


def _classes4(offset: float, spread: float, n_per: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """4 separated classes (class c has +6 on axis c) of spread ``spread`` around ``offset`` (float64)."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), n_per)
    b = rng.normal(size=(len(y), 8))
    b[np.arange(len(y)), y] += 6.0
    return offset + spread * b, y


def exact_cosine(x: np.ndarray, queries: np.ndarray | None = None) -> np.ndarray:
    """(M, N) 1 - cos of the float64 values, in 60-digit decimal arithmetic (exact for this purpose: the
    nearly parallel rows below differ by 1e-14, which float64 arithmetic itself resolves only to ~1%)."""
    import decimal

    with decimal.localcontext() as ctx:
        ctx.prec = 60
        dx = [[decimal.Decimal(float(v)) for v in row] for row in x]
        dq = dx if queries is None else [[decimal.Decimal(float(v)) for v in row] for row in queries]
        nx = [sum(v * v for v in r).sqrt() for r in dx]
        nq = nx if queries is None else [sum(v * v for v in r).sqrt() for r in dq]
        return np.array(
            [[float(1 - sum(a * b for a, b in zip(q, r, strict=True)) / (m * n)) for r, n in zip(dx, nx, strict=True)]
             for q, m in zip(dq, nq, strict=True)]
        )  # fmt: skip


COSINE_FRAMES = [(0.0, 1.0), (1e4, 1.0), (1e5, 1e-3), (1e12, 1e-2), (-3e8, 1.0), (1e-20, 1e-30)]


@pytest.mark.parametrize(("offset", "spread"), COSINE_FRAMES)
def test_cosine_knn_far_from_the_origin_equals_an_exact_search(offset, spread):
    """Cosine depends on where the data sits: the neighbours are those of the data as given, exact,
    where float32 unit rows tied (before the fix: 25% same-class neighbours at 1e12 / 1e-2)."""
    x, y = _classes4(offset, spread)
    d = exact_cosine(x)
    np.fill_diagonal(d, np.inf)
    ref = np.argsort(d, axis=1, kind="stable")[:, :5]
    for backend in ("faiss", "torch"):
        idx, dist = knn_search(x, 5, metric="cosine", backend=backend)
        np.testing.assert_array_equal(idx, ref)
        np.testing.assert_allclose(dist, np.take_along_axis(d, ref, axis=1), rtol=1e-4)
    np.testing.assert_array_equal(
        knn_search(torch.from_numpy(x), 5, metric="cosine", backend="torch")[0], ref
    )
    assert (y[ref] == y[:, None]).all()
    cfg = LCCConfig(k=5, graph_dim=None, metric="cosine")
    assert epoch_start(x, y, cfg).stats()["mc_fraction"] == 0.0  # before the fix: 0.75 at 1e12 / 1e-2


def test_cosine_is_not_centred():
    """Cosine of the data as given, not of the data translated to 0: the two rankings differ here."""
    x, _ = _classes4(1e4, 1.0)
    d = exact_cosine(x)
    np.fill_diagonal(d, np.inf)
    ref = np.argsort(d, axis=1, kind="stable")[:, :5]
    assert not np.array_equal(ref, brute_knn(x - x.mean(axis=0), 5))
    np.testing.assert_array_equal(knn_search(x, 5, metric="cosine")[0], ref)


@pytest.mark.parametrize(("offset", "spread"), [(1e4, 1.0), (1e5, 1e-3), (1e12, 1e-2)])
def test_cosine_knn_probe_far_from_the_origin_equals_an_exact_vote(offset, spread):
    x, y = _classes4(offset, spread)
    tr = np.arange(len(y)) % 2 == 0
    d = exact_cosine(x[tr], x[~tr])
    votes = y[tr][np.argsort(d, axis=1, kind="stable")[:, :5]]
    exact_acc = float(
        np.mean([np.bincount(v, minlength=4).argmax() == t for v, t in zip(votes, y[~tr], strict=True)])
    )
    assert exact_acc == 1.0
    assert knn_probe(x[tr], y[tr], x[~tr], y[~tr], k=5) == exact_acc  # before the fix: 0.25 (chance)


def test_cosine_ignores_the_length_of_each_row():
    """Rows of 1e-200 and 1e200 in one matrix: each row is rescaled by its own power of two first."""
    x, _ = _classes4(0.0, 1.0)
    lengths = 10.0 ** np.random.default_rng(1).integers(-200, 200, size=len(x))
    np.testing.assert_array_equal(
        knn_search(x * lengths[:, None], 5, metric="cosine")[0], knn_search(x, 5, metric="cosine")[0]
    )


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    exponent=st.integers(-8, 10),
    mantissa=st.integers(-(2**10), 2**10),
    per_column=st.booleans(),
)
def test_translation_never_changes_neighbours_or_partitions(exponent, mantissa, per_column):
    """Any offset (one for all columns or one per column): bitwise the same neighbours, distances and
    partition. The data is on a 2^-30 grid and the offsets below 2^22 on a 2^-8 grid, so x + offset is
    exact in float64 and the geometry is the same data, wherever it sits."""
    rng = np.random.default_rng(exponent + 100)
    x0 = np.round(blobs(0.0, c=4, n_per=12, d=5, seed=1)[0] * 2.0**30) / 2.0**30
    y = np.repeat(np.arange(4), 12)
    off = mantissa * 2.0**exponent
    shift = off * (rng.integers(-3, 4, size=5) if per_column else np.ones(5))
    x1 = x0 + shift
    assert np.array_equal(x1 - shift, x0)  # exact translation
    i0, d0 = knn_search(x0, 4)
    i1, d1 = knn_search(x1, 4)
    np.testing.assert_array_equal(i1, i0)
    np.testing.assert_array_equal(d1, d0)
    cfg = LCCConfig(k=4, graph_dim=None)
    np.testing.assert_array_equal(epoch_start(x1, y, cfg).clusters, epoch_start(x0, y, cfg).clusters)


# ----------------------------------------------------------------------------- dtypes and containers


def _entry_points() -> dict[str, Callable[[Any], Any]]:
    y = np.repeat(np.arange(4), 10)
    cfg = LCCConfig(k=4, graph_dim=None)
    # even rows train, odd rows test: slicing works alike on arrays, tensors (meta too) and lists
    return {
        "knn_graph": lambda x: knn_graph(x, 4).toarray(),
        "knn_search": lambda x: knn_search(x, 4)[0],
        "reduce_dim": lambda x: reduce_dim(x, 2),
        "epoch_start": lambda x: epoch_start(x, y, cfg).clusters,
        "lcc_targets": lambda x: lcc_targets(x, y, (y + 1) % 4, k_target=3).slot,
        "neural_collapse": lambda x: neural_collapse(x, y)["nc1"],
        "clusterability": lambda x: clusterability(x, y, clustering="kmeans")["ami"],
        "knn_probe": lambda x: knn_probe(x[::2], y[::2], x[1::2], y[1::2], k=3),
        "linear_probe": lambda x: linear_probe(x[::2], y[::2], x[1::2], y[1::2]),
    }


ENTRY = _entry_points()


def _variants() -> dict[str, Callable[[np.ndarray], Any]]:
    t = torch.from_numpy
    return {
        "torch-bfloat16": lambda a: t(a).to(torch.bfloat16),
        "torch-float16": lambda a: t(a).half(),
        "numpy-float16": lambda a: a.astype(np.float16),
        "torch-float64-requires-grad": lambda a: t(a).requires_grad_(True),
        "torch-non-contiguous": lambda a: t(np.asfortranarray(a)).T.contiguous().T,
        "numpy-fortran": np.asfortranarray,
        "list": lambda a: a.tolist(),
        "object-array": lambda a: a.astype(object),
        "torch-int64": lambda a: t(np.round(a * 1000).astype(np.int64)),
        "numpy-int32": lambda a: np.round(a * 1000).astype(np.int32),
        "numpy-uint8": lambda a: np.round(a * 10 + 100).astype(np.uint8),
    }


@pytest.mark.parametrize("variant", list(_variants()))
@pytest.mark.parametrize("entry", list(ENTRY))
def test_every_entry_point_accepts_the_same_inputs(entry, variant):
    """Each variant gives what its values give as float64: one door, the same dtypes everywhere."""
    x0 = blobs(0.0, c=4, n_per=10, d=4, spread=1.0)[0]
    x = _variants()[variant](x0)
    as_float = np.asarray(as_matrix(x, "x", "test").values(), dtype=np.float64)
    got, ref = ENTRY[entry](x), ENTRY[entry](as_float)
    if isinstance(got, torch.Tensor):
        assert torch.equal(got, ref)
    elif isinstance(got, np.ndarray):
        if entry == "reduce_dim":
            np.testing.assert_allclose(got, ref, atol=1e-5 * np.abs(ref).max())
        else:
            np.testing.assert_array_equal(got, ref)
    else:
        assert got == pytest.approx(ref, rel=1e-6), (got, ref)
    if isinstance(x, torch.Tensor) and x.requires_grad:
        assert x.grad is None


@pytest.mark.parametrize("entry", list(ENTRY))
def test_meta_tensors_are_refused_naming_the_parameter(entry):
    x = torch.zeros(40, 4, device="meta")
    with pytest.raises(LatentccError, match=r"parameter of \w+.* must be a tensor with data.*meta.*Fix"):
        ENTRY[entry](x)


@pytest.mark.parametrize(
    ("x", "got"),
    [
        (np.zeros((40, 4), dtype=np.complex64), "complex64"),
        (np.full((40, 4), "a"), "<U1"),
        (np.array([["a", 1]] * 40, dtype=object), "object"),
        (np.zeros((40, 4), dtype="datetime64[s]"), "datetime64"),
        (torch.zeros(40, 4, dtype=torch.complex64), "complex64"),
    ],
)
@pytest.mark.parametrize("entry", ["epoch_start", "knn_graph", "neural_collapse", "knn_probe"])
def test_non_numbers_are_refused_naming_the_dtype(entry, x, got):
    with pytest.raises(LatentccError, match=rf"must be a real-valued numeric.*{got}.*Fix: convert"):
        ENTRY[entry](x)


def test_containers_that_are_not_dense_matrices():
    y = np.repeat(np.arange(4), 10)
    with pytest.raises(LatentccError, match=r"'latents' parameter of epoch_start must be a dense.*toarray"):
        epoch_start(sp.random(40, 4, density=0.5, format="csr"), y, LCCConfig(k=3))
    with pytest.raises(LatentccError, match=r"'x' parameter of knn_graph must be a dense tensor.*to_dense"):
        knn_graph(torch.eye(40, 4).to_sparse(), 3)
    with pytest.raises(LatentccError, match=r"'latents' parameter of epoch_start must be 2-D.*\(40,\)"):
        epoch_start(np.zeros(40), y, LCCConfig(k=3))
    with pytest.raises(LatentccError, match=r"'labels' parameter of epoch_start .*labels in \[0, 2\*\*31\)"):
        epoch_start(blobs(0.0, c=4, n_per=10, d=4)[0], y - 1, LCCConfig(k=3))
    with pytest.raises(LatentccError, match=r"'labels' parameter of epoch_start.*meta"):
        epoch_start(blobs(0.0, c=4, n_per=10, d=4)[0], torch.from_numpy(y).to("meta"), LCCConfig(k=3))
    with pytest.raises(
        LatentccError, match=r"'x' parameter of knn_graph must be a real-valued numeric.*list"
    ):
        knn_graph([[1.0, 2.0], [3.0]], 1)  # ragged


def test_the_callers_arrays_are_never_written():
    x = blobs(1e5)[0]
    t = torch.from_numpy(x.copy())
    before = x.copy()
    knn_search(x, 3, metric="cosine")
    knn_search(t, 3)
    reduce_dim(x, 2)
    assert np.array_equal(x, before) and np.array_equal(t.numpy(), before)


def test_tensor_path_equals_numpy_path():
    """The device branch (a tensor left on its accelerator) computes the same frame and float32 rows;
    run here with a CPU tensor, which the public functions would have turned into numpy."""
    x = blobs(1e5)[0]
    mt, mn = Matrix(torch.from_numpy(x), "x", "t", np.float64), as_matrix(x, "x", "t")
    np.testing.assert_array_equal(mt.shift, mn.shift)
    assert mt.scale == mn.scale
    np.testing.assert_array_equal(np.asarray(mt.centred()), mn.centred())
    np.testing.assert_allclose(np.asarray(mt.unit_rows()), np.asarray(mn.unit_rows()), rtol=1e-7)
    zero = Matrix(torch.zeros(3, 2), "x", "t", np.float32)
    with pytest.raises(LatentccError, match=r"free of all-zero rows.*3 all-zero rows"):
        zero.unit_rows()


def test_lcc_loss_refuses_meta_without_a_host_sync():
    x, y = blobs(0.0)
    t = lcc_targets(x, y, (y + 1) % 7, k_target=3)
    with pytest.raises(LatentccError, match=r"'z' parameter of lcc_loss must be a tensor with data"):
        lcc_loss(torch.zeros(4, 8, device="meta"), torch.arange(4), t)
