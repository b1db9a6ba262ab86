"""Collect the latents of named layers over a whole dataset, one row per sample *index*.

Rows are placed by the sample index each batch carries, so the result is the same whatever order
the loader yields (shuffled or not). The original LCC code compared cluster labels and true labels
in two different orders; here there is one index space and nothing to re-sort.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from latentcc.latents.layers import POOLS, capture, model_mode, pool_latent, resolve_layers
from latentcc.plumbing.batch import (
    check_labels,
    check_materialised,
    input_dtype,
    read_batches,
    run_model,
    to_device,
    unpack_batch,
)
from latentcc.plumbing.errors import LatentccError, param_error
from latentcc.plumbing.progress import track

# Above this many bytes per layer, latents go to one memory-mapped file instead of RAM.
DEFAULT_MEMORY_BUDGET = 4 * 2**30


@dataclass
class Latents:
    """Per-layer latents ``arrays[name]`` of shape (N, D) float32 and ``labels`` (N,) int64, row i = sample i.

    For a shard (``collect_latents(..., indices=...)``), ``index`` (n,) int64 holds the dataset sample index of
    each row and the arrays have n rows; ``index`` is None when row i is sample i.
    """

    arrays: dict[str, np.ndarray]
    labels: np.ndarray
    files: list[Path] = field(default_factory=list)  # memory-mapped backing files, if any
    index: np.ndarray | None = None

    def __getitem__(self, layer: str) -> np.ndarray:
        return self.arrays[layer]

    @property
    def num_samples(self) -> int:
        return len(self.labels)


_STORAGE = ("auto", "float32", "float64", "float16")


def _storage(dtype: str, latent: torch.dtype) -> str:
    """The storage dtype of one layer's latents: ``dtype``, or for "auto" float64 iff the layer computes in it."""
    if dtype != "auto":
        return dtype
    return "float64" if latent == torch.float64 else "float32"


def projection_matrix(
    d_in: int, dim: int, *, seed: int = 0, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The (d_in, dim) Gaussian random projection used for ``dim=``; N(0, 1/dim) entries drawn from ``seed``.

    The same (d_in, dim, seed) always gives the same matrix, so latents collected at epoch start and
    the latents the loss sees during training are projected identically.
    """
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(d_in, dim, generator=g) / math.sqrt(dim)).to(device)


def _dataset_len(loader: Any) -> int | None:
    ds = getattr(loader, "dataset", None)
    try:
        return len(ds)  # type: ignore[arg-type]
    except TypeError:
        return None


@torch.no_grad()
def collect_latents(
    model: nn.Module,
    loader: Any,
    layers: str | Sequence[str],
    *,
    pool: str = "avg",
    dim: int | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    memmap_dir: str | Path | None = None,
    progress: bool = False,
    indices: np.ndarray | None = None,
    dtype: str = "auto",
) -> Latents:
    """Latents of ``layers`` for every sample of ``loader`` (batches ``(x, y, idx)``), in sample-index order.

    The model runs in eval mode without gradients; each module's train/eval mode is restored afterwards,
    and the capture hooks are removed even on error. ``pool``: "avg" (global average over spatial or
    token dims) or "flatten" (all non-batch dims). ``dim``: if set and smaller than the pooled
    width, a seeded Gaussian random projection to ``dim`` is applied batch by batch on the device
    (bounded memory even for 25k-d flattened maps). A layer whose N x D float32 array exceeds
    ``memory_budget`` bytes is written to one memory-mapped file in ``memmap_dir``. ``dtype``:
    "auto" (default: float64 for a layer whose output is float64, so latents of a float64 model keep the
    precision the engine needs when they sit far from the origin; float32 otherwise), "float32",
    "float64", or "float16" storage (half the memory/disk for million-sample runs; values beyond
    float16's range, |x| > 65504, raise).
    ``indices`` (n,) collects a shard (one rank's part under DDP): the loader visits exactly these sample
    indices of its dataset, and row i of the result is sample ``indices[i]`` (``Latents.index``).
    Raises if indices are missing, repeated or out of range, or if a latent is NaN/inf.
    """
    _check_settings(pool, dim, dtype)
    names = list(resolve_layers(model, layers, func="collect_latents"))
    check_materialised(model, "collect_latents")  # else a raw "Cannot copy out of meta tensor" at the end
    dev = _device(model, device)
    n = _dataset_len(loader)
    if n is None or n < 1:
        raise param_error("loader", "collect_latents", "a DataLoader over a non-empty sized dataset", n)
    # a shard: (n,) its indices, (N,) bool membership and (N,) row of each index; None: all N, row = index
    shard, want, row_of = _shard(indices, n)
    rows = n if shard is None else shard.size
    store = _Store(rows, pool, dim, seed, dtype, memory_budget, memmap_dir)
    labels = np.full(rows, -1, dtype=np.int64)
    seen = np.zeros(n, dtype=bool)
    in_dtype = input_dtype(model)  # float inputs take the model's dtype (e.g. a float64 model)
    with model_mode(model, training=False), capture(model, names, detach=True) as out:
        # read_batches: a clear error when the dataset's __len__ promises more than it holds
        batches = read_batches(loader, "whose latents are collected")
        for batch in track(batches, "latents", unit="batches", enabled=progress):
            x, y, idx = unpack_batch(batch, need_index=True)
            idx_np = _batch_indices(idx, n, seen, want)
            pos = idx_np if row_of is None else row_of[idx_np]
            # integer class ids, one per sample: a cast would truncate float labels and one-hot rows
            # would not fit; this pass syncs once per batch anyway
            check_labels(y, len(idx_np), func="collect_latents", param="loader")
            labels[pos] = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
            run_model(model, to_device(x, dev, in_dtype), "collect_latents")
            for name in names:
                store.put(name, out.get(name), pos, idx_np)
            out.clear()
    if seen.sum() != rows:
        missing = np.flatnonzero(~seen if want is None else want & ~seen)
        raise LatentccError(
            f"collect_latents did not see {len(missing)} of {rows} samples (e.g. index {missing[:5].tolist()}); "
            "the loader must cover the whole dataset, or exactly its 'indices' shard (drop_last=False)."
        )
    for a in store.arrays.values():
        if isinstance(a, np.memmap):
            a.flush()
    return Latents(store.arrays, labels, store.files, index=shard)


def _check_settings(pool: str, dim: int | None, dtype: str) -> None:
    if pool not in POOLS:
        raise param_error("pool", "collect_latents", f"one of {list(POOLS)}", pool)
    if dtype not in _STORAGE:
        raise param_error(
            "dtype", "collect_latents", f"one of {list(_STORAGE)} (storage of the latents)", dtype
        )
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
        raise param_error("dim", "collect_latents", "None or an int >= 1", dim)


def _device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    """Where the inputs go: ``device``, or (None) where the model's first parameter is (CPU without any)."""
    if device is None:
        p = next(model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")
    from latentcc.train.loop import resolve_device  # lazily: the training loop imports this module

    return resolve_device(device, func="collect_latents")


def _batch_indices(idx: Any, n: int, seen: np.ndarray, want: np.ndarray | None) -> np.ndarray:
    """A batch's sample indices as (B,) int64, checked (in 0..n-1, new, in the shard) and marked ``seen``."""
    idx_np = np.asarray(idx.cpu() if isinstance(idx, torch.Tensor) else idx, dtype=np.int64)
    if idx_np.min() < 0 or idx_np.max() >= n:
        raise LatentccError(
            f"collect_latents got sample index {int(idx_np.max()) if idx_np.max() >= n else int(idx_np.min())}"
            f" outside 0..{n - 1} (dataset length {n}); indices must be positions 0..N-1 in the dataset."
        )
    if seen[idx_np].any() or len(np.unique(idx_np)) != len(idx_np):
        raise LatentccError(
            "collect_latents saw the same sample index twice; the loader must visit each sample once "
            "(no sampler with replacement, no drop_last tricks, no duplicated indices)."
        )
    if want is not None and not want[idx_np].all():
        raise LatentccError(
            f"collect_latents got sample index {int(idx_np[~want[idx_np]][0])}, which is not in its "
            "'indices' shard; the loader must visit exactly the shard's samples."
        )
    seen[idx_np] = True
    return idx_np


@dataclass
class _Store:
    """Where collect_latents puts each layer's rows: one (rows, D) array per layer (RAM or a memory map),
    and each layer's seeded projection (one fixed matrix per layer)."""

    rows: int
    pool: str
    dim: int | None
    seed: int
    dtype: str
    memory_budget: int
    memmap_dir: str | Path | None
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    proj: dict[str, torch.Tensor] = field(default_factory=dict)

    def put(self, name: str, latent: torch.Tensor | None, pos: np.ndarray, idx_np: np.ndarray) -> None:
        """Pool (and project) one layer's batch output and write it to the rows ``pos``."""
        z, store = self._pooled(name, latent, len(idx_np))
        if name not in self.arrays:
            self.arrays[name] = allocate(
                self.rows, z.shape[1], self.memory_budget, self.memmap_dir, self.files, name, store
            )
        elif self.arrays[name].shape[1] != z.shape[1]:
            raise LatentccError(
                f"Layer '{name}' changed width between batches; use pool='avg' or fixed-size inputs."
            )
        zn = z.cpu().numpy()  # once per batch: the latent pass is an epoch-start job, not the hot loop
        if not np.isfinite(zn).all():
            bad = int((~np.isfinite(zn)).any(axis=1).sum())
            raise LatentccError(
                f"Layer '{name}' produced NaN/inf latents for {bad} sample(s) of this batch "
                f"(indices {idx_np[:5].tolist()}...). Check the inputs and learning rate; training may have diverged."
            )
        if self.dtype == "float16" and np.abs(zn).max() > 65504.0:
            raise param_error(
                "dtype",
                "collect_latents",
                "'float32' for latents beyond float16's range (|x| > 65504)",
                self.dtype,
                f"Layer '{name}' has values up to {float(np.abs(zn).max()):.3g}.",
            )
        self.arrays[name][pos] = zn

    def _pooled(self, name: str, latent: torch.Tensor | None, batch: int) -> tuple[torch.Tensor, str]:
        """(the batch's (B, D) latents, projected when ``dim`` is set, and the layer's storage dtype)."""
        if latent is None:
            raise LatentccError(
                f"Layer '{name}' did not run in the model's forward pass; pick a layer that does "
                "(see latentcc.list_layers(model))."
            )
        if latent.ndim == 0 or latent.shape[0] != batch:
            raise LatentccError(
                f"Layer '{name}' returned shape {tuple(latent.shape)} for a batch of {batch} "
                "samples; its first dimension is not the batch (e.g. position embeddings). Pick a "
                "layer whose output is (batch, ...) (see latentcc.list_layers(model))."
            )
        store = _storage(self.dtype, latent.dtype)
        z = pool_latent(latent, self.pool).to(torch.float64 if store == "float64" else torch.float32)
        if self.dim is not None and z.shape[1] > self.dim:
            if name not in self.proj:  # one fixed projection per layer, seeded
                self.proj[name] = projection_matrix(z.shape[1], self.dim, seed=self.seed, device=z.device)
            z = z @ self.proj[name].to(z.dtype)
        return z, store


def _shard(
    indices: np.ndarray | None, n: int
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """A validated shard of an N-sample dataset: ((n,) int64 indices, (N,) bool membership, (N,) row per index)."""
    if indices is None:
        return None, None, None
    idx = np.asarray(indices)
    if idx.ndim != 1 or idx.size < 1 or not np.issubdtype(idx.dtype, np.integer):
        raise param_error(
            "indices",
            "collect_latents",
            "None or a non-empty 1-D array of int sample indices",
            f"shape {idx.shape}, dtype {idx.dtype}",
        )
    if idx.min() < 0 or idx.max() >= n or np.unique(idx).size != idx.size:
        raise param_error(
            "indices", "collect_latents", f"distinct sample indices in 0..{n - 1}", f"{idx.size} indices"
        )
    want = np.zeros(n, dtype=bool)
    want[idx] = True
    row_of = np.full(n, -1, dtype=np.int64)
    row_of[idx] = np.arange(idx.size, dtype=np.int64)
    return idx.astype(np.int64, copy=False), want, row_of


def allocate(
    n: int,
    d: int,
    budget: int,
    folder: str | Path | None,
    files: list[Path],
    name: str,
    dtype: str = "float32",
) -> np.ndarray:
    """An uninitialised (n, d) array of ``dtype`` for one layer's latents: in RAM up to ``budget`` bytes, else a
    memory map in a new file in ``folder`` (appended to ``files``, which the caller deletes when done)."""
    if n * d * np.dtype(dtype).itemsize <= budget:
        return np.empty((n, d), dtype=dtype)
    f = tempfile.NamedTemporaryFile(
        prefix=f"latents-{name.replace('.', '_')}-",
        suffix={"float16": ".f16", "float64": ".f64"}.get(dtype, ".f32"),
        dir=folder,
        delete=False,
    )
    f.close()
    files.append(Path(f.name))
    return np.memmap(f.name, dtype=dtype, mode="w+", shape=(n, d))
