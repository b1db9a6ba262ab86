"""The plain-PyTorch fine-tuning loop: reads top to bottom, resumable, selects the best epoch on val.

``fit`` trains the model *in place* (that is its point) and leaves it holding the best-on-val
weights, on which the test split is reported.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn
from torch.utils.data import DataLoader, Dataset

from latentcc.atomic import (
    atomic_write_bytes,
    atomic_write_json,
    ensure_writable_dir,
    remove_stale_temps,
    sha256_file,
)
from latentcc.batch import (
    check_logits,
    check_materialised,
    input_dtype,
    logits_of,
    read_batches,
    run_model,
    to_device,
    to_labels,
    unpack_batch,
)
from latentcc.config import LCCConfig, TrainConfig, config_to_dict
from latentcc.correction import LatentClusterCorrection, cc_mc_accuracy
from latentcc.errors import CheckpointError, LatentccError, param_error
from latentcc.progress import format_seconds, log_to, message, track
from latentcc.runlock import locks_folder
from latentcc.seeding import rng_state, seed_everything, set_rng_state
from latentcc.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    load_weights,
    peek_state,
    save_checkpoint,
)
from latentcc.train.checks import (
    NO_VAL_NOTE,
    epoch_steps,
    explain_step_error,
    nonfinite_loss_error,
    preflight,
    task_loss,
)
from latentcc.train.fingerprint import run_fingerprint
from latentcc.train.logger import MetricsLogger
from latentcc.train.metrics import topk_correct
from latentcc.train.resume import (
    check_config_unedited,
    check_resume_access,
    check_same_run,
    config_digest,
    read_run_config,
    resume_record,
)


class Splits(Protocol):
    train: Dataset[Any]
    val: Dataset[Any]
    test: Dataset[Any]


@dataclass
class EpochContext:
    """What callbacks see: the live objects of the loop (mutable on purpose)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    epoch: int
    run_dir: Path | None
    device: torch.device
    metrics: dict[str, Any] = field(default_factory=dict)


class Callback(Protocol):
    def on_epoch_start(self, ctx: EpochContext) -> None: ...
    def on_epoch_end(self, ctx: EpochContext) -> None: ...


@dataclass
class EvalResult:
    loss: float
    top1: float
    topk: float
    k: int
    n: int
    correct: np.ndarray  # (n,) bool, top-1 correctness in sample-index order (for CC-vs-MC analyses)


@dataclass
class FitResult:
    best_epoch: int  # 1-based; the epoch whose weights the model now holds
    best_val_top1: float | None  # None without a validation split: then the last epoch's weights are kept
    test: EvalResult | None
    history: list[dict[str, Any]]
    run_dir: Path | None
    wall_time_s: float
    trainable_params: int
    model: nn.Module | None = field(default=None, repr=False)  # the trained model, holding the best weights
    total_params: int = 0  # all parameters, trainable or frozen (transfer methods train a fraction)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "best_epoch": self.best_epoch,
            "best_val_top1": self.best_val_top1,
            "trainable_params": self.trainable_params,
            "total_params": self.total_params,
            "wall_time_s": round(self.wall_time_s, 2),
        }
        if self.test is not None:
            out |= {
                "test_top1": self.test.top1,
                f"test_top{self.test.k}": self.test.topk,
                "test_loss": self.test.loss,
            }
        if self.best_val_top1 is None:  # said next to the numbers, not only in a warning at the start
            out["note"] = NO_VAL_NOTE
        return out


def resolve_device(device: str | torch.device, *, func: str = "fit") -> torch.device:
    """``device`` as a torch.device this machine has ("auto": the GPU when there is one, else the CPU).

    The one place devices are resolved: an unknown name, or a device this PyTorch build or machine lacks
    (CUDA on a CPU-only build, cuda:3 with two GPUs, mps off a Mac), raises naming ``func``'s 'device'.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise param_error("device", func, "'auto', 'cpu', 'cuda' or 'cuda:N'", device) from e
    missing = _missing_device(dev)
    if missing:
        raise param_error(
            "device", func, "a device this machine has", str(device),
            f"{missing}. Fix: 'cpu', or 'auto' to use a GPU when one is available (--device cpu / auto).",
        )  # fmt: skip
    return dev


def _missing_device(dev: torch.device) -> str | None:
    """Why ``dev`` cannot be used here, or None if it can."""
    if dev.type == "cpu":
        return None
    if dev.type == "meta":
        return "The 'meta' device holds shapes but no values: nothing can train or run on it"
    if dev.type == "cuda":
        if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
            return f"This PyTorch build ({torch.__version__}) has no CUDA support"
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            return "PyTorch sees no CUDA GPU (torch.cuda.is_available() is False)"
        if dev.index is not None and dev.index >= count:
            return f"This machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}"
        return None
    backend = getattr(torch.backends, dev.type, None) if dev.type == "mps" else getattr(torch, dev.type, None)
    available = getattr(backend, "is_available", None)
    if callable(available) and not available():
        return f"The '{dev.type}' backend is not available in this PyTorch build or on this machine"
    return None


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset[Any],
    *,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    topk: int = 5,
    num_classes: int | None = None,
    num_workers: int = 0,
    progress: bool = False,
    desc: str = "eval",
) -> EvalResult:
    """Loss, top-1 and top-k accuracy of ``model`` on ``dataset``; restores the model's train/eval mode."""
    dev = resolve_device(device, func="evaluate")
    check_materialised(model, "evaluate")
    n = len(dataset)  # type: ignore[arg-type]
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    was_training = model.training
    in_dtype = input_dtype(model)  # float inputs take the model's dtype (e.g. float64)
    model.eval()
    loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
    correct = torch.zeros(n, dtype=torch.bool, device=dev)
    hits_k = torch.zeros((), device=dev, dtype=torch.long)
    k = topk
    try:
        pos = 0
        batches = read_batches(loader, f"evaluated as '{desc}'")  # a clear error for a too-long __len__
        for batch in track(batches, desc, unit="batches", enabled=progress):
            x, y, idx = unpack_batch(batch)
            y = to_labels(y, dev)
            logits = logits_of(run_model(model, to_device(x, dev, in_dtype), "evaluate"), "evaluate")
            check_logits(logits, len(y), "evaluate")  # shapes only: no sync
            k = min(topk, num_classes or logits.shape[1], logits.shape[1])
            loss_sum += task_loss(_summed_ce, logits, y, idx, func="evaluate", role=f"the '{desc}' split")
            hit = topk_correct(logits, y, (1, k))
            rows = idx.to(dev) if idx is not None else torch.arange(pos, pos + len(y), device=dev)
            correct[rows] = hit[1]
            hits_k += hit[k].sum()
            pos += len(y)
    finally:
        model.train(was_training)
    if n == 0:
        return EvalResult(float("nan"), float("nan"), float("nan"), k, 0, np.zeros(0, dtype=bool))
    c = correct.cpu().numpy()  # sync point: once per pass
    return EvalResult(float(loss_sum) / n, float(c.mean()), float(hits_k) / n, k, n, c)


def _summed_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy summed over the batch, in float64 for the running sum (float32 logits for fp16 models)."""
    return nn.functional.cross_entropy(logits.float(), y, reduction="sum").double()


def _num_classes(data: Any) -> int | None:
    """The number of classes the data declares (``num_classes``, else ``len(classes)``), or None if unknown."""
    k = getattr(data, "num_classes", None)
    if isinstance(k, int) and not isinstance(k, bool) and k > 0:
        return k
    try:
        return len(data.classes) or None  # a list of names, or an array of them
    except (AttributeError, TypeError):
        return None


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise LatentccError(
            "The model has no trainable parameters (all requires_grad=False); unfreeze what should train."
        )
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _check_fit_extras(
    *args: Any, lcc: LatentClusterCorrection | LCCConfig | None = None, **kwargs: Any
) -> None:
    """A missing optional dependency of LCC (igraph, leidenalg, faiss) refuses the run before its folder exists."""
    from latentcc.extras import check_extras

    cfg = lcc.config if isinstance(lcc, LatentClusterCorrection) else lcc
    if isinstance(cfg, LCCConfig):
        check_extras("fit", lcc=cfg)


# one process per run folder: taken before anything is written or cleaned there
@locks_folder("out_dir", before=_check_fit_extras)
def fit(
    model: nn.Module,
    data: Splits,
    *,
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    callbacks: Sequence[Callback] = (),
    extra_config: dict[str, Any] | None = None,
    lcc: LatentClusterCorrection | LCCConfig | None = None,
    penalty: Callable[[nn.Module, Any, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> FitResult:
    """Fine-tune ``model`` on ``data.train``, select the best epoch on ``data.val``, report ``data.test``.

    ``out_dir`` (optional) receives config.json, metrics.json/.csv, checkpoints/, best.safetensors,
    results.json, training_curve.png and, with ``progress``, log.txt (progress lines and one summary
    line per epoch, appended on resume; see :mod:`latentcc.progress`). ``resume=True`` continues the
    run found there from its last checkpoint and reaches the same result as an uninterrupted run (data order is a function of
    (seed, epoch); RNG, optimizer and scheduler states are restored).

    ``lcc`` (an :class:`LCCConfig` or a :class:`LatentClusterCorrection`) adds Latent Cluster
    Correction: at each correction epoch's start the training set's latents are clustered and targets
    computed; each step adds ``weight * lcc_loss`` of the captured layers to the task loss. Batches
    must then carry sample indices, ``(x, y, idx)``.

    ``penalty(model, x, y, logits) -> scalar`` (optional; e.g. the GC regulariser of
    ``latentcc.methods.apply_method``) is added to each training step's loss and logged per epoch as
    ``train_penalty`` (its mean per sample, as added). ``x`` is the batch input on the device.

    Before the first epoch, settings that would do nothing or fail mid-run raise, naming the fix (see
    ``latentcc.train.checks``: LCC that never runs or cannot train its layers, TrainConfig fields your own
    optimizer makes inert, a 1-sample last batch for BatchNorm, which ``drop_last`` avoids). Float inputs
    are cast to the model's dtype when its parameters share one (a float64 model trains on float32 data).
    """
    cfg = config or TrainConfig()
    t0 = time.perf_counter()
    device = resolve_device(cfg.device, func="TrainConfig")
    check_materialised(model, "fit")  # a model on 'meta' fails in model.to() with a raw error otherwise
    run_dir = ensure_writable_dir(out_dir) if out_dir is not None else None
    ckpt_root = run_dir / "checkpoints" if run_dir else None
    if resume and run_dir is None:
        raise param_error(
            "resume", "fit", "used together with out_dir", resume, "Pass the folder of the run to resume."
        )
    n_train = len(data.train)  # type: ignore[arg-type]
    if n_train == 0:
        raise param_error("data", "fit", "a training split with at least one sample", 0)
    # what the run starts from, before anything changes the model: recorded at the start, checked on resume
    fingerprint = (  # the caller's loss/penalty/optimizer/scheduler too, before a resume loads their states
        run_fingerprint(
            model, data, loss_fn=loss_fn, penalty=penalty, optimizer=optimizer, scheduler=scheduler
        )
        if run_dir is not None
        else None
    )

    seed_everything(cfg.seed)
    model.to(device)
    opt = optimizer or _make_optimizer(model, cfg)
    steps_per_epoch = epoch_steps(n_train, cfg)
    sched = scheduler
    if sched is None and cfg.scheduler == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch)
    criterion = loss_fn or nn.CrossEntropyLoss()
    corr = LatentClusterCorrection(lcc) if isinstance(lcc, LCCConfig) else lcc
    num_classes = _num_classes(data)
    has_val = len(data.val) > 0  # type: ignore[arg-type]
    # settings that would do nothing or fail mid-run raise now, before any file is written
    notes = preflight(
        model, data.train, cfg, lcc=corr, optimizer=optimizer, scheduler=scheduler, device=device,
        num_classes=num_classes, has_val=has_val,
    )  # fmt: skip
    in_dtype = input_dtype(model)  # float inputs take the model's dtype (e.g. a float64 model)

    start_epoch, best_val, best_epoch, best_val_loss, history = 0, -1.0, 0, math.inf, []
    best_state: dict[str, torch.Tensor] | None = None  # in-memory best weights when there is no run folder
    config_sha: dict[str, str] | None = None  # of config.json's first record, kept in every checkpoint
    run_config: dict[str, Any] = {"train": config_to_dict(cfg), **(extra_config or {})}
    if corr is not None:
        run_config["lcc"] = config_to_dict(corr.config)
    if notes:
        run_config["warnings"] = notes
    if ckpt_root is not None and run_dir is not None:
        record = {**run_config, "fingerprint": fingerprint, "provenance": _provenance()}
        if resume:
            check_resume_access(run_dir)  # another user's run: refused now, not at the first checkpoint
        latest = latest_checkpoint(ckpt_root)
        if resume:
            if latest is None:
                raise CheckpointError(
                    f"Nothing to resume in {run_dir}: it holds no checkpoint. Start without --resume."
                )
            saved = read_run_config(run_dir / "config.json")
            check_same_run(run_dir / "config.json", saved, run_config, fingerprint)
            # an edited config.json passes check_same_run when the settings match the edit (the CLI reads
            # them back from it): the checksum recorded at the run's start tells
            config_sha = check_config_unedited(
                run_dir / "config.json", saved, peek_state(latest, "config_sha256")
            )
            record = resume_record(saved, run_config, _provenance())  # the run's first record stays
            state = load_checkpoint(latest, model, verified=True)  # peek_state verified its checksums
            opt.load_state_dict(state["optimizer"])
            if sched is not None and state.get("scheduler") is not None:
                sched.load_state_dict(state["scheduler"])
            set_rng_state(state["rng_tensors"], state["rng"])
            if corr is not None and state.get("lcc"):
                corr.load_state_dict(state["lcc"], device=device)
            start_epoch, history = state["epoch"], state["history"]
            best_val, best_epoch, best_val_loss = (
                state["best_val"],
                state["best_epoch"],
                state["best_val_loss"],
            )
        elif latest is not None or (run_dir / "results.json").exists():
            raise CheckpointError(
                f"{run_dir} already holds a run; refusing to overwrite it. Pass resume=True (--resume) to continue it, "
                "or choose another output folder."
            )
        remove_stale_temps(
            run_dir
        )  # half-written files of a killed run (its checkpoints' are pruned on save)
        atomic_write_json(run_dir / "config.json", record)
        if config_sha is None:
            config_sha = config_digest(record)

    logger = MetricsLogger(run_dir, history=history, tensorboard=cfg.tensorboard) if run_dir else None
    hist: list[dict[str, Any]] = logger.history if logger else list(history)
    eval_kw = dict(
        batch_size=cfg.eval_batch_size,
        device=device,
        topk=cfg.topk,
        num_classes=num_classes,
        num_workers=cfg.num_workers,
    )
    logfile = contextlib.ExitStack()  # progress lines, epoch summaries -> <run>/log.txt (appended on resume)
    try:
        if run_dir is not None:
            logfile.enter_context(log_to(run_dir / "log.txt"))
        for epoch in range(start_epoch, cfg.epochs):
            te = time.perf_counter()
            ctx = EpochContext(model, opt, epoch, run_dir, device)
            for cb in callbacks:
                cb.on_epoch_start(ctx)
            lcc_row: dict[str, Any] = {}
            if corr is not None and corr.should_refresh(epoch):  # runs once per correction epoch
                lcc_row = corr.refresh(
                    model, data.train, epoch=epoch, batch_size=cfg.eval_batch_size, num_workers=cfg.num_workers,
                    device=device, progress=cfg.progress,
                )  # fmt: skip
            model.train()
            # the epoch's data order depends only on (seed, epoch): a resumed run sees the same batches
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
            loader = DataLoader(
                data.train,
                batch_size=cfg.batch_size,
                shuffle=True,
                generator=gen,
                num_workers=cfg.num_workers,
                drop_last=cfg.drop_last,
            )
            loss_sum = torch.zeros((), device=device, dtype=torch.float64)
            lcc_sum = torch.zeros((), device=device, dtype=torch.float64)
            pen_sum = torch.zeros((), device=device, dtype=torch.float64)
            n_correct = torch.zeros((), device=device, dtype=torch.long)
            n_seen = 0
            # a bar on a terminal, plain lines in logs/CI; counts steps, never syncs. islice, not `break`:
            # the epoch's progress then ends (with its last line) when the epoch does
            batches = track(
                itertools.islice(read_batches(loader, "the training split of fit"), steps_per_epoch),
                f"epoch {epoch + 1}/{cfg.epochs}",
                total=steps_per_epoch,
                enabled=cfg.progress,
            )
            role = f"a training batch of epoch {epoch + 1}"  # names the batch if its labels are refused
            for batch in batches:
                x, y, idx = unpack_batch(batch, need_index=corr is not None)
                x, y = to_device(x, device, in_dtype), to_labels(y, device)
                if corr is None:
                    logits = logits_of(run_model(model, x, "fit"), "fit")
                    loss = task_loss(criterion, logits, y, idx, func="fit", role=role)
                else:
                    with corr.capture(model) as z:
                        logits = logits_of(run_model(model, x, "fit"), "fit")
                    l_lcc = corr.loss(z, idx)  # type: ignore[arg-type]
                    loss = (
                        task_loss(criterion, logits, y, idx, func="fit", role=role)
                        + corr.config.weight * l_lcc
                    )
                    lcc_sum += l_lcc.detach().double() * len(y)
                if penalty is not None:  # a method's extra loss term (e.g. GC regularisation)
                    l_pen = penalty(model, x, y, logits)
                    loss = loss + l_pen
                    pen_sum += l_pen.detach().double() * len(y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                if sched is not None:
                    sched.step()
                loss_sum += loss.detach().double() * len(y)
                n_correct += (logits.detach().argmax(1) == y).sum()
                n_seen += len(y)
            train_loss = float(loss_sum) / max(n_seen, 1)  # sync point: once per epoch
            if not math.isfinite(train_loss):
                raise nonfinite_loss_error(train_loss, epoch + 1, model)
            val = evaluate(model, data.val, desc="val", **eval_kw)  # type: ignore[arg-type]
            # per sample: the task loss, the (unweighted) LCC term and the penalty as it was added
            lcc_mean, pen_mean = float(lcc_sum) / max(n_seen, 1), float(pen_sum) / max(n_seen, 1)
            extra_cols: dict[str, float] = {}
            if corr is not None or penalty is not None:
                w_lcc = corr.config.weight if corr is not None else 0.0
                extra_cols["train_ce"] = train_loss - w_lcc * lcc_mean - pen_mean
            if corr is not None:
                extra_cols["train_lcc"] = lcc_mean
            if penalty is not None:
                extra_cols["train_penalty"] = pen_mean
            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                **extra_cols,
                "train_top1": float(n_correct) / max(n_seen, 1),
                "val_loss": val.loss,
                "val_top1": val.top1,
                f"val_top{val.k}": val.topk,
                "lr": opt.param_groups[0]["lr"],
            }
            if corr is not None:
                row |= {f"lcc/{k}": v for k, v in lcc_row.items()}
                if corr.active and val.n:
                    row |= {
                        f"val_{k}": v
                        for k, v in cc_mc_accuracy(
                            model,
                            data.val,
                            val.correct,
                            corr.config,
                            device=device,
                            batch_size=cfg.eval_batch_size,
                        ).items()
                    }
            improved = (
                val.n == 0 or val.top1 > best_val or (val.top1 == best_val and val.loss < best_val_loss)
            )
            if improved:
                best_val, best_epoch, best_val_loss = (val.top1 if val.n else -1.0), epoch + 1, val.loss
                if run_dir is not None:
                    _save_best(run_dir, model, epoch + 1, val.top1)
                else:
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            ctx.metrics = row
            for cb in callbacks:
                cb.on_epoch_end(ctx)
            row["epoch_time_s"] = round(time.perf_counter() - te, 3)
            if lcc_row:  # LCC epoch-start work relative to the rest of the epoch (training + validation)
                t_lcc = lcc_row["time_refresh_s"]
                row["lcc_overhead"] = round(t_lcc / max(row["epoch_time_s"] - t_lcc, 1e-9), 4)
            if logger is not None:
                logger.log_epoch(row)
            else:
                hist.append(row)
            message(f"epoch {epoch + 1}/{cfg.epochs}: " + ", ".join(f"{name} {row[k]:.4g}" for k, name in _EPOCH_LINE.items())
                    + f", {format_seconds(row['epoch_time_s'])}", enabled=cfg.progress)  # fmt: skip
            if ckpt_root is not None:
                rng_t, rng_meta = rng_state()
                state = {
                    "epoch": epoch + 1,
                    "history": hist,
                    "best_val": best_val,
                    "best_epoch": best_epoch,
                    "best_val_loss": best_val_loss,
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict() if sched is not None else None,
                    "rng_tensors": rng_t,
                    "rng": rng_meta,
                    "lcc": corr.state_dict() if corr is not None else None,
                    "config_sha256": config_sha,
                }
                save_checkpoint(ckpt_root, f"epoch-{epoch + 1:04d}", model, state, keep=cfg.keep_checkpoints)
    except ValueError as e:  # a raw error preflight could not foresee (e.g. BatchNorm on a 1-sample batch)
        clear = explain_step_error(e, cfg, n_train)
        if clear is None:
            raise
        raise clear from e
    finally:
        logfile.close()
        if logger is not None:
            logger.close()

    # test on the best-on-val weights, never the last ones
    if run_dir is not None:
        load_weights(run_dir / "best.safetensors", model)
    elif best_state is not None and best_epoch != cfg.epochs:
        model.load_state_dict(best_state)
    n_test = len(data.test)  # type: ignore[arg-type]
    test = evaluate(model, data.test, desc="test", **eval_kw) if n_test else None  # type: ignore[arg-type]
    result = FitResult(
        best_epoch,
        best_val if has_val else None,  # no validation split: no best-on-val accuracy to report
        test,
        hist,
        run_dir,
        time.perf_counter() - t0,
        sum(p.numel() for p in model.parameters() if p.requires_grad),
        model,
        total_params=sum(p.numel() for p in model.parameters()),
    )
    if run_dir is not None:
        atomic_write_json(run_dir / "results.json", result.summary())
        from latentcc.report.curves import plot_training_curves

        plot_training_curves(hist, run_dir / "training_curve.png")
    return result


def _save_best(run_dir: Path, model: nn.Module, epoch: int, val_top1: float) -> None:
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    path = atomic_write_bytes(run_dir / "best.safetensors", safetensors_bytes(weights))
    atomic_write_json(
        run_dir / "best.json", {"epoch": epoch, "val_top1": val_top1, "sha256": sha256_file(path)}
    )


# The columns of the one-line epoch summary (progress output) and their names there, in this order.
_EPOCH_LINE = {
    "train_loss": "train loss",
    "train_top1": "train top-1",
    "val_loss": "val loss",
    "val_top1": "val top-1",
}


def _provenance() -> dict[str, Any]:
    import platform
    import sys

    import latentcc

    return {
        "latentcc": latentcc.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "argv": sys.argv,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
