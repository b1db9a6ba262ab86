import os

import numpy as np
import pytest
import torch

# Tests are CPU-only and must not oversubscribe the 2 cores CI has.
torch.set_num_threads(min(2, os.cpu_count() or 1))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def digits_splits():
    from latentcc.data import load_dataset

    return load_dataset("digits", seed=0)


def tiny_mlp(num_classes: int = 10, in_dim: int = 64) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(in_dim, 32),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.2),  # exercises RNG state across resume
        torch.nn.Linear(32, num_classes),
    )


def mc_distance(lcc, model, data, layer: str) -> float:
    """Mean ||z - t|| over the samples that have an LCC target, from a fresh eval-mode pass over ``data``."""
    t = lcc.targets[layer]
    x = torch.stack([data[i][0] for i in range(len(data))])
    model.eval()
    with torch.no_grad(), lcc.capture(model) as z:
        model(x)
    has = t.slot >= 0
    return float((z[layer][has] - t.vectors[t.slot[has]]).norm(dim=1).mean())


@pytest.fixture
def one_thread():
    """One intra-op thread: the same float operations in the same order in every pass of a test (and in a
    DDP test's workers as in its single-process references)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class CrashAt:
    """A fit callback that interrupts the run at the start of 0-based ``epoch`` (after the previous checkpoint)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_start(self, ctx) -> None:
        if ctx.epoch == self.epoch:
            raise KeyboardInterrupt


def blobs():
    """3 Gaussian blobs in 8-D (120 samples) with 15 % flipped labels: a small tabular training split in which
    LCC finds misclustered samples."""
    from latentcc.data import from_arrays

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    x = rng.normal(size=(120, 8)).astype(np.float32) + 4.0 * np.eye(3, 8, dtype=np.float32)[y]
    y = np.where(rng.random(120) < 0.15, (y + 1) % 3, y)
    return from_arrays(x, y, kind="tabular", val_fraction=0.0, test_fraction=0.0).train
