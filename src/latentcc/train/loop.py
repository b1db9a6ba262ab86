"""The plain-PyTorch fine-tuning loop: reads top to bottom, resumable, selects the best epoch on val.

``fit`` trains the model *in place* (that is its point) and leaves it holding the best-on-val
weights, on which the test split is reported.
"""

from __future__ import annotations

import json
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
from tqdm.auto import tqdm

from latentcc.atomic import (
    atomic_write_bytes,
    atomic_write_json,
    ensure_writable_dir,
    remove_stale_temps,
    sha256_file,
)
from latentcc.batch import to_device, unpack_batch
from latentcc.config import LCCConfig, TrainConfig, config_to_dict
from latentcc.correction import LatentClusterCorrection, cc_mc_accuracy
from latentcc.errors import CheckpointError, LatentccError, param_error
from latentcc.seeding import rng_state, seed_everything, set_rng_state
from latentcc.train.checkpoint import latest_checkpoint, load_checkpoint, load_weights, save_checkpoint
from latentcc.train.logger import MetricsLogger
from latentcc.train.metrics import topk_correct


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
    best_val_top1: float
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
        return out


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise param_error("device", "fit", "'auto', 'cpu', 'cuda' or 'cuda:N'", device) from e


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
    dev = resolve_device(device)
    n = len(dataset)  # type: ignore[arg-type]
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
    correct = torch.zeros(n, dtype=torch.bool, device=dev)
    hits_k = torch.zeros((), device=dev, dtype=torch.long)
    k = topk
    try:
        pos = 0
        for batch in tqdm(loader, desc=desc, disable=None if progress else True, leave=False):
            x, y, idx = unpack_batch(batch)
            y = y.to(dev)
            logits = model(to_device(x, dev))
            k = min(topk, num_classes or logits.shape[1], logits.shape[1])
            loss_sum += nn.functional.cross_entropy(logits.float(), y, reduction="sum").double()
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


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise LatentccError(
            "The model has no trainable parameters (all requires_grad=False); unfreeze what should train."
        )
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


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
    results.json and training_curve.png. ``resume=True`` continues the run found there from its last
    checkpoint and reaches the same result as an uninterrupted run (data order is a function of
    (seed, epoch); RNG, optimizer and scheduler states are restored).

    ``lcc`` (an :class:`LCCConfig` or a :class:`LatentClusterCorrection`) adds Latent Cluster
    Correction: at each correction epoch's start the training set's latents are clustered and targets
    computed; each step adds ``weight * lcc_loss`` of the captured layers to the task loss. Batches
    must then carry sample indices, ``(x, y, idx)``.

    ``penalty(model, x, y, logits) -> scalar`` (optional; e.g. the GC regulariser of
    ``latentcc.methods.apply_method``) is added to each training step's loss and logged per epoch as
    ``train_penalty`` (its mean per sample, as added). ``x`` is the batch input on the device.
    """
    cfg = config or TrainConfig()
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    run_dir = ensure_writable_dir(out_dir) if out_dir is not None else None
    ckpt_root = run_dir / "checkpoints" if run_dir else None
    if resume and run_dir is None:
        raise param_error(
            "resume", "fit", "used together with out_dir", resume, "Pass the folder of the run to resume."
        )
    n_train = len(data.train)  # type: ignore[arg-type]
    if n_train == 0:
        raise param_error("data", "fit", "a training split with at least one sample", 0)

    seed_everything(cfg.seed)
    model.to(device)
    opt = optimizer or _make_optimizer(model, cfg)
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    sched = scheduler
    if sched is None and cfg.scheduler == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch)
    criterion = loss_fn or nn.CrossEntropyLoss()
    corr = LatentClusterCorrection(lcc) if isinstance(lcc, LCCConfig) else lcc
    num_classes = len(getattr(data, "classes", [])) or None

    start_epoch, best_val, best_epoch, best_val_loss, history = 0, -1.0, 0, math.inf, []
    best_state: dict[str, torch.Tensor] | None = None  # in-memory best weights when there is no run folder
    run_config: dict[str, Any] = {"train": config_to_dict(cfg), **(extra_config or {})}
    if corr is not None:
        run_config["lcc"] = config_to_dict(corr.config)
    if ckpt_root is not None and run_dir is not None:
        latest = latest_checkpoint(ckpt_root)
        if resume:
            if latest is None:
                raise CheckpointError(
                    f"Nothing to resume in {run_dir}: it holds no checkpoint. Start without --resume."
                )
            _check_same_run(run_dir / "config.json", run_config)
            state = load_checkpoint(latest, model)  # verifies checksums before touching anything
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
        atomic_write_json(run_dir / "config.json", {**run_config, "provenance": _provenance()})

    logger = MetricsLogger(run_dir, history=history, tensorboard=cfg.tensorboard) if run_dir else None
    hist: list[dict[str, Any]] = logger.history if logger else list(history)
    eval_kw = dict(
        batch_size=cfg.eval_batch_size,
        device=device,
        topk=cfg.topk,
        num_classes=num_classes,
        num_workers=cfg.num_workers,
    )
    try:
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
            )
            loss_sum = torch.zeros((), device=device, dtype=torch.float64)
            lcc_sum = torch.zeros((), device=device, dtype=torch.float64)
            pen_sum = torch.zeros((), device=device, dtype=torch.float64)
            n_correct = torch.zeros((), device=device, dtype=torch.long)
            n_seen = 0
            bar = tqdm(
                loader,
                total=steps_per_epoch,
                desc=f"epoch {epoch + 1}/{cfg.epochs}",
                disable=None if cfg.progress else True,  # None: tqdm hides bars when stderr is not a terminal
                leave=False,
            )
            for step, batch in enumerate(bar):
                if step >= steps_per_epoch:
                    break
                x, y, idx = unpack_batch(batch, need_index=corr is not None)
                x, y = to_device(x, device), y.to(device)
                if corr is None:
                    logits = model(x)
                    loss = criterion(logits, y)
                else:
                    with corr.capture(model) as z:
                        logits = model(x)
                    l_lcc = corr.loss(z, idx)  # type: ignore[arg-type]
                    loss = criterion(logits, y) + corr.config.weight * l_lcc
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
                raise LatentccError(
                    f"Training loss became {train_loss} in epoch {epoch + 1}; lower --lr or enable --grad-clip."
                )
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
                }
                save_checkpoint(ckpt_root, f"epoch-{epoch + 1:04d}", model, state, keep=cfg.keep_checkpoints)
    finally:
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
        best_val,
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


# Settings that may differ between a run and its resumption: they do not change what is computed.
_RESUME_FREE = {"train": {"progress", "tensorboard", "device", "num_workers", "keep_checkpoints"}}
_RESUME_IGNORED_SECTIONS = {"provenance", "dataset"}


def _check_same_run(saved_path: Path, run_config: dict[str, Any]) -> None:
    """Refuse to resume with settings that change the computation (epochs, lr, LCC, data, model...)."""
    if not saved_path.is_file():
        return
    try:
        saved = json.loads(saved_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(
            f"{saved_path} is corrupt ({e}); cannot check that the resumed run is the same run."
        ) from e
    now = json.loads(json.dumps(run_config, default=str))  # tuples -> lists, as stored
    diffs = []
    for section in sorted((set(saved) | set(now)) - _RESUME_IGNORED_SECTIONS):
        a, b = saved.get(section), now.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            free = _RESUME_FREE.get(section, set())
            diffs += [f"{section}.{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
                      if k not in free and a.get(k) != b.get(k)]  # fmt: skip
        elif a != b:
            diffs.append(f"{section}: {'present' if a is not None else 'absent'} in the run, "
                         f"{'present' if b is not None else 'absent'} now")  # fmt: skip
    if diffs:
        raise CheckpointError(
            f"Cannot resume {saved_path.parent} with different settings ({'; '.join(diffs)}). Resume with the run's "
            f"own settings (the CLI reads them from {saved_path.name} when --resume is given without flags), or start "
            "a new run in another folder."
        )


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
