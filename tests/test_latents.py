"""collect_latents: rows in sample-index order whatever the loader order, exact values, clear errors."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from latentcc.data import from_arrays
from latentcc.latents.collect import collect_latents
from latentcc.plumbing.errors import LatentccError


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.drop = torch.nn.Dropout(0.5)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        h = self.drop(self.bn(self.conv(x)))
        return self.fc(h.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.random((50, 1, 6, 6), dtype=np.float32)
    y = rng.integers(0, 3, 50)
    return from_arrays(x, y, val_fraction=0.0, test_fraction=0.0).train


def test_rows_follow_sample_index_whatever_the_loader_order(data):
    model = Net()
    a = collect_latents(model, DataLoader(data, batch_size=7, shuffle=False), ["conv", "fc"])
    b = collect_latents(
        model,
        DataLoader(data, batch_size=7, shuffle=True, generator=torch.Generator().manual_seed(1)),
        ["conv", "fc"],
    )
    for name in ("conv", "fc"):
        np.testing.assert_array_equal(a[name], b[name])
    np.testing.assert_array_equal(a.labels, data.targets)
    np.testing.assert_array_equal(b.labels, data.targets)
    # values equal a direct eval-mode forward, pooled by global average
    model.eval()
    x = torch.stack([data[i][0] for i in range(len(data))])
    with torch.no_grad():
        conv = model.conv(x).mean(dim=(2, 3))
        logits = model(x)
    np.testing.assert_allclose(a["conv"], conv.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a["fc"], logits.numpy(), rtol=1e-5, atol=1e-6)
    assert a["conv"].shape == (50, 4) and a["conv"].dtype == np.float32


def test_mode_restored_hooks_removed_no_bn_update(data):
    model = Net()
    model.train()
    stats = model.bn.running_mean.clone()
    collect_latents(model, DataLoader(data, batch_size=10), "conv")
    assert model.training and model.drop.training
    assert torch.equal(model.bn.running_mean, stats)  # eval-mode pass leaves BN statistics alone
    assert not model.conv._forward_hooks and not model._forward_pre_hooks
    model.bn.eval()  # a frozen BatchNorm in a training model keeps its own mode (not model.train(True))
    collect_latents(model, DataLoader(data, batch_size=10), "conv")
    assert model.training and model.drop.training and not model.bn.training


def test_flatten_projection_and_memmap(tmp_path, data):
    model = Net()
    flat = collect_latents(model, DataLoader(data, batch_size=16), "conv", pool="flatten")
    assert flat["conv"].shape == (50, 4 * 6 * 6)
    proj = collect_latents(model, DataLoader(data, batch_size=16), "conv", pool="flatten", dim=8, seed=3)
    g = torch.Generator().manual_seed(3)
    r = (torch.randn(144, 8, generator=g) / np.sqrt(8)).numpy()
    np.testing.assert_allclose(proj["conv"], flat["conv"] @ r, rtol=1e-4, atol=1e-5)
    mm = collect_latents(
        model, DataLoader(data, batch_size=16), "conv", pool="flatten", memory_budget=1, memmap_dir=tmp_path
    )
    assert isinstance(mm["conv"], np.memmap) and len(mm.files) == 1 and mm.files[0].parent == tmp_path
    np.testing.assert_array_equal(np.asarray(mm["conv"]), flat["conv"])


def test_errors_name_the_problem(data):
    model = Net()
    with pytest.raises(LatentccError, match="Did you mean 'conv'"):
        collect_latents(model, DataLoader(data, batch_size=8), "conv1")
    plain = TensorDataset(torch.zeros(4, 1, 6, 6), torch.zeros(4, dtype=torch.long))
    with pytest.raises(LatentccError, match=r"\(x, y, idx\)"):
        collect_latents(model, DataLoader(plain, batch_size=2), "conv")
    with pytest.raises(LatentccError, match="did not see"):
        collect_latents(model, DataLoader(data, batch_size=8, drop_last=True), "conv")
    with pytest.raises(LatentccError, match="'pool'"):
        collect_latents(model, DataLoader(data, batch_size=8), "conv", pool="max")
    bad = Net()
    with torch.no_grad():
        bad.conv.weight[0] = float("nan")
    with pytest.raises(LatentccError, match="Layer 'conv' produced NaN"):
        collect_latents(bad, DataLoader(data, batch_size=8), "conv")
    assert not bad.conv._forward_hooks  # removed on error too


def test_a_shard_gives_the_full_rows_of_its_indices(data):
    """indices= (one DDP rank's part): rows are the shard's samples in shard order, from any loader order."""
    model = Net()
    full = collect_latents(model, DataLoader(data, batch_size=7), ["conv", "fc"])
    shard = np.arange(1, 50, 3)
    part = collect_latents(
        model, DataLoader(data, batch_size=4, sampler=shard[::-1].tolist()), ["conv", "fc"], indices=shard
    )
    assert full.index is None and part.index.tolist() == shard.tolist()
    for name in ("conv", "fc"):
        assert part[name].shape == (shard.size, full[name].shape[1])
        np.testing.assert_allclose(part[name], full[name][shard], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(part.labels, full.labels[shard])
    with pytest.raises(LatentccError, match="not in its 'indices' shard"):
        collect_latents(model, DataLoader(data, batch_size=8), "conv", indices=shard)
    with pytest.raises(LatentccError, match="did not see 1 of 17"):
        collect_latents(
            model, DataLoader(data, batch_size=8, sampler=shard[:-1].tolist()), "conv", indices=shard
        )
    with pytest.raises(LatentccError, match="'indices'.*distinct sample indices in 0..49"):
        collect_latents(model, DataLoader(data, batch_size=8), "conv", indices=np.array([0, 0, 50]))


def test_float16_storage_in_memory_and_memmapped(tmp_path, data):
    model = Net()
    loader = DataLoader(data, batch_size=16)
    full = collect_latents(model, loader, "conv", pool="flatten")["conv"]
    half = collect_latents(model, loader, "conv", pool="flatten", dtype="float16")
    assert half["conv"].dtype == np.float16
    np.testing.assert_array_equal(half["conv"], full.astype(np.float16))  # the same values, rounded once
    mm = collect_latents(
        model, loader, "conv", pool="flatten", dtype="float16", memory_budget=1, memmap_dir=tmp_path
    )
    assert isinstance(mm["conv"], np.memmap) and mm["conv"].dtype == np.float16
    assert mm.files[0].stat().st_size == full.size * 2  # half the bytes of float32
    np.testing.assert_array_equal(np.asarray(mm["conv"]), full.astype(np.float16))

    class Big(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Identity()  # a named layer whose outputs exceed float16's range

        def forward(self, x):
            return self.lin(x.flatten(1) * 1e6)

    big = Big()
    with pytest.raises(LatentccError, match="'dtype'.*65504"):
        collect_latents(big, loader, "lin", dtype="float16")
    with pytest.raises(LatentccError, match="'dtype'"):
        collect_latents(model, loader, "conv", dtype="bfloat16")


def test_meta_models_bad_labels_int_inputs_and_missing_devices_are_refused(data):
    loader = DataLoader(data, batch_size=16)
    with pytest.raises(LatentccError, match=r"'model' parameter of collect_latents must be a model whose weights "
                       r"hold values.*'meta' device.*to_empty"):  # fmt: skip
        collect_latents(Net().to("meta"), loader, "conv")
    beyond = f"cuda:{torch.cuda.device_count()}"
    with pytest.raises(LatentccError, match=rf"'device' parameter of collect_latents must be a device this "
                       rf"machine has\. Got '{beyond}'"):  # fmt: skip
        collect_latents(Net(), loader, "conv", device=beyond)
    x = torch.stack([data[i][0] for i in range(len(data))])
    y = torch.tensor([data[i][1] for i in range(len(data))])
    idx = torch.arange(len(data))
    # float labels were cast (2.7 -> 2) and one-hot rows failed with a raw broadcast error
    for labels, msg in [(y + 0.7, r"labels of dtype torch.float32"), (torch.eye(3)[y], r"one-hot or soft")]:
        with pytest.raises(
            LatentccError, match=r"'loader' parameter of collect_latents must be integer class ids.*" + msg
        ):
            collect_latents(Net(), DataLoader(TensorDataset(x, labels, idx), batch_size=16), "conv")
    with pytest.raises(LatentccError, match=r"float inputs for a model that computes in float32\. Got 'inputs of "
                       r"dtype torch.int64'.*Fix: convert the data to float"):  # fmt: skip
        collect_latents(Net(), DataLoader(TensorDataset((x * 16).long(), y, idx), batch_size=16), "conv")
    ok = collect_latents(Net(), DataLoader(TensorDataset(x, y.int(), idx), batch_size=16), "conv")
    assert ok.labels.dtype == np.int64 and np.array_equal(ok.labels, y.numpy())
