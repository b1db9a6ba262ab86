"""Resume verifies what it continues: fingerprints of the model and the data, and config.json as the run's record."""

from __future__ import annotations

import errno
import json
import random
import time
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
import torch
from torch import nn

from latentcc.plumbing.errors import CheckpointError
from latentcc.train.fingerprint import (
    data_fingerprint,
    fingerprint_changes,
    model_fingerprint,
    run_fingerprint,
)
from reliability_runs import _fit, _interrupted_run, _model, _splits, as_older_latentcc


def _changes(a, b) -> list[str]:
    return fingerprint_changes(a, b)


def test_model_changes_are_named():
    base = {"model": model_fingerprint(_model())}
    assert _changes(base, {"model": model_fingerprint(_model())}) == []  # same seed, same model
    assert _changes(base, {"model": model_fingerprint(_model(nn.Tanh))}) == [
        "model architecture changed: layer 2 ReLU() -> Tanh()"
    ]
    frozen = _model()
    frozen[1].weight.requires_grad_(False)
    assert _changes(base, {"model": model_fingerprint(frozen)}) == [
        "parameter dtype or training role changed (1.weight: float32[16, 64] trainable -> float32[16, 64] frozen)"
    ]
    (w,) = _changes(base, {"model": model_fingerprint(_model(seed=1))})
    assert w.startswith("initial weights changed (sha256 ")
    wider = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))
    fit_msg, arch = _changes(base, {"model": model_fingerprint(wider)})
    assert fit_msg.startswith(
        "the run's checkpoint does not fit this model (1.weight: size mismatch, float32[16, 64]"
    )
    assert (
        "layer 1 Linear(in_features=64, out_features=16, bias=True) -> Linear(in_features=64, out_features=32"
        in arch
    )


def test_model_fingerprint_is_stable_cheap_and_leaves_the_model_alone():
    from latentcc.models import load_model

    class WithFn(nn.Module):
        def __init__(self):
            super().__init__()
            self.fn = lambda x: x  # its repr holds a memory address, different in every process

        def extra_repr(self) -> str:
            return f"fn={self.fn}"

    assert "0x" not in json.dumps(model_fingerprint(WithFn()))
    bn = model_fingerprint(nn.BatchNorm1d(3))["tensors"]
    assert bn["running_mean"] == ["float32", [3], "buffer"] and bn["weight"] == ["float32", [3], "trainable"]

    model = load_model("mnist-cnn", num_classes=10)
    n = sum(p.numel() for p in model.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    t = time.perf_counter()
    fps = [model_fingerprint(model) for _ in range(5)]
    per_call = (time.perf_counter() - t) / 5
    assert n > 300_000 and per_call < 0.25  # milliseconds in practice (a few ms for 390k parameters)
    assert len({f["weights_sha256"] for f in fps}) == 1
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


class _Augmented(torch.utils.data.Dataset):
    """Random noise added on every read (an augmentation), labels only through __getitem__."""

    def __init__(self, n: int) -> None:
        self.x = torch.arange(n * 4, dtype=torch.float32).reshape(n, 4)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i] + 0.01 * torch.rand(4) + float(np.random.rand() + random.random()), i % 3, i  # noqa: NPY002


def test_data_fingerprint_fixes_augmentation_randomness_and_restores_the_generators():
    data = SimpleNamespace(train=_Augmented(100), val=_Augmented(10), test=_Augmented(10))
    torch.manual_seed(5)
    np.random.seed(5)  # noqa: NPY002 - the global generators are what is checked
    random.seed(5)
    states = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())  # noqa: NPY002
    a, b = data_fingerprint(data), data_fingerprint(data)
    assert a == b  # the same augmentation draws every time
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1]) and random.getstate() == states[2]  # noqa: NPY002
    assert a["train"]["labels_of"] == "64 sampled" and a["val"]["content_of"] == "10 sampled"
    data.train.x[50] += 1  # a sampled row changes
    assert _changes({"data": a}, {"data": data_fingerprint(data)}) == ["train input content changed"]


def test_dict_inputs_and_all_labels():
    class Text(torch.utils.data.Dataset):
        def __init__(self, ids: torch.Tensor) -> None:
            self.ids, self.targets = ids, np.arange(len(ids)) % 2

        def __len__(self) -> int:
            return len(self.ids)

        def __getitem__(self, i: int):
            return {"input_ids": self.ids[i], "attention_mask": torch.ones(3)}, int(self.targets[i]), i

    ids = torch.arange(30).reshape(10, 3)
    a = data_fingerprint(SimpleNamespace(train=Text(ids), classes=["a", "b"]))
    assert a["train"]["labels_of"] == "all" and a["classes"]["count"] == 2
    other = Text(ids.clone())
    other.ids[9, 0] = -1
    other.targets = other.targets.copy()
    other.targets[3] = 0  # not a sampled row of the labels: all labels are hashed
    b = data_fingerprint(SimpleNamespace(train=other, classes=["a", "c"]))
    assert _changes({"data": a}, {"data": b}) == [
        "train labels changed",
        "train input content changed",
        "class names changed (2 classes in the run, 2 now)",
    ]


def test_resume_keeps_the_first_record_and_appends_each_resume(tmp_path):
    _interrupted_run(tmp_path)
    path = tmp_path / "run" / "config.json"
    first = json.loads(path.read_text())
    assert set(first["fingerprint"]) == {"model", "data", "training"} and first["fingerprint"] == json.loads(
        json.dumps(run_fingerprint(_model(), _splits()))
    )
    from latentcc.config import TrainConfig
    from latentcc.train import fit

    cfg = TrainConfig(
        epochs=2, batch_size=16, progress=True, tensorboard=False, device="cpu"
    )  # progress: free
    fit(_model(), _splits(), config=cfg, out_dir=tmp_path / "run", resume=True)
    after = json.loads(path.read_text())
    assert (
        after["provenance"] == first["provenance"] and after["train"] == first["train"]
    )  # the run's own record
    (entry,) = after["resumes"]
    assert entry["changed"] == {"train.progress": True} and entry["time"] and entry["argv"]


def test_resume_of_a_run_without_fingerprint_warns_and_continues(tmp_path):
    _interrupted_run(tmp_path)
    path = tmp_path / "run" / "config.json"
    old = json.loads(path.read_text())
    del old["fingerprint"]  # written by an older latentcc
    path.write_text(json.dumps(old))
    as_older_latentcc(tmp_path / "run")  # whose checkpoints hold no checksum of config.json either
    with pytest.warns(RuntimeWarning, match="records no fingerprint.*cannot check"):
        res = _fit(tmp_path, resume=True)
    assert res.best_epoch >= 1 and "fingerprint" not in json.loads(path.read_text())  # not claimed afterwards


def test_cli_resume_reports_the_run_record_not_a_bad_config_flag(tmp_path, capsys):
    from latentcc.app.cli import main

    _interrupted_run(tmp_path)
    run = tmp_path / "run"
    good = (run / "config.json").read_text()
    (run / "config.json").write_text('{"train": ')
    assert main(["finetune", "--out", str(run), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "config.json is corrupt" in err and "--config" not in err and "Restore it from a copy" in err
    (run / "config.json").write_text(good)

    real = Path.is_file

    def denied(self: Path) -> bool:
        if self.name == "config.json":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self)

    with mock.patch.object(Path, "is_file", denied):
        assert main(["finetune", "--out", str(run), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Cannot resume" in err and "cannot be read (Permission denied" in err and "cp -r RUN COPY" in err


def test_unreadable_weights_are_not_called_corrupt(tmp_path):
    from latentcc.train.checkpoint import load_weights

    _interrupted_run(tmp_path)
    best = tmp_path / "run" / "best.safetensors"
    real = open

    def deny(path, *a, **kw):
        if str(path) == str(best):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path, *a, **kw)

    with mock.patch("builtins.open", deny), pytest.raises(CheckpointError) as e:
        load_weights(best, _model())
    assert "cannot be read (Permission denied" in str(e.value) and "not a readable safetensors" not in str(
        e.value
    )


class _OwnRng(torch.utils.data.Dataset):
    """An augmentation drawing from a generator of its own, unseeded: different on every read, in every process."""

    def __init__(self, ds, random_labels: bool = False) -> None:
        self.ds, self.rng, self.random_labels = ds, np.random.default_rng(), random_labels

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        x, y, idx = self.ds[i]
        y = int(self.rng.integers(4)) if self.random_labels else y  # a label-mixing augmentation
        return x + torch.from_numpy(self.rng.normal(0, 0.01, x.shape).astype(np.float32)), y, idx


def test_a_dataset_with_its_own_generator_resumes_and_a_changed_dataset_is_still_refused(tmp_path):
    from reliability_runs import _Relabelled, _Stop

    def data(**kw):
        d = _splits()
        return SimpleNamespace(train=_OwnRng(d.train, **kw), val=d.val, test=d.test, classes=d.classes)

    fp = data_fingerprint(data(random_labels=True))["train"]
    assert fp["content_sha256"] is None and fp["labels_sha256"] is None
    assert fp["content_of"] == fp["labels_of"] == "not comparable: the dataset's samples are random"
    assert data_fingerprint(_splits())["val"]["content_sha256"] is not None  # deterministic splits: hashed
    try:
        _fit(tmp_path, data=data(), callbacks=[_Stop()])
    except KeyboardInterrupt:
        pass
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["fingerprint"]["data"]
    assert saved["train"]["content_sha256"] is None and saved["train"]["labels_sha256"] is not None
    res = _fit(tmp_path, data=data(), resume=True)  # a new generator, new draws: sizes and labels still match
    assert res.best_epoch >= 1
    relabelled = data()
    relabelled.train.ds = _Relabelled(relabelled.train.ds)  # labels are still compared
    assert _changes({"data": saved}, {"data": data_fingerprint(relabelled)}) == ["train labels changed"]
    # a deterministic dataset whose content changed is still refused, also when it turned random
    plain = data_fingerprint(_splits())
    assert _changes({"data": plain}, {"data": data_fingerprint(_splits(seed=1))}) == [
        f"{split} input content changed" for split in ("train", "val", "test")
    ]
    assert _changes({"data": plain}, {"data": data_fingerprint(data())}) == [
        "train input content changed (the same on every read in the run, random now)"
    ]


# ----------------------------------------------------------------------------- loss, penalty, optimizer, scheduler


def _smoothed(ls: float):
    return lambda a, b: torch.nn.functional.cross_entropy(a, b, label_smoothing=ls)


def test_callable_identity_tells_apart_what_computes_differently():
    import functools

    from latentcc.train.fingerprint import callable_identity

    def sha(fn):
        return callable_identity(fn)["sha256"]

    ce = torch.nn.functional.cross_entropy
    assert sha(_smoothed(0.1)) == sha(_smoothed(0.1))  # two closures of one factory, same captured value
    assert sha(_smoothed(0.1)) != sha(_smoothed(0.9))  # captured values are compared
    assert sha(lambda a, b: ce(a, b) * 2) != sha(lambda a, b: ce(a, b) * 3)  # constants
    assert sha(lambda a, b: ce(a, b)) != sha(
        lambda a, b: torch.nn.functional.nll_loss(a, b)
    )  # names looked up
    assert sha(functools.partial(ce, label_smoothing=0.1)) != sha(functools.partial(ce, label_smoothing=0.2))
    assert sha(nn.CrossEntropyLoss(label_smoothing=0.1)) == sha(nn.CrossEntropyLoss(label_smoothing=0.1))
    assert sha(nn.CrossEntropyLoss(label_smoothing=0.1)) != sha(nn.CrossEntropyLoss(label_smoothing=0.2))
    assert sha(nn.CrossEntropyLoss(weight=torch.ones(3))) != sha(
        nn.CrossEntropyLoss(weight=torch.arange(3.0))
    )

    def f(a, b, scale=1.0):
        """A docstring, which is not what the function computes."""
        return ce(a, b) * scale

    def g(a, b, scale=2.0):
        return ce(a, b) * scale

    assert callable_identity(f)["name"].endswith(
        "test_callable_identity_tells_apart_what_computes_differently.<locals>.f"
    )
    assert sha(f) != sha(g)  # default arguments
    g.__code__ = f.__code__  # the same code under another name, with its own default
    g.__defaults__ = (1.0,)
    assert sha(f) != sha(g) and sha(f.__get__(1)) != sha(f)  # names differ; a bound method adds its object


def test_callable_identity_is_the_same_in_another_process(tmp_path):
    """Set constants (ordered by per-process string hashing) and code objects hash the same in every process."""
    import os
    import subprocess
    import sys

    from latentcc.train.fingerprint import callable_identity

    (tmp_path / "my_losses.py").write_text(
        "import torch\n\n"
        "def loss(a, b):\n"
        "    if 'mean' in {'sum', 'mean', 'none', 'batchmean'}:\n"
        "        return torch.nn.functional.cross_entropy(a, b, label_smoothing=0.1)\n"
        "    return (lambda: a.sum())()\n"
    )
    code = (
        "import sys, json; sys.path.insert(0, sys.argv[1]); import my_losses\n"
        "from latentcc.train.fingerprint import callable_identity\n"
        "print(json.dumps(callable_identity(my_losses.loss)))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "OMP_NUM_THREADS": "1"}  # another string hashing
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        import my_losses
    finally:
        sys.path.remove(str(tmp_path))
    here = callable_identity(my_losses.loss)
    assert json.loads(out.stdout) == here and here["name"] == "my_losses.loss"


def test_training_changes_are_named():
    from latentcc.train.fingerprint import training_changes, training_fingerprint

    def fp(**kw):
        return json.loads(json.dumps(training_fingerprint(**kw)))  # as config.json stores it

    m = _model()
    sgd = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(sgd, step_size=3, gamma=0.5)
    run = fp(loss_fn=_smoothed(0.1), optimizer=sgd, scheduler=sched)
    m2 = _model()
    sgd2 = torch.optim.SGD(m2.parameters(), lr=0.1, momentum=0.9)
    same = fp(loss_fn=_smoothed(0.1), optimizer=sgd2, scheduler=torch.optim.lr_scheduler.StepLR(sgd2, 3, 0.5))
    assert training_changes(run, same) == []
    sgd3 = torch.optim.SGD(m2.parameters(), lr=1.0, momentum=0.9)
    other = fp(
        loss_fn=_smoothed(0.9),
        penalty=lambda model, x, y, logits: logits.sum(),
        optimizer=sgd3,
        scheduler=torch.optim.lr_scheduler.StepLR(sgd3, step_size=3, gamma=0.1),
    )
    changes = training_changes(run, other)
    name = "test_fingerprint._smoothed.<locals>.<lambda>"
    assert changes[0] == f"loss_fn {name}: its code, default arguments or captured values changed"
    assert (
        changes[1]
        == "penalty: none in the run, test_fingerprint.test_training_changes_are_named.<locals>.<lambda> now"
    )
    assert "optimizer torch.optim.sgd.SGD: param_groups[0].lr 0.1 -> 1.0" in changes
    assert "scheduler torch.optim.lr_scheduler.StepLR: gamma 0.5 -> 0.1" in changes
    adam = torch.optim.AdamW(m2.parameters())
    assert training_changes(run, fp(loss_fn=_smoothed(0.1), optimizer=adam, scheduler=sched))[0] == (
        "optimizer: torch.optim.sgd.SGD in the run, torch.optim.adamw.AdamW now"
    )
    assert training_changes(fp(), fp(optimizer=adam)) == [
        "optimizer: the default (built from TrainConfig) in the run, torch.optim.adamw.AdamW now"
    ]
    # a hyper-parameter a newer torch adds (with its default) is not the caller's change
    newer = json.loads(json.dumps(run))
    newer["optimizer"]["settings"]["param_groups"][0]["new_knob"] = True
    assert training_changes(run, newer) == []
    # bytecode differs between Python versions: there, only names are compared
    older = json.loads(json.dumps(run))
    older["loss_fn"] |= {"python": "3.9", "sha256": "0" * 64}
    assert training_changes(older, fp(loss_fn=_smoothed(0.9), optimizer=sgd, scheduler=sched)) == []


def _stopped(tmp_path, **kw) -> None:
    from reliability_runs import _Stop

    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path, callbacks=[_Stop()], **kw)


def test_resume_refuses_another_loss_penalty_or_optimizer_and_accepts_the_same(tmp_path):
    """F9: a resume continued silently with label_smoothing=0.9 or an added penalty; now refused, naming it."""
    _stopped(tmp_path, loss_fn=_smoothed(0.1))
    path = tmp_path / "run" / "config.json"
    record = json.loads(path.read_text())["fingerprint"]["training"]
    assert (
        record["loss_fn"]["name"] == "test_fingerprint._smoothed.<locals>.<lambda>"
        and record["penalty"] is None
    )
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    for kw, said in [
        (dict(loss_fn=_smoothed(0.9)), "loss_fn test_fingerprint._smoothed.<locals>.<lambda>: its code"),
        (dict(loss_fn=None), "loss_fn: test_fingerprint._smoothed.<locals>.<lambda> in the run, the default"),
        (
            dict(loss_fn=_smoothed(0.1), penalty=lambda m, x, y, lg: 0 * lg.sum()),
            "penalty: none in the run, ",
        ),
    ]:
        with pytest.raises(CheckpointError, match="with a different loss or optimizer") as e:
            _fit(tmp_path, resume=True, **kw)
        assert said in str(e.value) and "pass fit the same loss_fn, penalty, optimizer and scheduler" in str(
            e.value
        )
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == before
    res = _fit(tmp_path, resume=True, loss_fn=_smoothed(0.1))  # the same loss, built again: continues
    assert len(res.history) == 2

    run2 = tmp_path / "two"
    model = _model()
    _stopped(run2, model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05))
    model = _model()
    with pytest.raises(
        CheckpointError, match=r"optimizer torch\.optim\.sgd\.SGD: param_groups\[0\]\.lr 0\.05 -> 1\.0"
    ):
        _fit(run2, resume=True, model=model, optimizer=torch.optim.SGD(model.parameters(), lr=1.0))
    model = _model()
    assert (
        len(
            _fit(
                run2, resume=True, model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05)
            ).history
        )
        == 2
    )


def test_a_record_not_written_by_latentcc_is_called_corrupt(tmp_path):
    _interrupted_run(tmp_path)
    path = tmp_path / "run" / "config.json"
    good = json.loads(path.read_text())
    for bad, said in [
        (
            {**good, "train": "oops"},
            "its 'train' is a str in the run's record, where latentcc writes a section of settings",
        ),
        ({**good, "fingerprint": [1]}, "its 'fingerprint' is a list, not the record latentcc writes"),
        (
            {**good, "fingerprint": {**good["fingerprint"], "model": "x"}},
            "its 'fingerprint' does not have the shape",
        ),
        (
            {**good, "fingerprint": {**good["fingerprint"], "training": 3}},
            "its 'fingerprint.training' is a number",
        ),
    ]:
        path.write_text(json.dumps(bad))
        with pytest.raises(CheckpointError) as e:
            _fit(tmp_path, resume=True)
        msg = str(e.value)
        assert f"{path} is corrupt ({said}" in msg and "Restore it from a copy of the run" in msg, msg


def test_gc_reg_penalty_built_again_is_the_same_and_another_gc_weight_is_not():
    """latentcc's own penalty (a closure): rebuilt for a CLI resume it must compare equal, else no gc_reg run
    could resume; its captured gc_weight is what tells two apart."""
    from latentcc.config import MethodConfig
    from latentcc.train.fingerprint import callable_identity
    from latentcc.train.methods import apply_method

    def penalty(gc_weight: float):
        setup = apply_method(_model(), MethodConfig(method="gc_reg", gc_weight=gc_weight))
        return callable_identity(setup.penalty)

    assert penalty(1e-3) == penalty(1e-3)
    assert penalty(1e-3)["sha256"] != penalty(1e-2)["sha256"]


def test_cli_resume_of_a_record_with_a_section_that_is_not_an_object(tmp_path, capsys):
    """The CLI reads its flags back from the record: a raw ValueError there before; now the record is corrupt.
    A Python caller's own extra_config may hold a plain value under a name the CLI uses (not corrupt)."""
    from latentcc.app.cli import main
    from latentcc.train.resume import check_same_run

    _interrupted_run(tmp_path)
    path = tmp_path / "run" / "config.json"
    good = json.loads(path.read_text())
    for section in ("train", "model"):
        path.write_text(json.dumps({**good, section: "oops"}))
        assert main(["finetune", "--out", str(tmp_path / "run"), "--resume", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert (
            f"config.json is corrupt (its '{section}' is a str in the run's record, where latentcc writes"
            in err
        )
    mine = {"train": good["train"], "model": "resnet18"}
    check_same_run(path, mine, json.loads(json.dumps(mine)), None)  # no error
    with pytest.raises(
        CheckpointError, match=r"different settings \(model: 'resnet18' in the run, 'vit' now\)"
    ):
        check_same_run(path, mine, {**mine, "model": "vit"}, None)


def _edit_config(run: Path, edit) -> None:
    path = run / "config.json"
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record, indent=2))


def test_resume_refuses_a_config_json_edited_after_the_run_started(tmp_path):
    """F3: config.json edited by hand (epochs 2 -> 3 with a matching resume, a deleted fingerprint.training)
    was resumed and recorded as the run's settings; the checkpoint's checksum of it now refuses the resume."""
    _interrupted_run(tmp_path)
    run = tmp_path / "run"
    good = (run / "config.json").read_text()
    edits = [
        (lambda r: r["train"].update(epochs=3), 3, r"\(changed: train\)"),
        (lambda r: r["fingerprint"].pop("training"), 2, r"\(changed: fingerprint\)"),
    ]
    for edit, epochs, changed in edits:
        _edit_config(run, edit)
        before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
        with pytest.raises(
            CheckpointError, match=r"config\.json was edited after the run started " + changed
        ):
            _fit(tmp_path, resume=True, epochs=epochs)
        assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # nothing changed
        (run / "config.json").write_text(good)
    res = _fit(tmp_path, resume=True)  # the file as the run wrote it (re-indented: same record) resumes
    assert len(res.history) == 2


def test_the_config_checksum_is_kept_across_resumes_and_an_older_checkpoint_resumes_with_a_warning(tmp_path):
    from latentcc.train.checkpoint import latest_checkpoint, peek_state
    from latentcc.train.resume import config_digest

    class StopAt:
        def __init__(self, epoch: int) -> None:
            self.epoch = epoch

        def on_epoch_start(self, ctx) -> None:
            pass

        def on_epoch_end(self, ctx) -> None:
            if ctx.epoch == self.epoch:  # after the checkpoint of the epoch before
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path, epochs=3, callbacks=[StopAt(1)])
    run = tmp_path / "run"
    first = json.loads((run / "config.json").read_text())
    recorded = peek_state(latest_checkpoint(run / "checkpoints"), "config_sha256")
    assert recorded == config_digest(first) and set(recorded) == {"", *first}
    with pytest.raises(
        KeyboardInterrupt
    ):  # resumed, and its own checkpoint (epoch 2) written before the stop
        _fit(tmp_path, resume=True, epochs=3, callbacks=[StopAt(2)])
    latest = latest_checkpoint(run / "checkpoints")
    assert latest.name == "epoch-0002" and peek_state(latest, "config_sha256") == recorded
    as_older_latentcc(run)
    assert peek_state(latest_checkpoint(run / "checkpoints"), "config_sha256") is None
    with pytest.warns(RuntimeWarning, match=r"records no checksum of config\.json.*older latentcc"):
        res = _fit(tmp_path, resume=True, epochs=3)
    assert len(res.history) == 3
    after = json.loads((run / "config.json").read_text())
    assert config_digest(after) == recorded  # the resume entries are not part of the first record's checksum
    assert len(after["resumes"]) == 2
