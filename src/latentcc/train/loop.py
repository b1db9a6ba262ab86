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

from latentcc.config import LCCConfig, TrainConfig, config_to_dict
from latentcc.integrations.fit import LCCHook
from latentcc.latents.layers import model_mode
from latentcc.lcc.correction import LatentClusterCorrection
from latentcc.plumbing.atomic import (
    atomic_write_bytes,
    atomic_write_json,
    ensure_writable_dir,
    remove_stale_temps,
    sha256_file,
)
from latentcc.plumbing.batch import (
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
from latentcc.plumbing.errors import CheckpointError, LatentccError, param_error
from latentcc.plumbing.progress import format_seconds, log_to, message, track
from latentcc.plumbing.runlock import locks_folder
from latentcc.plumbing.seeding import rng_state, seed_everything, set_rng_state
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
from latentcc.train.hooks import EpochContext, PenaltyTerm, Step, call_hooks
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
    in_dtype = input_dtype(model)  # float inputs take the model's dtype (e.g. float64)
    loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
    correct = torch.zeros(n, dtype=torch.bool, device=dev)
    hits_k = torch.zeros((), device=dev, dtype=torch.long)
    k = topk
    with model_mode(model, training=False):
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
    callbacks: Sequence[Any] = (),
    extra_config: dict[str, Any] | None = None,
    lcc: LatentClusterCorrection | LCCConfig | None = None,
    penalty: Callable[[nn.Module, Any, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> FitResult:
    """Fine-tune ``model`` on ``data.train``, select the best epoch on ``data.val``, report ``data.test``.

    ``out_dir`` (optional) receives config.json, metrics.json/.csv, checkpoints/, best.safetensors,
    results.json, training_curve.png and, with ``progress``, log.txt (progress lines and one summary
    line per epoch, appended on resume; see :mod:`latentcc.plumbing.progress`). ``resume=True`` continues the
    run found there from its last checkpoint and reaches the same result as an uninterrupted run (data order is a function of
    (seed, epoch); RNG, optimizer and scheduler states are restored).

    ``lcc`` (an :class:`LCCConfig` or a :class:`LatentClusterCorrection`) adds Latent Cluster
    Correction through :class:`latentcc.integrations.fit.LCCHook`: at each correction epoch's start the
    training set's latents are clustered and targets computed; each step adds ``weight * lcc_loss`` of the
    captured layers to the task loss. Batches must then carry sample indices, ``(x, y, idx)``.

    ``penalty(model, x, y, logits) -> scalar`` (optional; e.g. the GC regulariser of
    ``latentcc.train.methods.apply_method``) is added to each training step's loss and logged per epoch as
    ``train_penalty`` (its mean per sample, as added). ``x`` is the batch input on the device.

    ``callbacks``: objects with any of the hook methods of :mod:`latentcc.train.hooks` (``on_epoch_start``,
    ``on_validation``, ``on_epoch_end``); one with ``forward``/``__call__``/``name``/``weight`` is a loss term.

    Before the first epoch, settings that would do nothing or fail mid-run raise, naming the fix (see
    ``latentcc.train.checks``: LCC that never runs or cannot train its layers, TrainConfig fields your own
    optimizer makes inert, a 1-sample last batch for BatchNorm, which ``drop_last`` avoids). Float inputs
    are cast to the model's dtype when its parameters share one (a float64 model trains on float32 data).
    """
    cfg = config or TrainConfig()
    t0 = time.perf_counter()
    terms = _loss_terms(lcc, penalty, callbacks)
    loop = _setup(model, data, cfg, out_dir, resume, optimizer, scheduler, loss_fn, callbacks, terms)
    # what the run starts from, before anything changes the model: recorded at the start, checked on resume
    fingerprint = (  # the caller's loss/penalty/optimizer/scheduler too, before a resume loads their states
        run_fingerprint(
            model, data, loss_fn=loss_fn, penalty=penalty, optimizer=optimizer, scheduler=scheduler
        )
        if loop.run_dir is not None
        else None
    )
    seed_everything(cfg.seed)
    model.to(loop.device)
    loop.optimizer = optimizer or _make_optimizer(model, cfg)
    loop.scheduler = scheduler
    if scheduler is None and cfg.scheduler == "cosine":
        steps = cfg.epochs * loop.steps_per_epoch
        loop.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(loop.optimizer, T_max=steps)
    # settings that would do nothing or fail mid-run raise now, before any file is written
    notes = preflight(
        model, data.train, cfg, terms=terms, optimizer=optimizer, scheduler=scheduler, device=loop.device,
        num_classes=loop.num_classes, has_val=len(data.val) > 0,  # type: ignore[arg-type]
    )  # fmt: skip
    run_config: dict[str, Any] = {"train": config_to_dict(cfg), **(extra_config or {})}
    lcc_hook = next((t for t in terms if isinstance(t, LCCHook)), None)
    if lcc_hook is not None:
        run_config["lcc"] = config_to_dict(lcc_hook.lcc.config)
    if notes:
        run_config["warnings"] = notes
    state = _open_run(loop, run_config, fingerprint, resume)
    _train(loop, state)
    return _finish(loop, state, t0)


@dataclass
class _Loop:
    """The live objects of one ``fit`` call."""

    model: nn.Module
    data: Splits
    cfg: TrainConfig
    device: torch.device
    run_dir: Path | None
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    terms: list[Any]  # loss terms (LCC, penalty)
    hooks: list[Any]  # the caller's callbacks, then the loss terms: what each epoch calls
    steps_per_epoch: int
    num_classes: int | None
    in_dtype: torch.dtype | None
    optimizer: torch.optim.Optimizer = field(init=False)
    scheduler: Any = None

    @property
    def eval_kw(self) -> dict[str, Any]:
        c = self.cfg
        return dict(batch_size=c.eval_batch_size, device=self.device, topk=c.topk, num_classes=self.num_classes,
                    num_workers=c.num_workers)  # fmt: skip


@dataclass
class _State:
    """What a checkpoint restores: where the run is and the best epoch so far."""

    start_epoch: int = 0
    best_val: float = -1.0
    best_epoch: int = 0
    best_val_loss: float = math.inf
    history: list[dict[str, Any]] = field(default_factory=list)
    best_weights: dict[str, torch.Tensor] | None = None  # in memory, when there is no run folder
    config_sha: dict[str, str] | None = None  # of config.json's first record, kept in every checkpoint


def _loss_terms(lcc: Any, penalty: Any, callbacks: Sequence[Any]) -> list[Any]:
    """fit's loss terms: LCC (from ``lcc=``), then the penalty, then callbacks that are loss terms."""
    terms: list[Any] = [LCCHook(lcc)] if lcc is not None else []
    if penalty is not None:
        terms.append(PenaltyTerm(penalty))
    terms += [cb for cb in callbacks if callable(getattr(cb, "forward", None)) and hasattr(cb, "weight")]
    names = [t.name for t in terms]
    if len(set(names)) != len(names):
        raise param_error("callbacks", "fit", "loss terms with distinct names", names,
                          "Pass LCC either as lcc= or as an LCCHook callback, not both.")  # fmt: skip
    return terms


def _setup(
    model: nn.Module, data: Splits, cfg: TrainConfig, out_dir: str | Path | None, resume: bool,
    optimizer: Any, scheduler: Any, loss_fn: Any, callbacks: Sequence[Any], terms: list[Any],
) -> _Loop:  # fmt: skip
    """Checks of the arguments that need no model run; the device and the run folder (created, not written)."""
    device = resolve_device(cfg.device, func="TrainConfig")
    check_materialised(model, "fit")  # a model on 'meta' fails in model.to() with a raw error otherwise
    run_dir = ensure_writable_dir(out_dir) if out_dir is not None else None
    if resume and run_dir is None:
        raise param_error(
            "resume", "fit", "used together with out_dir", resume, "Pass the folder of the run to resume."
        )
    n_train = len(data.train)  # type: ignore[arg-type]
    if n_train == 0:
        raise param_error("data", "fit", "a training split with at least one sample", 0)
    hooks = [*callbacks, *(t for t in terms if t not in callbacks)]
    return _Loop(
        model, data, cfg, device, run_dir, loss_fn or nn.CrossEntropyLoss(), terms, hooks,
        epoch_steps(n_train, cfg), _num_classes(data), input_dtype(model),
    )  # fmt: skip


def _open_run(loop: _Loop, run_config: dict[str, Any], fingerprint: Any, resume: bool) -> _State:
    """The run folder: a new run's config.json (settings, fingerprint, provenance), or the checked resume."""
    state = _State()
    run_dir = loop.run_dir
    if run_dir is None:
        return state
    record = {**run_config, "fingerprint": fingerprint, "provenance": _provenance()}
    if resume:
        check_resume_access(run_dir)  # another user's run: refused now, not at the first checkpoint
    latest = latest_checkpoint(run_dir / "checkpoints")
    if resume:
        if latest is None:
            raise CheckpointError(
                f"Nothing to resume in {run_dir}: it holds no checkpoint. Start without --resume."
            )
        saved = read_run_config(run_dir / "config.json")
        check_same_run(run_dir / "config.json", saved, run_config, fingerprint)
        # an edited config.json passes check_same_run when the settings match the edit (the CLI reads
        # them back from it): the checksum recorded at the run's start tells
        state.config_sha = check_config_unedited(
            run_dir / "config.json", saved, peek_state(latest, "config_sha256")
        )
        record = resume_record(saved, run_config, _provenance())  # the run's first record stays
        _restore(loop, state, load_checkpoint(latest, loop.model, verified=True))  # peek_state verified it
    elif latest is not None or (run_dir / "results.json").exists():
        raise CheckpointError(
            f"{run_dir} already holds a run; refusing to overwrite it. Pass resume=True (--resume) to continue it, "
            "or choose another output folder."
        )
    remove_stale_temps(run_dir)  # half-written files of a killed run (its checkpoints' are pruned on save)
    atomic_write_json(run_dir / "config.json", record)
    if state.config_sha is None:
        state.config_sha = config_digest(record)
    return state


def _restore(loop: _Loop, state: _State, saved: dict[str, Any]) -> None:
    """Optimizer, scheduler, RNG, loss-term states and the run's progress from a checkpoint's state."""
    loop.optimizer.load_state_dict(saved["optimizer"])
    if loop.scheduler is not None and saved.get("scheduler") is not None:
        loop.scheduler.load_state_dict(saved["scheduler"])
    set_rng_state(saved["rng_tensors"], saved["rng"])
    # loss-term states by name; checkpoints written before terms existed kept LCC's under "lcc"
    term_states = saved.get("terms") or ({"lcc": saved["lcc"]} if saved.get("lcc") else {})
    for t in loop.terms:
        if term_states.get(t.name) and hasattr(t, "load_state_dict"):
            t.load_state_dict(term_states[t.name], device=loop.device)
    state.start_epoch, state.history = saved["epoch"], saved["history"]
    state.best_val, state.best_epoch, state.best_val_loss = (
        saved["best_val"],
        saved["best_epoch"],
        saved["best_val_loss"],
    )


def _train(loop: _Loop, state: _State) -> None:
    """Every remaining epoch: hooks, training, validation, best-epoch selection, metrics and a checkpoint."""
    cfg, run_dir = loop.cfg, loop.run_dir
    logger = MetricsLogger(run_dir, history=state.history, tensorboard=cfg.tensorboard) if run_dir else None
    state.history = logger.history if logger else list(state.history)
    logfile = contextlib.ExitStack()  # progress lines, epoch summaries -> <run>/log.txt (appended on resume)
    try:
        if run_dir is not None:
            logfile.enter_context(log_to(run_dir / "log.txt"))
        for epoch in range(state.start_epoch, cfg.epochs):
            te = time.perf_counter()
            ctx = EpochContext(
                loop.model,
                loop.optimizer,
                epoch,
                run_dir,
                loop.device,
                data=loop.data,
                config=cfg,
                loss_fn=loop.criterion,
            )
            call_hooks(
                loop.hooks, "on_epoch_start", ctx
            )  # e.g. the LCC refresh: adds its columns to ctx.metrics
            ctx.metrics = _train_epoch(loop, epoch) | ctx.metrics
            val = evaluate(loop.model, loop.data.val, desc="val", **loop.eval_kw)  # type: ignore[arg-type]
            ctx.metrics |= {"val_loss": val.loss, "val_top1": val.top1, f"val_top{val.k}": val.topk,
                            "lr": loop.optimizer.param_groups[0]["lr"]}  # fmt: skip
            call_hooks(loop.hooks, "on_validation", ctx, val)  # e.g. the LCC CC/MC diagnostic
            _select_best(loop, state, val, epoch)
            ctx.metrics["epoch_time_s"] = round(time.perf_counter() - te, 3)
            # loss terms first, so that the caller's callbacks see their columns (e.g. lcc_overhead)
            call_hooks(sorted(loop.hooks, key=lambda h: h not in loop.terms), "on_epoch_end", ctx)
            row = ctx.metrics
            if logger is not None:
                logger.log_epoch(row)
            else:
                state.history.append(row)
            message(f"epoch {epoch + 1}/{cfg.epochs}: " + ", ".join(f"{name} {row[k]:.4g}" for k, name in _EPOCH_LINE.items())
                    + f", {format_seconds(row['epoch_time_s'])}", enabled=cfg.progress)  # fmt: skip
            _checkpoint(loop, state, epoch)
    except ValueError as e:  # a raw error preflight could not foresee (e.g. BatchNorm on a 1-sample batch)
        clear = explain_step_error(e, cfg, len(loop.data.train))  # type: ignore[arg-type]
        if clear is None:
            raise
        raise clear from e
    finally:
        logfile.close()
        if logger is not None:
            logger.close()


def _train_epoch(loop: _Loop, epoch: int) -> dict[str, Any]:
    """One pass over the training split; returns the epoch's training columns (one host sync, at the end)."""
    model, cfg, dev, terms = loop.model, loop.cfg, loop.device, loop.terms
    model.train()
    # the epoch's data order depends only on (seed, epoch): a resumed run sees the same batches
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
    loader = DataLoader(loop.data.train, batch_size=cfg.batch_size, shuffle=True, generator=gen,
                        num_workers=cfg.num_workers, drop_last=cfg.drop_last)  # fmt: skip
    loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
    term_sums = [torch.zeros((), device=dev, dtype=torch.float64) for _ in terms]
    n_correct = torch.zeros((), device=dev, dtype=torch.long)
    n_seen = 0
    # a bar on a terminal, plain lines in logs/CI; counts steps, never syncs. islice, not `break`:
    # the epoch's progress then ends (with its last line) when the epoch does
    batches = track(
        itertools.islice(read_batches(loader, "the training split of fit"), loop.steps_per_epoch),
        f"epoch {epoch + 1}/{cfg.epochs}", total=loop.steps_per_epoch, enabled=cfg.progress,
    )  # fmt: skip
    role = f"a training batch of epoch {epoch + 1}"  # names the batch if its labels are refused
    need_index = any(t.needs_index for t in terms)
    for batch in batches:
        x, y, idx = unpack_batch(batch, need_index=need_index)
        x, y = to_device(x, dev, loop.in_dtype), to_labels(y, dev)
        with (
            contextlib.ExitStack() as stack
        ):  # each loss term around the one forward (LCC captures its layers)
            captured = [stack.enter_context(t.forward(model)) for t in terms]
            logits = logits_of(run_model(model, x, "fit"), "fit")
        loss = task_loss(loop.criterion, logits, y, idx, func="fit", role=role)
        step = Step(model, x, y, idx, logits)
        for i, (t, c) in enumerate(zip(terms, captured, strict=True)):
            value = t(c, step)
            loss = loss + t.weight * value
            term_sums[i] += value.detach().double() * len(y)
        loop.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        loop.optimizer.step()
        if loop.scheduler is not None:
            loop.scheduler.step()
        loss_sum += loss.detach().double() * len(y)
        n_correct += (logits.detach().argmax(1) == y).sum()
        n_seen += len(y)
    n = max(n_seen, 1)
    train_loss = float(loss_sum) / n  # sync point: once per epoch
    if not math.isfinite(train_loss):
        raise nonfinite_loss_error(train_loss, epoch + 1, model)
    # per sample: the task loss alone, and each term unweighted (train_<name>)
    means = {f"train_{t.name}": float(s) / n for t, s in zip(terms, term_sums, strict=True)}
    row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": train_loss}
    if terms:
        row["train_ce"] = train_loss - sum(t.weight * means[f"train_{t.name}"] for t in terms)
    return row | means | {"train_top1": float(n_correct) / n}


def _select_best(loop: _Loop, state: _State, val: EvalResult, epoch: int) -> None:
    """Keep the epoch's weights if its validation top-1 is the best so far (ties: the lower loss)."""
    if not (
        val.n == 0
        or val.top1 > state.best_val
        or (val.top1 == state.best_val and val.loss < state.best_val_loss)
    ):
        return
    state.best_val, state.best_epoch, state.best_val_loss = (val.top1 if val.n else -1.0), epoch + 1, val.loss
    if loop.run_dir is not None:
        _save_best(loop.run_dir, loop.model, epoch + 1, val.top1)
    else:
        state.best_weights = {k: v.detach().clone() for k, v in loop.model.state_dict().items()}


def _checkpoint(loop: _Loop, state: _State, epoch: int) -> None:
    """The end-of-epoch checkpoint a resume continues from (nothing without a run folder)."""
    if loop.run_dir is None:
        return
    rng_t, rng_meta = rng_state()
    saved = {
        "epoch": epoch + 1,
        "history": state.history,
        "best_val": state.best_val,
        "best_epoch": state.best_epoch,
        "best_val_loss": state.best_val_loss,
        "optimizer": loop.optimizer.state_dict(),
        "scheduler": loop.scheduler.state_dict() if loop.scheduler is not None else None,
        "rng_tensors": rng_t,
        "rng": rng_meta,
        "terms": {t.name: t.state_dict() for t in loop.terms if hasattr(t, "state_dict")},
        "config_sha256": state.config_sha,
    }
    save_checkpoint(loop.run_dir / "checkpoints", f"epoch-{epoch + 1:04d}", loop.model, saved,
                    keep=loop.cfg.keep_checkpoints)  # fmt: skip


def _finish(loop: _Loop, state: _State, t0: float) -> FitResult:
    """Test on the best-on-val weights (never the last ones); results.json and the training curves."""
    model, run_dir = loop.model, loop.run_dir
    if run_dir is not None:
        load_weights(run_dir / "best.safetensors", model)
    elif state.best_weights is not None and state.best_epoch != loop.cfg.epochs:
        model.load_state_dict(state.best_weights)
    has_val = len(loop.data.val) > 0  # type: ignore[arg-type]
    n_test = len(loop.data.test)  # type: ignore[arg-type]
    test = evaluate(model, loop.data.test, desc="test", **loop.eval_kw) if n_test else None  # type: ignore[arg-type]
    result = FitResult(
        state.best_epoch,
        state.best_val if has_val else None,  # no validation split: no best-on-val accuracy to report
        test,
        state.history,
        run_dir,
        time.perf_counter() - t0,
        sum(p.numel() for p in model.parameters() if p.requires_grad),
        model,
        total_params=sum(p.numel() for p in model.parameters()),
    )
    if run_dir is not None:
        atomic_write_json(run_dir / "results.json", result.summary())
        from latentcc.report.curves import plot_training_curves

        plot_training_curves(state.history, run_dir / "training_curve.png")
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
