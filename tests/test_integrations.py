"""The Lightning callback and the Hugging Face Trainer adapters, end to end on tiny CPU models."""

import copy

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import conftest
from conftest import mc_distance
from latentcc import LCCConfig
from latentcc.integrations.lightning import LCCCallback
from latentcc.plumbing.errors import LatentccError

LAYER = "net.1"  # the hidden ReLU of TinyModule


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


@pytest.fixture(scope="module")
def blobs():
    """3 Gaussian blobs in 8-D with 15% flipped labels: the flipped samples end up misclustered."""
    return conftest.blobs()


class TinyModule(pl.LightningModule):
    def __init__(self, task_weight=1.0, callback=None, lr=0.1):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
        self.task_weight, self.callback, self.lr = task_weight, callback, lr

    def forward(self, x):  # the refresh's latent pass calls module(x)
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y, idx = batch
        if self.callback is None:  # auto_loss=True: the callback adds the LCC term
            return self.task_weight * F.cross_entropy(self(x), y)
        assert "training_step" not in self.__dict__  # auto_loss=False: nothing is wrapped
        with self.callback.lcc.capture(self) as z:
            logits = self(x)
        return self.task_weight * F.cross_entropy(logits, y) + self.callback.lcc.weighted_loss(z, idx)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class Recorder(pl.Callback):
    """Per step: (epoch, logged lcc/loss, whether a sample of the batch has a target, last refresh epoch)."""

    def __init__(self, lcc_cb):
        self.lcc_cb, self.rows = lcc_cb, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        lcc = self.lcc_cb.lcc
        has = bool((lcc.targets[LAYER].slot[batch[2]] >= 0).any()) if lcc.active else False
        loss = float(trainer.callback_metrics["lcc/loss"])
        self.rows.append((trainer.current_epoch, loss, has, lcc.refreshed_epoch))


def _fit(module, data, callbacks, epochs=3, batch_size=32):
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
    )  # fmt: skip
    trainer.fit(module, DataLoader(data, batch_size=batch_size, shuffle=True))
    return trainer


def test_lightning_callback_refreshes_after_warmup_adds_the_loss_and_checkpoints(tmp_path, blobs):
    cb = LCCCallback(LCCConfig(layers=(LAYER,), weight=0.5, k=5, warmup=1, graph_dim=None))
    rec = Recorder(cb)
    module = TinyModule()
    trainer = _fit(module, blobs, [cb, rec])
    assert "training_step" not in module.__dict__  # restored after fit
    assert {e: r for e, _, _, r in rec.rows} == {0: None, 1: 1, 2: 2}  # refreshed at epochs 1 and 2 only
    assert all(loss == 0 for e, loss, _, _ in rec.rows if e == 0)
    after = [(loss, has) for e, loss, has, _ in rec.rows if e >= 1]
    assert any(has for _, has in after) and all((loss > 0) == has for loss, has in after)
    assert trainer.callback_metrics[f"lcc/{LAYER}/clusters"] >= 2
    assert 0 < trainer.callback_metrics[f"lcc/{LAYER}/mc_fraction"] < 1

    trainer.save_checkpoint(tmp_path / "last.ckpt")  # the targets travel in Lightning checkpoints
    state = torch.load(tmp_path / "last.ckpt", weights_only=False)["callbacks"]["LCCCallback"]
    cb2 = LCCCallback(LCCConfig(layers=(LAYER,)))
    cb2.load_state_dict(state)
    assert cb2.lcc.refreshed_epoch == 2
    assert torch.equal(cb2.lcc.targets[LAYER].vectors, cb.lcc.targets[LAYER].vectors)


def test_lightning_lcc_only_training_pulls_mc_latents_to_their_targets_in_both_modes(blobs):
    # warmup 0 and a single refresh: the targets come from the initial model; the task loss is switched off
    cfg = LCCConfig(layers=(LAYER,), weight=1.0, k=5, warmup=0, interval=100, graph_dim=None)
    distances = []
    for auto_loss in (True, False):
        cb = LCCCallback(cfg, auto_loss=auto_loss)
        module = TinyModule(task_weight=0.0, callback=None if auto_loss else cb, lr=0.5)
        initial = copy.deepcopy(module)
        _fit(module, blobs, [cb], epochs=3)
        assert cb.lcc.refreshed_epoch == 0 and (cb.lcc.targets[LAYER].slot >= 0).any()
        distances.append(
            (mc_distance(cb.lcc, initial, blobs, LAYER), mc_distance(cb.lcc, module, blobs, LAYER))
        )
    (before, after), explicit = distances
    assert after < 0.8 * before, distances  # measured: 2.18 -> 1.11
    assert explicit == pytest.approx((before, after), rel=1e-5)  # the wrapper adds exactly weighted_loss


def test_lightning_batch_without_index_raises_a_clear_error():
    data = TensorDataset(torch.randn(16, 8), torch.randint(0, 3, (16,)))
    module = TinyModule()
    with pytest.raises(LatentccError, match=r"\(x, y, idx\).*auto_loss=False"):
        _fit(module, data, [LCCCallback(LCCConfig(layers=(LAYER,)))], epochs=2)  # warmup 1: epoch 2 corrects
    assert "training_step" not in module.__dict__  # several processes: see test_distributed.py


# ----------------------------------------------------------------------------- Hugging Face Trainer


def _hf_setup(tmp_path, with_idx=True):
    import datasets
    import transformers

    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=16, num_labels=2,
    )  # fmt: skip
    model = transformers.BertForSequenceClassification(cfg)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 50, (32, 8), generator=g)
    # labels: a token-range rule with 20% flipped: a random-init model's latents ignore them -> MC samples
    labels = ((ids[:, 1] < 25) ^ (torch.rand(32, generator=g) < 0.2)).long()
    cols = {
        "input_ids": ids.tolist(),
        "attention_mask": torch.ones_like(ids).tolist(),
        "labels": labels.tolist(),
    }
    if with_idx:
        cols["idx"] = list(range(32))
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), num_train_epochs=2, per_device_train_batch_size=8, report_to=[],
        use_cpu=True, remove_unused_columns=False, save_strategy="no", logging_steps=1, learning_rate=1e-3,
        disable_tqdm=True,
    )  # fmt: skip
    return model, args, datasets.Dataset.from_dict(cols)


def test_hf_trainer_refreshes_at_epoch_one_and_adds_the_loss(tmp_path):
    from latentcc.integrations.hf import LCCTrainer

    model, args, ds = _hf_setup(tmp_path)
    lcc_cfg = LCCConfig(layers=("bert.pooler",), weight=0.5, k=5, warmup=1, graph_dim=None)
    trainer = LCCTrainer(model=model, args=args, train_dataset=ds, lcc_config=lcc_cfg)
    trainer.train()
    assert trainer.lcc.refreshed_epoch == 1
    logs = trainer.state.log_history
    refresh = [i for i, r in enumerate(logs) if "lcc/time_refresh_s" in r]
    assert len(refresh) == 1 and logs[refresh[0]]["lcc/bert.pooler/clusters"] >= 2
    assert 0 < logs[refresh[0]]["lcc/bert.pooler/mc_fraction"] < 1
    steps = [(i, r["lcc/loss"]) for i, r in enumerate(logs) if "lcc/loss" in r]
    assert len(steps) == 8  # 4 steps per epoch, every step logged
    assert all(v == 0 for i, v in steps if i < refresh[0]) and any(v > 0 for i, v in steps if i > refresh[0])

    # lcc_data: a latentcc-style dataset of (inputs dict, label, idx), fed to the model as model(**inputs)
    trainer.lcc_data = [
        ({"input_ids": torch.tensor(r["input_ids"]), "attention_mask": torch.tensor(r["attention_mask"])},
         r["labels"], r["idx"])
        for r in ds
    ]  # fmt: skip
    stats = trainer.lcc_refresh(5)
    assert trainer.lcc.refreshed_epoch == 5 and stats["bert.pooler/clusters"] >= 2


def test_hf_trainer_without_idx_column_says_how_to_add_it(tmp_path):
    from latentcc.integrations.hf import LCCTrainer

    model, args, ds = _hf_setup(tmp_path, with_idx=False)
    lcc_cfg = LCCConfig(layers=("bert.pooler",), warmup=0, graph_dim=None)
    trainer = LCCTrainer(model=model, args=args, train_dataset=ds, lcc_config=lcc_cfg)
    with pytest.raises(LatentccError, match="'idx'.*remove_unused_columns=False"):
        trainer.train()
    with pytest.raises(LatentccError, match="lcc_config"):
        LCCTrainer(model=model, args=args, train_dataset=ds)
