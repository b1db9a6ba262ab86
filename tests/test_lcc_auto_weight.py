"""LCCConfig(weight="auto"): the calibrated weight hits grad_ratio, the norms match autograd by hand, and
calibration changes nothing of the run but the weight."""

import argparse
import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import CrashAt, tiny_mlp
from latentcc.app.cliargs import add_config_args, config_from_args
from latentcc.app.finetune import build_model, load_data
from latentcc.config import DataConfig, LCCConfig, ModelConfig, TrainConfig
from latentcc.lcc.correction import LatentClusterCorrection
from latentcc.lcc.weight import (
    calibrate_weight,
    calibration_batches,
    measure_grad_ratio,
    require_numeric_weight,
    weight_label,
)
from latentcc.plumbing.errors import LatentccError
from latentcc.train import fit

CFG = TrainConfig(epochs=3, batch_size=32, lr=1e-2, progress=False, tensorboard=False)
AUTO = LCCConfig(layers=("1",), weight="auto", grad_ratio=0.1, k=5, warmup=1, interval=2, graph_dim=None)


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


def hand_norms(lcc, model, batches, shared, weight=1.0):
    """Per batch (||grad CE||, ||grad weight * LCC||) over the ``shared`` parameters, with torch.autograd.grad."""
    params = dict(model.named_parameters())
    out = []
    for x, y, idx in batches:
        with lcc.capture(model) as z:
            logits = model(x)
        ce = F.cross_entropy(logits, y)
        term = weight * lcc.loss(z, idx, y)
        plist = [params[n] for n in shared]
        g_ce = torch.autograd.grad(ce, plist, retain_graph=True)
        g_lcc = torch.autograd.grad(term, plist)
        norm = lambda gs: float(torch.sqrt(sum(g.double().pow(2).sum() for g in gs)))  # noqa: E731
        out.append((norm(g_ce), norm(g_lcc)))
    return out


def ratio_of(pairs):
    return sum(b for _, b in pairs) / sum(a for a, _ in pairs)


def refreshed(model, data, config, epoch=1):
    lcc = LatentClusterCorrection(config)
    lcc.begin_epoch(model, data, epoch)
    assert lcc.active
    return lcc


def bn_mlp():
    """tiny_mlp with a BatchNorm: calibration must leave its running statistics (and dropout's RNG) as they were."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 10)
    )


# ---------------------------------------------------------------- (1) the calibrated ratio hits grad_ratio
def test_calibration_hits_grad_ratio_on_the_demo_task():
    splits = load_data(DataConfig(data="animal-mnist", max_samples=1000))
    torch.manual_seed(0)  # the new head's initialisation: the same whatever ran before in this process
    model = build_model(ModelConfig(model="mnist-cnn"), splits)
    cfg = LCCConfig(layers=("net.fc_layers.1",), weight="auto", grad_ratio=0.1)
    lcc = refreshed(model, splits.train, cfg)
    cal = calibrate_weight(lcc, model, splits.train, batch_size=64, epoch=1)
    assert lcc.weight == cal.weight > 0 and cal.stats()["grad_ratio_measured"] == cal.measured.ratio
    # the parameters both terms reach: everything upstream of fc_layers.1's output, not the head
    assert set(cal.measured.shared) == {
        f"net.{m}.{p}" for m in ("conv_layers.0", "conv_layers.3", "conv_layers.6", "fc_layers.0") for p in ("weight", "bias")
    }  # fmt: skip
    model.train()
    batches = calibration_batches(splits.train, cfg, batch_size=64, epoch=1)
    again = ratio_of(hand_norms(lcc, model, batches, cal.measured.shared, weight=lcc.weight))
    assert again == pytest.approx(0.1, rel=0.2)
    # and on training batches it was not calibrated on (4 other seeded draws of 4 batches): measured 0.088-0.106
    for epoch in (2, 3, 4, 5):
        other = calibration_batches(splits.train, cfg, batch_size=64, epoch=epoch)
        assert lcc.weight * measure_grad_ratio(lcc, model, other).ratio == pytest.approx(0.1, rel=0.2)


def test_calibration_hits_grad_ratio_on_a_tiny_mlp_with_dropout(digits_splits):
    model = tiny_mlp()
    cfg = dataclasses.replace(AUTO, grad_ratio=0.3, calibration_batches=6)
    lcc = refreshed(model, digits_splits.train, cfg)
    assert lcc.buffer is not None and int(lcc.buffer.count.sum()) == 0  # train-pass buffer, just reset
    cal = calibrate_weight(lcc, model, digits_splits.train, batch_size=32, epoch=1)
    assert int(lcc.buffer.count.sum()) == 0  # the calibration's latents are not the training steps'
    assert cal.measured.shared == ("1.weight", "1.bias")  # the head (4.*) is reached by CE only
    assert len(cal.measured.ce_norms) == 6
    model.train()  # other dropout masks than the calibration's: a real re-measurement
    batches = calibration_batches(digits_splits.train, cfg, batch_size=32, epoch=1)
    again = ratio_of(hand_norms(lcc, model, batches, cal.measured.shared, weight=lcc.weight))
    assert again == pytest.approx(0.3, rel=0.2)


# ---------------------------------------------------------------- (2) the norms against autograd by hand
def test_measured_norms_equal_autograd_by_hand(digits_splits):
    model = tiny_mlp().eval()  # no dropout: the hand computation sees the same forward
    lcc = refreshed(model, digits_splits.train, AUTO)
    batches = calibration_batches(digits_splits.train, AUTO, batch_size=32, epoch=1)
    assert len(batches) == 4 and all(len(b[2]) == 32 for b in batches)
    assert len({int(i) for b in batches for i in b[2]}) == 128  # distinct samples
    grads_before = [p.grad for p in model.parameters()]
    m = measure_grad_ratio(lcc, model, batches)
    assert all(p.grad is None for p in model.parameters()) and grads_before == [None] * 4
    # shared by hand: a non-zero gradient of both terms
    params = dict(model.named_parameters())
    x, y, idx = batches[0]
    with lcc.capture(model) as z:
        logits = model(x)
    g_ce = torch.autograd.grad(
        F.cross_entropy(logits, y), list(params.values()), retain_graph=True, allow_unused=True
    )
    g_l = torch.autograd.grad(lcc.loss(z, idx, y), list(params.values()), allow_unused=True)
    both = tuple(n for n, a, b in zip(params, g_ce, g_l, strict=True)
                 if a is not None and b is not None and a.abs().sum() > 0 and b.abs().sum() > 0)  # fmt: skip
    assert m.shared == both == ("1.weight", "1.bias")
    want = hand_norms(lcc, model, batches, both)
    assert m.ce_norms == pytest.approx([a for a, _ in want], rel=1e-6)
    assert m.lcc_norms == pytest.approx([b for _, b in want], rel=1e-6)
    assert m.ratio == pytest.approx(ratio_of(want), rel=1e-6)


# ---------------------------------------------------------------- (3) fit: logs w, disturbs nothing else
def test_fit_with_auto_weight_equals_a_run_with_the_calibrated_number(tmp_path, digits_splits):
    auto = fit(bn_mlp(), digits_splits, config=CFG, out_dir=tmp_path / "auto", lcc=AUTO)
    h = auto.history
    assert "lcc/weight" not in h[0]  # warmup: no correction yet
    w = h[1]["lcc/weight"]
    # one refresh (epoch 2, interval 2) for two correction epochs: w fixed between refreshes
    assert w > 0 and h[2]["lcc/weight"] == w and "lcc/grad_ratio_measured" not in h[2]
    assert w * h[1]["lcc/grad_ratio_measured"] == pytest.approx(0.1)
    assert h[1]["lcc/time_calibration_s"] > 0
    refresh = h[1]["lcc/time_refresh_s"] + h[1]["lcc/time_calibration_s"]
    assert h[1]["lcc_overhead"] == round(refresh / (h[1]["epoch_time_s"] - refresh), 4)
    for row in h[1:]:  # train_ce = train_loss - w * train_lcc with the calibrated w
        assert row["train_ce"] == pytest.approx(row["train_loss"] - w * row["train_lcc"])
    assert json.loads((tmp_path / "auto" / "config.json").read_text())["lcc"]["weight"] == "auto"

    fixed = fit(bn_mlp(), digits_splits, config=CFG, lcc=dataclasses.replace(AUTO, weight=w, grad_ratio=0.1))
    skip = ("time", "overhead", "lcc/weight", "grad_ratio_measured")
    strip = [{k: v for k, v in r.items() if not any(s in k for s in skip)} for r in h]
    assert strip == [{k: v for k, v in r.items() if not any(s in k for s in skip)} for r in fixed.history]
    for a, b in zip(auto.model.state_dict().values(), fixed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # BatchNorm statistics included: bitwise


def test_resume_between_refreshes_keeps_the_calibrated_weight(tmp_path, digits_splits):
    full = fit(tiny_mlp(), digits_splits, config=CFG, out_dir=tmp_path / "full", lcc=AUTO)

    with pytest.raises(KeyboardInterrupt):
        fit(tiny_mlp(), digits_splits, config=CFG, out_dir=tmp_path / "cut", lcc=AUTO, callbacks=[CrashAt(2)])
    resumed = fit(tiny_mlp(), digits_splits, config=CFG, out_dir=tmp_path / "cut", lcc=AUTO, resume=True)
    # epoch 3 reuses epoch 2's targets and weight, both from the checkpoint
    assert resumed.history[2]["lcc/weight"] == full.history[2]["lcc/weight"] == full.history[1]["lcc/weight"]
    assert resumed.history[2]["train_loss"] == full.history[2]["train_loss"]


# ---------------------------------------------------------------- (4) refusals and the CLI
def test_numeric_weight_refuses_calibration_settings_and_bad_weights():
    with pytest.raises(LatentccError, match="'grad_ratio'.*--lcc-weight auto"):
        LCCConfig(layers=("1",), weight=0.01, grad_ratio=0.2)
    with pytest.raises(LatentccError, match="'calibration_batches'.*--lcc-weight auto"):
        LCCConfig(layers=("1",), calibration_batches=8)
    for bad in ("Auto", -1.0, float("nan"), True):
        with pytest.raises(LatentccError, match="'weight'.*a finite float >= 0 or 'auto'"):
            LCCConfig(layers=("1",), weight=bad)
    with pytest.raises(LatentccError, match="'grad_ratio'"):
        LCCConfig(layers=("1",), weight="auto", grad_ratio=0.0)
    assert LatentClusterCorrection(LCCConfig(layers=("1",), weight=0.5)).weight == 0.5
    lcc = LatentClusterCorrection(AUTO)
    assert lcc.weight == 0.0  # before the first calibration (the loss is 0 then too)
    lcc.calibrated_weight = 0.25
    twin = LatentClusterCorrection(AUTO)
    twin.load_state_dict(lcc.state_dict())
    assert twin.weight == 0.25
    with pytest.raises(LatentccError, match="use latentcc.train.fit or a numeric weight"):
        require_numeric_weight(AUTO, "LCCCallback")
    require_numeric_weight(LCCConfig(layers=("1",)), "LCCCallback")
    assert weight_label(AUTO) == "auto (grad ratio 0.1)" and weight_label(LCCConfig(layers=("1",))) == "0.01"


def test_lightning_callback_refuses_auto_weight():
    from latentcc.integrations.lightning import LCCCallback

    with pytest.raises(
        LatentccError, match="'weight' parameter of LCCConfig must be a number with LCCCallback"
    ):
        LCCCallback(AUTO)


def test_cli_parses_auto_or_a_number_and_names_the_fix_for_other_words(capsys):
    parser = argparse.ArgumentParser()
    add_config_args(parser, LCCConfig, prefix="lcc")
    ns = parser.parse_args(["--lcc-layers", "1", "--lcc-weight", "auto", "--lcc-grad-ratio", "0.2"])
    cfg = config_from_args(LCCConfig, ns, prefix="lcc")
    assert cfg.weight == "auto" and cfg.grad_ratio == 0.2
    cfg = config_from_args(
        LCCConfig, parser.parse_args(["--lcc-layers", "1", "--lcc-weight", "1e-3"]), prefix="lcc"
    )
    assert cfg.weight == 1e-3
    with pytest.raises(SystemExit):
        parser.parse_args(["--lcc-weight", "automatic"])
    assert "--lcc-weight takes a number or 'auto'; got 'automatic'" in capsys.readouterr().err


def test_auto_weight_is_calibrated_against_the_runs_own_task_loss(tmp_path, digits_splits, monkeypatch):
    """The ratio is taken against the loss the run trains on: a 10x task loss gives a 10x weight."""
    model = bn_mlp()
    lcc = refreshed(model, digits_splits.train, AUTO)
    ce = calibrate_weight(lcc, model, digits_splits.train, batch_size=32, epoch=1).weight
    ten = calibrate_weight(lcc, model, digits_splits.train, batch_size=32, epoch=1,
                           task_loss=lambda logits, y: 10 * F.cross_entropy(logits, y)).weight  # fmt: skip
    assert ten == pytest.approx(10 * ce, rel=1e-5)
    # and fit hands its loss_fn to the calibration
    import latentcc.integrations.fit as fit_hook

    seen = []
    real = fit_hook.calibrate_weight
    monkeypatch.setattr(
        fit_hook, "calibrate_weight", lambda *a, **k: seen.append(k["task_loss"]) or real(*a, **k)
    )
    mine = nn.CrossEntropyLoss(label_smoothing=0.1)
    fit(bn_mlp(), digits_splits, config=CFG, lcc=AUTO, loss_fn=mine)
    assert seen and all(t is mine for t in seen)


def test_auto_weight_in_a_loop_that_never_calibrates_raises_instead_of_training_with_0(digits_splits):
    lcc = refreshed(bn_mlp(), digits_splits.train, AUTO)
    with pytest.raises(LatentccError, match=r"'weight'.*calibrate_weight"):
        _ = lcc.weight
    assert LatentClusterCorrection(AUTO).weight == 0.0  # before the first refresh the loss is 0 anyway
