"""Hypothesis fuzzing of the engine: random shapes (N = 1, 2, D = 1), duplicate rows, constant columns,
NaN/inf, magnitudes 1e30 and 1e-30, int dtypes, labels with gaps or negatives.

Property of every function: it raises LatentccError (never another exception type, never hangs), or its
output satisfies the invariants: graphs symmetric without self loops, labels in range, masks consistent,
losses finite and >= 0, metrics in their ranges (AMI, NMI, ARI <= 1, purity in (0, 1]).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from latentcc.graph import communities, knn_graph, knn_search
from latentcc.lcc import cc_mask, lcc_loss, lcc_targets, match_clusters
from latentcc.metrics import clusterability, neural_collapse, purity
from latentcc.plumbing.errors import LatentccError

# Modest and derandomized in the default run (< 30 s, the same examples every time); a deeper search:
# LATENTCC_FUZZ_EXAMPLES=2000 pytest tests/test_fuzz_engine.py (random examples).
_DEEP = int(os.environ.get("LATENTCC_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=_DEEP or 100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=not _DEEP,
)
HANG_S = 20  # one example taking this long is a hang


@contextmanager
def _no_hang() -> Iterator[None]:
    def alarm(signum: int, frame: Any) -> None:
        raise TimeoutError(f"hung for {HANG_S} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(HANG_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _either(call: Callable[[], Any], check: Callable[[Any], None]) -> None:
    """``call()`` raises LatentccError, or ``check`` holds on its result. Anything else fails the test."""
    with _no_hang():
        try:
            out = call()
        except LatentccError as e:
            _event(f"refused: {str(e)[:60]}")
            return
    _event("computed")
    check(out)


def _event(text: str) -> None:
    """What happened, for ``pytest --hypothesis-show-statistics`` (how many examples were computed)."""
    if currently_in_test_context():
        event(text)


@st.composite
def matrices(draw: st.DrawFn, max_n: int = 12, max_d: int = 4) -> np.ndarray:
    """(N, D) arrays with the awkward features switched on at random; numpy or (float) torch."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    # sizes from the seeded generator: uniform, so N = 1 and 2 come up without crowding out the rest
    n, d = int(rng.integers(1, max_n + 1)), int(rng.integers(1, max_d + 1))
    dtype = draw(st.sampled_from(["float32", "float64", "int64", "int32"]))
    if dtype.startswith("int"):
        x = rng.integers(-3, 4, size=(n, d)).astype(dtype)
    else:
        x = rng.normal(size=(n, d)) * draw(st.sampled_from([1.0, 1.0, 1e30, 1e-30, 1e6]))
    if draw(st.booleans()):  # duplicate rows
        x[rng.integers(0, n, size=max(1, n // 2))] = x[0]
    if draw(st.booleans()):  # a constant column
        x[:, rng.integers(d)] = x[0, 0]
    if not dtype.startswith("int") and draw(st.integers(0, 4)) == 0:  # NaN/inf sprinkled
        x[rng.integers(n), rng.integers(d)] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    x = x.astype(dtype)
    return torch.from_numpy(x) if draw(st.booleans()) else x


@st.composite
def labels(draw: st.DrawFn, n: int, *, allow_negative: bool = True) -> np.ndarray:
    """(n,) int labels: few classes, with gaps (e.g. {0, 7}), sometimes negative or a single class."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    k = int(rng.choice([1, 2, 3, 4], p=[0.1, 0.3, 0.3, 0.3]))
    values = rng.choice(np.arange(10), size=k, replace=False)
    if allow_negative and rng.random() < 0.15:
        values[0] = -1
    return rng.choice(values, size=n).astype(draw(st.sampled_from(["int64", "int32"])))


def _finite_rows(x: Any) -> bool:
    a = x.numpy() if isinstance(x, torch.Tensor) else x
    return bool(np.isfinite(a.astype(np.float64)).all())


# ----------------------------------------------------------------------------- graph


def _k(data: st.DataObject, n: int) -> int:
    """Mostly a valid k (1..N-1), sometimes anything around it (0, N, -1...)."""
    return data.draw(st.one_of(st.integers(1, max(1, n - 1)), st.integers(-1, n + 1)))


@FUZZ
@given(data=st.data(), x=matrices(), metric=st.sampled_from(["l2", "cosine"]))
def test_knn_search(data, x, metric):
    n = x.shape[0]
    k = _k(data, n)

    def check(out):
        idx, dist = out
        assert _finite_rows(x) and 1 <= k <= n - 1  # whatever should have been refused was
        assert idx.shape == dist.shape == (n, k) and idx.dtype == np.int64
        assert ((idx >= 0) & (idx < n)).all()
        assert (idx != np.arange(n)[:, None]).all()  # never itself
        assert all(len(set(r)) == k for r in idx.tolist())  # distinct neighbours
        assert (dist >= 0).all() and (dist[:, 1:] >= dist[:, :-1]).all()  # sorted, inf allowed (1e30)

    _either(lambda: knn_search(x, k, metric=metric), check)


@FUZZ
@given(data=st.data(), x=matrices(), weighted=st.booleans())
def test_knn_graph_then_communities(data, x, weighted):
    n = x.shape[0]
    k = _k(data, n)

    def check_labels(lab):
        assert lab.shape == (n,) and lab.dtype == np.int64
        assert lab.min() == 0 and set(lab.tolist()) == set(range(lab.max() + 1))  # 0..C-1, all used

    def check(g):
        assert g.shape == (n, n) and (g != g.T).nnz == 0  # symmetric
        assert g.diagonal().sum() == 0  # no self loops
        assert (np.diff(g.indptr) >= k).all()  # every point keeps its k neighbours
        assert np.isfinite(g.data).all() and (g.data > 0).all() and (g.data <= 1).all()
        _either(lambda: communities(g, seed=0), check_labels)

    _either(lambda: knn_graph(x, k, weighted=weighted), check)


@FUZZ
@given(
    seed=st.integers(0, 2**16),
    density=st.sampled_from([0.0, 0.2, 0.6, 1.0]),
    weight=st.sampled_from(["ones", "random", "negative", "nan", "tiny", "huge"]),
    method=st.sampled_from(["leiden", "louvain"]),
)
def test_communities_on_arbitrary_graphs(seed, density, weight, method):
    """Any sparse matrix: isolated nodes, self loops, an empty graph, odd weights."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 13))
    a = rng.random((n, n)) * (rng.random((n, n)) < density)
    a = np.triu(a) + np.triu(a, 1).T  # symmetric, diagonal (self loops) kept
    values = {"ones": a > 0, "random": a, "negative": -a, "nan": np.where(a > 0.5, np.nan, a),
              "tiny": a * 1e-300, "huge": a * 1e300}[weight]  # fmt: skip
    g = sp.csr_matrix(values.astype(np.float64))

    def check(lab):
        assert lab.shape == (n,) and lab.min() == 0 and set(lab.tolist()) == set(range(lab.max() + 1))

    _either(lambda: communities(g, community=method, seed=0), check)


# ----------------------------------------------------------------------------- matching, targets, loss


@FUZZ
@given(data=st.data(), n=st.integers(1, 30))
def test_match_clusters_and_cc_mask(data, n):
    yt, yc = data.draw(labels(n)), data.draw(labels(n))

    def check(owners):
        assert yt.min() >= 0 and yc.min() >= 0
        assert owners.shape == (int(yc.max()) + 1,)
        present = np.bincount(yc, minlength=owners.size) > 0
        assert ((owners == -1) == ~present).all()  # exactly the empty cluster ids have no owner
        for j in np.flatnonzero(present):  # the owner is a plurality class of its cluster
            counts = np.bincount(yt[yc == j])
            assert counts[owners[j]] == counts.max()
        cc = cc_mask(yt, yc, owners)
        assert cc.dtype == bool and cc.shape == (n,)
        assert (cc == (owners[yc] == yt)).all()
        assert cc.any()  # every non-empty cluster's owner has members in it

    _either(lambda: match_clusters(yt, yc), check)


@FUZZ
@given(data=st.data(), x=matrices(max_n=16), k=st.integers(0, 20))
def test_lcc_targets_then_loss(data, x, k):
    n, d = x.shape
    yt = data.draw(labels(n))
    yc = data.draw(labels(n, allow_negative=False))

    def check(t):
        assert _finite_rows(x) and yt.min() >= 0 and k >= 1
        mc = t.mc_mask.numpy()
        assert mc.shape == (n,) and (mc == (t.owners[yc] != yt)).all()
        slot = t.slot.numpy()
        assert ((slot >= -1) & (slot < t.num_with_target)).all()
        assert (mc[slot >= 0]).all()  # only misclustered samples get a target
        assert sorted(slot[slot >= 0].tolist()) == list(range(t.num_with_target))  # each row used once
        assert t.vectors.shape == (t.num_with_target, d)
        if np.abs(np.asarray(x, dtype=np.float64)).max() < 1e30:
            assert torch.isfinite(t.vectors).all()
        # the loss on any finite batch of this layer: finite, >= 0, with a gradient
        z = torch.randn(min(n, 5), d, requires_grad=True)
        idx = torch.from_numpy(np.random.default_rng(0).integers(0, n, len(z)))
        loss = lcc_loss(z, idx, t)
        assert loss.ndim == 0 and not torch.isnan(loss) and loss >= 0
        loss.backward()
        assert z.grad is not None and not torch.isnan(z.grad).any()
        if np.abs(np.asarray(x, dtype=np.float64)).max() < 1e18:  # float32 squares overflow near 1.8e19
            assert torch.isfinite(loss) and torch.isfinite(z.grad).all()

    _either(lambda: lcc_targets(x, yt, yc, k_target=k), check)


# ----------------------------------------------------------------------------- metrics


@FUZZ
@given(data=st.data(), x=matrices(max_n=20))
def test_neural_collapse(data, x):
    y = data.draw(labels(x.shape[0]))

    def check(r):
        assert _finite_rows(x) and len(np.unique(y)) >= 2
        for key in ("nc1", "nc1_papyan", "nc1_trace_ratio", "nc2_equinorm", "nc2_etf"):
            assert np.isfinite(r[key]) and r[key] >= 0, (key, r[key])
        assert r["cdnv"] >= 0  # inf when two class means coincide (documented)
        assert r["num_classes"] == len(np.unique(y)) and r["num_samples"] == x.shape[0]

    _either(lambda: neural_collapse(x, y), check)


@settings(FUZZ, max_examples=_DEEP or 50)  # scikit-learn's clustering costs ~50 ms a call
@given(data=st.data(), x=matrices(max_n=16), method=st.sampled_from(["ward", "kmeans", "leiden"]))
def test_clusterability_and_purity(data, x, method):
    n = x.shape[0]
    y = data.draw(labels(n))

    def check(r):
        assert _finite_rows(x) and n >= 2 and len(np.unique(y)) >= 2
        for key in ("ami", "nmi", "ari"):
            assert r[key] <= 1 + 1e-9, (key, r[key])
        assert 0 <= r["nmi"] and -1 <= r["ari"]
        assert 0 < r["purity"] <= 1
        assert 1 <= r["n_clusters"] <= n

    _either(lambda: clusterability(x, y, clustering=method), check)
    pred = data.draw(labels(n))
    _either(lambda: purity(y, pred), lambda p: 0 < p <= 1)


@pytest.mark.parametrize("n", [1, 2])
def test_tiny_inputs_never_crash(n):
    """The smallest cases, deterministically (hypothesis also draws them, but not every run)."""
    x, y = np.arange(n * 2, dtype=np.float32).reshape(n, 2), np.arange(n)
    for call in (
        lambda: knn_graph(x, 1),
        lambda: communities(knn_graph(x, 1)),
        lambda: lcc_targets(x, y, y, k_target=1),
        lambda: neural_collapse(x, y),
        lambda: clusterability(x, y),
    ):
        _either(call, lambda out: None)
