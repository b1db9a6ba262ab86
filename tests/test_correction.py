"""LCC in a plain PyTorch loop and inside latentcc.train.fit: positive loss, pulls toward targets, resumes."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from conftest import mc_distance, tiny_mlp
from latentcc import LCCConfig
from latentcc.config import TrainConfig
from latentcc.correction import LatentClusterCorrection, cc_mc_accuracy
from latentcc.errors import LatentccError
from latentcc.train import evaluate, fit

CFG = TrainConfig(epochs=3, batch_size=32, lr=1e-2, progress=False, tensorboard=False)
LCC = LCCConfig(layers=("2",), weight=0.5, k=5, warmup=1, interval=1, graph_dim=None)


def test_plain_loop_loss_is_positive_and_pulls_mc_samples_to_their_targets(digits_splits):
    model = tiny_mlp()
    train = digits_splits.train
    lcc = LatentClusterCorrection(LCC)
    assert not lcc.should_refresh(0) and lcc.should_refresh(1) and lcc.should_refresh(2)
    stats = lcc.refresh(model, train)
    assert stats["2/clusters"] >= 2 and 0 < stats["2/mc_fraction"] < 1 and stats["time_refresh_s"] > 0
    before = mc_distance(lcc, model, train, "2")
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    model.train()
    losses = []
    for epoch in range(3):
        gen = torch.Generator().manual_seed(epoch)
        for x, _, idx in DataLoader(train, batch_size=128, shuffle=True, generator=gen):
            with lcc.capture(model) as z:
                model(x)
            loss = lcc.loss(z, idx)  # LCC alone: it must reduce the distance to the targets
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    assert losses[0] > 0
    assert mc_distance(lcc, model, train, "2") < 0.85 * before  # measured: 0.393 -> 0.312


def test_loss_is_zero_with_grad_before_first_refresh_and_layer_errors(digits_splits):
    model = tiny_mlp()
    lcc = LatentClusterCorrection(LCC)
    x, _, idx = next(iter(DataLoader(digits_splits.train, batch_size=8)))
    with lcc.capture(model) as z:
        out = model(x)
    loss = lcc.loss(z, idx) + F.cross_entropy(out, torch.zeros(8, dtype=torch.long))
    loss.backward()
    assert lcc.loss(z, idx).item() == 0.0
    with pytest.raises(LatentccError, match="names of layers of the model"):
        LatentClusterCorrection(dataclasses.replace(LCC, layers=("fc9",))).refresh(model, digits_splits.train)
    with pytest.raises(LatentccError, match="'layers'"):
        LatentClusterCorrection(LCCConfig())
    with pytest.raises(LatentccError, match="'weight'"):
        LCCConfig(layers=("2",), weight=-1.0)
    with pytest.raises(LatentccError, match="'interval'"):
        LCCConfig(layers=("2",), interval=0)


def test_fit_with_lcc_logs_the_correction_and_cc_vs_mc_accuracy(tmp_path, digits_splits):
    res = fit(tiny_mlp(), digits_splits, config=CFG, out_dir=tmp_path, lcc=LCC)
    h = res.history
    assert "lcc/2/clusters" not in h[0] and h[0]["train_lcc"] == 0.0  # warmup epoch: plain fine-tuning
    for row in h[1:]:
        assert row["train_lcc"] > 0 and row["lcc/2/clusters"] >= 2 and 0 < row["lcc/2/mc_fraction"] < 1
        assert row["train_ce"] == pytest.approx(row["train_loss"] - LCC.weight * row["train_lcc"])
        assert row["lcc/2/orphan_classes"] >= 0
        assert row["lcc_overhead"] > 0
        assert 0 <= row["val_2/cc_top1"] <= 1 and 0 <= row["val_2/mc_top1"] <= 1
    assert res.test.top1 > 0.8
    assert "lcc/2/clusters" in (tmp_path / "metrics.csv").read_text().splitlines()[0]


def test_resume_with_lcc_reproduces_uninterrupted_run(tmp_path, digits_splits):
    lcc = dataclasses.replace(
        LCC, interval=2
    )  # epoch 3 reuses targets from epoch 1: restored from the checkpoint
    cfg = dataclasses.replace(CFG, epochs=4)
    full = fit(tiny_mlp(), digits_splits, config=cfg, out_dir=tmp_path / "full", lcc=lcc)

    class Crash:
        def on_epoch_start(self, ctx):
            if ctx.epoch == 2:
                raise KeyboardInterrupt

        def on_epoch_end(self, ctx):
            pass

    with pytest.raises(KeyboardInterrupt):
        fit(tiny_mlp(), digits_splits, config=cfg, out_dir=tmp_path / "cut", lcc=lcc, callbacks=[Crash()])
    resumed = fit(tiny_mlp(), digits_splits, config=cfg, out_dir=tmp_path / "cut", lcc=lcc, resume=True)
    strip = [{k: v for k, v in r.items() if "time" not in k and "overhead" not in k} for r in full.history]
    assert strip == [
        {k: v for k, v in r.items() if "time" not in k and "overhead" not in k} for r in resumed.history
    ]
    assert resumed.test.top1 == full.test.top1


def test_cc_samples_are_classified_better_than_mc_samples(digits_splits):
    """The LCC paper's observation, on a briefly trained model (CC accuracy > MC accuracy)."""
    model = tiny_mlp()
    fit(model, digits_splits, config=dataclasses.replace(CFG, epochs=2))
    ev = evaluate(model, digits_splits.test, device="cpu")
    acc = cc_mc_accuracy(model, digits_splits.test, ev.correct, LCC)
    assert acc["2/cc_top1"] > acc["2/mc_top1"] + 0.1, acc
    assert 0 < acc["2/mc_fraction"] < 0.5
    with pytest.raises(LatentccError, match="'correct'"):
        cc_mc_accuracy(model, digits_splits.test, np.ones(3, dtype=bool), LCC)


def test_fit_with_lcc_needs_sample_indices(digits_splits):
    from torch.utils.data import TensorDataset

    class Plain:
        train = TensorDataset(torch.randn(40, 64), torch.randint(0, 10, (40,)))
        val = test = train
        classes = tuple(str(i) for i in range(10))

    with pytest.raises(LatentccError, match="idx"):
        fit(tiny_mlp(), Plain(), config=dataclasses.replace(CFG, epochs=2), lcc=LCC)
