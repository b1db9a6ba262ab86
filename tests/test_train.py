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
from latentcc.plumbing.errors import CheckpointError, LatentccError
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
    other = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10)
    )
    with pytest.raises(CheckpointError, match="does not fit this model"):  # a checkpoint of another model
        fit(other, digits_splits, config=cfg, out_dir=tmp_path / "r", resume=True)
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

    from latentcc.plumbing.batch import unpack_batch

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


def test_resume_of_a_run_recorded_before_a_setting_existed(tmp_path, digits_splits):
    """A setting added to latentcc after a run started (absent from its config.json) reads as its default:
    the resume goes on; a non-default value for it is a real change and is refused."""
    cfg = dataclasses.replace(CFG, epochs=2)

    class Crash:
        def on_epoch_start(self, ctx):
            pass

        def on_epoch_end(self, ctx):
            if ctx.epoch == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(tiny_mlp(), digits_splits, config=cfg, out_dir=tmp_path, callbacks=[Crash()])
    path = tmp_path / "config.json"
    saved = json.loads(path.read_text())
    del saved["train"]["drop_last"]  # as written by a latentcc without that setting
    path.write_text(json.dumps(saved))
    from reliability_runs import as_older_latentcc

    as_older_latentcc(tmp_path)  # whose checkpoints hold no checksum of config.json either
    with pytest.raises(CheckpointError, match=r"train\.drop_last: False -> True"):
        fit(
            tiny_mlp(),
            digits_splits,
            config=dataclasses.replace(cfg, drop_last=True),
            out_dir=tmp_path,
            resume=True,
        )
    res = fit(tiny_mlp(), digits_splits, config=cfg, out_dir=tmp_path, resume=True)
    assert res.best_epoch >= 1 and len(res.history) == 2


def test_resume_of_an_lcc_run_recorded_before_the_latent_source_existed_keeps_its_eval_pass(
    tmp_path, digits_splits
):
    """An LCC run whose config.json lacks latent_source/diagnostic collected latents by an eval pass and ran the
    validation diagnostic: a resume reads those (LEGACY_VALUES), not today's defaults, and the CLI's read-back too."""
    from latentcc.config import LEGACY_VALUES, LCCConfig
    from latentcc.train.resume import read_run_config, with_legacy_values

    cfg = dataclasses.replace(CFG, epochs=3)
    old = LCCConfig(layers=("2",), k=5, graph_dim=None, latent_source="eval_pass", diagnostic=True)

    class Crash:
        def on_epoch_end(self, ctx):
            if ctx.epoch == 1:  # after the checkpoint of epoch 1
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(tiny_mlp(), digits_splits, config=cfg, out_dir=tmp_path, lcc=old, callbacks=[Crash()])
    path = tmp_path / "config.json"
    saved = json.loads(path.read_text())
    del saved["lcc"]["latent_source"], saved["lcc"]["diagnostic"]  # as written before those settings existed
    path.write_text(json.dumps(saved))
    from reliability_runs import as_older_latentcc

    as_older_latentcc(tmp_path)
    assert (
        with_legacy_values(read_run_config(path))["lcc"] | LEGACY_VALUES["lcc"]
        == with_legacy_values(read_run_config(path))["lcc"]
    )
    new = dataclasses.replace(old, latent_source="train_pass", diagnostic=False)  # today's defaults
    with pytest.raises(
        CheckpointError,
        match=r"lcc\.diagnostic: True -> False.*lcc\.latent_source: 'eval_pass' -> 'train_pass'",
    ):
        fit(tiny_mlp(), digits_splits, config=cfg, out_dir=tmp_path, lcc=new, resume=True)
    res = fit(tiny_mlp(), digits_splits, config=cfg, out_dir=tmp_path, lcc=old, resume=True)
    assert len(res.history) == 3 and "lcc/time_refresh_s" in res.history[2]
    assert "lcc/rows_from_training" not in res.history[2] and "lcc/time_diagnostic_s" in res.history[2]


def test_resume_check_keeps_a_callers_own_sections_as_they_are(tmp_path):
    """extra_config sections that share a name with a latentcc config (e.g. 'model') are compared as given."""
    from latentcc.train.resume import check_same_run

    mine = {"model": {"name": "mine"}, "train": {"epochs": 2}}
    check_same_run(tmp_path / "config.json", mine, json.loads(json.dumps(mine)), None)  # no error
    with pytest.raises(CheckpointError, match=r"model\.name: 'mine' -> 'other'"):
        check_same_run(tmp_path / "config.json", mine, {**mine, "model": {"name": "other"}}, None)


def test_own_scheduler_goes_with_scheduler_none_or_the_default(digits_splits):
    """scheduler= replaces the built-in schedule: TrainConfig(scheduler='none') (saying so) and the default are
    both accepted, and fit steps the caller's scheduler once per batch."""
    from latentcc.train.checks import _check_train_settings

    for name in ("none", "cosine"):
        model = tiny_mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        cfg = TrainConfig(epochs=1, max_steps_per_epoch=3, scheduler=name, progress=False, tensorboard=False)
        fit(model, digits_splits, config=cfg, optimizer=opt, scheduler=sched)
        assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)  # 3 steps, halved at each
    other = dataclasses.replace(CFG)
    object.__setattr__(other, "scheduler", "step")  # a named schedule TrainConfig may offer one day
    with pytest.raises(LatentccError, match=r"'scheduler' parameter of TrainConfig must be 'none' or its "
                       r"default \('cosine'\).*Got 'step'.*ignore this built-in schedule"):  # fmt: skip
        _check_train_settings(other, None, sched)


# --- the model and the data must fit together: checked once at the door, translated mid-run ------------


def _small(n: int = 40, val: float = 0.25, k: int = 4):
    """n tabular samples (6 features, k classes), half of them train (n=40: 20 train, 10 val, 10 test)."""
    from latentcc.data import from_arrays

    x = np.random.default_rng(0).normal(size=(n, 6)).astype(np.float32)
    return from_arrays(x, np.arange(n) % k, val_fraction=val, test_fraction=0.25)


def _net(k: int = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, k))


SMALL = TrainConfig(epochs=2, batch_size=8, progress=False, tensorboard=False, device="cpu")


class _Mapped(torch.utils.data.Dataset):
    """A split whose samples pass through ``f(x, y, i)``: a user's own Dataset with odd labels or inputs."""

    def __init__(self, base, f):
        self.base, self.f = base, f

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        return self.f(*self.base[i])


def _mapped(f, split=("train",), classes=True):
    from types import SimpleNamespace

    s = _small()
    parts = {"train": s.train, "val": s.val, "test": s.test}
    parts |= {name: _Mapped(parts[name], f) for name in split}
    return SimpleNamespace(**parts, **({"classes": s.classes} if classes else {}))


@pytest.mark.parametrize("k", [3, 5])
def test_a_head_of_the_wrong_width_is_refused_before_training(tmp_path, k):
    with pytest.raises(
        LatentccError, match=rf"data \(4 classes\)\. Got 'a model with {k} outputs'.*num_classes=4"
    ):
        fit(_net(k), _small(), config=SMALL, out_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "config.json").exists()  # refused before anything was written
    # data that does not declare its classes: labels beyond the model's outputs are refused by value
    with pytest.raises(LatentccError, match=r"labels in 0\.\.2 \(the model's 3 outputs, one per class\)"):
        fit(_net(3), _mapped(lambda x, y, i: (x, y + 3 * (i == 1), i), classes=False), config=SMALL)
    assert fit(_net(5), _mapped(lambda x, y, i: (x, y, i), classes=False), config=SMALL).test.n == 10


def test_without_a_validation_split_the_result_says_so_instead_of_a_sentinel(tmp_path):
    with pytest.warns(UserWarning, match="no validation split: the last epoch's weights are kept"):
        res = fit(_net(), _small(val=0.0), config=SMALL, out_dir=tmp_path)
    assert res.best_val_top1 is None and res.best_epoch == SMALL.epochs
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["best_val_top1"] is None and saved["note"].startswith("no validation split")
    assert saved == res.summary() | {"wall_time_s": saved["wall_time_s"]}
    assert "no validation split" in json.loads((tmp_path / "config.json").read_text())["warnings"][-1]
    with_val = fit(_net(), _small(), config=SMALL)
    assert 0.0 <= with_val.best_val_top1 <= 1.0 and "note" not in with_val.summary()


@pytest.mark.parametrize(
    ("f", "message"),
    [
        (lambda x, y, i: (x, torch.tensor(float(y)), i), r"Got 'labels of dtype torch.float32"),
        (lambda x, y, i: (x, torch.nn.functional.one_hot(torch.tensor(y), 4).float(), i), r"one-hot or soft"),
        (lambda x, y, i: (x, torch.tensor([y]), i), r"shape \(2, 1\) \(a 1-element label per sample\)"),
        (
            lambda x, y, i: (x, torch.tensor(-1), i),
            r"labels in 0\.\.3 \(the data's 4 classes\)\. Got 'label -1",
        ),
        (
            lambda x, y, i: (x, np.int64(4), i),
            r"Got 'label 4 \(sample 0, and 1 more in this batch; in the train",
        ),
    ],
)
def test_bad_labels_are_refused_at_the_door(tmp_path, f, message):
    with pytest.raises(LatentccError, match=r"'data' parameter of fit must be .*" + message):
        fit(_net(), _mapped(f), config=SMALL, out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_a_bad_label_in_a_later_batch_names_the_sample_without_a_per_step_check():
    bad = _mapped(lambda x, y, i: (x, y + 4 * int(i == 7), i))  # sample 7: not in the example batch
    with pytest.raises(LatentccError, match=r"Got 'label 4 \(sample 7; in a training batch of epoch 1\)'"):
        fit(_net(), bad, config=SMALL)
    with pytest.raises(
        LatentccError, match=r"of evaluate .*Got \"label 9 \(sample 3; in the 'val' split\)\""
    ):
        fit(_net(), _mapped(lambda x, y, i: (x, y * 0 + 9 if i == 3 else y, i), split=("val",)), config=SMALL)


def test_integer_labels_of_any_width_train_like_int64():
    ref = fit(_net(), _small(), config=SMALL)
    for dtype in (torch.int32, torch.uint8):
        res = fit(_net(), _mapped(lambda x, y, i, d=dtype: (x, torch.tensor(y, dtype=d), i)), config=SMALL)
        assert res.test.top1 == ref.test.top1 and _strip_times(res.history) == _strip_times(ref.history)


class _Wrapped(torch.nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.net, self.kind = _net(), kind

    def forward(self, x):
        out = self.net(x)
        if self.kind == "dict":
            return {"logits": out, "hidden": x}
        if self.kind == "attr":  # a ModelOutput-like object, or torchvision's InceptionOutputs namedtuple
            from collections import namedtuple

            return namedtuple("Outputs", ["logits", "aux_logits"])(out, out)
        return (out, x.sum())


def test_model_outputs_with_logits_train_like_a_plain_model_and_a_tuple_is_refused():
    from latentcc.plumbing.batch import logits_of

    ref = fit(_net(), _small(), config=SMALL)
    for kind in ("dict", "attr"):
        res = fit(_Wrapped(kind), _small(), config=SMALL)
        assert res.test.top1 == ref.test.top1 and res.best_val_top1 == ref.best_val_top1
        assert evaluate(res.model, _small().test, device="cpu").top1 == ref.test.top1
    with pytest.raises(LatentccError, match=r"Got 'a tuple \(Tensor, Tensor\)'.*Fix: make forward return"):
        fit(_Wrapped("tuple"), _small(), config=SMALL)
    with pytest.raises(LatentccError, match=r"'model' parameter of evaluate.*Got 'a tuple"):
        evaluate(_Wrapped("tuple"), _small().test, device="cpu")
    with pytest.raises(LatentccError, match=r"Got \"a dict with keys \['hidden'\] and no 'logits' tensor\""):
        logits_of({"hidden": torch.zeros(2, 3)}, "fit")


def test_logits_with_an_extra_dimension_are_refused():
    class Extra(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _net()

        def forward(self, x):
            return self.net(x)[:, None, :]

    with pytest.raises(LatentccError, match=r"Got 'logits of shape \(2, 1, 4\)'.*logits\.squeeze\(1\)"):
        fit(Extra(), _small(), config=SMALL)


def test_integer_inputs_to_a_float_layer_are_explained_and_token_ids_still_work():
    with pytest.raises(LatentccError, match=r"float inputs for a model that computes in float32\. Got 'inputs of "
                       r"dtype torch.int64'.*mat1 and mat2.*Fix: convert the data to float"):  # fmt: skip
        fit(_net(), _mapped(lambda x, y, i: ((x * 16).long(), y, i)), config=SMALL)

    class Bag(torch.nn.Module):  # token ids into an Embedding: integers on purpose
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.emb, self.head = torch.nn.Embedding(64, 8), torch.nn.Linear(8, 4)

        def forward(self, ids):
            return self.head(self.emb(ids).mean(1))

    tokens = _mapped(
        lambda x, y, i: ((x.abs() * 10).long().clamp(max=63), y, i), split=("train", "val", "test")
    )
    res = fit(Bag(), tokens, config=SMALL)
    assert len(res.history) == 2 and res.test.n == 10


def test_a_model_on_the_meta_device_is_refused_at_the_door(tmp_path):
    with pytest.raises(LatentccError, match=r"'model' parameter of fit must be a model whose weights hold values"
                       r"\. Got \"4 parameter\(s\)/buffer\(s\) on the 'meta' device, e.g. '0.weight'\".*to_empty"):  # fmt: skip
        fit(_net().to("meta"), _small(), config=SMALL, out_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "config.json").exists()
    with pytest.raises(LatentccError, match=r"'model' parameter of evaluate must be a model whose weights"):
        evaluate(_net().to("meta"), _small().test, device="cpu")


def test_resolve_device_refuses_devices_this_machine_lacks(monkeypatch):
    from latentcc.train import resolve_device

    beyond = f"cuda:{torch.cuda.device_count()}"  # past the last GPU, or any CUDA device on a CPU-only build
    with pytest.raises(LatentccError, match=rf"'device' parameter of TrainConfig must be a device this machine has\. "
                       rf"Got '{beyond}'.*Fix: 'cpu', or 'auto'"):  # fmt: skip
        fit(_net(), _small(), config=dataclasses.replace(SMALL, device=beyond))
    with pytest.raises(LatentccError, match=r"'device' parameter of evaluate .*'meta' device holds shapes"):
        evaluate(_net(), _small().test, device="meta")
    assert resolve_device("cpu") == torch.device("cpu")
    # a CUDA build with two GPUs: cuda:1 is fine, cuda:2 is not
    monkeypatch.setattr(torch.version, "cuda", "12.1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    assert resolve_device("cuda") == torch.device("cuda")
    with pytest.raises(LatentccError, match=r"has 2 CUDA GPU\(s\), cuda:0 to cuda:1\. Fix"):
        resolve_device("cuda:2", func="ProbeConfig")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(LatentccError, match=r"PyTorch sees no CUDA GPU"):
        resolve_device("cuda")


def test_a_diverging_half_precision_model_names_half_precision():
    with pytest.raises(LatentccError, match=r"became nan in epoch 1, and the model's parameters are float16: "
                       r"training in half precision.*model\.float\(\).*torch\.autocast"):  # fmt: skip
        fit(_net().half(), _small(), config=SMALL)
    with pytest.raises(
        LatentccError, match=r"became nan in epoch 1: training diverged, or the training inputs hold"
    ):
        fit(_net(), _mapped(lambda x, y, i: (x * float("nan"), y, i)), config=SMALL)


def test_float_inputs_to_an_embedding_are_explained():
    class Bag(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.head = torch.nn.Embedding(64, 8), torch.nn.Linear(8, 4)

        def forward(self, ids):
            return self.head(self.emb(ids).mean(1))

    with pytest.raises(LatentccError, match=r"integer token ids for a model that starts with an nn.Embedding\. "
                       r"Got 'inputs of dtype torch.float32'.*'indices'.*Fix: return the ids as an int64"):  # fmt: skip
        fit(Bag(), _small(), config=SMALL)


def test_a_corrupt_state_json_is_reported_as_corrupt_not_as_an_older_checkpoint(tmp_path, digits_splits):
    import warnings

    cfg = TrainConfig(epochs=2, progress=False, tensorboard=False)
    fit(tiny_mlp(), digits_splits, config=cfg, out_dir=tmp_path)
    state = latest_checkpoint(tmp_path / "checkpoints") / "state.json"
    state.write_text(state.read_text()[:40])  # truncated
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "written by an older latentcc" warning first
        with pytest.raises(CheckpointError, match="sha256"):
            fit(tiny_mlp(), digits_splits, config=cfg, out_dir=tmp_path, resume=True)
