"""LCC under torch.distributed: 2 CPU processes (gloo) give the single-process partition and targets exactly.

One launch of 2 processes (a module fixture) runs every distributed scenario, each rank saving what it saw; the
tests compare those records with single-process runs in this process. The processes are forked where the OS
allows (they inherit the imports and the data: 5 s instead of 16 s for freshly spawned interpreters, measured
on 2 busy cores) and are killed after a deadline, so a collective that hangs fails the test instead.
"""

import dataclasses
import os
import sys
import time
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from conftest import blobs, tiny_mlp
from latentcc import LCCConfig
from latentcc.latents.collect import collect_latents
from latentcc.lcc.correction import LatentClusterCorrection
from latentcc.plumbing.errors import LatentccError

WORLD = 2
LAYERS = ("1", "2")  # the hidden Linear and its ReLU of tiny_mlp
CFG = LCCConfig(layers=LAYERS, weight=0.5, k=5, warmup=1, interval=1, graph_dim=None)
REFRESHES = 2  # the second one warm-starts Leiden from the first partition


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


class Broken(Dataset):
    """``(x, y, idx)`` over ``x``; ``one_class`` gives every sample class 0, ``nan_at`` a NaN input there."""

    def __init__(self, x, y, *, one_class=False, nan_at=None):
        self.x, self.y, self.one_class, self.nan_at = x, y, one_class, nan_at

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        x = torch.full_like(self.x[i], float("nan")) if i == self.nan_at else self.x[i]
        return x, 0 if self.one_class else int(self.y[i]), i


def _error(fn):
    try:
        fn()
    except LatentccError as e:
        return str(e)
    return None


def _worker(rank, folder, train):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{folder}/store",
        rank=rank,
        world_size=WORLD,
        timeout=timedelta(seconds=60),
    )
    try:
        import latentcc.lcc.correction as correction

        calls = []
        real = correction.epoch_start
        correction.epoch_start = lambda *a, **kw: calls.append(kw.get("name")) or real(*a, **kw)
        model = tiny_mlp()
        model.load_state_dict(torch.load(os.path.join(folder, "model.pt")))
        rec = {"world": dist.get_world_size()}

        # 1. refresh on fixed weights: the gathered latents, partitions and targets
        from latentcc.lcc.distributed import collect_sharded

        lat = collect_sharded(model, train, ["1", "2"], batch_size=100)
        rec["latents"] = None if lat is None else {k: v.copy() for k, v in lat.arrays.items()}
        lcc = LatentClusterCorrection(CFG)
        rec["refresh"] = []
        for epoch in range(1, 1 + REFRESHES):
            stats = lcc.refresh(model, train, epoch=epoch, batch_size=100)
            rec["refresh"].append((lcc.state_dict(), stats))
        rec["calls"] = list(calls)

        # 2. DDP training: DistributedSampler batches, the LCC term on each rank's own indices
        torch.manual_seed(1)
        ddp = DistributedDataParallel(model)
        sampler = DistributedSampler(train, num_replicas=WORLD, rank=rank, shuffle=True, seed=0)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
        lcc = LatentClusterCorrection(dataclasses.replace(CFG, warmup=0))
        rec["train_targets"], rec["lcc_losses"] = [], []
        for epoch in range(2):
            sampler.set_epoch(epoch)
            if lcc.should_refresh(epoch):
                lcc.refresh(ddp, train, epoch=epoch, batch_size=128)  # the DDP wrapper is looked through
                rec["train_targets"].append(lcc.state_dict())
            ddp.train()
            for x, y, idx in DataLoader(train, batch_size=64, sampler=sampler):
                with lcc.capture(ddp) as z:
                    logits = ddp(x)
                l_lcc = lcc.loss(z, idx)
                loss = F.cross_entropy(logits, y) + CFG.weight * l_lcc
                opt.zero_grad()
                loss.backward()
                opt.step()
                rec["lcc_losses"].append(float(l_lcc.detach()))
        rec["params"] = [p.detach().clone() for p in model.parameters()]

        # 3. failures raise on every rank instead of hanging: one class (rank 0 clusters), a NaN on rank 1
        x = torch.stack([train[i][0] for i in range(40)])
        y = np.array([train[i][1] for i in range(40)])
        lcc = LatentClusterCorrection(CFG)
        rec["one_class"] = _error(lambda: lcc.refresh(model, Broken(x, y, one_class=True)))
        rec["nan"] = _error(lambda: lcc.refresh(model, Broken(x, y, nan_at=1)))
        torch.save(rec, os.path.join(folder, f"rank{rank}.pt"))
        dist.barrier()  # leave together: a rank tearing down gloo while the other still saves can hang it
    finally:
        dist.destroy_process_group()


def _exit_after(rank, worker, *args):
    """Run the worker, then end the process at once: a forked child's interpreter shutdown need not join
    thread pools copied from the parent. An exception still propagates (torch.multiprocessing records it)."""
    worker(rank, *args)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def launch(worker, args, *, deadline_s=120.0):
    """Run ``worker(rank, *args)`` in WORLD processes; fail (after killing them) if they outlive the deadline."""
    import torch._dynamo  # noqa: F401  (DDP imports it: 1.5 s once here instead of in every process)

    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    ctx = mp.start_processes(_exit_after, args=(worker, *args), nprocs=WORLD, join=False, start_method=method)
    end = time.monotonic() + deadline_s
    while not ctx.join(timeout=1.0):
        if time.monotonic() > end:
            for p in ctx.processes:
                p.kill()
            pytest.fail(
                f"the {WORLD} DDP processes did not finish within {deadline_s} s (a collective hung?)"
            )


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, digits_splits):
    folder = tmp_path_factory.mktemp("ddp")
    torch.save(tiny_mlp().state_dict(), folder / "model.pt")
    launch(_worker, (str(folder), digits_splits.train))
    return [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def _single_process_refreshes(train):
    model = tiny_mlp()
    lcc = LatentClusterCorrection(CFG)
    return model, [
        (lcc.refresh(model, train, epoch=e, batch_size=100), lcc.state_dict())[1]
        for e in range(1, 1 + REFRESHES)
    ]


def _assert_same_targets(a, b, *, atol=0.0, layers=LAYERS):
    assert list(a["layers"]) == list(b["layers"]) == list(layers)
    for name in layers:
        ta, tb = a["layers"][name]["targets"], b["layers"][name]["targets"]
        assert torch.equal(a["layers"][name]["clusters"], b["layers"][name]["clusters"])
        assert torch.equal(ta["mc_mask"], tb["mc_mask"]) and torch.equal(ta["slot"], tb["slot"])
        assert torch.equal(ta["owners"], tb["owners"]) and torch.equal(ta["orphans"], tb["orphans"])
        assert ta["num_clusters"] == tb["num_clusters"]
        assert ta["vectors"].shape == tb["vectors"].shape
        torch.testing.assert_close(ta["vectors"], tb["vectors"], rtol=0.0, atol=atol)


def test_gathered_latents_are_the_single_process_latents_in_index_order(ddp_run, digits_splits):
    r0, r1 = ddp_run
    assert r0["world"] == r1["world"] == WORLD
    assert r1["latents"] is None  # only rank 0 holds the full arrays
    full = collect_latents(tiny_mlp(), DataLoader(digits_splits.train, batch_size=100), list(LAYERS))
    for name in LAYERS:
        assert (
            r0["latents"][name].shape == full[name].shape == (len(digits_splits.train), full[name].shape[1])
        )
        np.testing.assert_allclose(r0["latents"][name], full[name], rtol=0, atol=1e-6)


def test_ddp_partition_mc_mask_and_targets_equal_the_single_process_refresh(ddp_run, digits_splits):
    _, single = _single_process_refreshes(digits_splits.train)
    for r in range(WORLD):
        for (state, _), ref in zip(ddp_run[r]["refresh"], single, strict=True):
            assert state["refreshed_epoch"] == ref["refreshed_epoch"]
            _assert_same_targets(state, ref, atol=1e-6)
    (s0, st0), (s1, st1) = ddp_run[0]["refresh"][-1], ddp_run[1]["refresh"][-1]
    _assert_same_targets(s0, s1)  # bit-identical on both ranks
    for name in LAYERS:  # the logged statistics agree too (rank 0's stage timings are broadcast)
        assert st0[f"{name}/clusters"] == st1[f"{name}/clusters"] >= 2
        assert st0[f"{name}/mc_fraction"] == st1[f"{name}/mc_fraction"] > 0
        assert st0[f"{name}/time_communities_s"] == st1[f"{name}/time_communities_s"]


def test_only_rank_zero_runs_community_detection(ddp_run):
    assert ddp_run[0]["calls"] == list(LAYERS) * REFRESHES
    assert ddp_run[1]["calls"] == []


def test_ddp_training_with_lcc_loss_keeps_ranks_in_sync(ddp_run):
    r0, r1 = ddp_run
    assert len(r0["train_targets"]) == len(r1["train_targets"]) == 2  # refreshed at epochs 0 and 1
    for a, b in zip(r0["train_targets"], r1["train_targets"], strict=True):
        _assert_same_targets(a, b)
    # DistributedSampler: 629 + 628 samples -> 10 steps a rank per epoch; the LCC term is live
    assert len(r0["lcc_losses"]) == len(r1["lcc_losses"]) == 20
    assert all(np.isfinite(r0["lcc_losses"])) and max(r0["lcc_losses"]) > 0 and max(r1["lcc_losses"]) > 0
    for p0, p1 in zip(r0["params"], r1["params"], strict=True):
        assert torch.equal(p0, p1)  # DDP averaged identical gradients on both ranks


def test_a_failure_on_one_rank_is_raised_on_every_rank(ddp_run):
    r0, r1 = ddp_run
    assert "same class" in r0["one_class"]  # rank 0's own error from epoch_start
    assert "failed on rank 0" in r1["one_class"] and "same class" in r1["one_class"]
    assert "NaN/inf" in r1["nan"]  # sample 1 lies in rank 1's shard (1::2)
    assert "rank(s) [1] failed while collecting latents" in r0["nan"]


# ----------------------------------------------------------------------------- Lightning DDP


def test_lightning_ddp_callback_gives_every_rank_the_single_process_targets(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from latentcc.integrations.lightning import LCCCallback

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            return F.cross_entropy(self(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    class Saver(pl.Callback):  # runs after LCCCallback: sees each epoch's fresh targets, saves them per rank
        def __init__(self, lcc_cb):
            self.lcc_cb, self.rec = lcc_cb, {"targets": [], "losses": []}

        def on_train_epoch_start(self, trainer, pl_module):
            self.rec["targets"].append(self.lcc_cb.lcc.state_dict())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.rec["losses"].append(float(trainer.callback_metrics["lcc/loss"]))

        def on_train_end(self, trainer, pl_module):
            self.rec["world"] = trainer.world_size
            torch.save(self.rec, tmp_path / f"rank{trainer.global_rank}.pt")

    cfg = LCCConfig(layers=("net.1",), weight=0.5, k=5, warmup=0, interval=1, graph_dim=None)
    data = blobs()
    cb = LCCCallback(cfg)
    trainer = pl.Trainer(
        max_epochs=2, accelerator="cpu", devices=WORLD, strategy="ddp_fork", logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[cb, Saver(cb)],
    )  # fmt: skip
    trainer.fit(Module(), DataLoader(data, batch_size=16, shuffle=True))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD))
    assert r0["world"] == r1["world"] == WORLD
    ref = LatentClusterCorrection(cfg)
    ref.refresh(Module(), data, epoch=0)  # the weights the DDP run refreshed on at epoch 0
    assert ref.state_dict()["layers"]["net.1"]["targets"]["mc_mask"].any()
    for rank in (r0, r1):
        assert [t["refreshed_epoch"] for t in rank["targets"]] == [0, 1]
        _assert_same_targets(rank["targets"][0], ref.state_dict(), atol=1e-6, layers=("net.1",))
        assert len(rank["losses"]) == 8 and max(rank["losses"]) > 0  # 60 samples a rank, 4 steps an epoch
    _assert_same_targets(r0["targets"][1], r1["targets"][1], layers=("net.1",))


# ----------------------------------------------------------------------------- Hugging Face Trainer under DDP


def _hf_worker(rank, folder, port):
    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_WORLD_SIZE=str(WORLD)
    )
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from accelerate.state import AcceleratorState, PartialState

    from latentcc.integrations.hf import LCCTrainer
    from test_integrations import _hf_setup

    AcceleratorState._reset_state(True)  # forked: forget the parent's single-process state
    PartialState._reset_state()
    model, args, ds = _hf_setup(folder)
    args.ddp_backend = "gloo"
    cfg = LCCConfig(layers=("bert.pooler",), weight=0.5, k=5, warmup=1, graph_dim=None)
    trainer = LCCTrainer(model=model, args=args, train_dataset=ds, lcc_config=cfg)
    trainer.train()
    rec = {
        "world": trainer.args.world_size,
        "lcc": trainer.lcc.state_dict(),
        "logs": trainer.state.log_history,
    }
    torch.save(rec, os.path.join(folder, f"rank{rank}.pt"))


def test_hf_trainer_under_ddp_refreshes_identical_targets_on_both_ranks(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    import socket

    import latentcc.integrations.hf  # noqa: F401  (imported once here, inherited by the forked processes)
    import test_integrations  # noqa: F401

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch(_hf_worker, (str(tmp_path), port))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD))
    assert r0["world"] == r1["world"] == WORLD
    assert r0["lcc"]["refreshed_epoch"] == r1["lcc"]["refreshed_epoch"] == 1
    _assert_same_targets(r0["lcc"], r1["lcc"], layers=("bert.pooler",))
    assert r0["lcc"]["layers"]["bert.pooler"]["targets"]["mc_mask"].any()
    for r in (r0, r1):  # each rank's own batches (DistributedSampler) got the LCC term after the refresh
        losses = [row["lcc/loss"] for row in r["logs"] if "lcc/loss" in row]
        # (a batch may hold no sample with a target: 10 of the 32 have one; the epoch as a whole does)
        assert len(losses) == 4 and losses[:2] == [0.0, 0.0] and max(losses[2:]) > 0


# ----------------------------------------------------------------------------- train-pass buffer under DDP

TP_STEPS = 4  # of each rank's 10 DistributedSampler batches of 64: some rows are left for the eval pass
TP_CFG = dataclasses.replace(CFG, latent_source="train_pass")  # warmup=1: epoch 0 writes, epoch 1 refreshes


def _no_dropout_mlp():
    """tiny_mlp without its Dropout: a step's latents are a function of the weights and the sample alone."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
    )


def _perturb(model):
    """The same weight change on every rank (and in the reference): rows written before it must keep the old
    weights' latents, rows the refresh collects get the new ones."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))


def _train_pass_worker(rank, folder, train):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{folder}/store", rank=rank, world_size=WORLD,
        timeout=timedelta(seconds=60),
    )  # fmt: skip
    try:
        import latentcc.lcc.correction as correction

        clustered = []
        real = correction.epoch_start

        def recorded(z, y, c, **kw):  # what rank 0 clusters, per layer
            clustered.append((kw["name"], z, y))
            return real(z, y, c, **kw)

        correction.epoch_start = recorded
        model = _no_dropout_mlp()
        ddp = DistributedDataParallel(model)
        lcc = LatentClusterCorrection(TP_CFG)
        assert lcc.begin_epoch(ddp, train, 0) == {}  # the buffer, no refresh
        sampler = DistributedSampler(train, num_replicas=WORLD, rank=rank, shuffle=True, seed=0)
        sampler.set_epoch(0)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.0)  # a full DDP step that leaves the weights as they are
        batches = []
        ddp.train()
        for s, (x, y, idx) in enumerate(DataLoader(train, batch_size=64, sampler=sampler)):
            if s == TP_STEPS:
                break
            with lcc.capture(ddp) as z:
                logits = ddp(x)
            loss = F.cross_entropy(logits, y) + TP_CFG.weight * lcc.loss(z, idx, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            batches.append(idx.clone())
        rec = {"batches": batches, "count": lcc.buffer.count.clone()}
        _perturb(model)
        rec["stats"] = lcc.begin_epoch(ddp, train, 1, batch_size=100)
        rec["state"], rec["clustered"] = lcc.state_dict(), clustered
        torch.save(rec, os.path.join(folder, f"rank{rank}.pt"))
        dist.barrier()  # leave together: a rank tearing down gloo while the other still saves can hang it
    finally:
        dist.destroy_process_group()


def test_ddp_train_pass_refresh_clusters_every_ranks_rows_and_gives_all_ranks_the_same_targets(
    tmp_path, digits_splits
):
    train = digits_splits.train
    n = len(train)
    launch(_train_pass_worker, (str(tmp_path), train))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD))
    # each rank wrote exactly the rows of its own DistributedSampler batches (disjoint shards: 1258 = 2 x 629)
    mine = [torch.cat(r["batches"]) for r in (r0, r1)]
    for r, idx in zip((r0, r1), mine, strict=True):
        want = torch.zeros(n, dtype=torch.int32)
        want[idx] = 1
        assert torch.equal(r["count"], want)
    written = torch.cat(mine).unique().numpy()
    assert written.size == WORLD * TP_STEPS * 64
    for r in (r0, r1):
        assert r["stats"]["rows_from_training"] == written.size
        assert r["stats"]["rows_eval_pass"] == n - written.size

    # only rank 0 clustered: the rows its steps and rank 1's wrote, bit for bit (same weights, same batches,
    # recomputed here), and the eval-pass latents of the perturbed weights for the others
    assert r1["clustered"] == [] and [c[0] for c in r0["clustered"]] == list(LAYERS)
    model = _no_dropout_mlp()
    ref_rows = {name: np.zeros((n, 32), dtype=np.float32) for name in LAYERS}
    model.train()
    for idx in [b for r in (r0, r1) for b in r["batches"]]:
        x = torch.stack([train[int(i)][0] for i in idx])
        with torch.no_grad(), LatentClusterCorrection(TP_CFG).capture(model) as z:
            model(x)
        for name in LAYERS:
            ref_rows[name][idx.numpy()] = z[name].numpy()
    _perturb(model)
    eval_pass = collect_latents(model, DataLoader(train, batch_size=100), list(LAYERS))
    unseen = np.setdiff1d(np.arange(n), written)
    for name, z, y in r0["clustered"]:
        assert np.array_equal(z[written], ref_rows[name][written])
        np.testing.assert_allclose(z[unseen], eval_pass[name][unseen], rtol=0, atol=1e-6)
        # the written rows are not collected again with the new weights
        assert abs(z[written] - eval_pass[name][written]).max() > 1e-2
        assert np.array_equal(y, eval_pass.labels)

    # both ranks hold rank 0's targets, which are those of a single process clustering the same latents
    from latentcc.lcc.epoch import epoch_start

    _assert_same_targets(r0["state"], r1["state"])
    starts = {name: epoch_start(z, y, TP_CFG, name=name) for name, z, y in r0["clustered"]}
    single = {
        n: {"clusters": torch.from_numpy(e.clusters), "targets": e.targets.state_dict()}
        for n, e in starts.items()
    }
    _assert_same_targets(r0["state"], {"layers": single})
    assert r0["state"]["layers"]["2"]["targets"]["mc_mask"].any()
    # and those of one process that writes both ranks' batches itself (its eval pass batches the unwritten
    # rows differently, hence the tolerance on the target vectors)
    model, lcc = _no_dropout_mlp(), LatentClusterCorrection(TP_CFG)
    lcc.begin_epoch(model, train, 0)
    model.train()
    for idx in [b for r in (r0, r1) for b in r["batches"]]:
        x, y = torch.stack([train[int(i)][0] for i in idx]), torch.tensor([train[int(i)][1] for i in idx])
        with lcc.capture(model) as z:
            model(x)
        lcc.loss(z, idx, y)
    _perturb(model)
    assert lcc.begin_epoch(model, train, 1, batch_size=100)["rows_from_training"] == written.size
    _assert_same_targets(r0["state"], lcc.state_dict(), atol=1e-6)
