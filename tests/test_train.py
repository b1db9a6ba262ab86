"""The fine-tuning loop: real learning, best-on-val selection, bitwise resume, refusals that protect runs."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_mlp
from latentcc.config import TrainConfig
from latentcc.errors import CheckpointError, LatentccError
from latentcc.train import evaluate, fit
from latentcc.train.checkpoint import flatten_state, latest_checkpoint, unflatten_state

CFG = TrainConfig(epochs=3, batch_size=32, lr=1e-2, progress=False, tensorboard=False)


def _strip_times(history):
    return [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in history]


def test_fit_learns_digits_and_writes_run_folder(tmp_path, digits_splits):
    model = tiny_mlp()
    before = evaluate(model, digits_splits.test, device="cpu")
    res = fit(model, digits_splits, config=CFG, out_dir=tmp_path)
    assert before.top1 < 0.3  # random init is near chance (10 classes)
    assert res.test is not None and res.test.top1 > 0.85
    assert res.test.topk >= res.test.top1 and res.test.k == 5
    assert res.test.n == len(digits_splits.test)
    for name in (
        "config.json",
        "metrics.json",
        "metrics.csv",
        "results.json",
        "best.safetensors",
        "best.json",
        "training_curve.png",
    ):
        assert (tmp_path / name).is_file(), name
    hist = json.loads((tmp_path / "metrics.json").read_text())
    assert [r["epoch"] for r in hist] == [1, 2, 3]
    csv_lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].startswith("epoch,train_loss") and len(csv_lines) == 4
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["train"]["lr"] == CFG.lr and "torch" in cfg["provenance"]
    assert latest_checkpoint(tmp_path / "checkpoints").name == "epoch-0003"
    assert len([p for p in (tmp_path / "checkpoints").iterdir() if p.is_dir()]) == CFG.keep_checkpoints
    assert (tmp_path / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_test_metrics_come_from_best_val_epoch_not_last(tmp_path, digits_splits):
    class Sabotage:  # ruins the weights after the best epoch: the test must still use the best ones
        def on_epoch_start(self, ctx):
            if ctx.epoch == 2:
                for g in ctx.optimizer.param_groups:
                    g["lr"] = 5.0

        def on_epoch_end(self, ctx):
            pass

    model = tiny_mlp()
    res = fit(model, digits_splits, config=CFG, out_dir=tmp_path, callbacks=[Sabotage()])
    val = [r["val_top1"] for r in res.history]
    assert val[2] < max(val[:2])  # the last epoch was ruined...
    assert res.best_epoch == int(np.argmax(val)) + 1 and res.best_epoch < 3
    best = load_file(str(tmp_path / "best.safetensors"))
    for k, v in model.state_dict().items():  # ...and the model holds the best weights
        assert torch.equal(v, best[k])
    assert res.test.top1 == pytest.approx(evaluate(model, digits_splits.test, device="cpu").top1)
    assert res.test.top1 > 0.8


def test_resume_after_interruption_reproduces_uninterrupted_run(tmp_path, digits_splits):
    full = fit(tiny_mlp(), digits_splits, config=CFG, out_dir=tmp_path / "full")

    class Crash:
        def on_epoch_start(self, ctx):
            pass

        def on_epoch_end(self, ctx):
            if ctx.epoch == 1:  # interrupted in epoch 2, before its checkpoint
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(tiny_mlp(), digits_splits, config=CFG, out_dir=tmp_path / "cut", callbacks=[Crash()])
    assert latest_checkpoint(tmp_path / "cut" / "checkpoints").name == "epoch-0001"
    model = tiny_mlp()
    resumed = fit(model, digits_splits, config=CFG, out_dir=tmp_path / "cut", resume=True)
    assert _strip_times(resumed.history) == _strip_times(full.history)  # bitwise-equal metrics on CPU
    assert resumed.test.top1 == full.test.top1 and resumed.test.loss == full.test.loss
    a = load_file(str(tmp_path / "full" / "best.safetensors"))
    b = load_file(str(tmp_path / "cut" / "best.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fit_refuses_to_overwrite_existing_run(tmp_path, digits_splits):
    cfg = TrainConfig(epochs=1, progress=False, tensorboard=False)
    fit(tiny_mlp(), digits_splits, config=cfg, out_dir=tmp_path)
    before = (tmp_path / "best.safetensors").read_bytes()
    with pytest.raises(CheckpointError, match="refusing to overwrite"):
        fit(tiny_mlp(), digits_splits, config=cfg, out_dir=tmp_path)
    assert (tmp_path / "best.safetensors").read_bytes() == before


def test_resume_refuses_missing_and_corrupt_checkpoints(tmp_path, digits_splits):
    cfg = TrainConfig(epochs=2, progress=False, tensorboard=False)
    with pytest.raises(CheckpointError, match="Nothing to resume"):
        fit(tiny_mlp(), digits_splits, config=cfg, out_dir=tmp_path / "empty", resume=True)
    fit(tiny_mlp(), digits_splits, config=cfg, out_dir=tmp_path / "r")
    ckpt = latest_checkpoint(tmp_path / "r" / "checkpoints")
    weights = ckpt / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])  # truncated, as by a crash mid-copy
    with pytest.raises(CheckpointError, match="sha256"):
        fit(tiny_mlp(), digits_splits, config=cfg, out_dir=tmp_path / "r", resume=True)
    assert weights.read_bytes() == good[: len(good) // 2]  # nothing was overwritten
    weights.write_bytes(good)
    with pytest.raises(CheckpointError, match="does not fit this model"):  # a checkpoint of another model
        fit(tiny_mlp(num_classes=7), digits_splits, config=cfg, out_dir=tmp_path / "r", resume=True)
    with pytest.raises(
        CheckpointError, match=r"train\.lr: 0\.001 -> 0\.5"
    ):  # other settings: refused by name
        fit(
            tiny_mlp(),
            digits_splits,
            config=dataclasses.replace(cfg, lr=0.5),
            out_dir=tmp_path / "r",
            resume=True,
        )


def test_unwritable_out_dir(tmp_path, digits_splits):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")  # a path under a regular file cannot be created, even by root
    with pytest.raises(LatentccError, match="'out_dir' parameter of fit"):
        fit(tiny_mlp(), digits_splits, config=CFG, out_dir=blocker / "run")


def test_fit_without_run_folder_keeps_best_in_memory(digits_splits):
    res = fit(tiny_mlp(), digits_splits, config=dataclasses.replace(CFG, epochs=2))
    assert res.run_dir is None and res.test.top1 > 0.7 and len(res.history) == 2


def test_state_flatten_roundtrip():
    opt_state = {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(4)}, 1: {"momentum_buffer": None}},
        "param_groups": [{"lr": 0.1, "params": [0, 1], "betas": (0.9, 0.99), "foreach": None}],
    }
    tree, tensors = flatten_state(opt_state)
    json.dumps(tree)  # JSON-able
    back = unflatten_state(json.loads(json.dumps(tree)), tensors)
    assert set(back["state"]) == {0, 1} and torch.equal(
        back["state"][0]["exp_avg"], opt_state["state"][0]["exp_avg"]
    )
    assert back["param_groups"][0]["betas"] == [0.9, 0.99]
    with pytest.raises(TypeError, match="cannot store"):
        flatten_state({"x": object()})


def test_bad_train_config_values_name_the_parameter():
    with pytest.raises(LatentccError, match="'epochs' parameter of TrainConfig must be an int >= 1. Got 0"):
        TrainConfig(epochs=0)
    with pytest.raises(LatentccError, match="'lr'"):
        TrainConfig(lr=float("nan"))
    with pytest.raises(LatentccError, match="'optimizer'"):
        TrainConfig(optimizer="adam")  # type: ignore[arg-type]


def test_batches_without_index_are_accepted_and_bad_batches_explained():
    from torch.utils.data import TensorDataset

    from latentcc.batch import unpack_batch

    ds = TensorDataset(torch.randn(20, 64), torch.randint(0, 10, (20,)))
    r = evaluate(tiny_mlp(), ds, device="cpu")
    assert r.n == 20 and 0 <= r.top1 <= 1
    with pytest.raises(LatentccError, match=r"\(x, y, idx\)"):
        unpack_batch([torch.zeros(1)])


def test_sgd_option_and_cli_roundtrip_config(tmp_path, digits_splits):
    cfg = dataclasses.replace(CFG, optimizer="sgd", lr=0.1)
    res = fit(tiny_mlp(), digits_splits, config=cfg, out_dir=tmp_path)
    assert res.test.top1 > 0.5
    saved = json.loads(Path(tmp_path / "config.json").read_text())["train"]
    assert TrainConfig(**saved) == cfg


def test_tensorboard_events_are_written_when_installed(tmp_path, digits_splits):
    pytest.importorskip("tensorboard")  # part of latentcc[dev], so CI runs this
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    fit(
        tiny_mlp(),
        digits_splits,
        config=dataclasses.replace(CFG, epochs=2, tensorboard=True),
        out_dir=tmp_path,
    )
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    val = acc.Scalars("val_top1")
    hist = json.loads((tmp_path / "metrics.json").read_text())
    assert [e.step for e in val] == [1, 2]
    assert [round(e.value, 5) for e in val] == [round(r["val_top1"], 5) for r in hist]
