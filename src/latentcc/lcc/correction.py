"""Latent Cluster Correction in a plain PyTorch loop: the state between epochs, nothing else.

    lcc = LatentClusterCorrection(LCCConfig(layers=("fc_layers.1",), weight=1e-2))
    for epoch in range(epochs):
        lcc.begin_epoch(model, train_dataset, epoch)   # refreshes when scheduled (k-NN, Leiden, targets)
        for x, y, idx in loader:
            with lcc.capture(model) as z:              # the named layers' outputs of *your* forward
                logits = model(x)
            loss = F.cross_entropy(logits, y) + lcc.weighted_loss(z, idx, y)

The math lives in ``latentcc.lcc`` (functions on arrays and tensors); this class only holds the
per-layer targets, the previous partition (for warm starts) and, with ``latent_source="train_pass"`` (the
default), the buffer of latents the steps captured, which the next refresh clusters instead of running an
eval pass over the training set (docs/algorithms.md, LCC step 9). Under DDP (an initialised
process group with world_size > 1) ``refresh`` runs on every rank and ``latentcc.lcc.distributed`` splits the
work: each rank collects its shard, rank 0 clusters once, every rank receives the same targets
(docs/distributed.md).
"""

from __future__ import annotations

import time
import warnings
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from latentcc.config import LCCConfig
from latentcc.latents.collect import Latents, collect_latents, projection_matrix
from latentcc.latents.layers import capture, pool_latent, resolve_layers
from latentcc.lcc.buffer import LatentBuffer
from latentcc.lcc.distributed import (
    broadcast_epoch_start,
    collect_sharded,
    index_loader,
    raise_if_any_failed,
    unwrap,
    world,
)
from latentcc.lcc.epoch import EpochStart, epoch_start
from latentcc.lcc.loss import lcc_loss
from latentcc.lcc.targets import LCCTargets
from latentcc.plumbing.errors import LatentccError, param_error


class LatentClusterCorrection:
    """Holds LCC targets per layer between epochs; computes the per-step loss on the model's device."""

    def __init__(self, config: LCCConfig) -> None:
        if not isinstance(config, LCCConfig):
            raise param_error("config", "LatentClusterCorrection", "an LCCConfig", type(config).__name__)
        if not config.layers:
            raise param_error(
                "layers", "LCCConfig", "at least one layer name", config.layers,
                "List the model's layers with latentcc.list_layers(model) or `latentcc layers --model ...`.",
            )  # fmt: skip
        from latentcc.extras import check_extras

        check_extras("LatentClusterCorrection", lcc=config)  # igraph/faiss now, not at the first refresh
        self.config = config
        self.targets: dict[str, LCCTargets] = {}
        self.last: dict[str, EpochStart] = {}
        self.refreshed_epoch: int | None = None
        self._names: list[str] | None = None  # full layer names, resolved on first use
        self._modules: dict[str, nn.Module] | None = None
        # the model they were resolved on, held weakly: an id() is reused once its object is collected
        self._model_ref: weakref.ref[nn.Module] | None = None
        self._proj: dict[str, torch.Tensor] = {}
        # latent_source="train_pass": what the training steps captured since the last refresh
        self.buffer: LatentBuffer | None = None
        # weight="auto": the value latentcc.lcc.weight.calibrate_weight set after the last refresh
        self.calibrated_weight: float | None = None

    # ---------------------------------------------------------------- schedule
    def should_refresh(self, epoch: int) -> bool:
        """True at 0-based ``epoch`` = warmup, warmup + interval, ... (clusters and targets are recomputed)."""
        c = self.config
        return epoch >= c.warmup and (epoch - c.warmup) % c.interval == 0

    def check_schedule(
        self, epochs: int | None, *, epochs_param: str = "TrainConfig.epochs, --epochs"
    ) -> list[str]:
        """Refuse a run of ``epochs`` epochs in which LCC never runs; warn about (and return) inert settings.

        ``epochs``: the run's length (None: unknown, not checked); ``epochs_param`` names where it is set,
        for the message. Called by ``fit`` and the Lightning / Hugging Face adapters before training.
        """
        c = self.config
        if epochs is not None and not self.active and c.warmup >= epochs:
            raise param_error(
                "warmup", "LCCConfig",
                f"smaller than the number of epochs, {epochs} ({epochs_param}), so that at least one epoch "
                "trains with LCC", c.warmup,
                "With warmup >= epochs no correction epoch comes, LCC never runs and the result equals plain "
                f"fine-tuning. Fix: lower warmup to at most {epochs - 1} (--lcc-warmup {epochs - 1}) or train for "
                f"at least {c.warmup + 1} epochs.",
            )  # fmt: skip
        notes = []
        if c.weight == 0:
            notes.append(
                "LCCConfig.weight is 0: each correction epoch still clusters the latents and computes targets "
                "(and logs them), but the LCC term adds nothing to the loss, so the model trains as without LCC. "
                "Set weight > 0 (--lcc-weight) to correct, or leave out the LCC layers to save the cost."
            )
        for note in notes:
            warnings.warn(note, UserWarning, stacklevel=2)
        return notes

    def begin_epoch(
        self,
        model: nn.Module,
        data: Dataset[Any] | DataLoader[Any],
        epoch: int,
        *,
        batch_size: int = 256,
        num_workers: int = 0,
        device: torch.device | str | None = None,
        progress: bool = False,
    ) -> dict[str, Any]:
        """What every training loop calls at the start of each 0-based ``epoch`` (fit, Lightning, HF Trainer).

        Refreshes the targets when the schedule says so (:meth:`should_refresh`), or at the first epoch past
        warmup when there are none (a run resumed from a checkpoint without them); with
        ``latent_source="train_pass"`` it also makes sure the buffer the steps write into exists, sized for
        ``data``. Returns the refresh's statistics (``{}`` when no refresh ran).
        """
        if self.config.latent_source == "train_pass":
            n = len(data.dataset if isinstance(data, DataLoader) else data)  # type: ignore[arg-type]
            dev = _device_of(model) if device is None else torch.device(device)
            if self.buffer is None or self.buffer.num_samples != n:
                self.buffer = LatentBuffer(n, dev)
            elif self.buffer.device != dev:  # restored from a checkpoint onto the CPU
                self.buffer.to(dev)
        if self.should_refresh(epoch) or (not self.active and epoch >= self.config.warmup):
            return self.refresh(
                model, data, epoch=epoch, batch_size=batch_size, num_workers=num_workers, device=device,
                progress=progress,
            )  # fmt: skip
        return {}

    @property
    def weight(self) -> float:
        """The LCC term's current weight: ``config.weight``, or with ``weight="auto"`` the value calibrated after
        the last refresh (0.0 before the first: the loss is 0 then anyway). Fixed between refreshes."""
        w = self.config.weight
        if w == "auto":
            if self.calibrated_weight is None and self.active:  # a loop that never calibrates: not silently 0
                raise param_error(
                    "weight", "LCCConfig", "a number, unless the loop calibrates it after each refresh", w,
                    "weight='auto' is set by latentcc.train.fit (and the CLI) after each refresh; in your own "
                    "loop call latentcc.lcc.weight.calibrate_weight(lcc, model, train_data, batch_size=..., "
                    "epoch=...) right after each refresh, or give a number (--lcc-weight 0.01).",
                )  # fmt: skip
            return 0.0 if self.calibrated_weight is None else self.calibrated_weight
        return float(w)

    @property
    def active(self) -> bool:
        """Whether targets exist (the loss is 0 before the first refresh)."""
        return bool(self.targets)

    def __getstate__(self) -> dict[str, Any]:
        """Pickles without the weak reference (it does not pickle); the layers are resolved again on use."""
        return {**self.__dict__, "_model_ref": None}

    def layer_names(self, model: nn.Module) -> list[str]:
        return list(self._resolve(model))

    def _resolve(self, model: nn.Module) -> dict[str, nn.Module]:
        """{full name: module} of the configured layers, resolved once per model (not every step)."""
        model = unwrap(model)  # a DDP-wrapped model has the same layer names as its module
        if self._modules is None or self._model_ref is None or self._model_ref() is not model:
            self._modules = resolve_layers(
                model, list(self.config.layers), func="LatentClusterCorrection", for_capture=True
            )  # the compiled-module check runs here, once per model, not in every step's capture
            self._model_ref = weakref.ref(model)
            self._names = list(self._modules)
        return self._modules

    # ---------------------------------------------------------------- once per correction epoch
    def refresh(
        self,
        model: nn.Module,
        data: Dataset[Any] | DataLoader[Any],
        *,
        epoch: int | None = None,
        batch_size: int = 256,
        num_workers: int = 0,
        device: torch.device | str | None = None,
        progress: bool = False,
    ) -> dict[str, Any]:
        """Collect latents over ``data`` (eval mode), cluster, match and compute targets for every layer.

        ``data`` yields ``(x, y, idx)``; a Dataset is wrapped in an unshuffled DataLoader (the order
        does not matter: rows are placed by index). Returns per-layer statistics and stage timings.
        The model's train/eval mode is restored afterwards.

        Under DDP call it on every rank with the full training set: each rank reads samples
        ``rank::world_size``, rank 0 gathers them and clusters, and every rank gets identical targets
        (a DDP wrapper is looked through; the latent pass runs its module).
        """
        t0 = time.perf_counter()
        model = unwrap(model)
        names = self.layer_names(model)
        c = self.config
        rank, size = world()
        stats: dict[str, Any] = {}
        lat = self._latents(model, data, names, stats, batch_size, num_workers, device, progress)
        t_collect = time.perf_counter() - t0
        dev = _device_of(model) if device is None else torch.device(device)
        stats["time_collect_s"] = round(t_collect, 4)
        for name in names:
            prev = self.last.get(name)

            def cluster(name: str = name, prev: EpochStart | None = prev) -> EpochStart:
                assert lat is not None  # single process, or rank 0
                initial = prev.clusters if prev is not None else None
                return epoch_start(lat[name], lat.labels, c, initial=initial, name=name)

            # under DDP only rank 0 clusters; the others receive its result
            res = cluster() if size == 1 else broadcast_epoch_start(cluster if rank == 0 else None)
            self.last[name] = res
            self.targets[name] = res.targets.to(dev)
            stats |= {f"{name}/{k}": v for k, v in res.stats().items()}
        self.refreshed_epoch = epoch
        if self.buffer is not None:
            self.buffer.reset()  # the next refresh sees only what the steps from now on write
        stats["time_refresh_s"] = round(time.perf_counter() - t0, 4)
        return stats

    def _latents(
        self, model: nn.Module, data: Dataset[Any] | DataLoader[Any], names: list[str], stats: dict[str, Any],
        batch_size: int, num_workers: int, device: torch.device | str | None, progress: bool,
    ) -> Latents | None:  # fmt: skip
        """The latents a refresh clusters: the train-pass buffer (an eval pass of the rows no step wrote),
        else an eval pass over ``data`` (under DDP gathered on rank 0; None on the other ranks)."""
        c = self.config
        rank, size = world()
        kw: dict[str, Any] = dict(pool=c.pool, dim=c.dim, device=device, seed=c.seed)
        if self.buffer is not None and c.latent_source == "train_pass":

            def collect_rows(rows: np.ndarray) -> Latents | None:  # the rows no step wrote: an eval pass
                part, error = None, None
                try:
                    if rows.size:
                        loader = index_loader(data, rows, batch_size=batch_size, num_workers=num_workers)
                        part = collect_latents(model, loader, names, indices=rows, progress=progress, **kw)
                except Exception as e:
                    error = e
                if size > 1:
                    raise_if_any_failed(error, "collecting the latents of unwritten rows")
                elif error is not None:
                    raise error
                return part

            lat, counts = self.buffer.assemble(collect_rows, names)
            stats |= counts
            return lat
        if size == 1:
            loader = (
                data
                if isinstance(data, DataLoader)
                else DataLoader(data, batch_size=batch_size, num_workers=num_workers)
            )
            return collect_latents(model, loader, names, progress=progress, **kw)
        return collect_sharded(  # the full arrays on rank 0 only
            model, data, names, batch_size=batch_size, num_workers=num_workers,
            progress=progress and rank == 0, **kw,
        )  # fmt: skip

    # ---------------------------------------------------------------- every step (hot path)
    @contextmanager
    def capture(self, model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
        """Capture the configured layers' outputs (with grad) during your own forward pass."""
        with capture(unwrap(model), self._resolve(model)) as out:  # a DDP wrapper's module runs the layers
            yield out

    def loss(
        self, z_by_layer: Mapping[str, torch.Tensor], idx: torch.Tensor, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean over layers of ``lcc_loss`` for this batch (unweighted); 0 with grad before the first refresh.

        Pure tensor ops on the latents' device: pooling, an optional fixed projection, a gather and a
        norm per layer. ``idx`` (B,) are the batch's dataset indices (moved to the device here). With
        ``latent_source="train_pass"`` the batch's detached latents (and its labels ``y``, (B,) class ids,
        when given: rows without them are collected again at the refresh) are also written into the buffer
        the next refresh clusters: a copy on the device, no host sync (only in training: not under
        ``torch.no_grad`` nor with the layers in eval mode).
        Raises (see :meth:`check_captured`) when a layer did not run or cannot be trained by the loss.
        """
        checked = self.check_captured(z_by_layer, len(idx))
        zs = {name: self._space(name, pool_latent(z, self.config.pool)) for name, z in checked.items()}
        if not self.targets:
            first, *rest = zs.values()
            out = first.sum() * 0.0
            for z in rest:
                out = out + z.sum() * 0.0
        else:
            terms = []
            for name, z in zs.items():
                t = self.targets[name]
                terms.append(lcc_loss(z, idx.to(t.slot.device, non_blocking=True), t, loss=self.config.loss))
            out = torch.stack(terms).mean()
        # after the loss, which checks idx against the targets' N; only in training (autograd on): a call
        # under torch.no_grad (e.g. on validation batches) must not write validation rows into the buffer
        if self.buffer is not None and torch.is_grad_enabled() and self._training():
            self.buffer.write(zs, idx, y)
        return out

    def _training(self) -> bool:
        """Whether the captured layers are in training mode (attribute reads: no sync). A loss computed on
        evaluation batches (model.eval(), even with autograd on) must not write over the training rows."""
        return all(m.training for m in (self._modules or {}).values())

    def _space(self, name: str, z: torch.Tensor) -> torch.Tensor:
        """A pooled (B, D) latent in the space of the collected ones: the fixed projection when ``dim`` < D."""
        if self.config.dim is not None and z.shape[1] > self.config.dim:
            # projected in float32 (float64 for a float64 layer) as collect_latents does: a half-precision
            # product would put the buffer's rows and the loss in a slightly different space
            z = z.to(torch.float64 if z.dtype == torch.float64 else torch.float32)
            return z @ self._projection(name, z)
        return z

    def check_captured(
        self, z_by_layer: Mapping[str, torch.Tensor], batch_size: int
    ) -> dict[str, torch.Tensor]:
        """``{layer name: captured output}`` of the configured layers, in order, after checking that the loss
        can use them.

        Every layer must have run in this forward pass, with ``batch_size`` rows, and (when autograd is on)
        its output must depend on a parameter that trains: otherwise the LCC term cannot change anything
        and each correction epoch is pure cost. Runs every step: attribute reads only, no device sync.
        """
        names = self._names or list(z_by_layer)
        missing = [n for n in names if n not in z_by_layer]
        if missing:
            raise LatentccError(_not_run_message(missing, names, z_by_layer))
        zs = {n: z_by_layer[n] for n in names}
        for name, z in zs.items():
            if z.shape[0] != batch_size:
                raise LatentccError(
                    f"Layer '{name}' returned shape {tuple(z.shape)} for a batch of {batch_size} samples; its first "
                    "dimension is not the batch. Pick a layer whose output is (batch, ...) "
                    "(see latentcc.list_layers(model))."
                )
            if torch.is_grad_enabled() and not z.requires_grad:
                raise param_error(
                    "layers", "LCCConfig", "layers whose output depends on a parameter that trains", name,
                    "No parameter that feeds this layer has requires_grad=True (e.g. --method lp trains only the "
                    "head, layer_ft only its block and the head), so the LCC loss cannot move its latents and "
                    "each correction epoch would only cost time. Fix: pick a layer at or after a part that "
                    "trains, or train more of the model (--method ft, or layer_ft with an earlier --block). (An "
                    "output computed without autograd, under torch.no_grad or inside reentrant gradient "
                    "checkpointing, looks the same: capture a layer outside those.)",
                )  # fmt: skip
        return zs

    def weighted_loss(
        self, z_by_layer: Mapping[str, torch.Tensor], idx: torch.Tensor, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``weight * loss(...)`` (:attr:`weight`: the configured or calibrated one): the term to add to the task loss."""
        return self.weight * self.loss(z_by_layer, idx, y)

    def _projection(self, name: str, z: torch.Tensor) -> torch.Tensor:
        p = self._proj.get(name)
        if p is None or p.device != z.device:
            p = projection_matrix(z.shape[1], self.config.dim, seed=self.config.seed, device=z.device)  # type: ignore[arg-type]
            self._proj[name] = p
        return p.to(z.dtype)

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Targets, partitions and the train-pass buffer (tensors / plain numbers only: safe for safetensors + JSON
        checkpoints)."""
        return {
            "refreshed_epoch": self.refreshed_epoch,
            "calibrated_weight": self.calibrated_weight,  # weight="auto": a resume between refreshes keeps it
            "buffer": self.buffer.state_dict() if self.buffer is not None else None,
            "layers": {
                n: {
                    "targets": self.targets[n].state_dict(),
                    "clusters": torch.from_numpy(self.last[n].clusters),
                }
                for n in self.targets
            },
        }

    def load_state_dict(self, state: Mapping[str, Any], *, device: torch.device | str = "cpu") -> None:
        self.refreshed_epoch = state.get("refreshed_epoch")
        self.calibrated_weight = state.get("calibrated_weight")
        buf = state.get("buffer")
        self.buffer = LatentBuffer.from_state_dict(buf, device) if buf else None
        self.targets, self.last = {}, {}
        for name, s in state.get("layers", {}).items():
            t = LCCTargets.from_state_dict(s["targets"]).to("cpu")  # state may come from a GPU
            clusters = np.asarray(torch.as_tensor(s["clusters"]).cpu())
            self.targets[name] = t.to(device)
            cc = ~t.mc_mask.numpy()
            self.last[name] = EpochStart(t, clusters, np.asarray(t.owners), cc)


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _not_run_message(missing: list[str], names: list[str], z_by_layer: Mapping[str, torch.Tensor]) -> str:
    """Why a configured layer has no output in this step, told apart by what else ran."""
    model_ran = bool(getattr(z_by_layer, "model_ran", False))
    if model_ran or len(missing) < len(names):
        return (
            f"LCC layer(s) {missing} did not run in this training batch's forward pass, although the model ran "
            "(a layer on a conditional branch, an early exit, or one used only in eval mode). The correction "
            "needs each layer's output for every training batch: otherwise those batches get no LCC term and "
            "the layer's targets, computed on a latent pass where it ran, are not used. Fix: pick layers on "
            "the path every training batch takes (see latentcc.list_layers(model))."
        )
    return (
        f"No output was captured for LCC layer(s) {missing}: no forward pass of the model ran inside "
        "`with lcc.capture(model)` (call model(x) inside it, on the same model object), or the forward "
        "skipped all of these layers for this batch."
    )
