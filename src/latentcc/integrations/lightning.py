"""PyTorch Lightning: ``LCCCallback`` refreshes LCC targets at epoch start and adds the LCC loss to each step.

    callback = LCCCallback(LCCConfig(layers=("backbone.fc1",), weight=1e-2))
    trainer = lightning.Trainer(callbacks=[callback])
    trainer.fit(module, train_loader)  # batches (x, y, idx); training_step returns the task loss

With ``auto_loss=True`` (default) the module's ``training_step`` is wrapped for the duration of ``fit``: it
runs inside ``lcc.capture(module)``, and ``weight * lcc_loss`` of the captured layers (for the batch's sample
indices ``batch[2]``) is added to the loss it returns (a tensor, or a dict's ``"loss"``); the unweighted term
is logged as ``"lcc/loss"``. The original ``training_step`` is restored after ``fit``. With ``auto_loss=False``
nothing is wrapped; add the term yourself::

    def training_step(self, batch, batch_idx):
        x, y, idx = batch
        with self.lcc_callback.lcc.capture(self) as z:
            logits = self(x)
        return F.cross_entropy(logits, y) + self.lcc_callback.lcc.weighted_loss(z, idx)

``state_dict``/``load_state_dict`` carry the targets in Lightning checkpoints. Under a DDP strategy
(``strategy="ddp"``/``"ddp_spawn"``, devices > 1) every rank refreshes over the full training set: each
collects its shard, rank 0 clusters, all ranks get the same targets (docs/distributed.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset

from latentcc.config import LCCConfig
from latentcc.lcc.correction import LatentClusterCorrection
from latentcc.lcc.weight import require_numeric_weight
from latentcc.plumbing.batch import unpack_batch
from latentcc.plumbing.errors import LatentccError, require

if TYPE_CHECKING:
    from lightning.pytorch import Callback, LightningModule, Trainer
else:
    Callback = require("lightning.pytorch", "lightning", purpose="LCCCallback").Callback


class LCCCallback(Callback):
    """Latent Cluster Correction as a Lightning callback; ``self.lcc`` is the wrapped plain-PyTorch object.

    ``train_data`` (yielding ``(x, y, idx)``) is what the latents are collected over at each refresh, as
    ``pl_module(x)`` (so ``forward`` must run the named layers); default: ``trainer.train_dataloader.dataset``.
    ``batch_size``: batch size of that latent pass. ``auto_loss``: wrap ``training_step`` (see the module docs).
    """

    def __init__(
        self,
        config: LCCConfig | LatentClusterCorrection,
        train_data: Dataset[Any] | None = None,
        *,
        batch_size: int = 256,
        auto_loss: bool = True,
    ) -> None:
        self.lcc = config if isinstance(config, LatentClusterCorrection) else LatentClusterCorrection(config)
        require_numeric_weight(self.lcc.config, "LCCCallback")
        self.train_data, self.batch_size, self.auto_loss = train_data, batch_size, auto_loss
        self._saved: Any = None
        self._wrapped = False

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit" or not self.auto_loss:
            return
        if not pl_module.automatic_optimization:
            raise LatentccError(
                "LCCCallback(auto_loss=True) cannot add a loss under manual optimization; pass auto_loss=False "
                "and add callback.lcc.weighted_loss(z, idx) to your loss (see the LCCCallback docs)."
            )
        original, lcc = pl_module.training_step, self.lcc

        def training_step(batch: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                _, y, maybe_idx = unpack_batch(batch, need_index=True)
            except LatentccError as e:
                raise LatentccError(
                    f"LCCCallback: {e} Or pass auto_loss=False and add the loss yourself."
                ) from e
            idx: Any = maybe_idx  # never None with need_index
            with lcc.capture(pl_module) as z:
                out: Any = original(batch, *args, **kwargs)
            if out is None:  # the user skipped this batch
                return out
            l_lcc = lcc.loss(
                z, idx, y if isinstance(y, torch.Tensor) else None
            )  # y: rows of the train-pass buffer
            pl_module.log("lcc/loss", l_lcc.detach(), batch_size=len(idx))
            if isinstance(out, dict):
                return {**out, "loss": out["loss"] + lcc.weight * l_lcc}
            return out + lcc.weight * l_lcc

        self._saved = pl_module.__dict__.get("training_step")  # None unless the instance had its own
        pl_module.training_step = training_step  # type: ignore[method-assign]
        self._wrapped = True

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._wrapped:
            del pl_module.training_step  # the class's own method shows through again
            if self._saved is not None:
                pl_module.training_step = self._saved  # type: ignore[method-assign]
            self._wrapped = False

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self.teardown(trainer, pl_module, "fit")

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        epochs = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs > 0 else None
        self.lcc.check_schedule(epochs, epochs_param="Trainer max_epochs")  # same checks as fit
        if self.lcc.active:  # targets restored from a checkpoint sit on the CPU: move them to the model
            self.lcc.load_state_dict(self.lcc.state_dict(), device=pl_module.device)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        data = (
            self.train_data
            if self.train_data is not None
            else getattr(trainer.train_dataloader, "dataset", None)
        )
        if data is None:
            raise LatentccError(
                "LCCCallback could not find the training dataset; pass it: LCCCallback(config, train_data=...)."
            )
        stats = self.lcc.begin_epoch(  # the refresh when scheduled (and the train-pass buffer), as in fit
            pl_module, data, trainer.current_epoch, batch_size=self.batch_size, device=pl_module.device
        )
        if stats:
            nums = {f"lcc/{k}": float(v) for k, v in stats.items() if isinstance(v, int | float)}
            pl_module.log_dict(nums, on_step=False, on_epoch=True)

    def state_dict(self) -> dict[str, Any]:
        return self.lcc.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.lcc.load_state_dict(state_dict)
