"""The automatic LCC weight (``LCCConfig(weight="auto", grad_ratio=...)``).

Right after each refresh, ``calibration_batches`` seeded training batches go through the model in train mode;
on each, ``torch.autograd.grad`` gives the gradients of the cross-entropy and of the unweighted LCC loss with
respect to the trainable parameters. The parameters *both* reach (in practice: those upstream of the LCC
layers, which also feed the logits) are the shared ones; on them

    ratio = mean over batches of ||grad LCC||  /  mean over batches of ||grad CE||
    w     = grad_ratio / ratio

so that the weighted LCC gradient is ``grad_ratio`` times the task gradient, whatever the scale of the latent
space (a shrinking latent space shrinks ||grad LCC|| and the next calibration raises w). w stays fixed until
the next refresh. Norms are taken per batch, at the training batch size: that is the gradient each optimizer
step sees.

Nothing of the run changes except the weight: no optimizer step, no ``.grad`` written, the python / numpy /
torch / CUDA RNG states, the model's buffers (BatchNorm statistics), its train/eval mode and the train-pass
latent buffer are as before; a run with ``weight="auto"`` equals a run with the calibrated number.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate

from latentcc.config import LCCConfig
from latentcc.latents.layers import model_mode
from latentcc.lcc.distributed import unwrap, world
from latentcc.plumbing.batch import input_dtype, logits_of, run_model, to_device, to_labels, unpack_batch
from latentcc.plumbing.errors import LatentccError, param_error
from latentcc.plumbing.seeding import rng_state, set_rng_state

if TYPE_CHECKING:  # correction.py imports latentcc.lcc
    from latentcc.lcc.correction import LatentClusterCorrection

TaskLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class GradRatio:
    """Gradient norms of the two loss terms on the parameters both reach, one entry per calibration batch."""

    ce_norms: tuple[float, ...]  # ||grad CE|| per batch
    lcc_norms: tuple[float, ...]  # ||grad LCC|| per batch, LCC unweighted
    shared: tuple[str, ...]  # names of the parameters both terms reach (non-zero gradient of each)

    @property
    def ratio(self) -> float:
        """mean ||grad LCC|| / mean ||grad CE|| (unweighted LCC); inf when the CE gradient is 0."""
        ce, lcc = float(np.mean(self.ce_norms)), float(np.mean(self.lcc_norms))
        if lcc == 0:  # no LCC gradient (then nothing is shared either)
            return 0.0
        return lcc / ce if ce > 0 else math.inf


@dataclass(frozen=True)
class Calibration:
    """What one calibration measured and set."""

    weight: float
    measured: GradRatio
    seconds: float

    def stats(self) -> dict[str, Any]:
        """The columns ``fit`` logs under ``lcc/``."""
        return {
            "weight": self.weight,
            "grad_ratio_measured": self.measured.ratio,
            "time_calibration_s": round(self.seconds, 4),
        }


def grad_ratio(
    losses: Iterable[tuple[torch.Tensor, torch.Tensor]], params: Mapping[str, torch.Tensor]
) -> GradRatio:
    """Per-batch gradient norms of ``(task loss, LCC loss)`` pairs (0-d tensors with graphs) on the shared params.

    ``params``: {name: parameter} of the trainable parameters. A parameter is shared when, summed over the
    batches, both terms give it a non-zero gradient (``None`` from autograd, an unreached parameter, counts as
    zero). Pairs are consumed one at a time (a generator keeps one graph alive at a time). One host sync.
    """
    names, plist = list(params), list(params.values())
    if not plist:
        raise param_error("params", "grad_ratio", "at least one trainable parameter", {})
    dev = plist[0].device
    sq_ce: list[torch.Tensor] = []  # per batch: (P,) squared gradient norm of each parameter
    sq_lcc: list[torch.Tensor] = []
    for ce, lcc in losses:
        g_ce = torch.autograd.grad(ce, plist, retain_graph=lcc.requires_grad, allow_unused=True)
        g_lcc = (
            torch.autograd.grad(lcc, plist, allow_unused=True) if lcc.requires_grad else (None,) * len(plist)
        )
        sq_ce.append(_squared_norms(g_ce, dev))
        sq_lcc.append(_squared_norms(g_lcc, dev))
    if not sq_ce:
        raise param_error("losses", "grad_ratio", "at least one (task loss, LCC loss) pair", 0)
    ce_sq, lcc_sq = torch.stack(sq_ce), torch.stack(sq_lcc)  # (batches, P)
    shared = (ce_sq.sum(0) > 0) & (lcc_sq.sum(0) > 0)
    ce_norms = ce_sq[:, shared].sum(1).sqrt()
    lcc_norms = lcc_sq[:, shared].sum(1).sqrt()
    mask = shared.tolist()  # sync point: once per calibration
    if not any(mask) and bool((lcc_sq > 0).any()):
        reached = [n for n, r in zip(names, (lcc_sq.sum(0) > 0).tolist(), strict=True) if r]
        raise LatentccError(
            f"weight='auto' found no trainable parameter that both the task loss and the LCC loss move: the LCC "
            f"loss reaches {reached[:5]}{' ...' if len(reached) > 5 else ''}, and the task loss none of them, so "
            "the two gradients cannot be compared. Fix: a numeric LCCConfig.weight (--lcc-weight 0.01), or LCC "
            "layers on the path to the logits."
        )
    return GradRatio(
        tuple(ce_norms.tolist()),
        tuple(lcc_norms.tolist()),
        tuple(n for n, s in zip(names, mask, strict=True) if s),
    )


def _squared_norms(grads: Sequence[torch.Tensor | None], dev: torch.device) -> torch.Tensor:
    zero = torch.zeros((), dtype=torch.float64, device=dev)
    return torch.stack([zero if g is None else g.detach().double().pow(2).sum().to(dev) for g in grads])


def weight_for(measured: GradRatio, target: float) -> float:
    """w such that w * measured.ratio = ``target``; 0.0 when the LCC term had no gradient on the batches."""
    ratio = measured.ratio
    if ratio == 0:
        warnings.warn(
            "weight='auto': the LCC loss had no gradient on the calibration batches (none of their samples is "
            "misclustered with a target), so this correction epoch trains with weight 0. Raise "
            "LCCConfig.calibration_batches (--lcc-calibration-batches) to measure on more samples.",
            UserWarning,
            stacklevel=2,
        )
        return 0.0
    if not math.isfinite(ratio):  # the task loss had no gradient on the shared parameters
        raise LatentccError(
            "weight='auto': the task loss had no gradient on the parameters it shares with the LCC layers over the "
            "calibration batches, so no weight makes LCC's pull a fraction of it. Fix: a numeric weight "
            "(--lcc-weight 0.01), or check that the task loss depends on the model's output."
        )
    return target / ratio


def measure_grad_ratio(
    lcc: LatentClusterCorrection,
    model: nn.Module,
    batches: Iterable[Any],
    *,
    device: torch.device | str | None = None,
    task_loss: TaskLoss = nn.functional.cross_entropy,
) -> GradRatio:
    """:func:`grad_ratio` of ``task_loss(logits, y)`` and ``lcc.loss`` (unweighted) over ``batches`` of (x, y, idx).

    The model runs in its current mode (train mode for the calibration: dropout as in training) and is
    looked through a DDP wrapper. Writes nothing: no ``.grad``, no train-pass buffer rows (the calibration's
    latents are not the training steps'). RNG and BatchNorm statistics do move: :func:`calibrate_weight`
    restores them.
    """
    net = unwrap(model)
    params = {n: p for n, p in net.named_parameters() if p.requires_grad}
    if not params:
        raise param_error("model", "calibrate_weight", "a model with trainable parameters", "none")
    dev = torch.device(device) if device is not None else next(iter(params.values())).device
    dtype = input_dtype(net)

    def pairs() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in batches:
            x, y, idx = unpack_batch(batch, need_index=True)
            assert idx is not None  # need_index
            x, y = to_device(x, dev, dtype), to_labels(y, dev)
            with torch.enable_grad(), lcc.capture(net) as z:
                logits = logits_of(run_model(net, x, "calibrate_weight"), "calibrate_weight")
            with torch.enable_grad():
                yield task_loss(logits, y), lcc.loss(z, idx, y)

    with _no_buffer_writes(lcc):
        return grad_ratio(pairs(), params)


def calibration_batches(
    dataset: Dataset[Any], config: LCCConfig, *, batch_size: int, epoch: int
) -> list[Any]:
    """``config.calibration_batches`` collated batches of ``batch_size`` distinct training samples.

    Seeded by ``(config.seed, epoch)`` through a private generator (the global RNGs are not drawn from): the
    same batches on every rank and in every rerun. An incomplete last batch is dropped unless it is the only one.
    """
    n = len(dataset)  # type: ignore[arg-type]
    rows = np.random.default_rng([config.seed, epoch, 0x1CC]).permutation(n)
    rows = rows[: config.calibration_batches * batch_size]
    chunks = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    if len(chunks) > 1 and len(chunks[-1]) < batch_size:
        chunks.pop()
    return [default_collate([dataset[int(i)] for i in chunk]) for chunk in chunks]


def calibrate_weight(
    lcc: LatentClusterCorrection,
    model: nn.Module,
    data: Dataset[Any] | DataLoader[Any],
    *,
    batch_size: int,
    epoch: int,
    device: torch.device | str | None = None,
    task_loss: TaskLoss = nn.functional.cross_entropy,
) -> Calibration:
    """Measure the gradient ratio after a refresh and set ``lcc.calibrated_weight`` (``weight="auto"`` only).

    ``data``: the training set (x, y, idx); ``batch_size``: the training batch size; ``epoch``: 0-based, seeds
    the batches. The model runs in train mode; RNG states, buffers and its mode are restored afterwards. Under
    DDP every rank measures the same batches and takes rank 0's weight (dropout masks differ between ranks).
    """
    c = lcc.config
    if c.weight != "auto":
        raise param_error(
            "weight", "calibrate_weight", "'auto'", c.weight, "A numeric weight is used as given."
        )
    if not lcc.active:
        raise LatentccError("calibrate_weight needs LCC targets: call it right after a refresh.")
    t0 = time.perf_counter()
    dataset = data.dataset if isinstance(data, DataLoader) else data
    batches = calibration_batches(dataset, c, batch_size=batch_size, epoch=epoch)
    net = unwrap(model)
    saved_rng = rng_state()
    saved_buffers = {n: b.detach().clone() for n, b in net.named_buffers()}
    try:
        with model_mode(net, training=True):
            measured = measure_grad_ratio(lcc, net, batches, device=device, task_loss=task_loss)
    finally:
        with torch.no_grad():
            for n, b in net.named_buffers():
                b.copy_(saved_buffers[n])
        set_rng_state(*saved_rng)
    weight = weight_for(measured, c.grad_ratio)
    if world()[1] > 1:
        import torch.distributed as dist

        shared: list[Any] = [weight]
        dist.broadcast_object_list(shared, src=0)
        weight = float(shared[0])
    lcc.calibrated_weight = weight
    return Calibration(weight, measured, time.perf_counter() - t0)


@contextmanager
def _no_buffer_writes(lcc: LatentClusterCorrection) -> Iterator[None]:
    """``lcc.loss`` without its train-pass buffer: the next refresh sees only what training steps wrote."""
    buffer, lcc.buffer = lcc.buffer, None
    try:
        yield
    finally:
        lcc.buffer = buffer


def require_numeric_weight(config: LCCConfig, func: str) -> None:
    """Refuse ``weight="auto"`` where nothing calibrates it (the Lightning and Hugging Face adapters)."""
    if config.weight == "auto":
        raise param_error(
            "weight", "LCCConfig", f"a number with {func}", config.weight,
            "weight='auto' is calibrated by latentcc.train.fit, which owns the task loss and the training batches "
            "it measures gradients on. Fix: use latentcc.train.fit or a numeric weight (e.g. weight=1e-2).",
        )  # fmt: skip


def weight_label(config: LCCConfig) -> str:
    """The weight as a report states it: "0.01", or "auto (grad ratio 0.1)"."""
    if config.weight == "auto":
        return f"auto (grad ratio {config.grad_ratio:g})"
    return f"{config.weight:g}"
