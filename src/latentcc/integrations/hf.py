"""Hugging Face ``Trainer``: ``LCCTrainer`` (or ``LCCTrainerMixin`` for your own Trainer subclass).

    trainer = LCCTrainer(model=model, args=TrainingArguments(..., remove_unused_columns=False),
                         train_dataset=train_ds,  # columns: model inputs, "labels", and "idx" = row 0..N-1
                         lcc_config=LCCConfig(layers=("bert.pooler",), weight=1e-2))
    trainer.train()

Each training step pops ``inputs["idx"]``, runs the usual ``compute_loss`` inside ``lcc.capture(model)`` and
adds ``weight * lcc_loss``; the unweighted term is logged as ``"lcc/loss"`` with the task loss. At each
correction epoch's start a callback refreshes the targets over the training set: ``lcc_data`` if given (a
dataset yielding ``(x, y, idx)``), else ``train_dataset`` read unshuffled through ``data_collator``, each dict
batch split into ``(inputs, labels, idx)`` and fed as ``model(**inputs)``. Under ``torchrun``/``accelerate
launch`` every rank refreshes over the full training set: each collects its shard, rank 0 clusters, all ranks
get the same targets (docs/distributed.md); ``idx`` must be the row of the un-sharded ``train_dataset``. The LCC
term is a per-batch mean, so with ``gradient_accumulation_steps > 1`` and a model that divides its loss by
``num_items_in_batch``, divide ``weight`` by the accumulation steps yourself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from latentcc.config import LCCConfig
from latentcc.latents.layers import hooks
from latentcc.lcc.correction import LatentClusterCorrection
from latentcc.lcc.weight import require_numeric_weight
from latentcc.plumbing.errors import LatentccError, param_error, require

if TYPE_CHECKING:
    from transformers import Trainer, TrainerCallback

    _Base = Trainer
else:
    _tf = require("transformers", "hf", purpose="the Hugging Face Trainer integration")
    Trainer, TrainerCallback, _Base = _tf.Trainer, _tf.TrainerCallback, object

_NO_IDX = (
    "LCC needs each training sample's index: add an 'idx' column holding the row number 0..N-1 "
    "(dataset.map(lambda _, i: {'idx': i}, with_indices=True)) and set remove_unused_columns=False "
    "in TrainingArguments so the Trainer keeps it."
)


class LCCTrainerMixin(_Base):
    """Adds Latent Cluster Correction to a ``transformers.Trainer``: ``class T(LCCTrainerMixin, Trainer)``."""

    def __init__(
        self,
        *args: Any,
        lcc_config: LCCConfig | None = None,
        lcc: LatentClusterCorrection | None = None,
        lcc_data: Dataset[Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if (lcc_config is None) == (lcc is None):
            raise param_error(
                "lcc_config", type(self).__name__,
                "an LCCConfig, or None when lcc= (a LatentClusterCorrection) is given: exactly one of the two",
                lcc_config,
            )  # fmt: skip
        super().__init__(*args, **kwargs)
        self.lcc = lcc if lcc is not None else LatentClusterCorrection(lcc_config)  # type: ignore[arg-type]
        require_numeric_weight(self.lcc.config, type(self).__name__)
        self.lcc_data = lcc_data
        self._lcc_sum: Any = 0.0  # unweighted LCC loss summed on the device since the last log
        self._lcc_n = 0
        self.add_callback(_LCCRefresh(self))

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        idx = inputs.pop("idx", None)  # evaluation batches may carry it too: never pass it to the model
        kw: dict[str, Any] = {"return_outputs": return_outputs, "num_items_in_batch": num_items_in_batch}
        if not model.training:
            return super().compute_loss(model, inputs, **kw)
        if idx is None:
            raise LatentccError(f"{type(self).__name__}: the batch has no 'idx'. {_NO_IDX}")
        # the labels for the train-pass buffer, read before compute_loss (which pops them for label smoothing)
        labels = inputs.get(self.label_names[0] if self.label_names else "labels")
        with self.lcc.capture(cast(nn.Module, self.model)) as z:
            out: Any = super().compute_loss(model, inputs, **kw)
        l_lcc = self.lcc.loss(z, idx, labels if isinstance(labels, torch.Tensor) else None)
        self._lcc_sum, self._lcc_n = self._lcc_sum + l_lcc.detach(), self._lcc_n + 1  # no host sync
        if return_outputs:
            return out[0] + self.lcc.weight * l_lcc, out[1]
        return out + self.lcc.weight * l_lcc

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs and self._lcc_n:  # sync point: once per logging step
            logs["lcc/loss"] = float(self._lcc_sum) / self._lcc_n
            self._lcc_sum, self._lcc_n = 0.0, 0
        super().log(logs, *args, **kwargs)

    def lcc_refresh(self, epoch: int) -> dict[str, Any]:
        """The start of ``epoch`` for LCC (the callback calls this every epoch): ``LatentClusterCorrection.begin_epoch``
        refreshes the targets when scheduled (or, after a resume, when there are none past warmup)."""
        net, bs = cast(nn.Module, self.model), self.args.per_device_eval_batch_size
        data: Any = self.lcc_data
        if data is None:
            data = DataLoader(self.train_dataset, batch_size=bs, collate_fn=self._lcc_collate)  # type: ignore[arg-type]
        # the latent pass calls model(x); a pre-hook turns a dict x into model(**x) for the HF forward
        with hooks(pre=[(net, _dict_as_kwargs)], with_kwargs=True):
            stats = self.lcc.begin_epoch(net, data, epoch, batch_size=bs, device=self.args.device)
        if stats:
            self.log({f"lcc/{k}": float(v) for k, v in stats.items() if isinstance(v, int | float)})
        return stats

    def _lcc_collate(self, features: list[dict[str, Any]]) -> tuple[dict[str, Any], Any, Any]:
        batch = dict(self.data_collator(features))
        if "idx" not in batch:
            raise LatentccError(f"{type(self).__name__}: train_dataset has no 'idx' column. {_NO_IDX}")
        labels = batch.pop(self.label_names[0] if self.label_names else "labels")
        return batch, labels, batch.pop("idx")


def _dict_as_kwargs(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if len(args) == 1 and isinstance(args[0], dict):
        return (), {**args[0], **kwargs}
    return None


class _LCCRefresh(TrainerCallback):
    def __init__(self, trainer: LCCTrainerMixin) -> None:
        self.trainer = trainer

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        epochs = state.num_train_epochs or None  # what the Trainer computed from num_train_epochs / max_steps
        self.trainer.lcc.check_schedule(epochs, epochs_param="TrainingArguments num_train_epochs")

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # state.epoch is a float: 0.9999.. -> 1. HF checkpoints do not carry the targets: after a resume,
        # begin_epoch rebuilds them at the first epoch past warmup
        self.trainer.lcc_refresh(round(state.epoch or 0))


class LCCTrainer(LCCTrainerMixin, Trainer):
    """``transformers.Trainer`` with Latent Cluster Correction (see the module docstring)."""
