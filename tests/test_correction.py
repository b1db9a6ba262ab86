"""LCC in a plain PyTorch loop and inside latentcc.train.fit: positive loss, pulls toward targets, resumes."""

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from conftest import mc_distance, tiny_mlp
from latentcc import LCCConfig
from latentcc.config import TrainConfig
from latentcc.integrations.fit import LCCHook
from latentcc.lcc.correction import LatentClusterCorrection
from latentcc.lcc.diagnostics import cc_mc_accuracy
from latentcc.plumbing.errors import LatentccError
from latentcc.train import evaluate, fit

CFG = TrainConfig(epochs=3, batch_size=32, lr=1e-2, progress=False, tensorboard=False)
LCC = LCCConfig(layers=("2",), weight=0.5, k=5, warmup=1, interval=1, graph_dim=None)


def test_plain_loop_loss_is_positive_and_pulls_mc_samples_to_their_targets(digits_splits):
    model = tiny_mlp()
    train = digits_splits.train
    lcc = LatentClusterCorrection(LCC)
    assert not lcc.should_refresh(0) and lcc.should_refresh(1) and lcc.should_refresh(2)
    stats = lcc.refresh(model, train)
    assert stats["time_refresh_s"] > 0
    # pinned (digits seed 0, the untrained tiny MLP): 14 clusters, 173 of the 1258 samples misclustered,
    # each with a target; no class left without a cluster. The same on 1 and 2 threads.
    assert {k: v for k, v in stats.items() if "time" not in k} == {
        "2/clusters": 14, "2/mc_fraction": pytest.approx(173 / 1258, rel=1e-12), "2/with_target": 173, "2/orphan_classes": 0,
        "2/owning_classes": 10,
    }  # fmt: skip
    assert stats == {**stats, **_partition_stats(lcc.last["2"].clusters, train.targets)}
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
    assert losses[0] == pytest.approx(0.0658717, rel=1e-5)  # measured, 1 and 2 threads
    assert mc_distance(lcc, model, train, "2") < 0.85 * before  # measured: 0.388 -> 0.301


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


def _partition_stats(clusters: np.ndarray, y: np.ndarray, prefix: str = "2/") -> dict[str, float]:
    """An independent reading of a partition (numpy, not latentcc.lcc.matching): each cluster's owner is its
    plurality class (ties: the lowest id), a sample is misclustered when its cluster's owner is another class."""
    y = np.asarray(y)
    ids = np.unique(clusters)
    owner = {c: int(np.bincount(y[clusters == c]).argmax()) for c in ids}
    cc = np.array([owner[c] for c in clusters]) == y
    owning = set(owner.values())
    return {
        f"{prefix}clusters": len(ids), f"{prefix}mc_fraction": 1.0 - cc.mean(),
        f"{prefix}orphan_classes": len(set(y.tolist()) - owning), f"{prefix}owning_classes": len(owning),
    }  # fmt: skip


# What the two correction epochs of CFG/LCC on digits log, pinned (the same on 1 and 2 threads):
# (train_lcc, clusters, misclustered samples of 1258 = with_target, validation CC top-1, MC top-1)
PINNED = [(0.4973803, 18, 368, 143 / 148, 0.5), (0.3030237, 13, 106, 0.9797297, 0.53125)]


@pytest.mark.parametrize("diagnostic", [False, True])
def test_fit_with_lcc_logs_the_correction_and_its_cost(tmp_path, digits_splits, diagnostic):
    lcc = LatentClusterCorrection(dataclasses.replace(LCC, diagnostic=diagnostic))
    res = fit(tiny_mlp(), digits_splits, config=CFG, out_dir=tmp_path, lcc=lcc)
    h = res.history
    assert "lcc/2/clusters" not in h[0] and h[0]["train_lcc"] == 0.0  # warmup epoch: plain fine-tuning
    assert "lcc_overhead" not in h[0] and "lcc/time_diagnostic_s" not in h[0]  # no refresh, no targets yet
    for row, (loss, clusters, mc, cc_top1, mc_top1) in zip(h[1:], PINNED, strict=True):
        assert row["train_lcc"] == pytest.approx(loss, rel=1e-5)
        assert (row["lcc/2/clusters"], row["lcc/2/with_target"]) == (clusters, mc)
        assert row["lcc/2/mc_fraction"] == pytest.approx(mc / 1258, rel=1e-12)
        assert row["train_ce"] == pytest.approx(row["train_loss"] - LCC.weight * row["train_lcc"])
        assert (row["lcc/2/orphan_classes"], row["lcc/2/owning_classes"]) == (0, 10)
        if diagnostic:
            assert (row["val_2/cc_top1"], row["val_2/mc_top1"]) == pytest.approx((cc_top1, mc_top1), rel=1e-6)
        # the documented quantity: refresh / (epoch - refresh - diagnostic), from the logged columns
        diag = row.get("lcc/time_diagnostic_s", 0.0)
        want = row["lcc/time_refresh_s"] / (row["epoch_time_s"] - row["lcc/time_refresh_s"] - diag)
        assert row["lcc_overhead"] == round(want, 4) and row["lcc_overhead"] > 0
        # the validation CC/MC diagnostic runs (and is timed apart) only when switched on
        assert ("lcc/time_diagnostic_s" in row) is diagnostic and ("val_2/cc_top1" in row) is diagnostic
        if diagnostic:
            assert diag > 0
    last = {
        f"lcc/{k}": v
        for k, v in _partition_stats(lcc.last["2"].clusters, digits_splits.train.targets).items()
    }
    assert h[-1] == {**h[-1], **last}  # the last refresh's logged numbers, read again from its partition
    assert res.test.top1 == pytest.approx(0.9303621)  # measured (the diagnostic changes nothing)
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


# ----------------------------------------------------------------------------- settings that would do nothing


def _tab(n: int = 40):
    """n tabular samples, 6 features, 4 classes; half of them train."""
    from latentcc.data import from_arrays

    x = np.random.default_rng(0).normal(size=(n, 6)).astype(np.float32)
    return from_arrays(x, np.arange(n) % 4, val_fraction=0.25, test_fraction=0.25)


def _mlp6(bn: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    mid = [torch.nn.BatchNorm1d(8)] if bn else []
    return torch.nn.Sequential(torch.nn.Linear(6, 8), *mid, torch.nn.ReLU(), torch.nn.Linear(8, 4))


TAB = TrainConfig(epochs=2, batch_size=8, progress=False, tensorboard=False, device="cpu")
TAB_LCC = LCCConfig(layers=("1",), k=3, warmup=0, graph_dim=None)


def test_check_schedule_refuses_runs_without_a_correction_epoch_and_warns_on_weight_zero():
    lcc = LatentClusterCorrection(dataclasses.replace(TAB_LCC, warmup=2))
    for epochs in (1, 2):
        with pytest.raises(
            LatentccError, match=rf"'warmup'.*number of epochs, {epochs} \(TrainConfig.*Got 2"
        ):
            lcc.check_schedule(epochs)
    assert lcc.check_schedule(3) == [] and lcc.check_schedule(None) == []
    zero = LatentClusterCorrection(dataclasses.replace(TAB_LCC, weight=0.0))
    with pytest.warns(UserWarning, match="weight is 0"):
        assert len(zero.check_schedule(1)) == 1


def test_fit_with_lcc_weight_zero_records_the_warning_and_trains_as_without_lcc(tmp_path):
    with pytest.warns(UserWarning, match="weight is 0"):
        res = fit(_mlp6(), _tab(), config=TAB, out_dir=tmp_path, lcc=dataclasses.replace(TAB_LCC, weight=0.0))
    assert json.loads((tmp_path / "config.json").read_text())["warnings"][0].startswith(
        "LCCConfig.weight is 0"
    )
    base = fit(_mlp6(), _tab(), config=TAB)
    assert [r["train_loss"] for r in res.history] == pytest.approx([r["train_loss"] for r in base.history])
    # the term is computed (and logged), just not added: measured, the same on 1 and 2 threads
    assert [r["train_lcc"] for r in res.history] == pytest.approx([0.5077555, 0.4738070], rel=1e-5)


def test_lcc_loss_refuses_a_layer_no_trainable_parameter_feeds():
    model = _mlp6()
    model[0].requires_grad_(False)  # as --method lp leaves it
    lcc = LatentClusterCorrection(TAB_LCC)
    x, idx = torch.randn(4, 6), torch.arange(4)
    with lcc.capture(model) as z:
        model(x)
    with pytest.raises(LatentccError, match=r"'layers'.*depends on a parameter that trains\. Got '1'"):
        lcc.loss(z, idx)
    with torch.no_grad():  # an evaluation pass: nothing to train, nothing to refuse
        assert lcc.loss(z, idx).item() == 0.0
    model[0].requires_grad_(True)
    with lcc.capture(model) as z:
        model(x)
    assert lcc.loss(z, idx).requires_grad


def test_lcc_loss_says_whether_no_forward_ran_or_the_layer_was_skipped():
    model = _mlp6()
    lcc = LatentClusterCorrection(TAB_LCC)
    with lcc.capture(model) as z:
        pass
    with pytest.raises(LatentccError, match=r"no forward pass of the model ran inside `with lcc.capture"):
        lcc.loss(z, torch.arange(4))
    with lcc.capture(model) as z:
        model[2](torch.randn(4, 8))  # the model's forward did not run; its layer '1' did not either
    with pytest.raises(LatentccError, match=r"no forward pass"):
        lcc.loss(z, torch.arange(4))
    skip = LatentClusterCorrection(dataclasses.replace(TAB_LCC, layers=("0", "1")))
    with skip.capture(model) as z:
        model(torch.randn(4, 6))
    del z["1"]  # as when a conditional branch skips it
    with pytest.raises(LatentccError, match=r"\['1'\] did not run in this training batch's forward pass"):
        skip.loss(z, torch.arange(4))


def test_fit_casts_float_inputs_to_a_float64_models_dtype():
    runs = [fit(m, _tab(), config=TAB, lcc=TAB_LCC) for m in (_mlp6(), _mlp6().double())]
    assert next(runs[1].model.parameters()).dtype == torch.float64
    a, b = ([r["train_loss"] for r in run.history] for run in runs)
    assert b == pytest.approx(a, rel=1e-4)  # the same run, in double precision
    assert runs[1].test.top1 == runs[0].test.top1


def test_preflight_leaves_batchnorm_statistics_and_the_rng_untouched():
    from latentcc.train.checks import preflight

    model = _mlp6(bn=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    lcc = LatentClusterCorrection(TAB_LCC)
    cfg = dataclasses.replace(TAB, batch_size=19, drop_last=True)
    assert (
        preflight(
            model,
            _tab().train,
            cfg,
            terms=[LCCHook(lcc)],
            optimizer=None,
            scheduler=None,
            device=torch.device("cpu"),
        )
        == []
    )
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng) and model.training


class _Augmented(torch.utils.data.Dataset):
    """A training split whose samples get random noise from python's, numpy's and torch's global RNGs."""

    def __init__(self, base):
        self.base, self.reads = base, 0

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        import random

        self.reads += 1
        x, y, idx = self.base[i]
        noise = random.random() + float(np.random.rand()) + float(torch.rand(()))  # noqa: NPY002
        return x + noise, y, idx


def test_preflight_reads_samples_without_advancing_any_global_rng():
    """fit seeds every generator and then runs the pre-flight: reading its two samples must not draw from
    them, or the run's augmentations would differ from a run without the pre-flight."""
    import random

    from latentcc.plumbing.seeding import rng_state
    from latentcc.train.checks import preflight

    train, model = _Augmented(_tab().train), _mlp6()  # _mlp6 seeds torch: before the states are taken
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)  # noqa: NPY002
    before = rng_state()
    preflight(model, train, TAB, terms=[LCCHook(TAB_LCC)], optimizer=None, scheduler=None,
              device=torch.device("cpu"))  # fmt: skip
    after = rng_state()
    assert train.reads == 2  # the pre-flight did read (and augment) two samples
    assert torch.equal(after[0]["torch_cpu"], before[0]["torch_cpu"])
    assert after[1] == before[1]  # python's and numpy's states


def test_check_captured_returns_the_outputs_by_layer_name():
    model = _mlp6()
    lcc = LatentClusterCorrection(dataclasses.replace(TAB_LCC, layers=("2", "0")))
    with lcc.capture(model) as z:
        model(torch.randn(4, 6))
    checked = lcc.check_captured(z, 4)
    assert list(checked) == ["2", "0"]  # the configured order
    assert checked["0"] is z["0"] and checked["2"] is z["2"]


def test_lccconfig_refuses_louvain_with_leiden_iterations():
    """A bare LCCConfig refuses it (not only LatentClusterCorrection): Louvain would ignore the setting."""
    with pytest.raises(LatentccError, match=r"'community' parameter of LCCConfig must be 'leiden' or 'leidenalg' "
                       r"when leiden_iterations=5 is set.*Got 'louvain'.*Fix: community='leiden'"):  # fmt: skip
        LCCConfig(community="louvain", leiden_iterations=5)
    assert LCCConfig(community="louvain").leiden_iterations == 2  # the default is fine
    assert LCCConfig(community="leidenalg", leiden_iterations=5).leiden_iterations == 5


def test_batchnorm_and_a_one_sample_last_batch_need_drop_last():
    from latentcc.train.checks import epoch_steps, explain_step_error

    data = _tab()  # 20 training samples
    with pytest.raises(LatentccError, match=r"'drop_last'.*20 samples.*batch_size 19.*layer '1'.*e\.g\. 18"):
        fit(_mlp6(bn=True), data, config=dataclasses.replace(TAB, batch_size=19))
    with pytest.raises(LatentccError, match=r"'batch_size' parameter of TrainConfig must be at least 2"):
        fit(_mlp6(bn=True), data, config=dataclasses.replace(TAB, batch_size=1))
    res = fit(_mlp6(bn=True), data, config=dataclasses.replace(TAB, batch_size=19, drop_last=True))
    assert len(res.history) == 2
    fit(
        _mlp6(), data, config=dataclasses.replace(TAB, batch_size=19)
    )  # no BatchNorm: the 1-sample batch is fine
    cnn = torch.nn.Sequential(
        torch.nn.Unflatten(1, (1, 6)), torch.nn.BatchNorm1d(1), torch.nn.Flatten(), torch.nn.Linear(6, 4)
    )
    fit(cnn, data, config=dataclasses.replace(TAB, batch_size=19))  # 6 values per channel: BatchNorm copes
    cfg = dataclasses.replace(TAB, batch_size=19)
    assert epoch_steps(20, cfg) == 2 and epoch_steps(20, dataclasses.replace(cfg, drop_last=True)) == 1
    raw = ValueError(
        "Expected more than 1 value per channel when training, got input size torch.Size([1, 8])"
    )
    assert "Fix: drop_last=True" in str(explain_step_error(raw, cfg, 20))
    assert explain_step_error(ValueError("other"), cfg, 20) is None


def test_lightning_callback_refuses_warmup_past_max_epochs():
    pl = pytest.importorskip("lightning.pytorch")
    from latentcc.integrations.lightning import LCCCallback

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _mlp6()

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            return F.cross_entropy(self(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[LCCCallback(dataclasses.replace(TAB_LCC, layers=("net.1",), warmup=1))])  # fmt: skip
    with pytest.raises(LatentccError, match=r"'warmup'.*number of epochs, 1 \(Trainer max_epochs\)"):
        trainer.fit(Module(), DataLoader(_tab().train, batch_size=8))


def test_hf_trainer_refuses_warmup_past_the_epochs_it_computed():
    pytest.importorskip("transformers")
    from types import SimpleNamespace

    from latentcc.integrations.hf import _LCCRefresh

    lcc = LatentClusterCorrection(dataclasses.replace(TAB_LCC, warmup=3))
    callback = _LCCRefresh(SimpleNamespace(lcc=lcc))  # type: ignore[arg-type]
    with pytest.raises(
        LatentccError, match=r"'warmup'.*number of epochs, 3 \(TrainingArguments num_train_epochs"
    ):
        callback.on_train_begin(None, SimpleNamespace(num_train_epochs=3), None)
    callback.on_train_begin(None, SimpleNamespace(num_train_epochs=4), None)  # epoch 4 corrects: fine


def test_layers_are_resolved_again_for_a_new_model_even_at_a_reused_id():
    """The resolved layers are cached per model object, held weakly: a model allocated where a collected one
    lived (CPython reuses the address, so id() repeats) must not inherit the dead model's modules."""
    import pickle

    lcc = LatentClusterCorrection(TAB_LCC)
    x = torch.randn(4, 6)
    seq = torch.nn.Sequential
    for _ in range(500):
        old = _mlp6()
        assert lcc.layer_names(old) == ["1"]  # resolved (and cached) on this model
        old_id, layers, alloc = id(old), list(_mlp6()), seq.__new__  # allocate nothing between del and new
        del old
        new = alloc(seq)
        if id(new) == old_id:
            break
    else:
        pytest.skip("CPython did not reuse the address in 500 tries")
    seq.__init__(new, *layers)
    with lcc.capture(new) as z:
        new(x)
    assert torch.equal(z["1"], new[1](new[0](x)))  # the new model's layer, not the dead model's
    assert pickle.loads(pickle.dumps(lcc)).layer_names(new) == ["1"]  # the weak reference is not pickled
