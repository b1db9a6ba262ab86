"""LCC's train-pass latent buffer (LCCConfig.latent_source="train_pass"): rows, refreshes, resume, no host reads.

The references are computed here, independently of the buffer: the latents a step captured (pooled with
torch ops, projected with ``projection_matrix``), an eval-mode ``collect_latents`` pass, ``epoch_start`` on
the latents a refresh clustered, and an uninterrupted ``fit`` for the resumed one.
"""

import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from conftest import CrashAt, tiny_mlp
from latentcc import LCCConfig
from latentcc.config import TrainConfig
from latentcc.latents.collect import collect_latents, projection_matrix
from latentcc.lcc.buffer import LatentBuffer
from latentcc.lcc.correction import LatentClusterCorrection
from latentcc.lcc.epoch import epoch_start
from latentcc.train import fit

# warmup=1: begin_epoch(epoch=0) allocates the buffer and refreshes nothing, so the steps below drive it
LCC = LCCConfig(
    layers=("2",), weight=0.5, k=5, warmup=1, interval=1, graph_dim=None, latent_source="train_pass"
)


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


def tiny_conv(num_classes: int = 10) -> torch.nn.Module:
    """A 4-D (B, C, H, W) layer "1" for pool="avg"."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 8 * 8, num_classes),
    )


# (model, layer, LCCConfig changes, the pooled/projected latent of a captured output, computed without latentcc)
CASES = {
    "mlp_2d": (tiny_mlp, "2", {}, lambda z: z),
    "conv_avg": (tiny_conv, "1", {"pool": "avg"}, lambda z: z.mean(dim=(2, 3))),
    "mlp_dim": (tiny_mlp, "1", {"dim": 8}, lambda z: z @ projection_matrix(32, 8, seed=0)),
}


def _steps(lcc, model, loader, *, steps=None, labels=True, opt=None):
    """A user's training loop for ``steps`` batches; returns [(idx, y, {layer: the step's captured output})]."""
    model.train()
    seen = []
    for s, (x, y, idx) in enumerate(loader):
        if steps is not None and s == steps:
            break
        with lcc.capture(model) as z:
            logits = model(x)
        loss = lcc.loss(z, idx, y if labels else None) + torch.nn.functional.cross_entropy(logits, y)
        seen.append((idx.clone(), y.clone(), {n: t.detach().clone() for n, t in z.items()}))
        if opt is not None:  # the weights move between steps: each row must be its own step's latent
            opt.zero_grad()
            loss.backward()
            opt.step()
    return seen


def _expected_rows(seen, name, pooled, n):
    """(N, D) rows of the latest step that held each sample, (N,) how often that step held it (0 = never)."""
    rows = None
    count = torch.zeros(n, dtype=torch.int32)
    for idx, _, z in seen:
        p = pooled(z[name])
        if rows is None:
            rows = torch.zeros(n, p.shape[1], dtype=p.dtype)
        rows[idx] = p
        count[idx] = 1
    return rows, count


def _loader(data, batch_size, seed):
    return DataLoader(
        data, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )


# ----------------------------------------------------------------------------- 1. what the steps write


@pytest.mark.parametrize("case", list(CASES))
def test_buffer_rows_are_the_latents_of_the_latest_step_that_held_each_sample(digits_splits, case):
    make, layer, changes, pooled = CASES[case]
    train = digits_splits.train
    n = len(train)
    model = make()
    lcc = LatentClusterCorrection(dataclasses.replace(LCC, layers=(layer,), **changes))
    assert lcc.begin_epoch(model, train, epoch=0) == {}  # warmup: no refresh, an empty buffer
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    # two shuffled passes, weights moving: every row must hold the second pass's latent, written once
    seen = [s for epoch in (0, 1) for s in _steps(lcc, model, _loader(train, 64, epoch), opt=opt)]
    rows, count = _expected_rows(seen, layer, pooled, n)
    buf = lcc.buffer
    assert buf.num_samples == n and list(buf.sums) == [layer]
    assert buf.sums[layer].shape == rows.shape == (n, {"mlp_2d": 32, "conv_avg": 4, "mlp_dim": 8}[case])
    assert torch.equal(buf.sums[layer], rows)
    assert torch.equal(buf.count, torch.ones(n, dtype=torch.int32))
    assert torch.equal(buf.labels, torch.tensor([train[i][1] for i in range(n)]))
    first, _ = _expected_rows(seen[: len(seen) // 2], layer, pooled, n)
    assert (buf.sums[layer] - first).abs().max() > 1e-3  # the first pass's rows were overwritten, not kept

    # a partial epoch on a fresh buffer: 3 batches of 64 written, the other rows untouched
    lcc.buffer = None
    lcc.begin_epoch(model, train, epoch=0)
    seen = _steps(lcc, model, _loader(train, 64, 2), steps=3, opt=opt)
    rows, count = _expected_rows(seen, layer, pooled, n)
    assert int(count.sum()) == 192 and torch.equal(lcc.buffer.count, count)
    assert torch.equal(lcc.buffer.sums[layer], rows)  # zero in the unwritten rows
    assert bool((lcc.buffer.labels[count == 0] == -1).all())


def test_buffer_rows_are_in_the_space_of_the_eval_pass_latents(digits_splits):
    """Layers before the dropout: train-mode and eval-mode latents agree, so the buffer rows must equal an
    eval-mode collect_latents pass (same pooling, same projection) up to the batch's float rounding."""
    train = digits_splits.train
    for make, layer, changes, _ in CASES.values():
        model = make()
        cfg = dataclasses.replace(LCC, layers=(layer,), **changes)
        lcc = LatentClusterCorrection(cfg)
        lcc.begin_epoch(model, train, epoch=0)
        _steps(lcc, model, _loader(train, 64, 0))
        ref = collect_latents(
            model, DataLoader(train, batch_size=100), [layer], pool=cfg.pool, dim=cfg.dim, seed=0
        )
        assert lcc.buffer.sums[layer].shape == ref[layer].shape
        np.testing.assert_allclose(lcc.buffer.sums[layer].numpy(), ref[layer], rtol=0, atol=1e-6)


@pytest.mark.parametrize("dim", [None, 8])
def test_a_bfloat16_models_buffer_rows_are_projected_like_the_eval_pass(digits_splits, dim):
    """The buffer's contract: rows "in the space of the collected ones". collect_latents casts a low-precision
    latent to float32 *before* the projection; the step must do the same, or a refresh mixes written rows
    projected in bfloat16 (measured: off by up to 5.6e-3 on latents of size 1.7) with eval-pass rows."""
    train = digits_splits.train
    model = tiny_mlp().to(torch.bfloat16)
    lcc = LatentClusterCorrection(dataclasses.replace(LCC, layers=("1",), dim=dim))  # before the dropout
    lcc.begin_epoch(model, train, epoch=0)
    model.train()
    for x, y, idx in DataLoader(train, batch_size=64):
        with lcc.capture(model) as z:
            model(x.to(torch.bfloat16))
        lcc.loss(z, idx, y)
    ref = collect_latents(model, DataLoader(train, batch_size=64), ["1"], dim=dim)  # the same batches
    assert lcc.buffer.sums["1"].dtype == torch.float32 and ref["1"].dtype == np.float32
    np.testing.assert_allclose(lcc.buffer.sums["1"].numpy(), ref["1"], rtol=0, atol=1e-6)


def test_a_repeated_index_in_one_batch_gets_the_mean_of_its_rows(digits_splits):
    train = digits_splits.train
    model = tiny_mlp()
    lcc = LatentClusterCorrection(LCC)
    lcc.begin_epoch(model, train, epoch=0)
    model.train()

    def step(samples, idx):
        x = torch.stack([train[s][0] for s in samples])
        y = torch.tensor([train[i][1] for i in idx])
        with lcc.capture(model) as z:
            model(x)
        lcc.loss(z, torch.tensor(idx), y)
        return z["2"].detach()

    step([3, 20, 30], [3, 20, 30])  # an earlier batch that held sample 3: must not count
    z = step([3, 5, 10, 7, 11], [3, 5, 3, 7, 3])  # index 3 three times, with three different inputs
    buf = lcc.buffer
    assert buf.count[3] == 3 and buf.count[5] == buf.count[7] == 1 and buf.count[20] == 1
    assert torch.equal(buf.sums["2"][3], torch.zeros(32).add_(z[0]).add_(z[2]).add_(z[4]))
    asked = []
    lat, counts = buf.assemble(
        lambda rows: asked.append(rows.copy()) or _eval_rows(model, train, rows), ["2"]
    )
    assert counts == {"rows_from_training": 5, "rows_eval_pass": len(train) - 5}
    assert np.array_equal(np.sort(asked[0]), np.setdiff1d(np.arange(len(train)), [3, 5, 7, 20, 30]))
    mean = torch.stack([z[0], z[2], z[4]]).double().mean(0)
    np.testing.assert_allclose(lat["2"][3], mean.numpy(), rtol=1e-6, atol=1e-7)
    assert abs(lat["2"][3] - z[0].numpy()).max() > 1e-3  # the three inputs differ: a mean, not one row
    assert np.array_equal(lat["2"][5], z[1].numpy()) and np.array_equal(lat["2"][7], z[3].numpy())


def _eval_rows(model, data, rows, layers=("2",), **kw):
    from latentcc.lcc.distributed import index_loader

    if rows.size == 0:
        return None
    loader = index_loader(data, rows, batch_size=256, num_workers=0)
    return collect_latents(model, loader, list(layers), indices=rows, **kw)


# ----------------------------------------------------------------------------- 2. what a refresh clusters


def _targets(state):
    return {n: (s["clusters"], s["targets"]) for n, s in state["layers"].items()}


def _assert_same(a, b):
    assert list(a) == list(b)
    for name in a:
        assert torch.equal(a[name][0], b[name][0])
        ta, tb = a[name][1], b[name][1]
        for key in ("mc_mask", "slot", "vectors", "owners", "orphans"):
            assert torch.equal(ta[key], tb[key]), key
        assert ta["num_clusters"] == tb["num_clusters"] and ta["scale"] == tb["scale"]


def test_first_refresh_with_nothing_written_is_the_eval_pass_refresh(digits_splits):
    train = digits_splits.train
    model = tiny_mlp()
    cfg = dataclasses.replace(LCC, layers=("1", "2"), warmup=0)
    lcc = LatentClusterCorrection(cfg)
    stats = lcc.begin_epoch(model, train, epoch=0)
    assert stats["rows_eval_pass"] == len(train) and stats["rows_from_training"] == 0
    ref = LatentClusterCorrection(dataclasses.replace(cfg, latent_source="eval_pass"))
    ref_stats = ref.begin_epoch(model, train, epoch=0)
    assert "rows_eval_pass" not in ref_stats
    _assert_same(_targets(lcc.state_dict()), _targets(ref.state_dict()))
    assert ref.state_dict()["layers"]["2"]["targets"]["mc_mask"].any()  # something to compare
    for name in ("1", "2"):
        assert stats[f"{name}/clusters"] == ref_stats[f"{name}/clusters"] >= 2


def test_refresh_after_a_partial_epoch_clusters_buffer_rows_and_eval_pass_rows(digits_splits, monkeypatch):
    import latentcc.lcc.correction as correction

    train = digits_splits.train
    n = len(train)
    model = tiny_mlp()
    cfg = dataclasses.replace(LCC, layers=("2",), warmup=0)
    lcc = LatentClusterCorrection(cfg)
    lcc.begin_epoch(model, train, epoch=0)  # the first refresh (eval pass); the buffer is empty after it
    assert int(lcc.buffer.count.sum()) == 0
    first_clusters = lcc.last["2"].clusters.copy()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = _loader(train, 50, 3)
    seen = _steps(lcc, model, loader, steps=5, opt=opt)  # 250 rows, written with their labels
    unlabelled = _steps(lcc, model, _loader(train, 20, 4), steps=1, labels=False)  # 20 rows without labels
    written = torch.cat([idx for idx, _, _ in seen]).numpy()
    # a row written with a label keeps it (and takes the later latent); the others have none
    no_label = np.setdiff1d(unlabelled[0][0].numpy(), written)
    assert 0 < no_label.size < 20  # both kinds present
    rows, _ = _expected_rows(seen + unlabelled, "2", lambda z: z, n)

    asked, assembled, clustered = [], [], []
    real_assemble = lcc.buffer.assemble

    def assemble(collect_rows, names):
        lat, counts = real_assemble(lambda r: asked.append(r.copy()) or collect_rows(r), names)
        assembled.append(lat)
        return lat, counts

    monkeypatch.setattr(lcc.buffer, "assemble", assemble)

    def recorded(z, y, c, **kw):
        clustered.append((z, y))
        return epoch_start(z, y, c, **kw)

    monkeypatch.setattr(correction, "epoch_start", recorded)
    stats = lcc.begin_epoch(model, train, epoch=1)
    # rows written without y count too: the first refresh's eval pass recorded every sample's label
    written = np.union1d(written, no_label)
    assert written.size == 250 + no_label.size and stats["rows_from_training"] == written.size
    assert stats["rows_eval_pass"] == n - written.size
    unseen = np.setdiff1d(np.arange(n), written)
    assert len(asked) == 1 and np.array_equal(np.sort(asked[0]), unseen)

    lat = assembled[0]
    assert clustered[0][0] is lat["2"]  # the refresh clustered exactly the assembled latents
    assert np.array_equal(lat["2"][written], rows[written].numpy())  # the steps' latents, bit for bit
    ref = collect_latents(model, DataLoader(train, batch_size=100), ["2"])  # the weights after the steps
    np.testing.assert_allclose(lat["2"][unseen], ref["2"][unseen], rtol=0, atol=1e-6)
    assert abs(lat["2"][written] - ref["2"][written]).max() > 1e-3  # stale rows: weights moved since
    assert np.array_equal(lat.labels, ref.labels)
    # the targets are those of these latents (warm-started from the first refresh's partition)
    want = epoch_start(lat["2"], lat.labels, cfg, initial=first_clusters, name="2")
    assert np.array_equal(lcc.last["2"].clusters, want.clusters)
    _assert_same(
        _targets(lcc.state_dict()), {"2": (torch.from_numpy(want.clusters), want.targets.state_dict())}
    )
    assert int(lcc.buffer.count.sum()) == 0  # reset: the next refresh sees only later steps


def test_a_row_whose_label_was_never_recorded_is_collected_by_the_eval_pass(digits_splits):
    train = digits_splits.train
    model = tiny_mlp()
    lcc = LatentClusterCorrection(dataclasses.replace(LCC, layers=("2",), warmup=1))
    lcc.begin_epoch(model, train, epoch=0)  # warmup: the buffer exists, no refresh, no label known yet
    labelled = torch.cat([i for i, _, _ in _steps(lcc, model, _loader(train, 50, 3), steps=2)]).numpy()
    unlabelled = _steps(lcc, model, _loader(train, 20, 4), steps=1, labels=False)[0][0].numpy()
    no_label = np.setdiff1d(unlabelled, labelled)
    assert no_label.size > 0
    stats = lcc.begin_epoch(model, train, epoch=1)
    assert stats["rows_from_training"] == labelled.size == 100  # rows without a label: an eval pass
    assert stats["rows_eval_pass"] == len(train) - 100


# ----------------------------------------------------------------------------- 3. resume


def _strip(history):
    return [{k: v for k, v in r.items() if not k.endswith("_s") and k != "lcc_overhead"} for r in history]


@pytest.mark.parametrize("max_steps", [0, 10])
def test_resume_with_train_pass_is_bitwise_the_uninterrupted_run(tmp_path, digits_splits, max_steps):
    """The epoch-2 refresh clusters epoch 1's buffer, which only the checkpoint carries across the crash."""
    cfg = TrainConfig(epochs=4, batch_size=32, lr=1e-2, progress=False, tensorboard=False,
                      max_steps_per_epoch=max_steps)  # fmt: skip
    full = fit(tiny_mlp(), digits_splits, config=cfg, out_dir=tmp_path / "full", lcc=LCC)

    with pytest.raises(KeyboardInterrupt):
        fit(tiny_mlp(), digits_splits, config=cfg, out_dir=tmp_path / "cut", lcc=LCC, callbacks=[CrashAt(2)])
    resumed = fit(tiny_mlp(), digits_splits, config=cfg, out_dir=tmp_path / "cut", lcc=LCC, resume=True)
    assert _strip(resumed.history) == _strip(full.history)
    n, written = len(digits_splits.train), (max_steps * 32 if max_steps else len(digits_splits.train))
    for row in full.history[1:]:  # each refresh clusters the previous epoch's rows, the rest by an eval pass
        assert row["lcc/rows_from_training"] == written and row["lcc/rows_eval_pass"] == n - written
    assert "lcc/rows_from_training" not in full.history[0]  # warmup epoch: no refresh
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # the best-on-val weights
    last = "checkpoints/epoch-0004/model.safetensors"
    wa, wb = load_file(tmp_path / "full" / last), load_file(tmp_path / "cut" / last)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)  # the last epoch's weights


# ----------------------------------------------------------------------------- 5. no host reads per step


def test_a_step_reads_nothing_back_to_the_host():
    """A 'meta' tensor has shapes but no values: any host read (``.item()``, ``int()``, ``.cpu()``, ``nonzero``,
    a boolean mask) raises on it. The step's train-pass work (pooling, projection, the buffer copy) runs on
    'meta' without error, so it has no such read, which on a GPU would be a sync every step."""
    probe = torch.zeros(3, device="meta")
    for read in (lambda: int(probe.max()), lambda: probe.cpu(), lambda: probe[probe > 0]):
        with pytest.raises((RuntimeError, NotImplementedError)):
            read()  # the premise: meta tensors refuse host reads
    buf = LatentBuffer(100, "meta")
    idx = torch.tensor([4, 9, 4, 99], device="meta")
    buf.write({"a": torch.empty(4, 6, device="meta")}, idx, torch.empty(4, dtype=torch.int64, device="meta"))
    assert buf.sums["a"].shape == (100, 6) and buf.sums["a"].device.type == "meta"

    model = tiny_mlp().to("meta")
    lcc = LatentClusterCorrection(dataclasses.replace(LCC, layers=("1", "2"), dim=8))
    lcc.buffer = LatentBuffer(100, "meta")  # what begin_epoch allocates on the model's device
    with lcc.capture(model) as z:
        model(torch.empty(16, 1, 8, 8, device="meta"))
    idx = torch.empty(16, dtype=torch.int64, device="meta")
    loss = lcc.loss(z, idx, torch.empty(16, dtype=torch.int64, device="meta"))  # before the first refresh
    loss.backward()
    assert {n: tuple(t.shape) for n, t in lcc.buffer.sums.items()} == {"1": (100, 8), "2": (100, 8)}


def test_a_loss_on_evaluation_batches_never_writes_the_buffer(digits_splits):
    """model.eval() with autograd on (a custom validation loop) or torch.no_grad: no row is written."""
    train = digits_splits.train
    model = tiny_mlp()
    lcc = LatentClusterCorrection(dataclasses.replace(LCC, layers=("2",), warmup=1))
    lcc.begin_epoch(model, train, epoch=0)
    x, y, idx = next(iter(DataLoader(digits_splits.val, batch_size=32)))
    model.eval()
    with lcc.capture(model) as z:
        model(x)
    lcc.loss(z, idx, y)
    model.train()
    with torch.no_grad(), lcc.capture(model) as z:
        model(x)
        lcc.loss(z, idx, y)
    assert int(lcc.buffer.count.sum()) == 0 and int((lcc.buffer.labels >= 0).sum()) == 0
    with lcc.capture(model) as z:  # a training step does write
        model(x)
    lcc.loss(z, idx, y)
    assert int(lcc.buffer.count.sum()) == 32
