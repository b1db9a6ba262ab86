"""latentcc's own loop: ``LCCHook`` plugs :class:`~latentcc.lcc.correction.LatentClusterCorrection` into ``fit``.

``fit(model, data, lcc=LCCConfig(...))`` wraps the config in this hook; pass ``LCCHook`` yourself among
``callbacks`` to share one ``LatentClusterCorrection`` object. Like the Lightning and Hugging Face adapters it
only schedules (``begin_epoch``), captures and adds the loss; it also runs the optional validation
diagnostic and writes the per-epoch cost columns (docs/algorithms.md, LCC step 10):

- ``lcc/time_refresh_s``: the epoch-start refresh (collecting the latents, k-NN, communities, targets);
- ``lcc/time_diagnostic_s``: the validation CC/MC clustering (``LCCConfig.diagnostic``), outside the training;
- ``lcc/time_calibration_s``: with ``weight="auto"``, measuring the gradient ratio after the refresh
  (:mod:`latentcc.lcc.weight`), logged with ``lcc/grad_ratio_measured`` (unweighted ||grad LCC|| / ||grad CE||)
  and ``lcc/weight`` (the weight of every correction epoch, fixed between refreshes);
- ``lcc_overhead`` = (time_refresh_s + time_calibration_s) / (epoch_time_s - those - time_diagnostic_s): the
  refresh relative to the rest of the epoch. Per-step costs (capture, loss, buffer copy) are not in it: timing
  them would need a device sync per step. The wall-clock ratio of paired runs (``latentcc demo``) has them.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from latentcc.config import LCCConfig
from latentcc.lcc.correction import LatentClusterCorrection
from latentcc.lcc.diagnostics import cc_mc_accuracy
from latentcc.lcc.weight import calibrate_weight
from latentcc.plumbing.errors import param_error
from latentcc.plumbing.seeding import rng_state, set_rng_state

if TYPE_CHECKING:  # latentcc.train imports this module (fit wraps lcc= in an LCCHook)
    from latentcc.train.hooks import EpochContext, Step


class LCCHook:
    """Latent Cluster Correction as a ``fit`` hook: a loss term named "lcc" and an epoch callback."""

    name = "lcc"
    needs_index = True

    def __init__(self, lcc: LatentClusterCorrection | LCCConfig) -> None:
        self.lcc = lcc if isinstance(lcc, LatentClusterCorrection) else LatentClusterCorrection(lcc)

    @property
    def weight(self) -> float:
        """What fit multiplies the term by: the configured weight, or the one calibrated after the last refresh."""
        return self.lcc.weight

    # ---------------------------------------------------------------- before training
    def check_schedule(self, epochs: int) -> list[str]:
        return self.lcc.check_schedule(epochs, epochs_param="TrainConfig.epochs, --epochs")

    def check_forward(self, captured: dict[str, torch.Tensor], batch_size: int, model: nn.Module) -> None:
        """On fit's example batch (eval mode): every layer ran, gave (batch, ...) and depends on a trained parameter."""
        missing = [name for name in self.lcc.layer_names(model) if name not in captured]
        if missing:
            raise param_error(
                "layers", "LCCConfig", "layers that run in the model's forward pass", missing,
                f"They did not run when fit passed {batch_size} training sample(s) through the model (in eval "
                "mode), so there would be nothing to correct. Pick layers on the forward path "
                "(see latentcc.list_layers(model)).",
            )  # fmt: skip
        self.lcc.check_captured(captured, batch_size)

    # ---------------------------------------------------------------- every epoch / step
    def on_epoch_start(self, ctx: EpochContext) -> None:
        cfg = ctx.config
        stats = self.lcc.begin_epoch(
            ctx.model, ctx.data.train, ctx.epoch, batch_size=cfg.eval_batch_size, num_workers=cfg.num_workers,
            device=ctx.device, progress=cfg.progress,
        )  # fmt: skip
        auto = self.lcc.config.weight == "auto"
        if stats and auto:  # a refresh ran: calibrate on training batches of the training batch size
            task = (
                ctx.loss_fn if ctx.loss_fn is not None else nn.functional.cross_entropy
            )  # the run's own loss
            cal = calibrate_weight(self.lcc, ctx.model, ctx.data.train, batch_size=cfg.batch_size,
                                   epoch=ctx.epoch, device=ctx.device, task_loss=task)  # fmt: skip
            stats |= cal.stats()
        ctx.metrics |= {f"lcc/{k}": v for k, v in stats.items()}
        if auto and self.lcc.active:  # every correction epoch, also those between refreshes
            ctx.metrics["lcc/weight"] = self.lcc.weight

    def forward(self, model: nn.Module) -> contextlib.AbstractContextManager[Any]:
        return self.lcc.capture(model)

    def __call__(self, captured: Any, step: Step) -> torch.Tensor:
        assert step.idx is not None  # needs_index: fit unpacked (x, y, idx)
        return self.lcc.loss(captured, step.idx, step.y)

    def on_validation(self, ctx: EpochContext, val: Any) -> None:
        """With ``LCCConfig.diagnostic``: top-1 of the validation split's CC vs MC samples, timed on its own."""
        if not (self.lcc.config.diagnostic and self.lcc.active and val.n):
            return
        t = time.perf_counter()
        saved = rng_state()  # a measurement must not move the run: its loader draws from torch's global RNG
        try:
            gap = cc_mc_accuracy(
                ctx.model, ctx.data.val, val.correct, self.lcc.config, device=ctx.device,
                batch_size=ctx.config.eval_batch_size,
            )  # fmt: skip
        finally:
            set_rng_state(*saved)
        ctx.metrics |= {f"val_{k}": v for k, v in gap.items()}
        ctx.metrics["lcc/time_diagnostic_s"] = round(time.perf_counter() - t, 4)

    def on_epoch_end(self, ctx: EpochContext) -> None:
        m = ctx.metrics
        if "lcc/time_refresh_s" not in m:
            return
        # from the logged columns themselves, so that anyone can recompute it from metrics.csv
        refresh = m["lcc/time_refresh_s"] + m.get("lcc/time_calibration_s", 0.0)
        rest = m["epoch_time_s"] - refresh - m.get("lcc/time_diagnostic_s", 0.0)
        m["lcc_overhead"] = round(refresh / max(rest, 1e-9), 4)

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return self.lcc.state_dict()

    def load_state_dict(self, state: dict[str, Any], *, device: torch.device | str = "cpu") -> None:
        self.lcc.load_state_dict(state, device=device)
