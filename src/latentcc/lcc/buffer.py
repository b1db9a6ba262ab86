"""The train-pass latent buffer: latents the training steps already computed, reused at the next refresh.

With ``LCCConfig.latent_source="train_pass"`` (docs/algorithms.md, LCC step 9) every training step copies the
pooled (and projected) latent of each of its samples, detached, into a preallocated (N, D) buffer per layer
at the sample's dataset index, on the model's device. The next refresh clusters that buffer instead of
running an eval-mode pass over the whole training set; rows no step wrote since the last refresh (a
capped epoch, a resumed partial epoch, samples never drawn) are collected with an eval pass of those rows
only. Under DDP every rank writes the rows of its own batches and the ranks' buffers are summed on rank 0.

A row holds the *latest* batch that contained its sample. Within one batch a repeated index gets the mean of
its rows (zero the rows, then add: deterministic on the CPU; on CUDA the order of the float additions of
repeated indices is not fixed, which moves only such rows, by rounding).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from latentcc.latents.collect import Latents
from latentcc.lcc.distributed import comm_device, world
from latentcc.plumbing.errors import LatentccError, param_error


class LatentBuffer:
    """Per-layer (N, D) sums, an (N,) count of the rows written since the last :meth:`reset`, and (N,) labels.

    A layer's buffer is allocated at its first write (its width and dtype are the latent's: float64 for a
    float64 layer, else float32). ``labels`` (-1 = unknown) are recorded with the rows when the caller passes
    the batch's class ids; a row whose label no write recorded is collected by the eval pass like an unwritten
    one (a label, once recorded, stays: a sample's class does not change).
    """

    def __init__(self, num_samples: int, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.sums: dict[str, torch.Tensor] = {}
        self.count = torch.zeros(num_samples, dtype=torch.int32, device=self.device)
        self.labels = torch.full((num_samples,), -1, dtype=torch.int64, device=self.device)
        # the write call (1, 2, ...) that last wrote each row: under DDP it tells which rank's row is newest
        self.stamp = torch.zeros(num_samples, dtype=torch.int64, device=self.device)
        self.writes = 0

    def to(self, device: torch.device | str) -> LatentBuffer:
        """This buffer, moved to ``device`` (in place; returns self)."""
        self.device = torch.device(device)
        self.count, self.labels, self.stamp = (
            t.to(self.device) for t in (self.count, self.labels, self.stamp)
        )
        self.sums = {n: t.to(self.device) for n, t in self.sums.items()}
        return self

    @property
    def num_samples(self) -> int:
        return int(self.count.shape[0])

    def write(self, zs: Mapping[str, torch.Tensor], idx: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """Hot path: rows ``idx`` of every layer := this batch's detached latents (and labels ``y``). No host sync.

        ``zs``: the pooled (and projected) (B, D) latents, in the space of the collected ones; ``idx`` (B,) their
        dataset indices; ``y`` (B,) integer class ids or None.
        """
        i = idx.to(self.device, non_blocking=True).long()
        if i.device.type == "cpu" and i.numel():  # free on the CPU; a sync on accelerators, so not there
            lo, hi = int(i.min()), int(i.max())
            if lo < 0 or hi >= self.num_samples:
                raise param_error(
                    "idx", "LatentClusterCorrection.loss",
                    f"dataset indices in 0..{self.num_samples - 1} (the training set the LCC refreshes cluster)",
                    f"indices from {lo} to {hi}",
                    "Pass the sample indices the training dataset yields, 0..N-1.",
                )  # fmt: skip
        self.writes += 1  # a Python counter: the same on every DDP rank, which step in lockstep
        self.stamp.index_fill_(0, i, self.writes)
        self.count.index_fill_(0, i, 0)
        self.count.index_add_(0, i, torch.ones_like(i, dtype=torch.int32))
        if y is not None and y.ndim == 1 and len(y) == len(i) and not y.is_floating_point():
            self.labels.index_copy_(0, i, y.to(self.device, torch.int64, non_blocking=True))
        for name, z in zs.items():
            buf = self.sums.get(name)
            if buf is None:
                dtype = torch.float64 if z.dtype == torch.float64 else torch.float32
                buf = self.sums[name] = torch.zeros(
                    (self.num_samples, z.shape[1]), dtype=dtype, device=self.device
                )
            buf.index_fill_(0, i, 0.0)
            buf.index_add_(0, i, z.detach().to(buf.dtype))

    def reset(self) -> None:
        """Forget which rows were written (after each refresh: a row then tells what the steps since computed)."""
        self.count.zero_()

    def assemble(
        self, collect_rows: Callable[[np.ndarray], Latents | None], names: list[str]
    ) -> tuple[Latents | None, dict[str, int]]:
        """The full (N, D) latents of ``names`` for a refresh: written rows from the buffer, the others from
        ``collect_rows``.

        ``collect_rows(indices)`` returns the eval-pass latents and labels of those sample indices (row i =
        ``indices[i]``; None for no indices). Under DDP every rank calls it for its share of the rows nobody
        wrote (possibly none); a row several ranks wrote comes from the rank(s) that wrote it last, and rank 0
        receives the ranks' rows. Returns ``(latents, counts)``: the latents on rank 0 (None elsewhere);
        counts = rows from the buffer and rows from the eval pass.

        Works in place (no copy of the (N, D) buffers in one process): afterwards every row holds its final
        latent with count 1, so a second call returns the same latents without an eval pass.
        """
        rank, size = world()
        known = (self.count > 0) & (self.labels >= 0)
        if size > 1:  # only the newest write of a row counts: the max stamp over ranks (an (N,) all-reduce)
            newest = torch.where(known, self.stamp, 0).to(comm_device(), copy=True)
            dist.all_reduce(newest, op=dist.ReduceOp.MAX)
            known &= self.stamp == newest.to(self.device)
        local = torch.where(known, self.count, 0)
        count = local
        if size > 1:  # every rank learns which rows nobody wrote
            count = local.to(comm_device(), copy=True)
            dist.all_reduce(count)
        unseen = np.flatnonzero(count.cpu().numpy() == 0)  # sync point: once per refresh
        mine = unseen[rank::size]
        part = collect_rows(mine) if (size > 1 or mine.size) else None  # under DDP every rank takes part
        widths = self._widths(names, part)
        labels = self.labels.masked_fill(~known, 0)
        rows = torch.from_numpy(mine).to(self.device) if part is not None and mine.size else None
        for name in names:
            buf = self.sums.get(name)
            if buf is None:  # no step wrote this layer on this rank yet
                d, dtype = widths[name]
                buf = self.sums[name] = torch.zeros((self.num_samples, d), dtype=dtype, device=self.device)
            buf.masked_fill_(~known.unsqueeze(1), 0)  # rows nobody wrote (or without a label) add nothing
            if rows is not None and part is not None:
                buf.index_copy_(0, rows, torch.from_numpy(np.asarray(part[name])).to(buf))
            # the mean of a row written several times in its last batch (x / 1 is exact)
            buf.div_(local.clamp_min(1).to(buf.dtype).unsqueeze(1))
        if rows is not None and part is not None:
            labels.index_copy_(0, rows, torch.from_numpy(part.labels).to(self.device))
            local.index_fill_(0, rows, 1)
        # the buffer now holds final rows: a second call reproduces them
        self.count.copy_(local.clamp_max(1))
        self.labels.copy_(torch.where(local > 0, labels, self.labels))
        counts = {
            "rows_from_training": self.num_samples - int(unseen.size),
            "rows_eval_pass": int(unseen.size),
        }
        sums = {n: self.sums[n] for n in names}
        if (
            size > 1
        ):  # rank 0 receives every rank's rows (a row the newest write of two ranks holds: their mean)
            dev = comm_device()
            ranks = local.clamp_max(1).to(dev)
            dist.reduce(ranks, dst=0)
            labels = labels.to(dev)
            # a label is the same on every rank that has it: the max over ranks (unknown rows hold 0)
            dist.reduce(labels, dst=0, op=dist.ReduceOp.MAX)
            for name in names:
                b = sums[name].to(dev, copy=True)
                dist.reduce(b, dst=0)
                sums[name] = b.div_(ranks.clamp_min(1).to(b.dtype).unsqueeze(1)) if rank == 0 else b
        if rank != 0:
            return None, counts
        arrays = {n: s.cpu().numpy() for n, s in sums.items()}  # on the CPU a view of the buffer (no copy)
        return Latents(arrays, labels.cpu().numpy().astype(np.int64)), counts

    def _widths(self, names: list[str], part: Latents | None) -> dict[str, tuple[int, torch.dtype]]:
        """(D, dtype) of every layer, known on every rank (under DDP a rank may not have written yet)."""
        mine = {n: (int(b.shape[1]), b.dtype) for n, b in self.sums.items()}
        if part is not None:
            for n, a in part.arrays.items():
                mine.setdefault(
                    n, (int(a.shape[1]), torch.float64 if a.dtype == np.float64 else torch.float32)
                )
        if world()[1] > 1:
            every: list[Any] = [None] * world()[1]
            dist.all_gather_object(every, {n: (d, str(t)) for n, (d, t) in mine.items()})
            for other in every:
                for n, (d, t) in other.items():
                    mine.setdefault(n, (d, getattr(torch, t.removeprefix("torch."))))
        missing = [n for n in names if n not in mine]
        if missing:
            raise LatentccError(
                f"LCC refresh: no latent of layer(s) {missing} was written or collected on any rank; "
                "every training step must run these layers (see LatentClusterCorrection.check_captured)."
            )
        return mine

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Tensors only (safetensors-safe): restoring it makes a resumed run's next refresh bitwise the same."""
        return {
            "sums": {n: t.cpu() for n, t in self.sums.items()},
            "count": self.count.cpu(),
            "labels": self.labels.cpu(),
            "stamp": self.stamp.cpu(),
            "writes": torch.tensor(self.writes, dtype=torch.int64),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], device: torch.device | str) -> LatentBuffer:
        count = torch.as_tensor(state["count"])
        buf = cls(int(count.shape[0]), device)
        buf.count = count.to(buf.device, torch.int32)
        buf.labels = torch.as_tensor(state["labels"]).to(buf.device, torch.int64)
        buf.sums = {n: torch.as_tensor(t).to(buf.device) for n, t in state["sums"].items()}
        if "stamp" in state:
            buf.stamp = torch.as_tensor(state["stamp"]).to(buf.device, torch.int64)
            buf.writes = int(torch.as_tensor(state["writes"]))
        return buf
