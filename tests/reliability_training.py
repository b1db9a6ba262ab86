"""Reliability cases of training (fit, LCC in training, transfer methods): settings that would silently do
nothing, and raw errors from inside a training step. Collected by tests/reliability_cases.py."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from latentcc.plumbing.errors import LatentccError
from reliability_base import Case

# ----------------------------------------------------------------------------- tiny models and data


def _splits(n: int = 40) -> Any:
    """n tabular samples (6 features, 4 classes); half of them train (n=40: 20 training samples)."""
    from latentcc.data import from_arrays

    x = np.random.default_rng(0).normal(size=(n, 6)).astype(np.float32)
    return from_arrays(x, np.arange(n) % 4, val_fraction=0.25, test_fraction=0.25)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))


def _fit(
    tmp: Path,
    model: nn.Module | None = None,
    *,
    lcc: Any = None,
    keep: bool = True,
    data: Any = None,
    **train: Any,
) -> Any:
    """fit for 2 epochs of batches of 8 (on ``data``, default ``_splits()``), into tmp/run (``keep=False``: no
    run folder)."""
    from latentcc.config import TrainConfig
    from latentcc.train import fit

    kw: dict[str, Any] = dict(epochs=2, batch_size=8, progress=False, tensorboard=False, device="cpu")
    extra = {k: train.pop(k) for k in ("optimizer", "scheduler") if k in train}
    cfg = TrainConfig(**{**kw, **train})
    out = tmp / "run" if keep else None
    splits = data if data is not None else _splits()
    return fit(model if model is not None else _mlp(), splits, config=cfg, out_dir=out, lcc=lcc, **extra)


def _lcc(layer: str = "1", **kw: Any) -> Any:
    from latentcc.config import LCCConfig

    return LCCConfig(layers=(layer,), k=3, **{"warmup": 0, **kw})


class _Encoder(nn.Module):
    """A layer whose output is ``kind``: a dict of two tensors, or a tuple starting with None."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.lin, self.kind = nn.Linear(6, 8), kind

    def forward(self, x: torch.Tensor) -> Any:
        h = self.lin(x)
        return {"logits": h[:, :4], "hidden": h} if self.kind == "dict" else (None, h)


class _WithEncoder(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.enc, self.head = _Encoder(kind), nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.enc(x)
        return self.head(out["hidden"] if isinstance(out, dict) else out[1])


class _Branchy(nn.Module):
    """``extra`` runs in eval mode, but only in every other training batch (a conditional branch)."""

    def __init__(self) -> None:
        super().__init__()
        self.enc, self.extra, self.head = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 4)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.enc(x)
        self.calls += 1
        if not self.training or self.calls % 2 == 0:
            h = self.extra(h)
        return self.head(h)


def _bn_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4))


# ----------------------------------------------------------------------------- models and data that misfit


def _mlp_out(k: int) -> nn.Module:
    """_mlp with ``k`` outputs (the data has 4 classes)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, k))


class _Out(nn.Module):
    """_mlp whose forward returns its logits as ``kind``: a tuple (logits, extra), {"logits": ...}, (B, 1, C)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.net, self.kind = _mlp(), kind

    def forward(self, x: torch.Tensor) -> Any:
        out = self.net(x)
        return {"tuple": (out, x.sum()), "dict": {"logits": out}, "3d": out[:, None, :]}[self.kind]


class _Mapped(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """The training split with each sample passed through ``f(x, y, i)`` (labels or inputs changed)."""

    def __init__(self, base: Any, f: Any) -> None:
        self.base, self.f = base, f

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> Any:
        return self.f(*self.base[i])


def _mapped(f: Any) -> Any:
    """_splits() whose training split yields ``f(x, y, i)``, as a user's own Dataset would."""
    from types import SimpleNamespace

    s = _splits()
    return SimpleNamespace(train=_Mapped(s.train, f), val=s.val, test=s.test, classes=s.classes)


def _works_no_val(tmp: Path) -> str:
    from latentcc.data import from_arrays

    x = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    data = from_arrays(x, np.arange(40) % 4, val_fraction=0.0, test_fraction=0.25)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = _fit(tmp, data=data)
    saved = json.loads((tmp / "run" / "results.json").read_text())
    return (
        f"works, with a warning ({len([w for w in caught if 'validation' in str(w.message)])} issued): "
        f"best_val_top1 is {res.best_val_top1} (null in results.json: {saved['best_val_top1'] is None}), best "
        f"epoch {res.best_epoch} of 2, and results.json says: {saved['note']}"
    )


def _works_dict_output(tmp: Path) -> str:
    res = _fit(tmp, _Out("dict"), keep=False)
    ref = _fit(tmp, _mlp(), keep=False)
    same = res.test.top1 == ref.test.top1 and res.best_val_top1 == ref.best_val_top1
    return f"works: fit reads the 'logits' entry; the same accuracies as the plain model: {same}"


def _meta_latents(tmp: Path) -> Any:
    from torch.utils.data import DataLoader

    from latentcc import collect_latents

    return collect_latents(_mlp().to("meta"), DataLoader(_splits().train, batch_size=8), "1")


# ----------------------------------------------------------------------------- triggers


def _lcc_flags_without_layers(tmp: Path) -> Any:
    from latentcc.app.finetune import finetune
    from latentcc.config import DataConfig, LCCConfig, ModelConfig, TrainConfig

    lcc = LCCConfig(weight=0.5, k=7)  # what `--lcc-weight 0.5 --lcc-k 7` without --lcc-layers builds
    return finetune(ModelConfig(), DataConfig(), TrainConfig(), out_dir=tmp / "run", lcc=lcc)


def _frozen_layer(tmp: Path) -> Any:
    from latentcc.config import MethodConfig
    from latentcc.train.methods import apply_method

    setup = apply_method(_mlp(), MethodConfig(method="lp"))  # only the head '2' trains
    return _fit(tmp, setup.model, lcc=_lcc("0"))


def _works_float64(tmp: Path) -> str:
    res = _fit(tmp, _mlp().double(), lcc=_lcc())
    dtype = next(res.model.parameters()).dtype
    return f"works: the float64 model trained on the float32 data (inputs cast to {dtype}); val top-1 {res.best_val_top1:.2f}"


def _works_weight_zero(tmp: Path) -> str:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit(tmp, lcc=_lcc(weight=0.0))
    saved = json.loads((tmp / "run" / "config.json").read_text())["warnings"]
    return f"works, with a warning ({len(caught)} issued) also stored in config.json's 'warnings': {saved[0]}"


def _works_drop_last(tmp: Path) -> str:
    res = _fit(tmp, _bn_mlp(), batch_size=19, drop_last=True)
    return f"works: drop_last skips the 1-sample batch; {len(res.history)} epochs, val top-1 {res.best_val_top1:.2f}"


def _compiled(tmp: Path) -> Any:
    return _fit(tmp, torch.compile(_mlp()), lcc=_lcc())


def _own_optimizer_and_lr(tmp: Path) -> Any:
    model = _mlp()
    return _fit(tmp, model, lr=0.1, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


def _method_inert(tmp: Path) -> Any:
    from latentcc.config import MethodConfig
    from latentcc.train.methods import apply_method

    return apply_method(_mlp(), MethodConfig(method="ft", gc_weight=0.01))


# ----------------------------------------------------------------------------- the cases


def cases() -> list[Case]:
    L = LatentccError
    return [
        Case("train-lcc-warmup-past-epochs", "fit(epochs=2, lcc=LCCConfig(warmup=5)): LCC would never run",
             lambda t: _fit(t, lcc=_lcc(warmup=5)),
             L, r"'warmup' parameter of LCCConfig must be smaller than the number of epochs, 2.*Got 5.*"
                r"Fix: lower warmup to at most 1"),
        Case("train-lcc-flags-without-layers", "--lcc-weight 0.5 --lcc-k 7 without --lcc-layers (finetune)",
             _lcc_flags_without_layers,
             L, r"'layers' parameter of LCCConfig must be at least one layer name when other LCC settings are "
                r"given \(weight=0.5 \(--lcc-weight\), k=7 \(--lcc-k\)\).*Fix: name the layers.*--lcc-layers"),
        Case("train-lcc-frozen-layer", "LCC on a layer no trainable parameter feeds (method lp, layer '0')",
             _frozen_layer,
             L, r"'layers' parameter of LCCConfig must be layers whose output depends on a parameter that trains"
                r"\. Got '0'.*Fix: pick a layer at or after a part that trains"),
        Case("train-lcc-weight-zero", "fit with LCCConfig(weight=0): clusters computed, nothing corrected",
             _works_weight_zero, None, r"works, with a warning \(1 issued\).*weight is 0"),
        Case("train-float64-model", "fit (with LCC) of a float64 model on float32 data", _works_float64,
             None, r"works: the float64 model trained.*torch.float64"),
        Case("train-bn-last-batch-of-one", "fit of a BatchNorm model whose last batch holds 1 sample (20 % 19)",
             lambda t: _fit(t, _bn_mlp(), batch_size=19),
             L, r"'drop_last' parameter of TrainConfig must be True.*20 samples.*batch_size 19.*BatchNorm layer "
                r"'1'.*Fix: drop_last=True \(--drop-last\)"),
        Case("train-bn-drop-last", "the same with TrainConfig(drop_last=True)", _works_drop_last,
             None, r"works: drop_last skips the 1-sample batch; 2 epochs"),
        Case("train-drop-last-drops-all", "drop_last=True with batch_size above the training split",
             lambda t: _fit(t, batch_size=64, drop_last=True),
             L, r"'drop_last' parameter of TrainConfig must be False when batch_size \(64\) exceeds the "
                r"training split \(20 samples\).*Fix"),
        Case("train-lcc-layer-returns-dict", "LCC on a layer returning {'logits': ..., 'hidden': ...}",
             lambda t: _fit(t, _WithEncoder("dict"), lcc=_lcc("enc")),
             L, r"Layer 'enc' returned a dict with several tensors \['logits', 'hidden'\].*Capture the "
                r"submodule that computes the tensor you mean"),
        Case("train-lcc-layer-returns-none-first", "LCC on a layer returning (None, hidden)",
             lambda t: _fit(t, _WithEncoder("tuple"), lcc=_lcc("enc")),
             L, r"Layer 'enc' returned a tuple whose first element is NoneType.*Capture the submodule"),
        Case("train-lcc-layer-skipped", "LCC on a layer that a conditional branch skips in some training batches",
             lambda t: _fit(t, _Branchy(), lcc=_lcc("extra"), keep=False),  # fails mid-run: no run folder
             L, r"LCC layer\(s\) \['extra'\] did not run in this training batch's forward pass, although the model "
                r"ran.*Fix: pick layers on the path every training batch takes"),
        Case("train-lcc-compiled-model", "fit(torch.compile(model), lcc=...)", _compiled,
             L, r"Layer '_orig_mod.1' is inside a torch.compile'd module.*Fix: pass the module as it was before "
                r"torch.compile \(model._orig_mod\)"),
        Case("train-own-optimizer-and-lr", "fit(optimizer=SGD(...), config=TrainConfig(lr=0.1))",
             _own_optimizer_and_lr,
             L, r"'optimizer' parameter of fit must be None when TrainConfig sets lr=0.1.*Fix"),
        Case("train-momentum-with-adamw", "TrainConfig(momentum=0.5) with the default AdamW",
             lambda t: _fit(t, momentum=0.5),
             L, r"'momentum' parameter of TrainConfig must be left at its default.*adamw.*Got 0.5.*"
                r"Fix: optimizer='sgd'"),
        Case("train-method-ignores-setting", "MethodConfig(method='ft', gc_weight=0.01)", _method_inert,
             L, r"'method' parameter of apply_method must be a method that reads the settings given "
                r"\(gc_weight=0.01 \(--gc-weight\) is read by gc_reg\). Got 'ft'.*Fix"),
        Case("train-lcc-louvain-iterations", "LCCConfig(community='louvain', leiden_iterations=5) in fit",
             lambda t: _fit(t, lcc=_lcc(community="louvain", leiden_iterations=5)),
             L, r"'community' parameter of LCCConfig must be 'leiden' or 'leidenalg' when leiden_iterations=5 is "
                r"set.*Got 'louvain'.*Fix: community='leiden'"),
        Case("train-head-wider-than-classes", "fit of a model with 5 outputs on 4-class data",
             lambda t: _fit(t, _mlp_out(5)),
             L, r"'model' parameter of fit must be a classifier with one output per class of the data \(4 "
                r"classes\)\. Got 'a model with 5 outputs'.*Fix: give the model 4 outputs.*num_classes=4"),
        Case("train-head-narrower-than-classes", "fit of a model with 3 outputs on 4-class data",
             lambda t: _fit(t, _mlp_out(3)),
             L, r"one output per class of the data \(4 classes\)\. Got 'a model with 3 outputs'.*Fix"),
        Case("train-no-val-split", "fit on data without a validation split (val_fraction=0)", _works_no_val,
             None, r"works, with a warning \(1 issued\): best_val_top1 is None \(null in results.json: True\), "
                   r"best epoch 2 of 2.*no validation split: the last epoch's weights are kept"),
        Case("train-labels-float", "fit on a Dataset yielding float labels (3.0)",
             lambda t: _fit(t, data=_mapped(lambda x, y, i: (x, torch.tensor(float(y)), i))),
             L, r"'data' parameter of fit must be integer class ids, one per sample.*Got 'labels of dtype "
                r"torch.float32.*Fix: give integer class ids"),
        Case("train-labels-one-hot", "fit on a Dataset yielding one-hot labels",
             lambda t: _fit(t, data=_mapped(lambda x, y, i: (x, nn.functional.one_hot(torch.tensor(y), 4).float(), i))),
             L, r"Got 'float labels of shape \(2, 4\) \(one-hot or soft labels.*Fix: pass class indices instead: "
                r"y.argmax\(1\)"),
        Case("train-labels-shape-1", "fit on a Dataset yielding labels of shape (1,)",
             lambda t: _fit(t, data=_mapped(lambda x, y, i: (x, torch.tensor([y]), i))),
             L, r"Got 'labels of shape \(2, 1\) \(a 1-element label per sample\)'.*Fix: return a scalar label"),
        Case("train-label-out-of-range", "fit on a Dataset whose labels are all -1",
             lambda t: _fit(t, data=_mapped(lambda x, y, i: (x, y * 0 - 1, i))),
             L, r"'data' parameter of fit must be labels in 0\.\.3 \(the data's 4 classes\)\. Got 'label -1 "
                r"\(sample 0, and 1 more in this batch; in the training split\)'.*Fix: remap the labels"),
        Case("train-label-out-of-range-later", "fit where only training sample 5 has label 4 (of 4 classes)",
             lambda t: _fit(t, data=_mapped(lambda x, y, i: (x, y + 4 * int(i == 5), i)), keep=False),
             L, r"must be labels in 0\.\.3 \(the model's 4 outputs, one per class\)\. Got 'label 4 \(sample 5; "
                r"in a training batch of epoch 1\)'"),
        Case("train-logits-3d", "fit of a model returning logits of shape (B, 1, C)",
             lambda t: _fit(t, _Out("3d")),
             L, r"must be a classifier returning logits of shape \(batch, classes\) = \(2, K\)\. Got 'logits of "
                r"shape \(2, 1, 4\)'.*Fix: drop the extra dimension in forward: return logits.squeeze\(1\)"),
        Case("train-model-returns-tuple", "fit of a model returning (logits, extra)",
             lambda t: _fit(t, _Out("tuple")),
             L, r"'model' parameter of fit must be a classifier whose forward returns the logits.*Got 'a tuple "
                r"\(Tensor, Tensor\)'.*Fix: make forward return the logits tensor"),
        Case("train-model-returns-dict", "fit of a model returning {'logits': ...} (Hugging Face style)",
             _works_dict_output, None, r"works: fit reads the 'logits' entry; the same accuracies.*: True"),
        Case("train-integer-inputs", "fit of a Linear model on a Dataset yielding int64 inputs",
             lambda t: _fit(t, data=_mapped(lambda x, y, i: ((x * 16).long(), y, i))),
             L, r"'data' parameter of fit must be float inputs for a model that computes in float32\. Got 'inputs "
                r"of dtype torch.int64'.*Fix: convert the data to float"),
        Case("train-model-on-meta", "fit(model.to('meta'))", lambda t: _fit(t, _mlp().to("meta")),
             L, r"'model' parameter of fit must be a model whose weights hold values\. Got \"4 parameter\(s\)"
                r"/buffer\(s\) on the 'meta' device.*Fix: materialise and load the weights first"),
        Case("latents-model-on-meta", "collect_latents(model.to('meta'), ...)", _meta_latents,
             L, r"'model' parameter of collect_latents must be a model whose weights hold values.*'meta' device"),
        Case("train-device-unavailable", "TrainConfig(device='cuda:N') with N past the GPUs (all of them on a "
             "CPU-only build)", lambda t: _fit(t, device=f"cuda:{torch.cuda.device_count()}"),
             L, r"'device' parameter of TrainConfig must be a device this machine has\. Got 'cuda:\d+'.*Fix: "
                r"'cpu', or 'auto'"),
        Case("train-fp16-model", "fit of a model.half() (float16 training on the CPU)",
             lambda t: _fit(t, _mlp().half(), keep=False),  # fails mid-run: no run folder
             L, r"Training loss became nan in epoch 1, and the model's parameters are float16: training in half "
                r"precision is the likely cause.*Fix: train in float32.*torch.autocast"),
    ]  # fmt: skip
