"""What ``fit`` plugs features into: epoch callbacks and per-step loss terms.

``fit`` knows nothing of LCC or of a method's penalty: both arrive as objects of these protocols, the same
way LCC plugs into Lightning (a callback that wraps ``training_step``) and the Hugging Face Trainer (a
callback plus ``compute_loss``). A hook implements any of the optional methods below; ``fit`` calls the
ones it finds, in this order per epoch:

    on_epoch_start(ctx)                       # e.g. the LCC refresh (adds its statistics to ctx.metrics)
    for each batch:
        with term.forward(model) as captured: # every loss term, around the model's one forward pass
            logits = model(x)
        loss = task loss + sum of term.weight * term(captured, step)
    on_validation(ctx, val)                   # after the validation pass (e.g. the LCC CC/MC diagnostic)
    on_epoch_end(ctx)                         # ctx.metrics is the epoch's row, epoch_time_s included
                                              # (loss terms first: the caller's callbacks see their columns,
                                              # e.g. lcc_overhead; epoch_time_s stops before on_epoch_end)

A term's per-sample mean (unweighted) is logged as ``train_<name>``, and ``train_ce`` is the task loss alone.
Before training, ``check_schedule(epochs) -> notes`` and ``check_forward(captured, batch_size, model)`` (on one
example batch) let a term refuse settings that would do nothing; ``state_dict()`` / ``load_state_dict(state, device=)``
carry its state in checkpoints (key ``terms/<name>``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn


@dataclass
class EpochContext:
    """What callbacks see: the live objects of the loop (mutable on purpose)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    epoch: int  # 0-based
    run_dir: Path | None
    device: torch.device
    metrics: dict[str, Any] = field(default_factory=dict)  # the epoch's row; hooks add columns to it
    data: Any = None  # the run's splits (train / val / test)
    config: Any = None  # the run's TrainConfig
    loss_fn: Any = None  # the task loss (logits, y) -> scalar the run trains on


class Callback(Protocol):
    def on_epoch_start(self, ctx: EpochContext) -> None: ...
    def on_epoch_end(self, ctx: EpochContext) -> None: ...


@dataclass
class Step:
    """One training batch, as loss terms see it (all on the device)."""

    model: nn.Module
    x: Any
    y: torch.Tensor
    idx: torch.Tensor | None
    logits: torch.Tensor


class LossTerm(Protocol):
    """An extra term of the training loss: ``loss = task loss + weight * term(captured, step)``."""

    name: str  # logged per epoch as train_<name>: its mean per sample, unweighted
    weight: float
    needs_index: bool  # batches must carry sample indices (x, y, idx)

    def forward(self, model: nn.Module) -> contextlib.AbstractContextManager[Any]: ...
    def __call__(self, captured: Any, step: Step) -> torch.Tensor: ...


class PenaltyTerm:
    """A method's extra loss ``penalty(model, x, y, logits) -> scalar`` (e.g. the GC regulariser), added as is."""

    name = "penalty"
    weight = 1.0
    needs_index = False

    def __init__(self, penalty: Callable[[nn.Module, Any, torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        self.penalty = penalty

    def forward(self, model: nn.Module) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def __call__(self, captured: Any, step: Step) -> torch.Tensor:
        return self.penalty(step.model, step.x, step.y, step.logits)


def call_hooks(hooks: Any, method: str, *args: Any, **kwargs: Any) -> None:
    """``hook.method(*args)`` for every hook that has it, in order."""
    for hook in hooks:
        fn = getattr(hook, method, None)
        if fn is not None:
            fn(*args, **kwargs)
