"""Reliability cases of the engine and the metrics: where latents sit in space, dtypes, devices and the
model behind a GC embedding (collected by tests/reliability_cases.py through ``cases()``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from latentcc.plumbing.errors import LatentccError
from reliability_base import Case

_Y7 = np.repeat(np.arange(7), 30)
_Y4 = np.repeat(np.arange(4), 10)


def _blobs(offset: float = 0.0) -> np.ndarray:
    """The issue's example: 7 float64 blobs of spread 1e-3 (210 x 8) around ``offset``."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(7, 8)) * 10
    return (centres[_Y7] + rng.normal(size=(210, 8))) * 1e-3 + offset


def _x4(n: int = 40, d: int = 4) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(n, d)).astype(np.float32)


def _meta() -> torch.Tensor:
    return torch.zeros(40, 4, device="meta")


def _lcc_config() -> Any:
    from latentcc import LCCConfig

    return LCCConfig(k=5, graph_dim=None)


# ----------------------------------------------------------------------------- where latents sit in space


def _works_knn_offset(tmp: Path) -> str:
    from latentcc.graph import knn_search

    x0, x1 = _blobs(0.0), _blobs(1e5)
    i0, _ = knn_search(x0, 5)
    i1, d1 = knn_search(x1, 5)
    exact = np.argsort(((x1[:, None] - x1[None]) ** 2).sum(-1) + np.diag(np.full(210, np.inf)), axis=1)[:, :5]
    return (
        f"works: the same neighbours as at offset 0: {bool((i1 == i0).all())}, equal to an exact float64 search: "
        f"{bool((i1 == exact).all())}, distances > 0: {bool(d1.min() > 0)} (rows are centred in float64 before "
        "the float32 search)"
    )


def _works_epoch_offset(tmp: Path) -> str:
    from latentcc import epoch_start

    a, b = epoch_start(_blobs(0.0), _Y7, _lcc_config()), epoch_start(_blobs(1e5), _Y7, _lcc_config())
    return (
        f"works: {len(np.unique(b.clusters))} communities, the same partition as at offset 0: "
        f"{bool((a.clusters == b.clusters).all())}"
    )


def _works_collect_offset(tmp: Path) -> str:
    """A float64 model whose layer sits around 1e5: the latent pass keeps float64 for the engine."""
    from torch import nn

    from latentcc import collect_latents, epoch_start
    from latentcc.data import from_arrays

    class Shift(nn.Module):  # a layer computing in float64 whose output sits around 1e5
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(8, 8).double()
            with torch.no_grad():
                self.lin.weight.copy_(torch.eye(8))
                self.lin.bias.fill_(1e5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x)

    x0 = _blobs(0.0)
    data = from_arrays(x0, _Y7, val_fraction=0.0, test_fraction=0.0).train
    model = nn.Sequential(Shift())
    lat = collect_latents(model, torch.utils.data.DataLoader(data, batch_size=64), ["0"])
    z = lat.arrays["0"]
    ref = np.stack([np.asarray(data[i][0], dtype=np.float64) for i in range(len(data))])  # inputs by index
    a, b = epoch_start(ref, lat.labels, _lcc_config()), epoch_start(z, lat.labels, _lcc_config())
    same = bool((a.clusters == b.clusters).all())
    return (
        f"works: latents stored as {z.dtype}, {len(np.unique(b.clusters))} communities, "
        f"the same partition as at offset 0: {same}"
    )


def _works_float32_offset(tmp: Path) -> str:
    from latentcc.graph import knn_search

    x = (np.random.default_rng(3).normal(size=(300, 6)) + 1e4).astype(np.float32)
    d = ((x[:, None].astype(np.float64) - x[None]) ** 2).sum(-1) + np.diag(np.full(300, np.inf))
    same = bool((knn_search(x, 4)[0] == np.argsort(d, axis=1, kind="stable")[:, :4]).all())
    return f"works: neighbours equal an exact float64 search of the same float32 values: {same}"


def _works_wide_ints(tmp: Path) -> str:
    from latentcc.graph import knn_search

    x = np.random.default_rng(4).integers(0, 1000, size=(80, 3)).astype(np.int64) + 2**40
    d = ((x[:, None].astype(np.float64) - x[None]) ** 2).sum(-1) + np.diag(np.full(80, np.inf))
    same = bool((knn_search(x, 3)[0] == np.argsort(d, axis=1, kind="stable")[:, :3]).all())
    return f"works: int64 latents are searched via float64 (exact to 2^53): neighbours equal an exact search: {same}"


def _works_metrics_offset(tmp: Path) -> str:
    from latentcc.metrics import clusterability, knn_probe, neural_collapse

    x0, x1 = _blobs(0.0), _blobs(1e5)
    same_cl = all(
        clusterability(x1, _Y7, clustering=m) == clusterability(x0, _Y7, clustering=m)
        for m in ("ward", "kmeans", "leiden")
    )
    n0, n1 = neural_collapse(x0, _Y7), neural_collapse(x1, _Y7)
    nc = max(abs(n1[k] / n0[k] - 1) for k in ("nc1", "cdnv", "nc2_etf"))
    pr = [knn_probe(x[::2], _Y7[::2], x[1::2], _Y7[1::2], metric="l2") for x in (x0, x1)]
    return (
        f"works: clusterability (ward, kmeans, leiden) equal at offsets 0 and 1e5: {same_cl}; neural collapse "
        f"within {nc:.0e} relative; k-NN probe accuracy {pr[0]:.2f} and {pr[1]:.2f}"
    )


def _works_reduce_offset(tmp: Path) -> str:
    from latentcc.graph import reduce_dim

    a, b = reduce_dim(_blobs(0.0), 3), reduce_dim(_blobs(1e5), 3)
    return f"works: PCA scores equal those at offset 0 within {float(np.abs(a - b).max() / np.abs(a).max()):.0e} relative"


def _classes4(offset: float, spread: float) -> tuple[np.ndarray, np.ndarray]:
    """The tester's data: 4 classes of 50 (class c has +6 on axis c), spread ``spread`` around ``offset``."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 50)
    b = rng.normal(size=(200, 8))
    b[np.arange(200), y] += 6.0
    return offset + spread * b, y


def _cosine_ref(x: np.ndarray, q: np.ndarray, k: int, self_too: bool) -> np.ndarray:
    """k nearest rows of x by cosine of the float64 values, in extended precision where numpy has it
    (chordal distances of unit rows: monotone in 1 - cos)."""
    xl, ql = x.astype(np.longdouble), q.astype(np.longdouble)
    u = xl / np.sqrt((xl * xl).sum(1, keepdims=True))
    v = ql / np.sqrt((ql * ql).sum(1, keepdims=True))
    d = ((v[:, None] - u[None]) ** 2).sum(-1)
    if self_too:
        np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1, kind="stable")[:, :k]


def _works_cosine_offset(tmp: Path) -> str:
    from latentcc import LCCConfig, epoch_start
    from latentcc.graph import knn_search

    out = []
    for off, spread in ((1e4, 1.0), (1e12, 1e-2), (1e-20, 1e-30)):
        x, y = _classes4(off, spread)
        idx = knn_search(x, 5, metric="cosine")[0]
        mc = epoch_start(x, y, LCCConfig(k=5, graph_dim=None, metric="cosine")).stats()["mc_fraction"]
        same = float((y[idx] == y[:, None]).mean())
        out.append(f"{off:g}/{spread:g}: {same:.0%} same-class neighbours, mc_fraction {mc}")
    return "works: " + "; ".join(out)


def _works_probe_cosine_offset(tmp: Path) -> str:
    from latentcc.metrics import knn_probe

    accs, refs = [], []
    for off, spread in ((1e4, 1.0), (1e5, 1e-3), (1e12, 1e-2)):
        x, y = _classes4(off, spread)
        votes = y[::2][_cosine_ref(x[::2], x[1::2], 5, False)]
        refs.append(
            float(np.mean([np.bincount(v).argmax() == t for v, t in zip(votes, y[1::2], strict=True)]))
        )
        accs.append(knn_probe(x[::2], y[::2], x[1::2], y[1::2], k=5))
    return f"works: accuracy {accs}, exact cosine k-NN vote {refs}"


def _works_reduce_pow2(tmp: Path) -> str:
    from latentcc.graph import reduce_dim

    x = np.random.default_rng(0).normal(size=(60, 6))
    a, b = reduce_dim(x, 3), reduce_dim(x * 2.0**-110, 3)
    return (
        f"works: PCA scores of x * 2^-110 equal those of x times 2^-110 exactly: "
        f"{bool((b == a * np.float32(2.0**-110)).all())} (computed on rescaled values, scaled back)"
    )


def _works_profile_one_per_class(tmp: Path) -> str:
    from torch.utils.data import TensorDataset

    from latentcc import profile

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(3, 6)
    data = TensorDataset(x, torch.arange(3), torch.arange(3))  # one sample per class
    p = profile(model, {"train": data}, layers=["1"], metrics=["nc"], progress=False)
    return f"works: nc1 {p.series('nc1')} with the note: {p.notes[0]}"


# ----------------------------------------------------------------------------- dtypes and containers


def _works_epoch_half(tmp: Path) -> str:
    from latentcc import epoch_start

    x = torch.from_numpy(_blobs(0.0) * 1000).to(torch.bfloat16)
    ref = epoch_start(x.float(), _Y7, _lcc_config())
    out = [epoch_start(x, _Y7, _lcc_config()), epoch_start(x.half().float().half(), _Y7, _lcc_config())]
    same = [bool((o.clusters == ref.clusters).all()) for o in out]
    return f"works: bfloat16 and float16 latents go through the same door as knn_graph: same clusters as float32 of the same values: {same}"


def _works_epoch_tensor_kinds(tmp: Path) -> str:
    from latentcc import epoch_start

    x = _blobs(0.0) * 1000
    ref = epoch_start(x, _Y7, _lcc_config()).clusters
    kinds = {
        "requires_grad": torch.from_numpy(x).requires_grad_(True),
        "non-contiguous": torch.from_numpy(np.asfortranarray(x)),
        "list": x.tolist(),
        "object array": x.astype(object),
    }
    same = {k: bool((epoch_start(v, _Y7, _lcc_config()).clusters == ref).all()) for k, v in kinds.items()}
    return f"works: same clusters for {same}"


def _works_nc_bf16(tmp: Path) -> str:
    from latentcc.metrics import neural_collapse

    x = torch.from_numpy(_x4()).to(torch.bfloat16)
    same = neural_collapse(x, _Y4) == neural_collapse(x.float(), _Y4)
    return f"works: bfloat16 features are read exactly as float32: same result: {same}"


# ----------------------------------------------------------------------------- geometric complexity


def _mlp64() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double().eval()


def _bn_train() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Tanh()).train()


def _works_gc_dtype(tmp: Path) -> str:
    from latentcc.metrics import geometric_complexity

    model, x = _mlp64(), torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    got = geometric_complexity(model, x, estimator="exact")
    ref = geometric_complexity(model, x.double(), estimator="exact")
    return f"works: x is cast to the model's dtype (float64, exact); GC equals that of x.double(): {got.mean == ref.mean}"


def _gc(fn: Callable[..., Any], x: Any, **kw: Any) -> Any:
    from latentcc.metrics import geometric_complexity

    return geometric_complexity(fn, x, **{"estimator": "exact", **kw})  # the cases were written for it


def _works_targets_extreme() -> str:
    """epoch_start + lcc_loss on float64 latents at 1e150, 1e-300 and around 1e9: targets vs float64 means."""
    import math

    from latentcc import LCCConfig, epoch_start, lcc_loss

    y = np.repeat(np.arange(4), 50)
    x = np.random.default_rng(2).normal(size=(200, 6))
    x[np.arange(200), y] += 1.5
    parts = []
    for tag, lat in (("1e150", 1e150 * x), ("1e-300", 1e-300 * x), ("1e9+", 1e9 + x)):
        r = epoch_start(lat, y, LCCConfig(layers=("a",), k=5))
        t = r.targets
        ids = np.flatnonzero(t.slot.numpy() >= 0)
        got = t.vectors.numpy()[t.slot.numpy()[ids]]
        loss = float(lcc_loss(torch.tensor(lat), torch.arange(200), t))
        want = sum(math.dist(lat[i], got[k]) for k, i in enumerate(ids)) / len(ids) / math.sqrt(6)
        parts.append(
            f"{tag}: {t.vectors.dtype}, all finite and non-zero: {bool(np.isfinite(got).all() and (got != 0).all())}, "
            f"loss finite and exact: {math.isfinite(loss) and abs(loss - want) <= 1e-12 * want}"
        )
    return "works: " + "; ".join(parts)


def _works_linear_probe_extreme() -> str:
    from latentcc.metrics import linear_probe

    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(4), 40)
    x = rng.normal(size=(160, 6))
    x[np.arange(160), y] += 5.0
    accs = [
        linear_probe(s * x[::2], y[::2], s * x[1::2], y[1::2], standardize=std)
        for s in (1e-300, 1e150, 1e-150)
        for std in (True, False)
    ] + [
        linear_probe(
            (1e-20 * x[::2]).astype(np.float32),
            y[::2],
            (1e-20 * x[1::2]).astype(np.float32),
            y[1::2],
            standardize=False,
        )
    ]
    return f"works: accuracy {accs}"


# ----------------------------------------------------------------------------- the table


def cases() -> list[Case]:
    from latentcc import LCCConfig, epoch_start, knn_graph, lcc_loss, lcc_targets, reduce_dim
    from latentcc.metrics import clusterability, knn_probe, neural_collapse

    L = LatentccError
    x = _x4()
    cfg = LCCConfig(k=3, graph_dim=None)
    targets = lcc_targets(x, _Y4, (_Y4 + 1) % 4, k_target=3)
    model64 = _mlp64()
    return [
        # --- where latents sit in space (float32 search arithmetic)
        Case("knn-large-offset", "knn_search on float64 latents around 1e5 with a spread of 1e-3", _works_knn_offset,
             None, r"works: the same neighbours as at offset 0: True, equal to an exact float64 search: True, distances > 0: True"),
        Case("epoch-large-offset", "epoch_start on 7 float64 blobs around 1e5 with a spread of 1e-3", _works_epoch_offset,
             None, r"works: 7 communities, the same partition as at offset 0: True"),
        Case("collect-float64-offset", "collect_latents + epoch_start on a float64 model's layer around 1e5 "
             "(spread 1e-3)", _works_collect_offset, None,
             r"works: latents stored as float64, 7 communities, the same partition as at offset 0: True"),
        Case("knn-float32-offset", "knn_search on float32 latents around 1e4 with a spread of 1", _works_float32_offset,
             None, r"works: .*exact float64 search of the same float32 values: True"),
        Case("knn-wide-int-latents", "knn_search on int64 latents around 2^40 differing in the last bits", _works_wide_ints,
             None, r"works: .*neighbours equal an exact search: True"),
        Case("metrics-large-offset", "clusterability, neural_collapse and knn_probe on features around 1e5 (spread 1e-3)",
             _works_metrics_offset, None, r"works: .*equal at offsets 0 and 1e5: True; neural collapse within .*1\.00 and 1\.00"),
        Case("reduce-large-offset", "reduce_dim (PCA) of float64 latents around 1e5 (spread 1e-3)", _works_reduce_offset,
             None, r"works: PCA scores equal those at offset 0 within \de-0[6-9] relative"),
        # --- dtypes and containers: one door for every entry point
        Case("epoch-bfloat16", "epoch_start on bfloat16 (and float16) latents", _works_epoch_half,
             None, r"works: .*same clusters as float32 of the same values: \[True, True\]"),
        Case("epoch-tensor-kinds", "epoch_start on latents that require grad, are non-contiguous, a list, an object array",
             _works_epoch_tensor_kinds, None, r"works: same clusters for \{'requires_grad': True, 'non-contiguous': True, 'list': True, 'object array': True\}"),
        Case("nc-bfloat16", "neural_collapse on bfloat16 features", _works_nc_bf16, None, r"works: .*same result: True"),
        Case("epoch-string-latents", "epoch_start on an object array of strings",
             lambda t: epoch_start(np.array([["a", "b"]] * 40, dtype=object), _Y4, cfg),
             L, r"'latents' parameter of epoch_start must be a real-valued numeric.*object.*Fix: convert"),
        Case("epoch-sparse-latents", "epoch_start on a scipy sparse matrix",
             lambda t: epoch_start(sp.random(40, 4, density=0.5, format="csr", random_state=0), _Y4, cfg),
             L, r"'latents' parameter of epoch_start must be a dense .*Fix: x.toarray\(\)"),
        Case("epoch-3d-latents", "epoch_start on (N, C, L) latents", lambda t: epoch_start(np.zeros((40, 2, 3)), _Y4, cfg),
             L, r"'latents' parameter of epoch_start must be 2-D with shape \(N, D\).*Fix: reshape"),
        Case("epoch-negative-labels", "epoch_start with labels -1..2",
             lambda t: epoch_start(x, _Y4 - 1, cfg), L, r"'labels' parameter of epoch_start must be labels in \[0, 2\*\*31\).*Relabel"),
        Case("loss-not-targets", "lcc_loss with a tensor instead of LCCTargets",
             lambda t: lcc_loss(torch.zeros(4, 4), torch.arange(4), targets.vectors),
             L, r"'targets' parameter of lcc_loss must be an LCCTargets"),
        # --- meta tensors (no data)
        Case("knn-meta", "knn_graph on a meta tensor", lambda t: knn_graph(_meta(), 3),
             L, r"'x' parameter of knn_graph must be a tensor with data \(not on the 'meta' device\).*shape but no values. Fix: compute it from a materialised model"),
        Case("epoch-meta", "epoch_start on meta latents", lambda t: epoch_start(_meta(), _Y4, cfg),
             L, r"'latents' parameter of epoch_start must be a tensor with data.*Fix"),
        Case("targets-meta", "lcc_targets on meta latents", lambda t: lcc_targets(_meta(), _Y4, _Y4, k_target=3),
             L, r"'latents' parameter of lcc_targets must be a tensor with data.*Fix"),
        Case("reduce-meta", "reduce_dim on a meta tensor", lambda t: reduce_dim(_meta(), 2),
             L, r"'x' parameter of reduce_dim must be a tensor with data.*Fix"),
        Case("loss-meta", "lcc_loss with meta latents z", lambda t: lcc_loss(torch.zeros(4, 4, device="meta"), torch.arange(4), targets),
             L, r"'z' parameter of lcc_loss must be a tensor with data.*Fix"),
        Case("nc-meta", "neural_collapse on meta features", lambda t: neural_collapse(_meta(), _Y4),
             L, r"'features' parameter of neural_collapse must be a tensor with data.*Fix"),
        Case("nc-meta-weight", "neural_collapse with a meta classifier weight",
             lambda t: neural_collapse(x, _Y4, classifier_weight=torch.zeros(4, 4, device="meta")),
             L, r"'classifier_weight' parameter of neural_collapse must be a tensor with data.*Fix"),
        Case("clusterability-meta", "clusterability on meta features", lambda t: clusterability(_meta(), _Y4),
             L, r"'features' parameter of clusterability must be a tensor with data.*Fix"),
        Case("probe-meta", "knn_probe on meta test features", lambda t: knn_probe(x, _Y4, _meta(), _Y4),
             L, r"'test_feats' parameter of knn_probe must be a tensor with data.*Fix"),
        Case("gc-meta-input", "geometric_complexity on meta inputs", lambda t: _gc(model64, torch.zeros(4, 5, device="meta")),
             L, r"'x' parameter of geometric_complexity must be a tensor with data.*Fix"),
        Case("gc-meta-model", "geometric_complexity of a model on the meta device",
             lambda t: _gc(_mlp64().to("meta"), torch.zeros(4, 5)),
             L, r"'fn' parameter of geometric_complexity must be a model with materialised parameters.*Fix: load the weights"),
        # --- geometric complexity: the model behind fn
        Case("gc-dtype-model", "geometric_complexity of a float64 model on float32 inputs", _works_gc_dtype,
             None, r"works: x is cast to the model's dtype .*: True"),
        Case("gc-dtype-closure", "geometric_complexity of a lambda over a float64 model, on float32 inputs",
             lambda t: _gc(lambda z: model64(z), torch.zeros(4, 5)),
             L, r"'x' parameter of geometric_complexity must be of the dtype fn computes in.*same dtype.*Fix: cast x to the model's dtype"),
        Case("gc-batchnorm-train", "geometric_complexity of a BatchNorm model in train mode",
             lambda t: _gc(_bn_train(), torch.zeros(8, 5), estimator="hutchinson"),
             L, r"'fn' parameter of geometric_complexity must be a model in eval mode.*BatchNorm.*Fix: call model.eval\(\)"),
        Case("gc-batchnorm-train-closure", "geometric_complexity of a lambda over a train-mode BatchNorm model (batch of 1)",
             lambda t: _gc(lambda z: _bn_train()(z), torch.zeros(1, 5)),
             L, r"'fn' parameter of geometric_complexity must be a model in eval mode.*per channel.*Fix: call model.eval\(\)"),
        Case("gc-object-input", "geometric_complexity on a numpy object array",
             lambda t: _gc(model64, np.array([[1, "a", 2, 3, 4]] * 3, dtype=object)),
             L, r"'x' parameter of geometric_complexity must be a numeric .*dtype object.*Fix: convert"),
        # --- cosine k-NN of data far from the origin (cosine is not translation invariant)
        Case("knn-cosine-offset", "knn_search / epoch_start with metric='cosine' on 4 classes around 1e4 (spread 1), "
             "1e12 (spread 1e-2) and 1e-20 (spread 1e-30)", _works_cosine_offset, None,
             r"works: 10000/1: 100% same-class neighbours, mc_fraction 0\.0; 1e\+12/0\.01: 100% .*mc_fraction 0\.0; "
             r"1e-20/1e-30: 100% .*mc_fraction 0\.0"),
        Case("probe-cosine-offset", "knn_probe (cosine) on features around 1e4 (spread 1), 1e5 (1e-3), 1e12 (1e-2)",
             _works_probe_cosine_offset, None, r"works: accuracy \[1\.0, 1\.0, 1\.0\], exact cosine k-NN vote \[1\.0, 1\.0, 1\.0\]"),
        # --- reduce_dim at the ends of float32's range
        Case("reduce-tiny-values", "reduce_dim (PCA) of latents of size 1e-60 (float32 cannot hold the scores)",
             lambda t: reduce_dim(np.random.default_rng(0).normal(size=(60, 6)) * 1e-60, 3), L,
             r"'x' parameter of reduce_dim must be data whose float32 result \(in the units of x\) lies in float32's "
             r"normal range.*Got 'a result with largest \|value\| .*e-60' instead.*Fix: rescale x by a power of two "
             r"first, e\.g\. x \* 2\.0\*\*19\d"),
        Case("reduce-random-tiny-values", "reduce_dim(method='random') of latents of size 1e-60",
             lambda t: reduce_dim(np.random.default_rng(0).normal(size=(60, 6)) * 1e-60, 3, method="random"), L,
             r"'x' parameter of reduce_dim must be data whose float32 result .*Fix: rescale x by a power of two"),
        Case("reduce-small-values", "reduce_dim (PCA) of latents of size 1e-33 (rescaled internally)",
             _works_reduce_pow2, None, r"works: .*exactly: True"),
        # --- neural collapse with one sample per class
        Case("nc-one-sample-per-class", "neural_collapse on 3 samples of 3 classes",
             lambda t: neural_collapse(x[:3], np.arange(3)), L,
             r"'labels' parameter of neural_collapse must be labels with at least one class of 2 or more samples.*"
             r"Got '3 samples in 3 classes, one sample per class' instead.*Fix: pass more samples per class"),
        Case("profile-nc-one-sample-per-class", "profile(metrics=['nc']) on data with one sample per class",
             _works_profile_one_per_class, None,
             r"works: nc1 \[nan\] with the note: nc at 1: The 'labels' parameter of neural_collapse .*one sample per class"),
        # --- float64 latents at extreme scales: targets keep float64, the loss rescales by a fixed power of two
        Case("targets-float64-extreme-scale", "epoch_start + lcc_loss on float64 latents at 1e150, 1e-300 and 1e9 + x",
             lambda t: _works_targets_extreme(), None,
             r"works: 1e150: torch.float64, all finite and non-zero: True, loss finite and exact: True; 1e-300: "
             r"torch.float64, all finite and non-zero: True, loss finite and exact: True; 1e9\+: torch.float64, "
             r"all finite and non-zero: True, loss finite and exact: True"),
        Case("loss-float64-targets-float32-z", "lcc_loss with float32 z and float64 targets of latents around 1e60",
             lambda t: lcc_loss(torch.zeros(40, 4), torch.arange(40), lcc_targets(_x4().astype(np.float64) * 1e60, _Y4, np.where(np.arange(40) % 7 == 0, (_Y4 + 1) % 4, _Y4), k_target=3)),
             L, r"'z' parameter of lcc_loss must be latents of a dtype that can hold the targets \(float64 targets, "
             r"torch.float32 latents\).*beyond float32's range.*Fix: train the layer in float64"),
        Case("linear-probe-extreme-scale", "linear_probe on features at 1e-300, 1e150, 1e-150 (standardize on/off) and float32 1e-20",
             lambda t: _works_linear_probe_extreme(), None, r"works: accuracy \[1\.0, 1\.0, 1\.0, 1\.0, 1\.0, 1\.0, 1\.0\]"),
    ]  # fmt: skip
