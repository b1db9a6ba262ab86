"""Pre-flight checks of ``fit``: settings that would silently do nothing, and failures that would come mid-run.

Everything here runs once, before the first epoch (and before the run folder is written). What only running
the model can show comes from one example forward on two training samples (eval mode, so BatchNorm statistics
and dropout are untouched; autograd on), with every loss term's ``forward`` context around it as in training:
what each term checks on it (``check_forward``: LCC's layers run, return a usable tensor and depend on a
parameter that trains), which BatchNorm layers see one value per channel per sample, and that the model is a
classifier of the data: its output holds logits (batch, classes), one column per class of the data, and the
labels are integer class ids in range (a head of the wrong width would otherwise train and report a wrong
accuracy, or fail mid-run with a raw IndexError). Reading the two samples (a random augmentation draws from
python's, numpy's or torch's global RNG) and the forward happen with all three global RNG states saved and
restored, so a run is the same with or without it.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import Dataset, default_collate

from latentcc.config import TrainConfig
from latentcc.latents.layers import hooks, model_mode
from latentcc.plumbing.batch import (
    check_labels,
    check_logits,
    explain_label_error,
    input_dtype,
    logits_of,
    run_model,
    to_device,
    unpack_batch,
)
from latentcc.plumbing.errors import LatentccError, param_error
from latentcc.plumbing.seeding import rng_state, set_rng_state

_OPTIMIZER_FIELDS = ("optimizer", "lr", "weight_decay", "momentum")  # build fit's own optimizer only
_BN_ERROR = "Expected more than 1 value per channel when training"  # PyTorch's message for a 1-sample batch
NO_VAL_NOTE = "no validation split: the last epoch's weights are kept"  # results.json's "note"


def epoch_steps(n_train: int, cfg: TrainConfig) -> int:
    """Training steps per epoch: the batches of ``n_train`` samples (a partial last one unless drop_last),
    capped by ``max_steps_per_epoch``."""
    steps = n_train // cfg.batch_size if cfg.drop_last else math.ceil(n_train / cfg.batch_size)
    return min(steps, cfg.max_steps_per_epoch) if cfg.max_steps_per_epoch else steps


def preflight(
    model: nn.Module,
    train: Dataset[Any],
    cfg: TrainConfig,
    *,
    terms: Sequence[Any] = (),
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any,
    device: torch.device,
    num_classes: int | None = None,
    has_val: bool = True,
) -> list[str]:
    """Raise for settings of a ``fit`` call that would do nothing or fail mid-run; return warnings to record.

    The warnings (settings a run may use on purpose, e.g. LCC weight 0, no validation split) are also issued
    with ``warnings.warn``; ``fit`` stores them in config.json under ``"warnings"``. ``num_classes``: the
    classes the data declares (None: unknown, then the model's output width bounds the labels).
    """
    _check_train_settings(cfg, optimizer, scheduler)
    n = len(train)  # type: ignore[arg-type]
    if epoch_steps(n, cfg) == 0:
        raise param_error(
            "drop_last", "TrainConfig", f"False when batch_size ({cfg.batch_size}) exceeds the training split "
            f"({n} samples)", cfg.drop_last,
            "Dropping the incomplete last batch would drop every batch, and nothing would train. Fix: "
            f"drop_last=False (--no-drop-last) or a batch_size of at most {n}.",
        )  # fmt: skip
    # a loss term (LCC) refuses a schedule in which it never acts, and may warn about inert settings
    notes = [note for t in terms if hasattr(t, "check_schedule") for note in t.check_schedule(cfg.epochs)]
    single = _single_sample_batch(n, cfg)
    bns: dict[str, nn.Module] = (
        {name: m for name, m in model.named_modules() if isinstance(m, _BatchNorm)} if single else {}
    )
    _example_forward(model, train, terms, bns, n, cfg, device, num_classes)
    if not has_val:
        # stacklevel: past fit and its folder-lock wrapper, to the caller's line
        warnings.warn(f"fit: {NO_VAL_NOTE} (nothing to select the best epoch on).", UserWarning, stacklevel=4)
        notes = [*notes, NO_VAL_NOTE]
    return notes


def task_loss(
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    logits: torch.Tensor,
    y: torch.Tensor,
    idx: Any,
    *,
    func: str,
    role: str,
) -> torch.Tensor:
    """``criterion(logits, y)``; PyTorch's raw error about labels no door check saw (a label out of range in a
    later batch: "Target 10 is out of bounds") becomes a clear one naming the sample. No sync unless it raised."""
    try:
        return criterion(logits, y)
    except (IndexError, RuntimeError, ValueError) as e:
        clear = explain_label_error(e, y, idx, logits, func=func, role=role)
        if clear is None:
            raise
        raise clear from e


def nonfinite_loss_error(loss: float, epoch: int, model: nn.Module) -> LatentccError:
    """The error for a training loss that became NaN/inf, naming the likely cause."""
    low = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()} & {"float16", "bfloat16"})
    if low:
        return LatentccError(
            f"Training loss became {loss} in epoch {epoch}, and the model's parameters are {' / '.join(low)}: "
            "training in half precision is the likely cause (float16 rounds AdamW's eps of 1e-8 to 0 and "
            "overflows beyond 65504; bfloat16 keeps about 3 significant digits, so small updates vanish). Fix: "
            "train in float32 (model.float()), and use torch.autocast for mixed precision if speed or memory "
            "is the aim."
        )
    return LatentccError(
        f"Training loss became {loss} in epoch {epoch}: training diverged, or the training inputs hold NaN/inf "
        "values. Fix: lower --lr or enable --grad-clip; check the data (e.g. np.isfinite(x).all())."
    )


def explain_step_error(e: BaseException, cfg: TrainConfig, n_train: int) -> LatentccError | None:
    """A clear error for a raw error of a training step that ``preflight`` could not foresee, else None."""
    if _BN_ERROR in str(e) and _single_sample_batch(n_train, cfg):
        return _bn_error(None, n_train, cfg)
    return None


# --- private ---------------------------------------------------------------------------------------


def _check_train_settings(cfg: TrainConfig, optimizer: Any, scheduler: Any) -> None:
    """TrainConfig fields that another argument (or another field) makes inert must be left at their defaults."""
    default = TrainConfig()
    if optimizer is not None:
        unused = [
            f"{f}={getattr(cfg, f)!r}" for f in _OPTIMIZER_FIELDS if getattr(cfg, f) != getattr(default, f)
        ]
        if unused:
            raise param_error(
                "optimizer", "fit", f"None when TrainConfig sets {', '.join(unused)}: those fields only build "
                "fit's own optimizer and would be ignored", type(optimizer).__name__,
                "Fix: set them on your optimizer and leave them at their defaults in TrainConfig, or drop "
                "optimizer= to let fit build one from TrainConfig.",
            )  # fmt: skip
    elif cfg.optimizer == "adamw" and cfg.momentum != default.momentum:
        raise param_error(
            "momentum", "TrainConfig", f"left at its default ({default.momentum}) with optimizer='adamw': AdamW "
            "has no momentum setting and would ignore it", cfg.momentum,
            "Fix: optimizer='sgd' (--optimizer sgd) for SGD with momentum, or drop --momentum.",
        )  # fmt: skip
    # a scheduler= replaces the built-in schedule: "none" says just that, and the default is what a TrainConfig
    # that never mentions schedules reads; only another named schedule would be silently dropped
    if scheduler is not None and cfg.scheduler not in (default.scheduler, "none"):
        raise param_error(
            "scheduler", "TrainConfig", f"'none' or its default ({default.scheduler!r}) when fit gets a "
            "scheduler= of its own", cfg.scheduler,
            f"fit would step your {type(scheduler).__name__} and ignore this built-in schedule. Fix: "
            "scheduler='none' (--scheduler none), or drop scheduler= to use the built-in one.",
        )  # fmt: skip


def _single_sample_batch(n: int, cfg: TrainConfig) -> bool:
    """Whether an epoch trains on a batch of exactly one sample (every batch, or a partial last one reached)."""
    if cfg.batch_size == 1:
        return True
    full = math.ceil(n / cfg.batch_size)
    reached = not cfg.max_steps_per_epoch or cfg.max_steps_per_epoch >= full
    return n % cfg.batch_size == 1 and not cfg.drop_last and reached


def _example_forward(
    model: nn.Module,
    train: Dataset[Any],
    terms: Sequence[Any],
    bns: dict[str, nn.Module],
    n: int,
    cfg: TrainConfig,
    device: torch.device,
    num_classes: int | None = None,
) -> None:
    """One forward on the first two training samples, then the checks that need it (see the module docs)."""
    per_channel: dict[str, int] = {}  # BatchNorm layer -> values per channel per sample

    def record(name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            if args and isinstance(args[0], torch.Tensor) and args[0].ndim >= 2:
                per_channel[name] = math.prod(args[0].shape[2:])

        return hook

    # fit has just seeded every generator: reading samples (a random augmentation) and the forward must not
    # advance python's, numpy's or torch's, or the run would differ from one without this pass
    saved = rng_state()
    try:
        # eval mode: no BatchNorm statistics move, no dropout
        with (
            torch.enable_grad(),
            model_mode(model, training=False),
            hooks(pre=[(m, record(n)) for n, m in bns.items()]),
        ):
            x, y, idx = unpack_batch(default_collate([train[i] for i in range(min(2, n))]))
            check_labels(y, min(2, n), func="fit")  # integer class ids, one per sample: before the model runs
            x = to_device(x, device, input_dtype(model))
            with contextlib.ExitStack() as stack:  # every loss term around the forward, as in training
                captured = [stack.enter_context(t.forward(model)) for t in terms]
                out = run_model(model, x, "fit")
            for t, c in zip(terms, captured, strict=True):
                if hasattr(t, "check_forward"):  # e.g. LCC: its layers ran and depend on a trained parameter
                    t.check_forward(c, len(y), model)
            _check_classifier(out, y, idx, num_classes)
    finally:
        set_rng_state(*saved)
    flat = [name for name, values in per_channel.items() if values == 1]
    if flat:
        raise _bn_error(flat[0], n, cfg)


def _check_classifier(output: Any, y: torch.Tensor, idx: Any, num_classes: int | None) -> None:
    """The output holds (batch, classes) logits, one column per class of the data, and the labels fit them.

    A head wider than the data's classes trains without an error and reports a wrong accuracy (predictions
    land on classes that do not exist); a narrower one fails mid-run with a raw IndexError.
    """
    logits = logits_of(output, "fit")
    check_logits(logits, len(y), "fit")
    width = logits.shape[1]
    if num_classes is not None and width != num_classes:
        raise param_error(
            "model", "fit", f"a classifier with one output per class of the data ({num_classes} classes)",
            f"a model with {width} outputs",
            f"Fix: give the model {num_classes} outputs, e.g. latentcc.models.load_model(name, "
            f"num_classes={num_classes}), or replace its head (model.fc = nn.Linear(model.fc.in_features, "
            f"{num_classes}) for a torchvision ResNet).",
        )  # fmt: skip
    known = f"the data's {width} classes" if num_classes else f"the model's {width} outputs, one per class"
    check_labels(
        y, len(y), func="fit", num_classes=width, classes_from=known, idx=idx, role="the training split"
    )


def _bn_error(layer: str | None, n: int, cfg: TrainConfig) -> LatentccError:
    which = f"the BatchNorm layer '{layer}'" if layer else "a BatchNorm layer"
    why = (
        f"{which} cannot normalise a single value per channel in training mode (PyTorch raises '{_BN_ERROR}')"
    )
    if n == 1:
        return param_error(
            "data", "fit", "a training split of at least 2 samples for a model with BatchNorm layers", "1 sample",
            f"Every batch holds the one sample and {why}. Fix: more training data.",
        )  # fmt: skip
    if cfg.batch_size == 1:
        return param_error(
            "batch_size", "TrainConfig", "at least 2 for a model with BatchNorm layers", 1,
            f"With batches of one sample {why}. Fix: batch_size >= 2 (--batch-size).",
        )  # fmt: skip
    alt = next(b for b in _near(cfg.batch_size, n) if n % b != 1)  # b = n always qualifies
    return param_error(
        "drop_last", "TrainConfig", "True when the last training batch holds a single sample and the model has "
        "BatchNorm layers", cfg.drop_last,
        f"The training split has {n} samples, so with batch_size {cfg.batch_size} each epoch ends with a batch "
        f"of 1 and {why}. Fix: drop_last=True (--drop-last) to skip that one sample per epoch (another one each "
        f"epoch, as the order is shuffled), or a batch_size that leaves no 1-sample batch, e.g. {alt}.",
    )  # fmt: skip


def _near(b: int, n: int) -> Iterator[int]:
    """Batch sizes in 2..n by distance from ``b``, the smaller first: b-1, b+1, b-2, b+2, ..."""
    for d in range(1, n + b):
        yield from (c for c in (b - d, b + d) if 2 <= c <= n)
