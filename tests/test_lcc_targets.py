"""LCC targets against a brute-force per-sample computation (docs/algorithms.md, LCC items 6 and 8)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentcc.lcc import LCCTargets, lcc_targets, match_clusters
from latentcc.plumbing.errors import LatentccError


def reference_targets(
    x: np.ndarray, y: np.ndarray, c: np.ndarray, owners: np.ndarray, k: int, policy: str
) -> dict[int, np.ndarray]:
    """Sample id -> target, one sample at a time, full distances and argsort, float64."""
    x = x.astype(np.float64)
    n = len(x)
    out: dict[int, np.ndarray] = {}
    for i in range(n):
        a = y[i]
        if owners[c[i]] == a:
            continue  # correctly clustered
        owned = [j for j in range(len(owners)) if owners[j] == a]
        if not owned:
            if policy == "class_centroid":
                others = np.array([m for m in range(n) if y[m] == a and m != i])
                if others.size:
                    d = ((x[others] - x[i]) ** 2).sum(axis=1)
                    out[i] = x[others[np.argsort(d, kind="stable")[:k]]].mean(axis=0)
            continue
        best: tuple[float, np.ndarray] | None = None
        for j in owned:
            cc = np.array([m for m in range(n) if c[m] == j and owners[c[m]] == y[m]], dtype=int)
            if cc.size == 0:
                continue
            d = ((x[cc] - x[i]) ** 2).sum(axis=1)
            t = x[cc[np.argsort(d, kind="stable")[:k]]].mean(axis=0)
            dist = float(np.linalg.norm(x[i] - t))
            if best is None or dist < best[0]:
                best = (dist, t)
        if best is not None:
            out[i] = best[1]
    return out


def dense(targets: LCCTargets) -> np.ndarray:
    """(N, D) target per sample, NaN rows for samples without one."""
    slot = targets.slot.numpy()
    out = np.full((slot.size, targets.vectors.shape[1]), np.nan)
    out[slot >= 0] = targets.vectors.numpy()[slot[slot >= 0]]
    return out


def assert_matches_reference(t: LCCTargets, ref: dict[int, np.ndarray], mc: np.ndarray) -> None:
    slot = t.slot.numpy()
    np.testing.assert_array_equal(t.mc_mask.numpy(), mc)
    assert sorted(np.flatnonzero(slot >= 0).tolist()) == sorted(ref)
    assert t.num_with_target == len(ref)
    # slots are assigned in sample-index order
    np.testing.assert_array_equal(slot[slot >= 0], np.arange(len(ref)))
    for i, target in ref.items():
        np.testing.assert_allclose(t.vectors[slot[i]].numpy(), target, rtol=0, atol=1e-5)


def make_data(seed: int = 3, n: int = 60, d: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.choice(4, n, p=[0.35, 0.3, 0.25, 0.1])  # class 3 is rare: an orphan for seed 3
    c = rng.integers(0, 7, n)
    centers = rng.normal(scale=3.0, size=(7, d))
    x = (centers[c] + rng.normal(size=(n, d))).astype(np.float32)  # continuous: no distance ties
    return x, y, c


def test_fixture_has_the_interesting_structure() -> None:
    x, y, c = make_data()
    owners = match_clusters(y, c)
    np.testing.assert_array_equal(owners, [2, 0, 1, 0, 2, 1, 0])  # several clusters per class
    t = lcc_targets(x, y, c, k_target=3)
    np.testing.assert_array_equal(t.orphans, [3])  # class 3 owns no cluster
    assert 0 < t.num_with_target < t.num_mc


@pytest.mark.parametrize("backend", ["torch", "faiss"])
@pytest.mark.parametrize("policy", ["skip", "class_centroid"])
@pytest.mark.parametrize("k", [1, 3, 50])  # 50 > every cluster's CC count: all of them are used
def test_equals_brute_force(backend: str, policy: str, k: int) -> None:
    x, y, c = make_data()
    owners = match_clusters(y, c)
    t = lcc_targets(x, y, c, k_target=k, orphan_policy=policy, knn_backend=backend)
    assert_matches_reference(t, reference_targets(x, y, c, owners, k, policy), owners[c] != y)
    assert t.vectors.dtype == torch.float32 and t.slot.dtype == torch.int64 and t.mc_mask.dtype == torch.bool
    assert t.num_clusters == 7
    assert t.mc_fraction == pytest.approx((owners[c] != y).mean())


@pytest.mark.parametrize("seed", [0, 4])
@pytest.mark.parametrize("small_search", [0, 2**20])  # 0: "auto" sends every search to faiss
def test_equals_brute_force_other_data_auto_backend(seed: int, small_search: int, monkeypatch) -> None:
    import latentcc.graph.knn as knn_module

    monkeypatch.setattr(knn_module, "SMALL_SEARCH", small_search)
    x, y, c = make_data(seed, n=80, d=4)
    owners = match_clusters(y, c)
    for policy in ("skip", "class_centroid"):
        t = lcc_targets(torch.from_numpy(x).double(), y, c, k_target=4, orphan_policy=policy)
        assert_matches_reference(t, reference_targets(x, y, c, owners, 4, policy), owners[c] != y)


def test_tiny_blocks_give_the_same_targets(monkeypatch) -> None:
    import latentcc.graph.knn as knn_module
    import latentcc.lcc.targets as targets_module

    x, y, c = make_data()
    owners = match_clusters(y, c)
    monkeypatch.setattr(targets_module, "_BLOCK_ELEMS", 7)  # one query per block in the gather
    monkeypatch.setattr(knn_module, "_TORCH_BLOCK_ELEMS", 7)  # and in the search
    t = lcc_targets(x, y, c, k_target=3, orphan_policy="class_centroid", knn_backend="torch")
    assert_matches_reference(t, reference_targets(x, y, c, owners, 3, "class_centroid"), owners[c] != y)


@pytest.mark.parametrize("policy", ["skip", "class_centroid"])
def test_permuting_samples_permutes_targets(policy: str) -> None:
    x, y, c = make_data()
    perm = np.random.default_rng(1).permutation(len(x))
    t = lcc_targets(x, y, c, k_target=3, orphan_policy=policy)
    tp = lcc_targets(x[perm], y[perm], c[perm], k_target=3, orphan_policy=policy)
    np.testing.assert_array_equal(tp.mc_mask.numpy(), t.mc_mask.numpy()[perm])
    np.testing.assert_allclose(dense(tp), dense(t)[perm], rtol=0, atol=1e-6)


@pytest.mark.parametrize("policy", ["skip", "class_centroid"])
def test_one_class_has_no_mc_sample(policy: str) -> None:
    x, _, c = make_data()
    t = lcc_targets(x, np.zeros(len(x), dtype=int), c, k_target=3, orphan_policy=policy)
    assert t.num_mc == 0 and t.mc_fraction == 0.0 and t.num_with_target == 0
    assert t.vectors.shape == (0, 5)
    assert (t.slot == -1).all()
    assert (t.owners == 0).all() and t.orphans.size == 0


@pytest.mark.parametrize("policy", ["skip", "class_centroid"])
@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_identical_points(policy: str, backend: str) -> None:
    rng = np.random.default_rng(0)
    x = np.full((30, 3), 0.5, dtype=np.float32)
    y, c = rng.integers(0, 4, 30), rng.integers(0, 5, 30)
    t = lcc_targets(x, y, c, k_target=4, orphan_policy=policy, knn_backend=backend)
    assert t.num_mc > 0
    assert torch.isfinite(t.vectors).all()
    np.testing.assert_allclose(t.vectors.numpy(), 0.5)


def test_orphan_policies() -> None:
    # class 2 (samples 6, 7, 8) owns no cluster; class 3 (sample 9) too and has a single sample
    x = np.arange(20, dtype=np.float32).reshape(10, 2) ** 1.5
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 3])
    c = np.array([0, 0, 0, 1, 1, 1, 0, 1, 1, 1])
    owners = match_clusters(y, c)
    np.testing.assert_array_equal(owners, [0, 1])
    skip = lcc_targets(x, y, c, k_target=1)
    np.testing.assert_array_equal(skip.orphans, [2, 3])
    np.testing.assert_array_equal(skip.mc_mask.numpy(), y >= 2)  # still counted as MC
    assert skip.num_mc == 4 and skip.num_with_target == 0
    cent = lcc_targets(x, y, c, k_target=1, orphan_policy="class_centroid")
    slot = cent.slot.numpy()
    np.testing.assert_array_equal(slot >= 0, [False] * 6 + [True, True, True, False])  # 9: alone
    # k=1: the nearest OTHER sample of the class (itself excluded)
    np.testing.assert_allclose(cent.vectors[slot[6]].numpy(), x[7])
    np.testing.assert_allclose(cent.vectors[slot[7]].numpy(), x[6])  # rows spread out: 6 is nearer than 8
    big_k = lcc_targets(x, y, c, k_target=10, orphan_policy="class_centroid")  # capped at the 2 others
    np.testing.assert_allclose(big_k.vectors[big_k.slot[6]].numpy(), (x[7] + x[8]) / 2, rtol=1e-6)


def test_k_larger_than_cc_count_uses_all() -> None:
    x = np.array([[0, 0], [1, 0], [10, 10], [11, 10], [12, 13], [5, 5]], dtype=np.float32)
    y = np.array([0, 0, 1, 1, 1, 0])
    c = np.array([0, 0, 1, 1, 1, 1])  # sample 5 (class 0) is MC in cluster 1
    t = lcc_targets(x, y, c, k_target=100)
    assert t.num_with_target == 1
    np.testing.assert_allclose(t.vectors[t.slot[5]].numpy(), [0.5, 0.0])


def test_nearest_cluster_centroid_wins() -> None:
    # class 0 owns clusters 0 (around x=0) and 2 (around x=20); the MC sample at x=17 goes to cluster 2
    x = np.array([[0.0], [1.0], [10.0], [11.0], [20.0], [21.0], [17.0]], dtype=np.float32)
    y = np.array([0, 0, 1, 1, 0, 0, 0])
    c = np.array([0, 0, 1, 1, 2, 2, 1])
    t = lcc_targets(x, y, c, k_target=2)
    np.testing.assert_array_equal(t.owners, [0, 1, 0])
    np.testing.assert_allclose(t.vectors[t.slot[6]].numpy(), [20.5])


def test_inconsistent_caller_owners() -> None:
    x = np.array([[0.0, 0], [1, 0], [5, 5], [6, 5], [3, 3], [9, 9]], dtype=np.float32)
    y = np.array([0, 0, 1, 1, 0, 1])
    c = np.array([0, 0, 1, 1, 2, 2])
    # cluster 1 is said to be owned by class 0, which has no member in it: no CC sample, no candidate
    t = lcc_targets(x, y, c, k_target=2, owners=np.array([0, 0, 1]))
    np.testing.assert_array_equal(t.mc_mask.numpy(), [False, False, True, True, True, False])
    np.testing.assert_allclose(t.vectors[t.slot[4]].numpy(), [0.5, 0])  # cluster 0 only
    np.testing.assert_allclose(t.vectors[t.slot[2]].numpy(), [9, 9])  # class 1 -> cluster 2's CC sample
    # every owned cluster empty of CC samples: all MC, no targets, no crash
    t2 = lcc_targets(x[:4], y[:4], c[:4], k_target=2, owners=[1, 0])
    assert t2.num_mc == 4 and t2.num_with_target == 0 and t2.orphans.size == 0


def test_state_dict_round_trip_and_to(tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    x, y, c = make_data()
    t = lcc_targets(x, y, c, k_target=3, orphan_policy="class_centroid")
    state = t.state_dict()
    assert all(isinstance(v, torch.Tensor | int | float) for v in state.values())
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    save_file(tensors, tmp_path / "t.safetensors")
    back = LCCTargets.from_state_dict(
        {**load_file(tmp_path / "t.safetensors"), "num_clusters": t.num_clusters}
    )
    np.testing.assert_array_equal(dense(back), dense(t))
    np.testing.assert_array_equal(back.owners, t.owners)
    np.testing.assert_array_equal(back.orphans, t.orphans)
    assert back.num_clusters == 7 and back.num_mc == t.num_mc
    moved = t.to("meta")
    assert moved.vectors.device.type == "meta" and moved.slot.device.type == "meta"
    assert t.vectors.device.type == "cpu"  # the original is untouched
    from latentcc.plumbing.errors import CheckpointError

    with pytest.raises(CheckpointError, match="missing"):
        LCCTargets.from_state_dict(tensors)


def test_validation() -> None:
    x, y, c = make_data()
    bad = x.copy()
    bad[[3, 7], 1] = np.nan
    bad[9, 0] = np.inf
    with pytest.raises(
        LatentccError, match=r"layer 'lin0'.*must be finite\. Got '3 of 60 rows.*first: 3, 7, 9"
    ):
        lcc_targets(bad, y, c, k_target=3, name="lin0")
    with pytest.raises(LatentccError, match="one label per latent row"):
        lcc_targets(x[:50], y, c, k_target=3)
    with pytest.raises(LatentccError, match="'y_clst' parameter.*same length"):
        lcc_targets(x, y, c[:50], k_target=3)
    for k in (0, True, 1.5):
        with pytest.raises(LatentccError, match="'k_target' parameter of lcc_targets must be an int >= 1"):
            lcc_targets(x, y, c, k_target=k)  # type: ignore[arg-type]
    with pytest.raises(LatentccError, match="'orphan_policy'.*'skip', 'class_centroid'"):
        lcc_targets(x, y, c, k_target=3, orphan_policy="nearest")
    with pytest.raises(
        LatentccError, match="'knn_backend'.*'auto', 'faiss', 'hnsw', 'ivf', 'torch', 'faiss-gpu'"
    ):
        lcc_targets(x, y, c, k_target=3, knn_backend="gpu")
    with pytest.raises(LatentccError, match=r"'latents'.*N >= 2 rows"):
        lcc_targets(x[:1], y[:1], c[:1], k_target=3)
    with pytest.raises(LatentccError, match=r"'latents'.*2-D with shape \(N, D\).*Fix: reshape"):
        lcc_targets(x.reshape(60, 5, 1), y, c, k_target=3)
    with pytest.raises(LatentccError, match="'owners'.*length >= max"):
        lcc_targets(x, y, c, k_target=3, owners=[0, 1])


# ----------------------------------------------------------------------------- float64 latents at extreme scales

_Y_EXT = np.repeat(np.arange(4), 50)


def _extreme_base() -> np.ndarray:
    x = np.random.default_rng(2).normal(size=(200, 6))
    x[np.arange(200), _Y_EXT] += 1.5
    return x


def _brute_targets(lat: np.ndarray, y: np.ndarray, yc: np.ndarray, owners: np.ndarray, k: int) -> dict:
    """Float64 reference: for each MC sample, the nearest of the means of the k nearest CC samples of each
    cluster its class owns. Distances on the latents times an exact power of two (so squares of 1e-300
    do not vanish); the means on the latents as given."""
    s = 2.0 ** -np.frexp(np.abs(lat - np.median(lat, axis=0)).max())[1]
    mc = owners[yc] != y
    out = {}
    for i in np.flatnonzero(mc):
        best = None
        for j in np.flatnonzero(owners == y[i]):
            base = np.flatnonzero((yc == j) & ~mc)
            if base.size == 0:
                continue
            d = (((lat[base] - lat[i]) * s) ** 2).sum(1)
            t = lat[base[np.argsort(d, kind="stable")[: min(k, base.size)]]].mean(0)
            dt = (((lat[i] - t) * s) ** 2).sum()
            if best is None or dt < best[0]:
                best = (dt, t)
        if best is not None:
            out[i] = best[1]
    return out


@pytest.mark.parametrize("kind", ["1e150", "1e-300", "1e-60", "1e9+"])
@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_float64_targets_at_extreme_scales_equal_a_float64_reference(kind: str, metric: str) -> None:
    """Targets of float64 latents used to be rounded to float32: inf at 1e150, 0.0 at 1e-300 or 1e-60,
    off by up to 6 spreads around 1e9, and so was the loss. Now they stay float64 and exact."""
    import math

    from latentcc import LCCConfig, epoch_start, lcc_loss

    x = _extreme_base()
    lat = {"1e150": 1e150 * x, "1e-300": 1e-300 * x, "1e-60": 1e-60 * x, "1e9+": 1e9 + x}[kind]
    r = epoch_start(lat, _Y_EXT, LCCConfig(layers=("a",), k=5, metric=metric))
    t = r.targets
    assert t.vectors.dtype == torch.float64
    ref = _brute_targets(lat, _Y_EXT, r.clusters, r.owners, 5)
    ids = np.flatnonzero(t.slot.numpy() >= 0)
    assert sorted(ref) == ids.tolist() and len(ids) > 50
    got = t.vectors.numpy()[t.slot.numpy()[ids]]
    want = np.stack([ref[i] for i in ids])
    assert np.isfinite(got).all() and (got != 0).all()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    z = torch.tensor(lat, requires_grad=True)
    loss = lcc_loss(z, torch.arange(200), t)
    loss.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    loss = loss.detach()
    want_loss = sum(math.dist(lat[i], ref[i]) for i in ids) / len(ids) / math.sqrt(6)
    # the targets near 1e9 are exact to 1 ulp (1.2e-7), which is ~1e-7 of the spread: loss within that
    assert math.isfinite(float(loss)) and float(loss) == pytest.approx(
        want_loss, rel=1e-12 if kind != "1e9+" else 1e-6
    )
    # and exactly the loss formula on the stored targets
    mine = sum(math.dist(lat[i], got[k]) for k, i in enumerate(ids)) / len(ids) / math.sqrt(6)
    assert float(loss) == pytest.approx(mine, rel=1e-12)


def test_float32_latents_keep_float32_targets() -> None:
    x, y, c = make_data()
    t32, t64 = lcc_targets(x, y, c, k_target=3), lcc_targets(x.astype(np.float64), y, c, k_target=3)
    assert t32.vectors.dtype == torch.float32 and t64.vectors.dtype == torch.float64
    assert t32.scale == 1.0 and t64.scale == 1.0  # ordinary latents: no extra work in the loss
    np.testing.assert_allclose(t64.vectors.numpy(), t32.vectors.numpy(), rtol=1e-6)


def test_float64_targets_meet_float32_z_cast_once_and_round_trip(tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    from latentcc import lcc_loss

    x, y, c = make_data()
    x64 = x.astype(np.float64) * 1e-30
    t = lcc_targets(x64, y, c, k_target=3)
    assert t.vectors.dtype == torch.float64 and t.scale != 1.0
    z32 = torch.tensor(x64, dtype=torch.float32)
    idx = torch.arange(len(x))
    l32 = lcc_loss(z32, idx, t)
    assert l32.dtype == torch.float32
    assert float(l32) == pytest.approx(float(lcc_loss(z32.double(), idx, t)), rel=1e-5)
    cached = t.for_dtype(torch.float32)[0]
    assert cached.dtype == torch.float32 and t.for_dtype(torch.bfloat16)[0] is cached  # cast once
    # float64 targets that float32 cannot hold: a clear error, not an inf loss
    big = lcc_targets(x.astype(np.float64) * 1e60, y, c, k_target=3)
    with pytest.raises(
        LatentccError, match=r"'z' parameter of lcc_loss.*float64 targets.*Fix: train the layer in float64"
    ):
        lcc_loss(torch.zeros(len(x), x.shape[1]), idx, big)
    # checkpoint: float64 vectors and the scale round-trip bitwise
    state = t.state_dict()
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    save_file(tensors, tmp_path / "t.safetensors")
    back = LCCTargets.from_state_dict(
        {
            **load_file(tmp_path / "t.safetensors"),
            "num_clusters": state["num_clusters"],
            "scale": state["scale"],
        }
    )
    assert back.vectors.dtype == torch.float64 and torch.equal(back.vectors, t.vectors)
    assert back.scale == t.scale
    assert float(lcc_loss(z32.double(), idx, back)) == float(lcc_loss(z32.double(), idx, t))


def test_float32_targets_of_subnormal_latents_keep_a_finite_exact_loss():
    """A fixed scale beyond float32's exponent range (latents ~1e-39) is clamped, never inf: the loss is
    finite and equals the same distances computed in float64."""
    from latentcc.lcc import lcc_loss

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 25)
    x = rng.normal(size=(100, 6))
    x[np.arange(100), y] += 3
    x32 = (x * 1e-39).astype(np.float32)
    t = lcc_targets(x32, y, np.roll(y, 7), k_target=3)
    z = torch.tensor(x32, requires_grad=True)
    loss = lcc_loss(z, torch.arange(100), t)
    loss.backward()
    slot = t.slot.cpu()
    rows = slot >= 0
    diff = torch.tensor(x32).double()[rows] - t.vectors.double()[slot[rows]]
    ref = float(diff.norm(dim=1).mean() / np.sqrt(6))
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
    assert float(loss.detach()) == pytest.approx(ref, rel=1e-5)


# ----------------------------------------------------------------------------- one k-NN search (latentcc.graph.knn)


@pytest.mark.parametrize("loss", ["paper", "all_samples"])
@pytest.mark.parametrize("policy", ["skip", "class_centroid"])
def test_torch_and_faiss_backends_give_the_same_targets(policy: str, loss: str) -> None:
    """The targets' exact searches run through the one k-NN module: its torch and faiss backends find the
    same neighbours, so the targets are bitwise equal (and equal to the brute-force reference)."""
    pytest.importorskip("faiss")
    x, y, c = make_data(seed=5, n=400, d=8)
    a = lcc_targets(x, y, c, k_target=5, orphan_policy=policy, loss=loss, knn_backend="torch")
    b = lcc_targets(x, y, c, k_target=5, orphan_policy=policy, loss=loss, knn_backend="faiss")
    assert a.num_with_target > 50
    assert torch.equal(a.mc_mask, b.mc_mask) and torch.equal(a.slot, b.slot)
    assert torch.equal(a.vectors, b.vectors)
    for approximate in ("hnsw", "ivf"):  # the graph may be approximate; the targets' searches stay exact
        t = lcc_targets(x, y, c, k_target=5, orphan_policy=policy, loss=loss, knn_backend=approximate)
        assert torch.equal(t.slot, b.slot) and torch.equal(t.vectors, b.vectors)
    if loss == "paper":
        owners = match_clusters(y, c)
        assert_matches_reference(a, reference_targets(x, y, c, owners, 5, policy), owners[c] != y)


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_lccconfig_knn_backend_reaches_the_targets(backend: str, monkeypatch) -> None:
    """LCCConfig.knn_backend picks the backend of the graph AND of the targets' searches (with queries)."""
    pytest.importorskip("faiss")
    import latentcc.graph.knn as knn_module
    from latentcc.config import LCCConfig
    from latentcc.lcc import epoch_start

    calls: list[tuple[str, bool]] = []

    class Recording:
        def __init__(self, inner):
            self.inner, self.name, self.exact = inner, inner.name, inner.exact

        def search(self, base, queries, k, **kw):
            calls.append((self.name, queries is None))
            return self.inner.search(base, queries, k, **kw)

    monkeypatch.setattr(
        knn_module, "KNN_BACKENDS", {n: Recording(b) for n, b in knn_module.KNN_BACKENDS.items()}
    )
    x, y, _ = make_data(seed=2, n=300, d=6)
    res = epoch_start(x, y, LCCConfig(k=5, graph_dim=None, knn_backend=backend))  # type: ignore[arg-type]
    assert res.targets.num_with_target > 0
    assert {name for name, _ in calls} == {backend}
    assert (backend, True) in calls and (
        backend,
        False,
    ) in calls  # the graph's self-search, the targets' queries
