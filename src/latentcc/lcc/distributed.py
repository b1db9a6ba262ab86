"""LCC under ``torch.distributed`` (DDP): every rank collects a shard, rank 0 clusters once, all get the result.

    every rank                          rank 0                                 every rank
    latents of samples rank::world  ->  gather -> (N, D) in index order    ->  broadcast clusters, MC mask,
                                        -> epoch_start (k-NN, Leiden,          owners, targets
                                           matching, targets) ONCE

``LatentClusterCorrection.refresh`` calls these when a process group with world_size > 1 is initialised;
single-process runs never reach them. Design choices (docs/distributed.md):

- Shards are samples ``rank, rank + world_size, ...`` read through the dataset's own ``(x, y, idx)``, so
  each row keeps its global sample index; shard sizes differ by at most one.
- ``dist.gather`` to rank 0, not ``all_gather``: only rank 0 needs the (N, D) arrays, so the other ranks
  never hold more than their shard. Chunks are padded to one size (gather needs equal shapes on every
  backend) and bounded by ``chunk_bytes``, so the transient buffer stays small; the assembled arrays live
  in host memory (memory-mapped past the latent memory budget, as in single-process runs).
- No pickling of tensors (``all_gather_object`` would pickle N x D floats); only a small header per layer
  goes through ``broadcast_object_list``.
- Tensors travel on the backend's device: the current CUDA device for nccl, the CPU for gloo.
- A failure on one rank (a NaN latent, one class only, ...) is raised on every rank instead of leaving
  the others waiting in the next collective.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, IterableDataset

from latentcc.latents.collect import DEFAULT_MEMORY_BUDGET, Latents, allocate, collect_latents
from latentcc.lcc.epoch import EpochStart
from latentcc.lcc.targets import LCCTargets
from latentcc.plumbing.errors import LatentccError, param_error

# Bytes of float32 rows per gather call (all ranks' chunks together): bounds the transient buffer on rank 0.
CHUNK_BYTES = 2**26


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group; ``(0, 1)`` when torch.distributed is not in use."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (layer names without ``module.``), else ``model``.

    The latent pass runs the inner module: a DDP forward may run collectives (buffer broadcasts) and the
    ranks' shards may differ by one batch.
    """
    return model.module if isinstance(model, DistributedDataParallel) else model


def comm_device() -> torch.device:
    """Where tensors must live for the default group's collectives: the current CUDA device for nccl, else CPU."""
    backend = str(dist.get_backend())
    if "nccl" in backend and "gloo" not in backend:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def shard_loader(
    data: Dataset[Any] | DataLoader[Any], *, rank: int, world_size: int, batch_size: int, num_workers: int
) -> tuple[DataLoader[Any], np.ndarray]:
    """An unshuffled loader over samples ``rank, rank + world_size, ...`` of ``data``, and those indices.

    ``data`` is a Dataset (yielding ``(x, y, idx)`` with idx = position) or a DataLoader, whose dataset,
    batch size, collate_fn, workers and pin_memory are kept (its sampler is replaced by the shard).
    """
    n = _sized(data, world_size)
    idx = np.arange(rank, n, world_size, dtype=np.int64)
    return index_loader(data, idx, batch_size=batch_size, num_workers=num_workers), idx


def index_loader(
    data: Dataset[Any] | DataLoader[Any], indices: np.ndarray, *, batch_size: int, num_workers: int
) -> DataLoader[Any]:
    """An unshuffled loader over the samples ``indices`` of ``data`` (a Dataset, or a DataLoader whose dataset,
    batch size, collate_fn, workers and pin_memory are kept while its sampler is replaced)."""
    if isinstance(data, DataLoader):
        ds = data.dataset
        kw: dict[str, Any] = dict(
            batch_size=data.batch_size or batch_size, collate_fn=data.collate_fn,
            num_workers=data.num_workers, pin_memory=data.pin_memory, worker_init_fn=data.worker_init_fn,
        )  # fmt: skip
    else:
        ds, kw = data, dict(batch_size=batch_size, num_workers=num_workers)
    return DataLoader(ds, sampler=indices.tolist(), **kw)


def _sized(data: Dataset[Any] | DataLoader[Any], world_size: int) -> int:
    ds = data.dataset if isinstance(data, DataLoader) else data
    if isinstance(ds, IterableDataset) or not hasattr(ds, "__len__"):
        raise param_error(
            "data", "LatentClusterCorrection.refresh (distributed)", "a sized map-style dataset",
            type(ds).__name__, "Each rank reads its shard by sample index, which an iterable dataset cannot do.",
        )  # fmt: skip
    n = len(ds)
    if n < world_size:
        raise param_error(
            "data", "LatentClusterCorrection.refresh (distributed)",
            f"at least world_size = {world_size} samples (one per rank)", f"{n} samples",
        )  # fmt: skip
    return n


def collect_sharded(
    model: nn.Module,
    data: Dataset[Any] | DataLoader[Any],
    layers: Sequence[str],
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    dst: int = 0,
    **collect_kw: Any,
) -> Latents | None:
    """Each rank collects the latents of its shard; rank ``dst`` returns all N rows in index order, others None.

    Call it on every rank. ``collect_kw`` go to :func:`~latentcc.latents.collect.collect_latents` (pool, dim,
    device, seed, memory_budget, memmap_dir, progress). A failure on any rank is raised on all ranks.
    """
    rank, size = world()
    loader, shard = shard_loader(
        data, rank=rank, world_size=size, batch_size=batch_size, num_workers=num_workers
    )
    part, error = None, None
    try:
        part = collect_latents(model, loader, list(layers), indices=shard, **collect_kw)
    except Exception as e:  # raised below, after every rank knows
        error = e
    raise_if_any_failed(error, "collecting latents")
    assert part is not None  # no rank failed
    return gather_latents(
        part, num_samples=len(loader.dataset),  # type: ignore[arg-type]
        dst=dst, memory_budget=collect_kw.get("memory_budget", DEFAULT_MEMORY_BUDGET),
        memmap_dir=collect_kw.get("memmap_dir"),
    )  # fmt: skip


def raise_if_any_failed(error: BaseException | None, what: str) -> None:
    """Collective: re-raise ``error`` on its rank, and raise on every other rank if any rank failed."""
    dev = comm_device()
    flags = [torch.zeros(1, dtype=torch.int64, device=dev) for _ in range(world()[1])]
    dist.all_gather(flags, torch.tensor([int(error is not None)], dtype=torch.int64, device=dev))
    if error is not None:
        raise error
    failed = [r for r, f in enumerate(flags) if int(f)]
    if failed:
        raise LatentccError(
            f"LCC refresh: rank(s) {failed} failed while {what} (their error says why); this rank stops too."
        )


def gather_latents(
    part: Latents,
    *,
    num_samples: int,
    dst: int = 0,
    chunk_bytes: int = CHUNK_BYTES,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    memmap_dir: str | Path | None = None,
) -> Latents | None:
    """Collective: the ranks' shards (``part.index`` rows each) assembled on rank ``dst`` as full (N, D) Latents.

    Shards may differ in size (padded per chunk); together they must hold every index 0..N-1 exactly
    once. Returns None on the other ranks. Every layer of ``part`` must have the same width on all ranks.
    """
    size = world()[1]
    if part.index is None:
        raise param_error("part", "gather_latents", "a shard (Latents.index set)", None)
    dev = comm_device()
    names = list(part.arrays)
    # one small all_gather: rows and per-layer widths of every rank (to pad and to check the widths agree)
    mine = torch.tensor([len(part.index), *(part.arrays[n].shape[1] for n in names)], dtype=torch.int64)
    shapes = [torch.zeros_like(mine, device=dev) for _ in range(size)]
    dist.all_gather(shapes, mine.to(dev))
    table = torch.stack(shapes).cpu().numpy()  # (world, 1 + layers)
    if (table[:, 1:] != table[0, 1:]).any():
        raise LatentccError(
            f"gather_latents: the ranks' latent widths differ per layer {names}: {table[:, 1:].tolist()}; "
            "use pool='avg' or fixed-size inputs so every sample has the same width."
        )
    rows = table[:, 0]
    most = int(rows.max())

    meta = torch.full((most, 2), -1, dtype=torch.int64)  # (global index, label), padded
    meta[: len(part.index), 0] = torch.from_numpy(part.index)
    meta[: len(part.index), 1] = torch.from_numpy(part.labels)
    got = _gather(meta, dst, dev)
    index: list[np.ndarray] = []
    out: Latents | None = None
    if got is not None:
        index = [g[:r, 0].numpy() for g, r in zip(got, rows, strict=True)]
        allidx = np.concatenate(index)
        if allidx.size != num_samples or np.unique(allidx).size != num_samples or allidx.min() < 0:
            raise LatentccError(
                f"gather_latents: the shards hold {allidx.size} rows ({np.unique(allidx).size} distinct indices) "
                f"for a dataset of {num_samples}; each sample must be on exactly one rank."
            )
        labels = np.empty(num_samples, dtype=np.int64)
        for g, r, ix in zip(got, rows, index, strict=True):
            labels[ix] = g[:r, 1].numpy()
        out = Latents({}, labels)

    for j, name in enumerate(names):
        a, d = part.arrays[name], int(table[0, 1 + j])
        full = (
            allocate(num_samples, d, memory_budget, memmap_dir, out.files, name) if out is not None else None
        )
        step = max(1, chunk_bytes // (4 * d * size))
        for s in range(0, most, step):  # the same chunks on every rank: `most` is shared
            e = min(s + step, most)
            buf = torch.zeros((e - s, d), dtype=torch.float32)
            k = max(0, min(e, len(part.index)) - s)
            buf[:k] = torch.from_numpy(np.ascontiguousarray(a[s : s + k]))
            got = _gather(buf, dst, dev)
            if got is not None and full is not None:
                for g, r, ix in zip(got, rows, index, strict=True):
                    kr = max(0, min(e, int(r)) - s)
                    full[ix[s : s + kr]] = g[:kr].numpy()
        if out is not None and full is not None:
            out.arrays[name] = full
    return out


def _gather(t: torch.Tensor, dst: int, dev: torch.device) -> list[torch.Tensor] | None:
    """``dist.gather`` of equal-shape tensors to ``dst``; the list (on the CPU) there, None elsewhere."""
    rank, size = world()
    recv = [torch.empty_like(t, device=dev) for _ in range(size)] if rank == dst else None
    dist.gather(t.to(dev), recv, dst=dst)
    return [r.cpu() for r in recv] if recv is not None else None


def broadcast_epoch_start(compute: Callable[[], EpochStart] | None, *, src: int = 0) -> EpochStart:
    """Collective: rank ``src`` runs ``compute()`` (the clustering); every rank returns its result.

    Other ranks pass None and compute nothing. What travels: a small header (sizes, stage timings, the loss
    variant) and two tensors: int64 ``[slot | clusters | mc_mask | owners | orphans]`` and ``vectors`` (M, D)
    in their dtype; with ``loss="orthogonal"`` a third, the tangent ``basis`` (M, r, D) in the same dtype.
    Other ranks get CPU tensors bit-identical to rank ``src``'s. An error on ``src`` is raised on all ranks.
    """
    rank, _ = world()
    dev = comm_device()
    res: EpochStart | None = None
    header: list[Any] = [None]
    if rank == src:
        if compute is None:
            raise param_error("compute", "broadcast_epoch_start", "a callable on the source rank", None)
        try:
            res = compute()
            t = res.targets
            header[0] = {
                "n": int(t.slot.shape[0]), "m": int(t.vectors.shape[0]), "d": int(t.vectors.shape[1]),
                "c": int(np.asarray(t.owners).size), "o": int(np.asarray(t.orphans).size),
                "num_clusters": int(t.num_clusters), "seconds": dict(res.seconds),
                "float64": t.vectors.dtype == torch.float64, "scale": float(t.scale),
                "loss": t.loss, "r": None if t.basis is None else int(t.basis.shape[1]),
            }  # fmt: skip
        except Exception as e:
            header[0] = {"error": f"{type(e).__name__}: {e}"}
            dist.broadcast_object_list(header, src=src)
            raise
    dist.broadcast_object_list(header, src=src)
    h = header[0]
    if "error" in h:
        raise LatentccError(f"LCC refresh failed on rank {src} (which clusters): {h['error']}")
    n, c, o = h["n"], h["c"], h["o"]
    # float64 targets (of float64 latents) travel as float64: every rank gets bitwise rank src's targets
    vdtype = torch.float64 if h["float64"] else torch.float32
    if res is not None:
        t = res.targets
        ints = torch.cat([
            t.slot.cpu(), torch.from_numpy(np.asarray(res.clusters, dtype=np.int64)), t.mc_mask.cpu().long(),
            torch.from_numpy(np.asarray(t.owners, dtype=np.int64)),
            torch.from_numpy(np.asarray(t.orphans, dtype=np.int64)),
        ]).to(dev)  # fmt: skip
        vectors = t.vectors.to(dev, vdtype).contiguous()
        basis = None if t.basis is None else t.basis.to(dev, vdtype).contiguous()
    else:
        ints = torch.empty(3 * n + c + o, dtype=torch.int64, device=dev)
        vectors = torch.empty((h["m"], h["d"]), dtype=vdtype, device=dev)
        basis = None if h["r"] is None else torch.empty((h["m"], h["r"], h["d"]), dtype=vdtype, device=dev)
    dist.broadcast(ints, src=src)
    if vectors.numel():
        dist.broadcast(vectors, src=src)
    if basis is not None and basis.numel():
        dist.broadcast(basis, src=src)
    if res is not None:
        return res
    ints = ints.cpu()
    slot, clusters, mc = ints[:n], ints[n : 2 * n].numpy(), ints[2 * n : 3 * n].bool()
    owners, orphans = ints[3 * n : 3 * n + c].numpy(), ints[3 * n + c :].numpy()
    targets = LCCTargets(
        mc_mask=mc, slot=slot, vectors=vectors.cpu(), owners=owners, orphans=orphans,
        num_clusters=h["num_clusters"], scale=h["scale"], loss=h["loss"],
        basis=None if basis is None else basis.cpu(),
    )  # fmt: skip
    return EpochStart(targets, clusters, owners.copy(), ~mc.numpy(), dict(h["seconds"]))
