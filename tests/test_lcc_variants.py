"""LCC loss variants (LCCConfig.loss; docs/algorithms.md, LCC item 11) against brute-force per-sample references.

Every reference below loops over samples with full float64 distances and a stable argsort, written from the
definitions in docs/algorithms.md, not from the implementation (no k-NN search, no batched SVD).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import time
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import blobs
from latentcc import LCCConfig
from latentcc.config import LCC_LOSSES
from latentcc.lcc import EpochStart, LCCTargets, epoch_start, lcc_loss, lcc_targets, match_clusters
from latentcc.lcc import loss as loss_module
from latentcc.lcc.correction import LatentClusterCorrection
from latentcc.plumbing.errors import CheckpointError, LatentccError
from latentcc.train.checkpoint import flatten_state, unflatten_state

# ----------------------------------------------------------------------------- brute-force references


def ref_neighbours(
    x: np.ndarray, y: np.ndarray, c: np.ndarray, k: int, *, all_samples: bool = False, policy: str = "skip"
) -> dict[int, np.ndarray]:
    """Sample id -> the ids of the neighbours its target averages (nearest first), one sample at a time."""
    x = x.astype(np.float64)
    owners = match_clusters(y, c)
    cc = owners[c] == y
    n = len(x)

    def nearest(i: int, base: list[int]) -> np.ndarray:
        b = np.array(base, dtype=int)
        d = ((x[b] - x[i]) ** 2).sum(axis=1)
        return b[np.argsort(d, kind="stable")[:k]]

    out: dict[int, np.ndarray] = {}
    for i in range(n):
        a = y[i]
        owned = [j for j in range(len(owners)) if owners[j] == a]
        if not owned:  # a class owning no cluster: orphan_policy
            others = [m for m in range(n) if y[m] == a and m != i]
            if policy == "class_centroid" and others:
                out[i] = nearest(i, others)
            continue
        if all_samples:  # every sample: its k nearest OTHER CC samples of its class
            base = [m for m in range(n) if cc[m] and y[m] == a and m != i]
            if base:
                out[i] = nearest(i, base)
            continue
        if cc[i]:
            continue
        best: tuple[float, np.ndarray] | None = None
        for j in owned:  # the paper: the nearest of the owned clusters' centroids
            base = [m for m in range(n) if c[m] == j and cc[m]]
            if not base:
                continue
            nb = nearest(i, base)
            dist_ = float(np.linalg.norm(x[i] - x[nb].mean(axis=0)))
            if best is None or dist_ < best[0]:
                best = (dist_, nb)
        if best is not None:
            out[i] = best[1]
    return out


def ref_tangent(x: np.ndarray, nb: np.ndarray, r: int) -> np.ndarray:
    """(D, r) top-r principal directions of the rows ``x[nb]`` (numpy SVD of one sample's neighbours);
    directions with a zero singular value (not spanned) are zero columns."""
    p = x[nb].astype(np.float64)
    c = p - p.mean(axis=0)
    _, s, vh = np.linalg.svd(c, full_matrices=False)
    u = np.zeros((x.shape[1], r))
    for j in range(min(r, s.size)):
        if s[j] > s[0] * 1e-9:
            u[:, j] = vh[j]
    return u


def ref_loss(
    z: np.ndarray, idx: np.ndarray, x: np.ndarray, nbrs: dict[int, np.ndarray], variant: str, r: int = 2
) -> float:
    """The variant's loss of batch ``z`` (B, D), one row at a time, float64."""
    z = z.astype(np.float64)
    x = x.astype(np.float64)
    b, d = z.shape
    if variant == "scale_free":
        if b < 2:
            return 0.0
        mu_x = x.mean(axis=0)
        rad_x = math.sqrt(np.mean([((row - mu_x) ** 2).sum() for row in x]))
        mu_z = z.mean(axis=0)
        rad_z = math.sqrt(np.mean([((row - mu_z) ** 2).sum() for row in z]))
    terms = []
    for row in range(b):
        i = int(idx[row])
        if i not in nbrs:
            continue
        t = x[nbrs[i]].mean(axis=0)
        if variant == "scale_free":
            diff = (z[row] - mu_z) / rad_z - (t - mu_x) / rad_x
        else:
            diff = z[row] - t
        if variant == "orthogonal":
            u = ref_tangent(x, nbrs[i], r)
            diff = diff - u @ (u.T @ diff)
        terms.append(float(np.linalg.norm(diff)))
    return sum(terms) / len(terms) / math.sqrt(d) if terms else 0.0


def finite_difference(f, z: np.ndarray, h: float = 1e-6) -> np.ndarray:
    g = np.zeros_like(z)
    for pos in np.ndindex(*z.shape):
        zp, zm = z.copy(), z.copy()
        zp[pos] += h
        zm[pos] -= h
        g[pos] = (f(zp) - f(zm)) / (2 * h)
    return g


def make_data(seed: int = 3, n: int = 80, d: int = 6, classes: int = 4, clusters: int = 7):
    """Latents scattered around cluster centres, with class labels that only partly follow the clusters
    (several clusters per class, MC samples in every class); float64, no distance ties."""
    rng = np.random.default_rng(seed)
    c = rng.integers(0, clusters, n)
    y = np.where(rng.random(n) < 0.7, c % classes, rng.integers(0, classes, n))
    x = rng.normal(scale=3.0, size=(clusters, d))[c] + rng.normal(size=(n, d))
    return x, y, c


def batch(x: np.ndarray, seed: int, b: int = 10, noise: float = 0.5):
    """A batch of sample ids (some with a target, some without) and latents near their refresh latents."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(x), b, replace=False)
    return idx, x[idx] + noise * rng.normal(size=(b, x.shape[1]))


def autograd(z: np.ndarray, idx: np.ndarray, t: LCCTargets, **kw) -> tuple[float, np.ndarray]:
    zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    out = lcc_loss(zt, torch.from_numpy(idx), t, **kw)
    out.backward()
    assert zt.grad is not None
    return float(out.detach()), zt.grad.numpy()


# ----------------------------------------------------------------------------- config


def test_config_checks_the_variant_and_refuses_an_inert_tangent_dim() -> None:
    assert LCCConfig().loss == "paper" and LCCConfig().tangent_dim == 2
    for v in LCC_LOSSES:
        assert LCCConfig(loss=v).loss == v  # type: ignore[arg-type]
    with pytest.raises(LatentccError, match=r"'loss' parameter of LCCConfig must be one of \['paper'"):
        LCCConfig(loss="scalefree")  # type: ignore[arg-type]
    with pytest.raises(LatentccError, match=r"'tangent_dim'.*loss='scale_free'.*Fix: loss='orthogonal'"):
        LCCConfig(loss="scale_free", tangent_dim=3)
    with pytest.raises(LatentccError, match=r"'tangent_dim'.*at most 4 directions.*Fix: tangent_dim <= 4"):
        LCCConfig(loss="orthogonal", tangent_dim=5)  # k = 5 neighbours per target
    assert LCCConfig(loss="orthogonal", tangent_dim=5, k_target=6).tangent_dim == 5
    with pytest.raises(LatentccError, match="'tangent_dim'"):
        LCCConfig(loss="orthogonal", tangent_dim=0)


def test_public_targets_validate_the_variant() -> None:
    x, y, c = make_data()
    with pytest.raises(LatentccError, match="'loss' parameter of lcc_targets"):
        lcc_targets(x, y, c, k_target=3, loss="nope")
    with pytest.raises(LatentccError, match="'tangent_dim' parameter of lcc_targets.*default"):
        lcc_targets(x, y, c, k_target=3, tangent_dim=1)
    with pytest.raises(LatentccError, match="'tangent_dim'.*smaller than k_target"):
        lcc_targets(x, y, c, k_target=3, loss="orthogonal", tangent_dim=3)
    with pytest.raises(LatentccError, match="'tangent_dim'.*latent width D"):
        lcc_targets(x[:, :2], y, c, k_target=5, loss="orthogonal", tangent_dim=2)


# ----------------------------------------------------------------------------- paper


def test_paper_is_the_default_and_unchanged() -> None:
    x, y, c = make_data()
    t0, t1 = lcc_targets(x, y, c, k_target=3), lcc_targets(x, y, c, k_target=3, loss="paper")
    assert t0.loss == t1.loss == "paper" and t0.basis is None
    assert torch.equal(t0.vectors, t1.vectors) and torch.equal(t0.slot, t1.slot)
    idx, z = batch(x, 0)
    a, ga = autograd(z, idx, t0)
    b, gb = autograd(z, idx, t0, loss="paper")
    assert a == b and np.array_equal(ga, gb)
    assert a == pytest.approx(ref_loss(z, idx, x, ref_neighbours(x, y, c, 3), "paper"), rel=1e-12)
    assert set(t0.state_dict()) == {
        "mc_mask",
        "slot",
        "vectors",
        "owners",
        "orphans",
        "num_clusters",
        "scale",
    }


# ----------------------------------------------------------------------------- scale_free


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-9), (np.float32, 2e-4)])
def test_scale_free_whole_pipeline_is_invariant_to_rescaling_and_translation(dtype, rtol) -> None:
    """Refresh latents X -> clusters -> targets, then a batch z: (a X + b, a z + b) gives the same loss."""
    x, y, _ = make_data(seed=5, n=120, d=8)
    cfg = LCCConfig(layers=("z",), k=5, graph_dim=None, loss="scale_free")
    idx, z = batch(x, 1, b=32)
    rng = np.random.default_rng(0)
    base: tuple[float, np.ndarray, np.ndarray] | None = None  # loss, gradient, clusters at a = 1, b = 0
    for a, shift in [(1.0, 0.0), (0.01, 3.0), (3.7, -20.0), (1e3, 50.0), (0.5, 0.0)]:
        b = shift * rng.normal(size=x.shape[1])
        es = epoch_start((a * x + b).astype(dtype), y, cfg)
        zt = torch.from_numpy((a * z + b).astype(dtype)).requires_grad_(True)
        got = lcc_loss(zt, torch.from_numpy(idx), es.targets)
        got.backward()
        assert zt.grad is not None
        if base is None:
            base = (float(got.detach()), zt.grad.double().numpy(), es.clusters)
            assert base[0] > 0.05 and (es.targets.slot[idx] >= 0).sum() >= 3
        assert np.array_equal(es.clusters, base[2])  # the partition itself does not move
        assert float(got.detach()) == pytest.approx(base[0], rel=rtol)
        # L(a z + b) = L(z): the gradient at a z + b is the gradient at z divided by a
        np.testing.assert_allclose(a * zt.grad.double().numpy(), base[1], rtol=0, atol=50 * rtol)
    # the paper's loss, by contrast, halves when the space shrinks by half
    paper = LCCConfig(k=5, graph_dim=None)
    full = float(lcc_loss(torch.from_numpy(z), torch.from_numpy(idx), epoch_start(x, y, paper).targets))
    half = float(
        lcc_loss(torch.from_numpy(0.5 * z), torch.from_numpy(idx), epoch_start(0.5 * x, y, paper).targets)
    )
    assert half == pytest.approx(0.5 * full, rel=1e-12)


def test_scale_free_equals_a_brute_force_reference_loss_and_gradient() -> None:
    x, y, c = make_data()
    t = lcc_targets(x, y, c, k_target=3, loss="scale_free")
    nbrs = ref_neighbours(x, y, c, 3)
    assert t.loss == "scale_free" and t.num_with_target == len(nbrs) > 10
    for seed in range(3):
        idx, z = batch(x, seed)
        got, grad = autograd(z, idx, t)
        ref = ref_loss(z, idx, x, nbrs, "scale_free")
        assert got == pytest.approx(ref, rel=1e-10)
        fd = finite_difference(lambda zz, idx=idx: ref_loss(zz, idx, x, nbrs, "scale_free"), z)
        np.testing.assert_allclose(grad, fd, rtol=0, atol=1e-7)
        # the gradient of a centred, normalised frame: no pull on the batch's mean, none along z - mean
        np.testing.assert_allclose(grad.sum(axis=0), 0.0, atol=1e-12)
        assert abs(float((grad * (z - z.mean(axis=0))).sum())) < 1e-12


def test_scale_free_batch_of_one_and_identical_rows() -> None:
    x, y, c = make_data()
    t = lcc_targets(x, y, c, k_target=3, loss="scale_free")
    i = int(np.flatnonzero(t.slot.numpy() >= 0)[0])
    one = torch.tensor(x[[i]], requires_grad=True)
    out = lcc_loss(one, torch.tensor([i]), t)
    out.backward()
    assert (
        float(out.detach()) == 0.0 and out.grad_fn is not None and one.grad is not None and not one.grad.any()
    )
    same = torch.tensor(np.repeat(x[[i]], 4, axis=0), requires_grad=True)  # zero spread: no frame, no NaN
    out = lcc_loss(same, torch.tensor([i] * 4), t)
    out.backward()
    assert same.grad is not None and torch.isfinite(out) and torch.isfinite(same.grad).all()
    # every row then sits at the frame's origin: the loss is the targets' distance to it
    expect = float(t.vectors[t.slot[i]].double().norm()) / math.sqrt(x.shape[1])
    assert float(out.detach()) == pytest.approx(expect, rel=1e-12)


def test_scale_free_half_precision_latents_use_a_float32_frame() -> None:
    x, y, c = make_data()
    t = lcc_targets(x.astype(np.float32), y, c, k_target=3, loss="scale_free")
    idx, z = batch(x, 2)
    got = lcc_loss(torch.tensor(z, dtype=torch.bfloat16), torch.from_numpy(idx), t)
    ref = ref_loss(
        torch.tensor(z, dtype=torch.bfloat16).double().numpy(),
        idx,
        x,
        ref_neighbours(x, y, c, 3),
        "scale_free",
    )
    assert got.dtype == torch.float32 and float(got) == pytest.approx(ref, rel=1e-4)


# ----------------------------------------------------------------------------- orthogonal


def test_orthogonal_equals_a_brute_force_reference() -> None:
    x, y, c = make_data()
    for policy in ("skip", "class_centroid"):
        t = lcc_targets(x, y, c, k_target=4, loss="orthogonal", tangent_dim=2, orphan_policy=policy)
        nbrs = ref_neighbours(x, y, c, 4, policy=policy)
        slot = t.slot.numpy()
        assert sorted(np.flatnonzero(slot >= 0)) == sorted(nbrs)
        assert t.basis is not None and t.basis.shape == (len(nbrs), 2, x.shape[1])
        for i, nb in nbrs.items():  # the same tangent space (projector: signs of U do not matter)
            u = t.basis[slot[i]].numpy().T  # (D, r) columns
            ur = ref_tangent(x, nb, 2)
            np.testing.assert_allclose(u @ u.T, ur @ ur.T, rtol=0, atol=1e-10)
            np.testing.assert_allclose(t.vectors[slot[i]].numpy(), x[nb].mean(axis=0), rtol=0, atol=1e-12)
        for seed in range(3):
            idx, z = batch(x, seed)
            got, grad = autograd(z, idx, t)
            assert got == pytest.approx(ref_loss(z, idx, x, nbrs, "orthogonal"), rel=1e-10)
            fd = finite_difference(lambda zz, idx=idx, nbrs=nbrs: ref_loss(zz, idx, x, nbrs, "orthogonal"), z)
            np.testing.assert_allclose(grad, fd, rtol=0, atol=1e-7)


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_orthogonal_correction_is_orthogonal_to_the_tangent_basis(dtype, atol) -> None:
    x, y, c = make_data(seed=4, n=150, d=12)
    t = lcc_targets(
        x.astype(np.float32 if dtype == torch.float32 else np.float64),
        y,
        c,
        k_target=6,
        loss="orthogonal",
        tangent_dim=3,
    )
    assert t.basis is not None and t.basis.dtype == dtype
    gram = t.basis @ t.basis.transpose(1, 2)
    torch.testing.assert_close(gram, torch.eye(3, dtype=dtype).expand_as(gram), rtol=0, atol=10 * atol)
    idx = np.flatnonzero(t.slot.numpy() >= 0)
    z = torch.tensor(x[idx] + 0.7, dtype=dtype, requires_grad=True)
    lcc_loss(z, torch.from_numpy(idx), t).backward()
    assert z.grad is not None
    u = t.basis[t.slot[idx]]  # (B, r, D)
    along = torch.einsum("bd,brd->br", z.grad, u)  # the correction's component along each tangent direction
    scale = z.grad.norm(dim=1, keepdim=True)
    assert float(scale.min()) > 0
    assert float((along / scale).abs().max()) < atol
    # and it is not the paper's pull: the tangent part of z - t was removed
    paper = lcc_targets(x, y, c, k_target=6)
    zp = z.detach().double().clone().requires_grad_(True)
    lcc_loss(zp, torch.from_numpy(idx), paper).backward()
    assert zp.grad is not None and float(torch.einsum("bd,brd->br", zp.grad, u.double()).abs().max()) > 1e-3


def test_orthogonal_keeps_directions_the_neighbours_do_not_span() -> None:
    """Two CC neighbours span one direction: the second basis direction is 0, so only one is removed."""
    x = np.array([[0.0, 0, 0], [2, 0, 0], [0, 5, 0], [9, 9, 9], [9, 9, 8], [0.5, 0.5, 0.5]])
    y = np.array([0, 0, 1, 1, 1, 0])
    c = np.array([0, 0, 1, 1, 1, 1])  # sample 5 (class 0) sits in class 1's cluster: MC, 2 CC neighbours
    t = lcc_targets(x, y, c, k_target=3, loss="orthogonal", tangent_dim=2)
    u = t.basis[t.slot[5]].numpy().T  # (D, r) columns
    np.testing.assert_allclose(np.abs(u[:, 0]), [1, 0, 0], atol=1e-15)
    np.testing.assert_array_equal(u[:, 1], 0.0)
    z = torch.tensor([[4.0, 3.0, 4.0]], dtype=torch.float64)
    got = float(lcc_loss(z, torch.tensor([5]), t))
    assert got == pytest.approx(
        5.0 / math.sqrt(3), rel=1e-12
    )  # (4, 3, 4) - (1, 0, 0): x removed, |(3, 4)| = 5


# ----------------------------------------------------------------------------- all_samples


def test_all_samples_gives_every_row_a_target_equal_to_a_brute_force_loop() -> None:
    rng = np.random.default_rng(7)
    n, d = 90, 5
    y = rng.integers(0, 3, n)
    c = np.where(rng.random(n) < 0.8, y, rng.integers(0, 3, n))  # every class owns its cluster, 20% noise
    x = rng.normal(scale=2.0, size=(3, d))[c] + rng.normal(size=(n, d))
    t = lcc_targets(x, y, c, k_target=4, loss="all_samples")
    nbrs = ref_neighbours(x, y, c, 4, all_samples=True)
    assert bool((t.slot >= 0).all()) and len(nbrs) == n  # every row, CC and MC
    assert t.num_mc == int((~(match_clusters(y, c)[c] == y)).sum()) < n // 2
    slot = t.slot.numpy()
    np.testing.assert_array_equal(slot, np.arange(n))
    for i, nb in nbrs.items():
        assert i not in nb
        np.testing.assert_allclose(t.vectors[slot[i]].numpy(), x[nb].mean(axis=0), rtol=0, atol=1e-12)
    idx, z = batch(x, 3, b=16)
    got, grad = autograd(z, idx, t)
    assert got == pytest.approx(ref_loss(z, idx, x, nbrs, "all_samples"), rel=1e-12)
    fd = finite_difference(lambda zz: ref_loss(zz, idx, x, nbrs, "all_samples"), z)
    np.testing.assert_allclose(grad, fd, rtol=0, atol=1e-7)


@pytest.mark.parametrize("policy", ["skip", "class_centroid"])
def test_all_samples_with_orphans_and_several_clusters_per_class(policy) -> None:
    x, y, c = make_data(seed=3)
    y = np.where(y == 3, c % 3, y)
    y[::13] = 3  # 7 samples of class 3, scattered: it wins no cluster's plurality, an orphan
    owners = match_clusters(y, c)
    assert 3 not in owners and np.bincount(owners[owners >= 0]).max() >= 2
    t = lcc_targets(x, y, c, k_target=3, loss="all_samples", orphan_policy=policy)
    nbrs = ref_neighbours(x, y, c, 3, all_samples=True, policy=policy)
    slot = t.slot.numpy()
    assert sorted(np.flatnonzero(slot >= 0)) == sorted(nbrs)
    assert (3 in y[list(nbrs)]) == (policy == "class_centroid")
    for i, nb in nbrs.items():
        np.testing.assert_allclose(t.vectors[slot[i]].numpy(), x[nb].mean(axis=0), rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- state, dispatch, hot path


@pytest.mark.parametrize("variant", LCC_LOSSES)
def test_state_dict_round_trips_through_a_checkpoint(variant, tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    x, y, c = make_data()
    t = lcc_targets(x.astype(np.float32), y, c, k_target=3, loss=variant)
    tree, tensors = flatten_state({"t": t.state_dict()})  # the checkpoint's JSON + safetensors split
    save_file(tensors, tmp_path / "s.safetensors")
    back = LCCTargets.from_state_dict(unflatten_state(tree, load_file(tmp_path / "s.safetensors"))["t"])
    assert back.loss == variant and torch.equal(back.vectors, t.vectors) and torch.equal(back.slot, t.slot)
    assert (back.basis is None) == (variant != "orthogonal")
    if back.basis is not None:
        assert torch.equal(back.basis, t.basis) and back.to("meta").basis.device.type == "meta"  # type: ignore[union-attr]
    idx, z = batch(x, 0)
    zt = torch.tensor(z, dtype=torch.float32)
    assert torch.equal(lcc_loss(zt, torch.from_numpy(idx), back), lcc_loss(zt, torch.from_numpy(idx), t))
    state = t.state_dict()
    if variant == "orthogonal":
        with pytest.raises(CheckpointError, match="tangent basis"):
            LCCTargets.from_state_dict({k: v for k, v in state.items() if k != "basis"})
        with pytest.raises(CheckpointError, match="shape"):
            LCCTargets.from_state_dict({**state, "basis": state["basis"][..., :-1]})  # type: ignore[index]


def test_loss_refuses_targets_of_another_variant() -> None:
    x, y, c = make_data()
    t = lcc_targets(x, y, c, k_target=3, loss="orthogonal")
    idx, z = batch(x, 0)
    with pytest.raises(LatentccError, match=r"'loss' parameter of lcc_loss.*\('orthogonal'.*Fix: compute"):
        lcc_loss(torch.tensor(z), torch.from_numpy(idx), t, loss="scale_free")
    assert float(lcc_loss(torch.tensor(z), torch.from_numpy(idx), t, loss="orthogonal")) > 0


def test_hot_path_helpers_have_no_host_sync_in_source() -> None:
    import re

    for fn in (loss_module.lcc_loss, loss_module._scale_free, loss_module._off_tangent):
        # lcc_loss's one int() is the range check of idx, on the CPU only (free there)
        src = inspect.getsource(fn).replace("int(idx.min()), int(idx.max())", "")
        for banned in (
            r"\.cpu\(",
            r"\.item\(",
            "numpy",
            r"\.tolist\(",
            "nonzero",
            r"\bint\(",
            r"\bfloat\(",
            r"\bbool\(",
        ):
            assert not re.search(banned, src), (fn.__name__, banned)


@pytest.mark.parametrize("variant", LCC_LOSSES)
def test_correction_refresh_and_loss_use_the_configured_variant(variant) -> None:
    from torch.utils.data import DataLoader

    from latentcc.latents.collect import collect_latents

    data = blobs()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    cfg = LCCConfig(layers=("0",), k=5, graph_dim=None, latent_source="eval_pass", loss=variant)  # type: ignore[arg-type]
    lcc = LatentClusterCorrection(cfg)
    lcc.refresh(model, data, epoch=1)
    t = lcc.targets["0"]
    assert t.loss == variant
    lat = collect_latents(model, DataLoader(data, batch_size=64), ["0"])
    ref = lcc_targets(lat["0"], lat.labels, lcc.last["0"].clusters, k_target=5, loss=variant)
    assert torch.equal(ref.slot, t.slot) and torch.allclose(ref.vectors, t.vectors, rtol=0, atol=1e-6)
    x, _, idx = next(iter(DataLoader(data, batch_size=32)))
    with lcc.capture(model) as z:
        model(x)
    got = lcc.loss(z, idx)
    torch.testing.assert_close(got, lcc_loss(z["0"], idx, t), rtol=0, atol=0)
    # a resumed run (state through the checkpoint format) gives the same loss
    tree, tensors = flatten_state(lcc.state_dict())
    again = LatentClusterCorrection(cfg)
    again.load_state_dict(unflatten_state(tree, tensors))
    torch.testing.assert_close(again.loss(z, idx), got, rtol=0, atol=0)
    # a config of another variant meeting these targets (e.g. a resume with a changed --lcc-loss) is refused
    other = LatentClusterCorrection(
        dataclasses.replace(cfg, loss="paper" if variant != "paper" else "scale_free")
    )
    other.load_state_dict(lcc.state_dict())
    with pytest.raises(LatentccError, match="Fix: compute the targets"):
        other.loss(z, idx)


# ----------------------------------------------------------------------------- DDP broadcast (gloo, 2 processes)


def _broadcast_worker(rank, folder, x, y, c):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2, timeout=timedelta(seconds=60)
    )
    try:
        from latentcc.lcc.distributed import broadcast_epoch_start

        out = {}
        for variant in LCC_LOSSES:

            def compute(variant=variant):
                t = lcc_targets(x, y, c, k_target=3, loss=variant)
                return EpochStart(t, c.copy(), t.owners.copy(), ~t.mc_mask.numpy(), {"targets": 1.0})

            res = broadcast_epoch_start(compute if rank == 0 else None)
            out[variant] = res.targets.state_dict()
        torch.save(out, os.path.join(folder, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_broadcast_carries_every_variant_bitwise(tmp_path) -> None:
    x, y, c = make_data()
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    ctx = mp.start_processes(
        _broadcast_worker, args=(str(tmp_path), x, y, c), nprocs=2, join=False, start_method=method
    )
    end = time.monotonic() + 120
    while not ctx.join(timeout=1.0):
        if time.monotonic() > end:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the 2 processes did not finish within 120 s (a collective hung?)")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2))
    for variant in LCC_LOSSES:
        single = lcc_targets(x, y, c, k_target=3, loss=variant).state_dict()
        assert set(r1[variant]) == set(r0[variant]) == set(single)
        for key, v in single.items():
            for got in (r0[variant][key], r1[variant][key]):
                assert torch.equal(got, v) if isinstance(v, torch.Tensor) else got == v, (variant, key)
