"""The reliability table: ways latentcc gets misused, and the error each must give (or what happens when it works).

Each :class:`Case` names what is tried, a ``trigger(tmp)`` that tries it in a fresh folder, the exception
type it must raise (``None``: it must work, and ``trigger`` returns a sentence saying what happened), and a
regex the message must match: the parameter (or file) it names and the fix. ``setup(tmp)`` (optional)
writes files first; tests/test_reliability.py checks they are left intact byte for byte.

    PYTHONPATH=src python tests/reliability_cases.py --markdown    # the table of docs/reliability.md
"""

from __future__ import annotations

import argparse
import errno
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from latentcc.plumbing.errors import CheckpointError, LatentccError, WriteError
from reliability_base import Case

# ----------------------------------------------------------------------------- small inputs


def _x(n: int = 50, d: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


_Y = np.repeat(np.arange(5), 10)


def _with_nan(x: np.ndarray, value: float = np.nan) -> np.ndarray:
    x = x.copy()
    x[3, 1] = value
    return x


def _model(num_classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, num_classes))


def _images(n: int = 40) -> np.ndarray:
    return np.random.default_rng(0).random((n, 8, 8)).astype(np.float32)


def _splits() -> Any:
    from latentcc.data import from_arrays

    return from_arrays(_images(), np.repeat(np.arange(4), 10), val_fraction=0.25, test_fraction=0.25)


def _fit(
    tmp: Path,
    *,
    model: nn.Module | None = None,
    epochs: int = 1,
    resume: bool = False,
    out: str = "run",
    lr: float = 1e-3,
    **kw: Any,
) -> Any:
    from latentcc.config import TrainConfig
    from latentcc.train import fit

    cfg = TrainConfig(epochs=epochs, batch_size=16, lr=lr, progress=False, tensorboard=False, device="cpu")
    return fit(model or _model(), _splits(), config=cfg, out_dir=tmp / out, resume=resume, **kw)


def _interrupted_run(tmp: Path) -> None:
    """A 2-epoch run stopped after its first checkpoint (as by Ctrl-C)."""

    class Stop:
        def on_epoch_start(self, ctx: Any) -> None:
            pass

        def on_epoch_end(self, ctx: Any) -> None:
            if ctx.epoch == 1:
                raise KeyboardInterrupt

    try:
        _fit(tmp, epochs=2, callbacks=[Stop()])
    except KeyboardInterrupt:
        pass


def _ckpt(tmp: Path) -> Path:
    return tmp / "run" / "checkpoints" / "epoch-0001"


def _then(setup: Callable[[Path], None], change: Callable[[Path], None]) -> Callable[[Path], None]:
    def both(tmp: Path) -> None:
        setup(tmp)
        change(tmp)

    return both


def _targets() -> Any:
    from latentcc.lcc import lcc_targets

    return lcc_targets(_x(), _Y, np.roll(_Y, 3), k_target=3)


class _ReturnsNone(nn.Module):
    def forward(self, x: torch.Tensor) -> None:
        return None


class _NoBatch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.zeros(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.p  # a (3,) parameter, like a position embedding: no batch dimension


class _Odd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.none, self.emb, self.head = _ReturnsNone(), _NoBatch(), nn.Linear(64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.none(x)
        self.emb(x)
        return self.head(x.flatten(1))


def _latents(layer: str) -> Any:
    from torch.utils.data import DataLoader

    from latentcc.latents.collect import collect_latents

    return collect_latents(_Odd(), DataLoader(_splits().train, batch_size=8), [layer])


def _profile(tmp: Path, **kw: Any) -> Any:
    from latentcc.probes.profile import profile

    return profile(_model(), _splits(), progress=False, **kw)


def _write(name: str, text: str | bytes) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        p = tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text.encode() if isinstance(text, str) else text)

    return setup


def _image_folder_with_bad_file(tmp: Path) -> None:
    from PIL import Image

    for c, i in (("cat", 0), ("dog", 1)):
        (tmp / "imgs" / c).mkdir(parents=True)
        Image.fromarray((_images(2)[i] * 255).astype(np.uint8)).save(tmp / "imgs" / c / "ok.png")
    (tmp / "imgs" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)


def _works_duplicates(tmp: Path) -> str:
    from latentcc.graph import knn_graph

    x = np.repeat(_x(5), 4, axis=0)  # 5 distinct points, each 4 times
    g = knn_graph(x, 3)
    degrees = np.diff(g.indptr)
    same = all(set(g.indices[g.indptr[i] : g.indptr[i + 1]]) == {j for j in range(20) if j // 4 == i // 4} - {i}
               for i in range(20))  # fmt: skip
    return (
        f"works: each point's 3 neighbours are its 3 copies (distance 0; {same=}), degree {degrees.min()}-"
        f"{degrees.max()}, symmetric: {(g != g.T).nnz == 0}, self loops: {int(g.diagonal().sum())}"
    )


def _works_all_identical(tmp: Path) -> str:
    from latentcc.graph import communities, knn_graph

    g = knn_graph(np.ones((12, 3)), 4)
    labels = communities(g, seed=0)
    return (
        f"works: 12 identical points -> each linked to 4 others (ties broken by index), symmetric: "
        f"{(g != g.T).nnz == 0}, no self loops: {g.diagonal().sum() == 0}; {labels.max() + 1} community"
    )


def _works_extreme(tmp: Path) -> str:
    from latentcc.graph import knn_search

    x = _x()
    ref = knn_search(x, 3)[0]
    same = [bool((knn_search(x * s, 3)[0] == ref).all()) for s in (1e30, 1e-30)]
    return f"works: neighbours of x * 1e30 and x * 1e-30 equal those of x: {same} (searched after an exact power-of-two rescale)"


def _works_huge_target_k(tmp: Path) -> str:
    from latentcc.lcc import lcc_targets

    t = lcc_targets(_x(), _Y, np.roll(_Y, 3), k_target=10**6)
    return f"works: k is capped at each cluster's correctly clustered samples; {t.num_with_target} of {t.num_mc} MC samples get a target"


def _works_label_gaps_nc(tmp: Path) -> str:
    from latentcc.metrics import neural_collapse

    a, b = neural_collapse(_x(), _Y * 3), neural_collapse(_x(), _Y)
    return (
        f"works: labels {{0, 3, ..., 12}} are remapped to 0..4 in sorted order; same result as 0..4: {a == b}"
    )


def _works_label_gaps_data(tmp: Path) -> str:
    from latentcc.data import from_arrays

    s = from_arrays(_images(), np.repeat([0, 2, 4, 6], 10))
    return (
        f"works: classes '0'..'6' (from max label), classes 1, 3, 5 have no sample: train counts "
        f"{s.summary()['class_counts']['train']} (pass classes= or remap to avoid empty classes)"
    )


def _works_constant_clusterability(tmp: Path) -> str:
    from latentcc.metrics import clusterability

    r = clusterability(np.ones((50, 4)), _Y)
    return f"works: constant features cluster at chance, AMI {r['ami']:.3f}"


def _works_extreme_metrics(tmp: Path) -> str:
    from latentcc.metrics import clusterability, neural_collapse

    x, y = _x().astype(np.float64), _Y
    nc = [neural_collapse(x * s, y)["nc1"] for s in (1.0, 1e200, 1e-200)]
    ami = [clusterability(x * s, y)["ami"] for s in (1.0, 1e200, 1e-200)]
    nc_s, ami_s = ", ".join(f"{v:.9g}" for v in nc), ", ".join(f"{v:.9g}" for v in ami)
    return f"works: NC1 [{nc_s}] and AMI [{ami_s}] for x, x * 1e200, x * 1e-200 (9 digits)"


def _works_extreme_loss(tmp: Path) -> str:
    from latentcc.lcc import lcc_loss, lcc_targets

    t = lcc_targets(_x() * 1e30, _Y, np.roll(_Y, 3), k_target=3)
    z = torch.zeros(50, 4, requires_grad=True)
    loss = lcc_loss(z, torch.arange(50), t)
    loss.backward()
    # reference in float64: mean over rows with a target of ||0 - t|| / sqrt(D)
    v = t.vectors.double()  # one row per sample with a target
    ref = float(v.norm(dim=1).mean() / 2.0)
    close = abs(float(loss.detach()) - ref) <= 1e-5 * ref
    return (
        f"works: targets ~1e30 (a diverged model): the loss is {float(loss.detach()):.3g}, finite "
        f"({bool(torch.isfinite(loss))}), equal to a float64 reference ({close}), gradient finite: "
        f"{bool(torch.isfinite(z.grad).all())} (the targets carry an exact power-of-two scale)"
    )


def _works_stale_temps(tmp: Path) -> str:
    _interrupted_run(tmp)
    run = tmp / "run"
    (run / ".metrics.json.k3x9q2ab.tmp").write_text('[{"epoch": 2, "train_lo')  # a killed atomic write
    (run / "checkpoints" / ".epoch-0002.u7t1bn4c").mkdir()  # a killed checkpoint write
    _fit(tmp, epochs=2, resume=True)
    left = sorted(str(q.relative_to(run)) for q in run.rglob(".*"))
    return f"works: the resumed run finishes and removes the temp files of killed writes; left: {left}"


def _item_fn(x: torch.Tensor) -> torch.Tensor:
    return x * x.sum().item()  # fine for autograd, not for torch.func.vmap


def _gc(fn: Callable[[torch.Tensor], Any], x: Any, **kw: Any) -> Any:
    from latentcc.metrics import geometric_complexity

    return geometric_complexity(fn, x, **{"estimator": "exact", **kw})  # the cases were written for it


def _disk_full(*args: Any, **kw: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def _atomic_json_disk_full(tmp: Path) -> None:
    from latentcc.plumbing.atomic import atomic_write_json

    with mock.patch("os.fsync", _disk_full):
        atomic_write_json(tmp / "results.json", {"new": 1})


def _resume_disk_full(tmp: Path) -> None:
    with mock.patch("os.fsync", _disk_full):
        _fit(tmp, epochs=2, resume=True)


# ----------------------------------------------------------------------------- the table


def _cases() -> list[Case]:
    from latentcc.app.cliargs import read_config_file
    from latentcc.app.probe_args import load_groups
    from latentcc.config import LCCConfig, TrainConfig, config_from_dict
    from latentcc.data import from_arrays, image_folder, load_dataset, read_idx
    from latentcc.graph import communities, knn_graph
    from latentcc.latents.layers import resolve_layers
    from latentcc.lcc import lcc_loss, lcc_targets, match_clusters
    from latentcc.metrics import clusterability, neural_collapse, purity
    from latentcc.models import load_model
    from latentcc.plumbing.atomic import ensure_writable_dir
    from latentcc.train.checkpoint import load_weights

    L, C = LatentccError, CheckpointError
    x = _x()
    return [
        # --- latents -> k-NN graph -> communities
        Case("knn-dtype-str", "knn_graph on an array of strings", lambda t: knn_graph(np.array([["a", "b"]] * 5), 2),
             L, r"'x' parameter of knn_graph must be a real-valued numeric"),
        Case("knn-dtype-complex", "knn_graph on complex latents", lambda t: knn_graph(x.astype(np.complex64), 3),
             L, r"'x' parameter of knn_graph must be a real-valued numeric.*complex64"),
        Case("knn-shape-1d", "knn_graph on a 1-D vector", lambda t: knn_graph(x[:, 0], 3),
             L, r"'x' parameter of knn_graph must be 2-D.*Fix: reshape to \(N, D\)"),
        Case("knn-nan", "knn_graph with a NaN latent", lambda t: knn_graph(_with_nan(x), 3),
             L, r"'x' parameter of knn_graph must be finite.*1 of 50 rows.*first: 3.*Fix"),
        Case("knn-inf", "knn_graph with an inf latent", lambda t: knn_graph(_with_nan(x, np.inf), 3),
             L, r"'x' parameter of knn_graph must be finite.*Fix"),
        Case("knn-k-ge-n", "knn_graph with k = N", lambda t: knn_graph(x, 50),
             L, r"'k' parameter of knn_graph must be an int with 1 <= k <= 49.*Fix: use k <= 49"),
        Case("knn-huge-k", "knn_graph with k = 10**12", lambda t: knn_graph(x, 10**12),
             L, r"'k' parameter of knn_graph.*Got 1000000000000.*Fix: use k <= 49"),
        Case("knn-k-float", "knn_graph with k = 3.0", lambda t: knn_graph(x, 3.0),
             L, r"'k' parameter of knn_graph must be an int"),
        Case("knn-one-point", "knn_graph on N = 1 point", lambda t: knn_graph(x[:1], 1),
             L, r"'x' parameter of knn_graph must be an array with N >= 2 rows"),
        Case("knn-cosine-zero-row", "knn_graph(metric='cosine') with an all-zero row",
             lambda t: knn_graph(np.vstack([x, np.zeros((1, 4))]), 3, metric="cosine"),
             L, r"'x' parameter of knn_graph must be free of all-zero rows.*Fix: use metric='l2'"),
        Case("knn-duplicate-points", "knn_graph on duplicated points (5 points x 4 copies)", _works_duplicates,
             None, r"works: .*same=True.*symmetric: True, self loops: 0"),
        Case("knn-all-identical", "knn_graph + communities on 12 identical points", _works_all_identical,
             None, r"works: .*symmetric: True, no self loops: True"),
        Case("knn-extreme-magnitude", "knn_search on latents scaled by 1e30 and 1e-30", _works_extreme,
             None, r"works: .*\[True, True\]"),
        Case("communities-dense", "communities on a dense numpy matrix", lambda t: communities(np.eye(3)),
             L, r"'graph' parameter of communities must be a scipy.sparse.*Fix: .*csr_matrix"),
        Case("communities-asymmetric", "communities on a directed (asymmetric) graph",
             lambda t: communities(sp.csr_matrix(np.triu(np.ones((4, 4)), 1))),
             L, r"'graph' parameter of communities must be symmetric.*Fix: symmetrise"),
        # --- matching, targets, loss
        Case("match-negative-labels", "match_clusters with labels -1..3", lambda t: match_clusters(_Y - 1, _Y),
             L, r"'y_true' parameter of match_clusters must be labels in \[0, 2\*\*31\).*Relabel"),
        Case("match-length-mismatch", "match_clusters with 50 classes and 49 cluster labels",
             lambda t: match_clusters(_Y, _Y[:-1]),
             L, r"'y_clst' parameter of match_clusters must be the same length as y_true \(50\)"),
        Case("match-float-labels", "match_clusters with fractional float labels",
             lambda t: match_clusters(_Y + 0.5, _Y),
             L, r"'y_true' parameter of match_clusters must be integer class labels \(or floats holding whole numbers\)"
                r".*return_inverse"),
        Case("targets-huge-k", "lcc_targets with k = 10**6 (k >= N)", _works_huge_target_k,
             None, r"works: k is capped"),
        Case("targets-nan", "lcc_targets with a NaN latent", lambda t: lcc_targets(_with_nan(x), _Y, _Y, k_target=3),
             L, r"'latents' parameter of lcc_targets must be finite.*first: 3.*Check the layer"),
        Case("targets-rows-mismatch", "lcc_targets with 10 latents and 50 labels",
             lambda t: lcc_targets(x[:10], _Y, _Y, k_target=3),
             L, r"'y_true' parameter of lcc_targets must be one label per latent row \(10\)"),
        Case("loss-width", "lcc_loss with latents of another width than the targets",
             lambda t: lcc_loss(torch.zeros(4, 7), torch.arange(4), _targets()),
             L, r"'z' parameter of lcc_loss must be of width D = 4.*Pool/flatten z"),
        Case("loss-idx-out-of-range", "lcc_loss with dataset indices beyond N",
             lambda t: lcc_loss(torch.zeros(4, 4), torch.arange(56, 60), _targets()),
             L, r"'idx' parameter of lcc_loss must be dataset indices in 0\.\.49.*56 to 59"),
        Case("loss-extreme-magnitude", "lcc_loss between z = 0 and targets of magnitude 1e30", _works_extreme_loss,
             None, r"works: targets ~1e30.*finite \(True\), equal to a float64 reference \(True\), gradient finite: True"),
        Case("loss-numpy-latents", "lcc_loss with a numpy array as z",
             lambda t: lcc_loss(np.zeros((4, 4)), torch.arange(4), _targets()),
             L, r"'z' parameter of lcc_loss must be a torch.Tensor. Got 'ndarray'"),
        Case("loss-float-idx", "lcc_loss with float indices",
             lambda t: lcc_loss(torch.zeros(4, 4), torch.arange(4.0), _targets()),
             L, r"'idx' parameter of lcc_loss must be a \(B,\) = \(4,\) int64 tensor"),
        # --- metrics
        Case("nc-one-class", "neural_collapse with a single class", lambda t: neural_collapse(x, np.zeros(50, int)),
             L, r"'labels' parameter of neural_collapse must be labels with at least 2 distinct classes"),
        Case("nc-constant-features", "neural_collapse on constant features",
             lambda t: neural_collapse(np.ones((50, 4)), _Y),
             L, r"class means coincide.*constant \(a dead or wrongly chosen layer\)"),
        Case("nc-label-gaps", "neural_collapse with labels 0, 3, 6, 9, 12", _works_label_gaps_nc,
             None, r"works: .*same result as 0\.\.4: True"),
        Case("metrics-extreme-magnitude", "neural_collapse and clusterability on features scaled by 1e200 and 1e-200",
             _works_extreme_metrics, None, r"works: NC1 \[([^,]+), \1, \1\] and AMI \[([^,]+), \2, \2\]"),
        Case("nc-string-labels", "neural_collapse with class-name labels",
             lambda t: neural_collapse(x, np.array(["cat", "dog"] * 25)),
             L, r"'labels' parameter of neural_collapse must be integer class labels.*Map names to ids"),
        Case("clusterability-n-clusters-gt-n", "clusterability with n_clusters = 100 > N = 50",
             lambda t: clusterability(x, _Y, n_clusters=100),
             L, r"'n_clusters' parameter of clusterability must be an int with 1 <= n_clusters <= 50.*Fix"),
        Case("clusterability-one-class", "clusterability with a single class",
             lambda t: clusterability(x, np.zeros(50, int)),
             L, r"'labels' parameter of clusterability must be labels with at least 2 distinct classes"),
        Case("clusterability-constant", "clusterability on constant features", _works_constant_clusterability,
             None, r"works: constant features cluster at chance"),
        Case("purity-float-labels", "purity with float labels", lambda t: purity([0.5, 1.0], [0, 1]),
             L, r"'labels_true' parameter of purity must be integer class labels"),
        Case("gc-bad-estimator", "geometric_complexity(estimator='exactly')",
             lambda t: _gc(lambda v: v, torch.zeros(3, 2), estimator="exactly"),
             L, r"'estimator' parameter of geometric_complexity must be one of \['exact', 'hutchinson', 'outputs'\]"),
        Case("gc-fn-returns-list", "geometric_complexity of an fn that returns a list",
             lambda t: _gc(lambda v: v.tolist(), torch.zeros(3, 2)),
             L, r"'fn' parameter of geometric_complexity must be a callable returning a tensor.*Got 'list'"),
        Case("gc-fn-not-vmappable", "geometric_complexity (exact) of an fn calling .item()",
             lambda t: _gc(_item_fn, torch.ones(3, 2)),
             L, r"'fn' parameter of geometric_complexity cannot be differentiated.*Fix: use estimator='hutchinson'"),
        Case("gc-int-input", "geometric_complexity of integer inputs",
             lambda t: _gc(lambda v: v, torch.zeros(3, 2, dtype=torch.long)),
             L, r"'x' parameter of geometric_complexity must be a floating-point tensor.*x.float\(\)"),
        # --- layers, latents, probes
        Case("unknown-layer", "resolve_layers with a name the model lacks",
             lambda t: resolve_layers(_model(), ["fc1"]),
             L, r"'layers' parameter of resolve_layers must be names of layers.*latentcc.list_layers"),
        Case("layer-ambiguous-suffix", "resolve_layers with a suffix several layers share",
             lambda t: resolve_layers(nn.ModuleDict({"enc": nn.Sequential(nn.Linear(2, 2)),
                                                     "dec": nn.Sequential(nn.Linear(2, 2))}), "0"),
             L, r"'layers' parameter of resolve_layers must be a name that identifies one layer.*\['enc.0', 'dec.0'\]"),
        Case("layer-non-tensor-output", "collect_latents of a layer that returns None", lambda t: _latents("none"),
             L, r"Layer 'none' returned NoneType, not a tensor.*Capture the submodule that computes the tensor you mean"),
        Case("layer-no-batch-dim", "collect_latents of a layer whose output has no batch dimension",
             lambda t: _latents("emb"), L, r"Layer 'emb' returned a tensor of shape \(3,\); a latent needs a batch and a feature dimension.*Capture the submodule"),
        Case("profile-unknown-layer", "profile(layers=['fc9'])",
             lambda t: _profile(t, layers=["fc9"], metrics=["nc"]),
             L, r"'layers' parameter of profile must be names of layers"),
        Case("profile-unknown-setting", "profile(n_neighbours=5) (a typo'd setting)",
             lambda t: _profile(t, n_neighbours=5), L, r"Unknown argument\(s\) \['n_neighbours'\] for profile"),
        Case("profile-groups-missing-class", "profile(groups=...) that leaves class '1' out",
             lambda t: _profile(t, metrics=["clusterability"], groups={"0": "a", "2": "b", "3": "b"}),
             L, r"'groups' parameter of profile must be a mapping that gives every class a group.*class 1"),
        Case("groups-file-bad-json", "load_groups on a file that is not JSON",
             lambda t: load_groups(t / "groups.json"), L, r"groups file .*groups.json is not valid JSON",
             _write("groups.json", "{'animals': ['cat']}")),
        Case("groups-file-two-groups", "load_groups with a class in two groups",
             lambda t: load_groups(t / "groups.json"), L, r"puts class 'cat' in two groups",
             _write("groups.json", '{"pets": ["cat", "dog"], "wild": ["cat"]}')),
        Case("groups-file-bad-entry", "load_groups with a number as a group",
             lambda t: load_groups(t / "groups.json"), L, r"entry 'cat' must be a group name or a list of classes",
             _write("groups.json", '{"cat": 1.5}')),
        # --- data
        Case("data-empty", "from_arrays with 0 samples",
             lambda t: from_arrays(np.zeros((0, 8, 8), np.float32), np.zeros(0, int)),
             L, r"'y' parameter of from_arrays must be a non-empty array.*The dataset is empty"),
        Case("data-one-class", "from_arrays where every label is 0",
             lambda t: from_arrays(_images(), np.zeros(40, int)),
             L, r"'y' parameter of from_arrays must be labels of at least 2 classes.*all 40 labels equal to 0"),
        Case("data-labels-out-of-range", "from_arrays with labels 0..4 but 3 class names",
             lambda t: from_arrays(_images(), np.arange(40) % 5, classes=["a", "b", "c"]),
             L, r"'y' parameter of from_arrays must be integer labels in 0\.\.2.*Fix: .*np.unique"),
        Case("data-label-gaps", "from_arrays with labels 0, 2, 4, 6 (not 0..C-1)", _works_label_gaps_data,
             None, r"works: classes '0'\.\.'6'"),
        Case("data-images-0-255-float", "from_arrays with float images in 0..255",
             lambda t: from_arrays(_images() * 255, np.arange(40) % 4),
             L, r"'x' parameter of from_arrays must be float images with values in \[0, 1\].*Fix: pass uint8"),
        Case("data-nan-images", "from_arrays with a NaN pixel",
             lambda t: from_arrays(_with_nan(_images().reshape(40, 64)).reshape(40, 8, 8), np.arange(40) % 4),
             L, r"'x' parameter of from_arrays must be finite.*Fix: drop or impute"),
        Case("image-folder-corrupt-file", "image_folder with a corrupt PNG",
             lambda t: image_folder(t / "imgs"), L, r"Could not read the image .*broken.png.*Fix: remove or replace",
             _image_folder_with_bad_file),
        Case("idx-truncated", "read_idx of a truncated IDX file", lambda t: read_idx(t / "images.idx"),
             L, r"header announces shape \(16,\).*holds 3; it is truncated or corrupt. Fix",
             _write("images.idx", b"\x00\x00\x08\x01\x00\x00\x00\x10abc")),
        Case("dataset-unknown-name", "load_dataset('digts')", lambda t: load_dataset("digts"),
             L, r"'name_or_path' parameter of load_dataset.*Did you mean 'digits'"),
        # --- configs
        Case("config-unknown-key", "TrainConfig from a dict with 'lr_rate'",
             lambda t: config_from_dict(TrainConfig, {"lr_rate": 0.1}),
             L, r"Unknown key\(s\) \['lr_rate'\] for TrainConfig; valid keys are"),
        Case("config-bad-json", "--config file with a trailing comma",
             lambda t: read_config_file(t / "run.json", ("train",)), L, r"config file .*run.json is not valid JSON.*fix it",
             _write("run.json", '{"train": {"epochs": 2,}}')),
        Case("config-unknown-section", "--config file with a 'training' section",
             lambda t: read_config_file(t / "run.json", ("train", "model")),
             L, r"Unknown section\(s\) \['training'\].*valid sections are", _write("run.json", '{"training": {}}')),
        Case("config-wrong-type", "TrainConfig(epochs='3') (a string from JSON)",
             lambda t: config_from_dict(TrainConfig, {"epochs": "3"}),
             L, r"'epochs' parameter of TrainConfig must be an int >= 1. Got '3'"),
        Case("config-nan-lr", "TrainConfig(lr=nan)", lambda t: TrainConfig(lr=float("nan")),
             L, r"'lr' parameter of TrainConfig must be a finite float > 0"),
        Case("config-layers-not-names", "LCCConfig(layers=5)", lambda t: LCCConfig(layers=5),  # type: ignore[arg-type]
             L, r"'layers' parameter of LCCConfig must be a name or a list of names"),
        Case("model-unknown", "load_model('resnet18')", lambda t: load_model("resnet18", 10),
             L, r"'name_or_path' parameter of load_model must be one of \['mnist-cnn'"),
        Case("model-weights-file", "load_model('model.pt')", lambda t: load_model("model.pt", 10),
             L, r"'name_or_path' parameter of load_model.*A weights file holds no architecture"),
        # --- run folders and checkpoints (files made by setup must stay byte-identical)
        Case("checkpoint-truncated", "resume from a checkpoint whose weights were truncated",
             lambda t: _fit(t, epochs=2, resume=True), C, r"model.safetensors fails its sha256 check.*refusing",
             _then(_interrupted_run, lambda t: (_ckpt(t) / "model.safetensors").write_bytes(b"\x00" * 10))),
        Case("checkpoint-latest-corrupt", "resume with a corrupt checkpoints/latest.json",
             lambda t: _fit(t, epochs=2, resume=True), C, r"latest.json is corrupt.*nothing was changed",
             _then(_interrupted_run, _write("run/checkpoints/latest.json", '{"dir": '))),
        Case("checkpoint-latest-outside", "resume with latest.json pointing outside checkpoints/",
             lambda t: _fit(t, epochs=2, resume=True), C, r"names '\.\./\.\./etc'.*refusing to follow it",
             _then(_interrupted_run, _write("run/checkpoints/latest.json", '{"dir": "../../etc"}'))),
        Case("checkpoint-empty-manifest", "resume from a checkpoint whose MANIFEST.json lists nothing",
             lambda t: _fit(t, epochs=2, resume=True), C, r"MANIFEST.json must map exactly \['model.safetensors'",
             _then(_interrupted_run, _write("run/checkpoints/epoch-0001/MANIFEST.json", "{}"))),
        Case("checkpoint-other-model", "resume a run with a model of other layer sizes (hidden 12, not 16)",
             lambda t: _fit(t, model=nn.Sequential(nn.Flatten(), nn.Linear(64, 12), nn.ReLU(), nn.Linear(12, 4)),
                            epochs=2, resume=True), C,
             r"does not fit this model.*size mismatch.*use the same --model and --data", _interrupted_run),
        Case("checkpoint-other-settings", "resume with another learning rate",
             lambda t: _fit(t, epochs=2, resume=True, lr=0.5), C, r"Cannot resume .* with different settings \(train.lr: 0.001 -> 0.5\)", _interrupted_run),
        Case("resume-after-killed-writes", "resume a run whose killed writes left temp files", _works_stale_temps,
             None, r"works: .*left: \[\]"),
        Case("weights-file-truncated", "load_weights of a truncated best.safetensors",
             lambda t: load_weights(t / "best.safetensors", _model()), C,
             r"best.safetensors is not a readable safetensors file.*the model is unchanged",
             _write("best.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{")),
        Case("run-overwrite", "fit into a folder that holds a run, without resume",
             lambda t: _fit(t, epochs=2), C, r"already holds a run; refusing to overwrite it.*resume=True",
             _interrupted_run),
        Case("out-dir-not-writable", "fit into a folder that cannot be created (under a regular file)",
             lambda t: _fit(t, out="file/run"), L, r"'out_dir' parameter of fit must be a folder latentcc can create and write to.*Choose another",
             _write("file", "a file, not a folder")),
        Case("out-dir-not-writable-direct", "ensure_writable_dir on a path under a file",
             lambda t: ensure_writable_dir(t / "file" / "x", param="out", func="probe"),
             L, r"'out' parameter of probe must be a folder latentcc can create", _write("file", "x")),
        Case("disk-full-write", "atomic_write_json over an existing file when the disk is full",
             _atomic_json_disk_full, WriteError,
             r"Could not write .*results.json \(No space left on device, errno 28\).*keeps its previous content.*Free some disk space",
             _write("results.json", '{"old": 1}\n')),
        Case("disk-full-resume", "resume a run when the disk is full", _resume_disk_full, WriteError,
             r"Could not write .*config.json \(No space left on device.*keeps its previous content.*--resume",
             _interrupted_run),
    ]  # fmt: skip


def _more_cases() -> list[Case]:
    """Cases kept in their own modules by area (tests/reliability_<area>.py, each with ``cases()``)."""
    import importlib

    out: list[Case] = []
    for area in ("runs", "engine", "data", "training", "probe", "app"):
        try:
            mod = importlib.import_module(f"reliability_{area}")
        except ModuleNotFoundError as e:
            if e.name != f"reliability_{area}":
                raise
            continue
        out += mod.cases()
    return out


CASES: list[Case] = _cases() + _more_cases()


# ----------------------------------------------------------------------------- running and the docs table


def outcome(case: Case, tmp: Path) -> tuple[type[BaseException] | None, str]:
    """(exception type or None, message or returned text) of running ``case`` in ``tmp``."""
    if case.setup is not None:
        case.setup(tmp)
    try:
        got = case.trigger(tmp)
    except Exception as e:
        return type(e), str(e)
    return None, str(got)


def _short(text: str, tmp: Path, limit: int = 230) -> str:
    text = text.replace(str(tmp), "<tmp>").replace(sys.executable, "python")
    text = text.replace(str(Path(__file__).resolve().parents[1]), "<repo>")  # no machine paths in the docs
    text = " ".join(text.split())
    text = re.sub(r"/tmp/[\w./-]+/(?=[\w.-]+)", "<tmp>/", text)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("|", "\\|")


def markdown() -> str:
    import tempfile

    rows = ["| id | what is tried | result (the actual message, shortened) |", "|---|---|---|"]
    for case in CASES:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            kind, text = outcome(case, tmp)
            result = f"`{kind.__name__}`: {_short(text, tmp)}" if kind is not None else _short(text, tmp)
        rows.append(f"| `{case.id}` | {case.tried} | {result} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--markdown", action="store_true", help="print the Markdown table of every case")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.markdown:
        sys.stdout.write(markdown())
    else:
        print(json.dumps([c.id for c in CASES], indent=1))
