"""Cluster <-> class matching against a networkx min-cost max-flow and a pure-Python plurality rule."""

from __future__ import annotations

from collections import Counter

import networkx as nx
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from latentcc.lcc import cc_mask, contingency, match_clusters, orphan_classes
from latentcc.plumbing.errors import LatentccError


def plurality_reference(y_true: list[int], y_clst: list[int]) -> list[int]:
    """Owner per cluster id 0..max: most frequent class, ties -> lowest class id, -1 if empty."""
    owners = []
    for j in range(max(y_clst) + 1):
        counts = Counter(a for a, c in zip(y_true, y_clst, strict=True) if c == j)
        if not counts:
            owners.append(-1)
            continue
        best = max(counts.values())
        owners.append(min(a for a, n in counts.items() if n == best))
    return owners


def maxflow_reference(y_true: np.ndarray, y_clst: np.ndarray) -> dict[int, int]:
    """The paper's one-to-many matching as a min-cost max-flow; returns cluster -> class."""
    n = len(y_true)
    g = nx.DiGraph()
    for j in np.unique(y_clst):
        g.add_edge("s", ("c", int(j)), capacity=1, weight=0)
    for a in np.unique(y_true):
        g.add_edge(("k", int(a)), "t", capacity=n, weight=0)
    for (a, j), cnt in Counter(zip(y_true.tolist(), y_clst.tolist(), strict=True)).items():
        g.add_edge(("c", j), ("k", a), capacity=1, weight=-cnt)
    flow = nx.max_flow_min_cost(g, "s", "t")
    out = {}
    for j in np.unique(y_clst):
        sent = [node[1] for node, f in flow[("c", int(j))].items() if f > 0]
        assert len(sent) == 1
        out[int(j)] = sent[0]
    return out


@pytest.mark.parametrize("seed", range(8))
def test_equals_min_cost_max_flow(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 40))
    y_true = rng.integers(0, 4, n)
    y_clst = rng.integers(0, 6, n)
    owners = match_clusters(y_true, y_clst)
    table = contingency(y_true, y_clst)
    flow = maxflow_reference(y_true, y_clst)
    for j, a in flow.items():
        col = table[:, j]
        assert col[a] == col.max()  # the flow gives every cluster a class of maximal count
        if (col == col.max()).sum() == 1:
            assert owners[j] == a
        assert col[owners[j]] == col.max()


def test_contingency_counts() -> None:
    y_true = np.array([0, 0, 1, 2, 2, 2])
    y_clst = np.array([1, 1, 0, 0, 2, 2])
    np.testing.assert_array_equal(contingency(y_true, y_clst), [[0, 2, 0], [1, 0, 0], [1, 0, 2]])
    table = contingency(y_true, y_clst, num_classes=4, num_clusters=5)
    assert table.shape == (4, 5) and table.dtype == np.int64 and table.sum() == 6


def test_ties_go_to_lowest_class_and_empty_cluster_is_unowned() -> None:
    # cluster 0: classes 2 and 1 tie (2 each) -> 1; cluster 1 is empty -> -1; cluster 2: class 3.
    y_true = [2, 1, 2, 1, 3]
    y_clst = [0, 0, 0, 0, 2]
    owners = match_clusters(y_true, y_clst)
    np.testing.assert_array_equal(owners, [1, -1, 3])
    assert owners.dtype == np.int64
    np.testing.assert_array_equal(orphan_classes(owners, 4), [0, 2])
    np.testing.assert_array_equal(cc_mask(y_true, y_clst, owners), [False, True, False, True, True])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 7)), min_size=1, max_size=50),
)
def test_property_plurality_rule(pairs: list[tuple[int, int]]) -> None:
    y_true = [a for a, _ in pairs]
    y_clst = [c for _, c in pairs]
    owners = match_clusters(np.array(y_true), np.array(y_clst))
    assert owners.tolist() == plurality_reference(y_true, y_clst)
    mask = cc_mask(y_true, y_clst, owners)
    assert mask.tolist() == [owners[c] == a for a, c in zip(y_true, y_clst, strict=True)]
    # every non-empty cluster has an owner, so at least one sample per cluster is CC
    for j in set(y_clst):
        assert mask[np.array(y_clst) == j].any()
    orphans = orphan_classes(owners, max(y_true) + 1).tolist()
    assert orphans == sorted(set(range(max(y_true) + 1)) - set(owners.tolist()))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_permutation_invariance(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 30
    y_true, y_clst = rng.integers(0, 4, n), rng.integers(0, 5, n)
    perm = rng.permutation(n)
    owners = match_clusters(y_true, y_clst, num_classes=4)
    owners_p = match_clusters(y_true[perm], y_clst[perm], num_classes=4)
    np.testing.assert_array_equal(owners, owners_p)
    np.testing.assert_array_equal(
        cc_mask(y_true[perm], y_clst[perm], owners_p), cc_mask(y_true, y_clst, owners)[perm]
    )


def test_two_different_orders_give_a_wrong_mask() -> None:
    """The original bug: cluster labels from a shuffled pass compared with labels in dataset order."""
    y_true = np.repeat(np.arange(4), 25)  # dataset order
    y_clst = y_true.copy()  # a perfect clustering: every sample is CC
    owners = match_clusters(y_true, y_clst)
    assert cc_mask(y_true, y_clst, owners).all()
    shuffled = np.random.default_rng(0).permutation(100)  # order of a shuffled loader pass
    y_clst_loader_order = y_clst[shuffled]
    wrong = cc_mask(y_true, y_clst_loader_order, match_clusters(y_true, y_clst_loader_order))
    assert (~wrong).mean() > 0.4  # most samples wrongly marked MC
    # aligning both to one index space restores the right answer
    aligned = np.empty_like(y_clst_loader_order)
    aligned[shuffled] = y_clst_loader_order
    assert cc_mask(y_true, aligned, match_clusters(y_true, aligned)).all()


def test_accepts_torch_and_lists() -> None:
    y_true, y_clst = torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1], dtype=torch.int32)
    np.testing.assert_array_equal(match_clusters(y_true, y_clst), [0, 1])
    np.testing.assert_array_equal(match_clusters([0, 1, 1], [0, 0, 1]), [0, 1])


@pytest.mark.parametrize(
    ("y_true", "y_clst", "match"),
    [
        ([0, 1], [0], "same length as y_true"),
        ([], [], "non-empty 1-D"),
        ([[0, 1]], [[0, 1]], "non-empty 1-D"),
        ([0.0, 1.5], [0, 1], r"integer class labels \(or floats holding whole numbers\)"),
        ([0.0, np.nan], [0, 1], "integer class labels"),
        (["a", "b"], [0, 1], "integer class labels"),
        ([0, -1], [0, 1], r"labels in \[0, 2\*\*31\)"),
        ([0, 1], [0, 2**31], r"labels in \[0, 2\*\*31\)"),
    ],
)
def test_validation(y_true: list, y_clst: list, match: str) -> None:
    with pytest.raises(LatentccError, match=match):
        match_clusters(y_true, y_clst)


def test_whole_float_and_bool_labels_are_labels() -> None:
    """One rule for labels everywhere (latentcc.plumbing.validate): floats holding whole numbers and bools
    are accepted and give exactly what the int labels give."""
    y_true, y_clst = np.array([0, 1, 1, 0, 1]), np.array([2, 0, 0, 2, 2])
    ref = match_clusters(y_true, y_clst)
    np.testing.assert_array_equal(ref, [1, -1, 0])  # cluster 1 is empty: owned by no class
    np.testing.assert_array_equal(
        match_clusters(y_true.astype(np.float32), torch.tensor(y_clst).double()), ref
    )
    np.testing.assert_array_equal(match_clusters(y_true.astype(bool), y_clst), ref)
    np.testing.assert_array_equal(cc_mask(y_true.astype(float), y_clst, ref), [True, True, True, True, False])


def test_validation_of_counts_and_owners() -> None:
    with pytest.raises(LatentccError, match="'num_classes' parameter of match_clusters"):
        match_clusters([0, 3], [0, 1], num_classes=2)
    with pytest.raises(LatentccError, match="'num_clusters' parameter of contingency"):
        contingency([0, 1], [0, 5], num_clusters=3)
    with pytest.raises(LatentccError, match="length >= max"):
        cc_mask([0, 1], [0, 2], owners=[0, 1])
    with pytest.raises(LatentccError, match="class ids < num_classes=2"):
        orphan_classes([0, 5], 2)
    with pytest.raises(LatentccError, match="'num_classes' parameter of orphan_classes"):
        orphan_classes([0], 0)
    with pytest.raises(LatentccError, match="Relabel them contiguously"):
        match_clusters([0, 1], [0, 2**30])
