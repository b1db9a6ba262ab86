"""Transfer methods (LP, Layer-FT, SCL-FT, GC regularisation): exact counts, what trains, neutral skips, CLI."""

import json
from collections import OrderedDict

import pytest
import torch
from torch import nn

from latentcc.app.cli import build_parser, main
from latentcc.app.finetune import finetune, prepare_model
from latentcc.config import DataConfig, LCCConfig, MethodConfig, ModelConfig, TrainConfig
from latentcc.latents.layers import capture
from latentcc.metrics.complexity import geometric_complexity, layer_fn
from latentcc.models import load_model
from latentcc.plumbing.errors import CheckpointError, LatentccError
from latentcc.train import fit
from latentcc.train.checkpoint import load_weights
from latentcc.train.freeze import trainable_parameters
from latentcc.train.methods import apply_method
from latentcc.train.scl_ft import SkipConnection

QUICK = TrainConfig(
    epochs=1, batch_size=32, lr=1e-2, max_steps_per_epoch=5, progress=False, tensorboard=False
)
CLI_FAST = ["--data", "digits", "--model", "mnist-cnn", "--max-samples", "300", "--batch-size", "32",
            "--epochs", "1", "--max-steps-per-epoch", "3", "--no-progress", "--no-tensorboard"]  # fmt: skip


def named_mlp() -> nn.Module:
    """64 -> lin0 (32) -> lin1 (16) -> head (10), with names to target."""
    torch.manual_seed(0)
    return nn.Sequential(
        OrderedDict(
            flat=nn.Flatten(),
            lin0=nn.Linear(64, 32),
            act0=nn.ReLU(),
            lin1=nn.Linear(32, 16),
            act1=nn.ReLU(),
            head=nn.Linear(16, 10),
        )
    )


def mnist_cnn() -> nn.Module:
    torch.manual_seed(0)
    return load_model("mnist-cnn", num_classes=10)


def lin(i: int, o: int, bias: bool = True) -> int:
    return i * o + (o if bias else 0)


def conv3(i: int, o: int) -> int:
    return i * o * 9 + o


MLP_ALL = lin(64, 32) + lin(32, 16) + lin(16, 10)
CNN = {
    "c0": conv3(1, 32),
    "c3": conv3(32, 64),
    "c6": conv3(64, 128),
    "f0": lin(1152, 256),
    "f2": lin(256, 10),
}
CNN_ALL = sum(CNN.values())
X = torch.rand(4, 1, 8, 8)

# (model factory, method config, trainable, total) — counted by hand from the layer shapes
COUNTS = [
    (named_mlp, MethodConfig(method="ft"), MLP_ALL, MLP_ALL),
    (named_mlp, MethodConfig(method="lp"), lin(16, 10), MLP_ALL),
    (named_mlp, MethodConfig(method="layer_ft", block="lin0"), lin(64, 32) + lin(16, 10), MLP_ALL),
    # same width (16 -> 16): identity skip, nothing added
    (named_mlp, MethodConfig(method="scl_ft", block="lin1"), lin(32, 16) + lin(16, 10), MLP_ALL),
    # widths differ (32 -> 16): P = Linear(32, 16, bias=False) trains too
    (named_mlp, MethodConfig(method="scl_ft", block="lin0"), lin(64, 32) + lin(16, 10) + 32 * 16,
     MLP_ALL + 32 * 16),
    # concat: the head becomes Linear(16 + 32, 10)
    (named_mlp, MethodConfig(method="scl_ft", block="lin0", skip="concat"), lin(64, 32) + lin(48, 10),
     MLP_ALL - lin(16, 10) + lin(48, 10)),
    (named_mlp, MethodConfig(method="gc_reg"), MLP_ALL, MLP_ALL),
    (mnist_cnn, MethodConfig(method="ft"), CNN_ALL, CNN_ALL),
    (mnist_cnn, MethodConfig(method="lp"), CNN["f2"], CNN_ALL),
    (mnist_cnn, MethodConfig(method="layer_ft", block="conv_layers.6"), CNN["c6"] + CNN["f2"], CNN_ALL),
    (mnist_cnn, MethodConfig(method="scl_ft", block="conv_layers.6"), CNN["c6"] + CNN["f2"] + 128 * 256,
     CNN_ALL + 128 * 256),
    (mnist_cnn, MethodConfig(method="scl_ft", block="conv_layers.6", skip="concat"), CNN["c6"] + lin(256 + 128, 10),
     CNN_ALL - CNN["f2"] + lin(256 + 128, 10)),
    # flatten-pooled (B, 128, 3, 3) output of the last pool: 1152 -> 256 projection; the pool has no weights
    (mnist_cnn, MethodConfig(method="scl_ft", block="conv_layers.8", skip_pool="flatten"), CNN["f2"] + 1152 * 256,
     CNN_ALL + 1152 * 256),
]  # fmt: skip


@pytest.mark.parametrize(("factory", "cfg", "trainable", "total"), COUNTS)
def test_exact_trainable_parameter_counts(factory, cfg, trainable, total):
    model = factory()
    x = X if factory is named_mlp else torch.rand(2, 1, 28, 28)
    setup = apply_method(model, cfg, example_input=x)
    assert (setup.trainable, setup.total) == (trainable, total)
    assert trainable_parameters(setup.model) == trainable
    assert (
        sum(p.numel() for n, p in setup.model.named_parameters() if n in setup.trainable_names) == trainable
    )
    assert setup.summary() == {
        "method": cfg.method,
        "trainable": trainable,
        "total": total,
        "fraction": trainable / total,
    }
    assert (setup.penalty is not None) == (cfg.method == "gc_reg")
    if cfg.skip_pool == "avg":  # widths read from the layers when no example input is given
        assert apply_method(factory(), cfg).trainable == trainable


@pytest.mark.parametrize(
    "cfg",
    [
        MethodConfig(method="ft"),
        MethodConfig(method="lp"),
        MethodConfig(method="layer_ft", block="lin0"),
        MethodConfig(method="scl_ft", block="lin1"),
        MethodConfig(method="scl_ft", block="lin0"),
        MethodConfig(method="scl_ft", block="lin0", skip="concat"),
        MethodConfig(method="gc_reg", gc_weight=0.01),
    ],
    ids=lambda c: f"{c.method}-{c.block}-{c.skip}",
)
def test_only_the_intended_parameters_change(cfg, digits_splits):
    setup = apply_method(named_mlp(), cfg, example_input=X)
    before = {n: p.detach().clone() for n, p in setup.model.named_parameters()}
    res = fit(setup.model, digits_splits, config=QUICK, penalty=setup.penalty)
    assert res.trainable_params == setup.trainable and res.total_params == setup.total
    for name, p in setup.model.named_parameters():
        if name in setup.trainable_names:
            assert not torch.equal(p, before[name]), f"{name} should have trained"
        else:
            assert torch.equal(p, before[name]), f"{name} should be frozen"
    if cfg.method == "scl_ft" and cfg.block == "lin0":  # the zero-initialised skip weights moved off zero
        w = setup.model.skip.proj.weight if cfg.skip == "add" else setup.model.base.head.weight[:, 16:]
        assert float(w.detach().abs().sum()) > 0


@pytest.mark.parametrize("skip", ["add", "concat"])
def test_scl_ft_starts_as_the_unmodified_model(skip):
    model = named_mlp().eval()
    ref = model(X)
    setup = apply_method(model, MethodConfig(method="scl_ft", block="lin0", skip=skip), example_input=X)
    assert isinstance(setup.model, SkipConnection)
    assert torch.equal(setup.model(X), ref)  # zero projection / zero head columns: the skip is neutral
    # the penultimate feature with the skip is a named layer: h' = [h, b] (concat) or h + P b = h (add, P = 0)
    with capture(setup.model, ["skip", "base.act1", "base.lin0"]) as out:
        setup.model(X)
    h, b = out["base.act1"], out["base.lin0"]
    assert torch.equal(out["skip"], torch.cat([h, b], 1) if skip == "concat" else h)


def test_scl_ft_add_with_equal_widths_adds_the_block_output_unprojected():
    model = named_mlp().eval()
    setup = apply_method(model, MethodConfig(method="scl_ft", block="lin1"), example_input=X)
    with capture(setup.model, ["base.lin1", "base.act1"]) as out:
        logits = setup.model(X)
    assert isinstance(setup.model.skip.proj, nn.Identity)
    torch.testing.assert_close(logits, model.head(out["base.act1"] + out["base.lin1"]), rtol=0, atol=0)


def test_scl_ft_round_trips_through_the_checkpoint_code_and_resume_refuses_a_changed_method(tmp_path):
    mcfg, dcfg = ModelConfig(model="mnist-cnn"), DataConfig(data="digits", max_samples=300)
    tcfg = TrainConfig(epochs=2, batch_size=32, max_steps_per_epoch=3, progress=False, tensorboard=False)
    method = MethodConfig(method="scl_ft", block="conv_layers.6", skip="concat")
    res = finetune(mcfg, dcfg, tcfg, out_dir=tmp_path, method=method)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["method"]["skip"] == "concat"
    assert saved["parameters"] == {
        "trainable": CNN["c6"] + lin(384, 10),
        "total": CNN_ALL - CNN["f2"] + lin(384, 10),
    }
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["trainable_params"] == CNN["c6"] + lin(384, 10)
    # a freshly built SCL-FT model loads the run's best weights and computes the same logits
    from latentcc.app.finetune import load_data

    splits = load_data(dcfg)
    fresh = prepare_model(mcfg, splits, method).model
    load_weights(tmp_path / "best.safetensors", fresh)
    x = torch.stack([splits.test[i][0] for i in range(8)])
    assert torch.equal(fresh.eval()(x), res.model.eval()(x))
    assert any(k.startswith("base.net.") for k in fresh.state_dict())
    # resuming (the finished run: its last checkpoint loads into the rebuilt model) works; a changed method is refused
    again = finetune(mcfg, dcfg, tcfg, out_dir=tmp_path, resume=True, method=method)
    assert again.test.top1 == res.test.top1
    with pytest.raises(CheckpointError, match=r"method.skip: 'concat' -> 'add'"):
        finetune(mcfg, dcfg, tcfg, out_dir=tmp_path, resume=True, method=MethodConfig(method="scl_ft", block="conv_layers.6"))  # fmt: skip


def test_gc_regularisation_lowers_the_measured_gc(digits_splits):
    cfg = TrainConfig(epochs=2, batch_size=32, lr=1e-2, progress=False, tensorboard=False)
    x_test = torch.stack([digits_splits.test[i][0] for i in range(200)])
    gc, hist = {}, {}
    for lam in (0.0, 0.01):
        model = named_mlp()
        setup = apply_method(model, MethodConfig(method="gc_reg", gc_weight=lam))
        res = fit(setup.model, digits_splits, config=cfg, penalty=setup.penalty)
        model.eval()
        # the default embedding is the head's input: here act1's output
        gc[lam] = geometric_complexity(layer_fn(model, "act1"), x_test, estimator="exact").mean
        hist[lam] = res.history
    # measured: 63.5 without the penalty, 23.2 with it (same seed, same batches)
    assert gc[0.01] < 0.5 * gc[0.0], gc
    assert all(r["train_penalty"] == 0.0 for r in hist[0.0])
    assert all(r["train_penalty"] > 0 for r in hist[0.01])
    assert hist[0.01][0]["train_ce"] == pytest.approx(
        hist[0.01][0]["train_loss"] - hist[0.01][0]["train_penalty"]
    )


def test_gc_penalty_only_in_training_mode_and_only_for_float_inputs():
    model = named_mlp()
    setup = apply_method(
        model, MethodConfig(method="gc_reg", gc_weight=1.0, gc_layer="lin1", gc_projections=4)
    )
    logits = model(X)
    y = torch.zeros(len(X), dtype=torch.long)
    pen = setup.penalty(model.train(), X, y, logits)
    assert pen.ndim == 0 and float(pen.detach()) > 0 and pen.requires_grad
    assert model.training  # the penalty's eval-mode forward restored the mode
    assert float(setup.penalty(model.eval(), X, y, logits)) == 0.0
    with pytest.raises(LatentccError, match="'method' parameter of apply_method"):
        apply_method(named_mlp(), MethodConfig(method="gc_reg"), example_input=["a text"])


def test_scl_ft_composes_with_lcc_on_the_penultimate_feature(digits_splits):
    setup = apply_method(named_mlp(), MethodConfig(method="scl_ft", block="lin0"), example_input=X)
    cfg = TrainConfig(
        epochs=2, batch_size=32, lr=1e-2, max_steps_per_epoch=10, progress=False, tensorboard=False
    )
    lcc = LCCConfig(layers=("skip",), k=5, warmup=1, weight=0.1)
    res = fit(setup.model, digits_splits, config=cfg, lcc=lcc, penalty=setup.penalty)
    assert res.history[1]["train_lcc"] > 0 and res.history[1]["lcc/skip/clusters"] >= 2
    assert res.summary()["trainable_params"] == lin(64, 32) + lin(16, 10) + 32 * 16
    assert res.summary()["total_params"] == MLP_ALL + 32 * 16


def test_bad_method_settings_name_the_parameter():
    for kw, param in [
        ({"method": "sft"}, "method"),
        ({"skip": "mul"}, "skip"),
        ({"gc_weight": -1.0}, "gc_weight"),
        ({"gc_projections": 0}, "gc_projections"),
        ({"block": 3}, "block"),
    ]:
        with pytest.raises(LatentccError, match=f"'{param}' parameter of MethodConfig"):
            MethodConfig(**kw)
    with pytest.raises(LatentccError, match=r"'block' parameter of apply_method.*candidates: lin0, lin1"):
        apply_method(named_mlp(), MethodConfig(method="scl_ft"))
    with pytest.raises(LatentccError, match=r"'block' parameter.*Did you mean 'lin0'"):
        apply_method(named_mlp(), MethodConfig(method="layer_ft", block="lin00"))
    with pytest.raises(LatentccError, match=r"'block' parameter.*apart from the head 'head'"):
        apply_method(named_mlp(), MethodConfig(method="layer_ft", block="head"))
    with pytest.raises(LatentccError, match=r"'block' parameter.*with parameters for method 'layer_ft'"):
        apply_method(named_mlp(), MethodConfig(method="layer_ft", block="act0"))
    with pytest.raises(LatentccError, match=r"'head' parameter.*no nn.Linear"):
        apply_method(nn.Sequential(nn.Conv2d(1, 2, 3)), MethodConfig(method="lp"))
    with pytest.raises(LatentccError, match=r"'example_input' parameter"):  # a ReLU states no width
        apply_method(named_mlp(), MethodConfig(method="scl_ft", block="act0"))


def test_cli_finetune_with_a_method_records_it_and_resume_refuses_another(tmp_path, capsys):
    out = tmp_path / "lp"
    assert main(["finetune", "--out", str(out), *CLI_FAST, "--method", "lp"]) == 0
    printed = capsys.readouterr().out
    assert "lp" in printed and str(CNN["f2"]) in printed and str(CNN_ALL) in printed
    saved = json.loads((out / "config.json").read_text())
    assert saved["method"]["method"] == "lp" and saved["parameters"] == {
        "trainable": CNN["f2"],
        "total": CNN_ALL,
    }
    assert json.loads((out / "results.json").read_text())["trainable_params"] == CNN["f2"]
    assert main(["finetune", "--out", str(out), "--resume", "--no-progress"]) == 0  # reads the method back
    assert main(["finetune", "--out", str(out), "--resume", "--method", "ft", "--no-progress"]) == 2
    assert "method.method: 'lp' -> 'ft'" in capsys.readouterr().err


def test_cli_layer_ft_without_block_exits_2_naming_block(tmp_path, capsys):
    assert main(["finetune", "--out", str(tmp_path / "x"), *CLI_FAST, "--method", "layer_ft"]) == 2
    err = capsys.readouterr().err
    assert "'block' parameter" in err and "net.conv_layers.6" in err


def test_cli_method_flags_are_generated_with_defaults(monkeypatch):
    monkeypatch.setenv("COLUMNS", "10000")
    help_text = " ".join(
        build_parser()._subparsers._group_actions[0].choices["finetune"].format_help().split()
    )
    for name, f in MethodConfig.__dataclass_fields__.items():
        assert "--" + name.replace("_", "-") in help_text and f"(default: {f.default})" in help_text, name
    assert "--method {ft,lp,layer_ft,scl_ft,gc_reg}" in help_text and "--skip {add,concat}" in help_text


def test_cli_transfer_layers_prints_the_table_and_writes_csv_json(tmp_path, capsys):
    out = tmp_path / "tl"
    args = ["transfer-layers", "--model", "mnist-cnn", "--data", "digits", "--max-samples", "300",
            "--layers", "conv_layers.2,fc_layers.1", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    header = printed.splitlines()[0].split()
    assert header == ["layer", "width", "linear_probe_acc", "nc1"]
    assert "net.conv_layers.2" in printed and "net.fc_layers.1" in printed
    assert "NC1 vs linear-probe accuracy" in printed
    rows = json.loads((out / "transfer_layers.json").read_text())["rows"]
    metrics = {(r["layer"], r["metric"]) for r in rows}
    assert {("net.fc_layers.1", "nc1"), ("net.fc_layers.1", "linear_probe_acc")} <= metrics
    acc = {r["layer"]: r["value"] for r in rows if r["metric"] == "linear_probe_acc"}
    assert acc["net.fc_layers.1"] > 0.5  # pretrained MNIST features separate digits linearly
    assert (out / "transfer_layers.csv").read_text().startswith("split,layer,layer_index,width,metric,value")


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (
            MethodConfig(method="ft", gc_weight=0.01),
            r"gc_weight=0.01 \(--gc-weight\) is read by gc_reg\). Got 'ft'",
        ),
        (
            MethodConfig(method="lp", block="lin0"),
            r"block='lin0' \(--block\) is read by layer_ft, scl_ft\). Got 'lp'",
        ),
        (
            MethodConfig(method="layer_ft", block="lin0", skip="concat"),
            r"skip='concat' \(--skip\) is read by scl_ft",
        ),
        (
            MethodConfig(method="gc_reg", gc_layer="lin1", head="head"),
            r"head='head'.*gc_reg reads head only while",
        ),
    ],
)
def test_settings_the_method_ignores_are_refused_by_name(cfg, message):
    model = named_mlp()
    before = [p.requires_grad for p in model.parameters()]
    with pytest.raises(LatentccError, match=r"'method' parameter of apply_method.*" + message):
        apply_method(model, cfg, example_input=X)
    assert [p.requires_grad for p in model.parameters()] == before  # refused before touching the model
