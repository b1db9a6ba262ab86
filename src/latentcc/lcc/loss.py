"""The LCC loss: the per-step hot path (docs/algorithms.md, LCC items 7 and 11).

Targets are precomputed once per correction epoch (``lcc_targets``); each training step is one gather
and one norm on the model's device (``orthogonal``: plus two small batched products; ``scale_free``: plus
the batch's mean and RMS radius). No host sync: no boolean-mask indexing, no reading tensor values
back into Python, so it never stalls a CUDA stream.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from latentcc.config import LCC_LOSSES
from latentcc.lcc.targets import LCCTargets
from latentcc.plumbing.errors import LatentccError, param_error

_INDEX_DTYPES = (torch.int64, torch.int32)
_FUNC = "lcc_loss"


def lcc_loss(
    z: torch.Tensor, idx: torch.Tensor, targets: LCCTargets, *, loss: str | None = None
) -> torch.Tensor:
    """Mean over the batch rows that have a target of ``||z_i - t_i||_2 / sqrt(D)`` (not squared).

    The variants (``loss``, docs/algorithms.md LCC item 11) change the distance: ``"paper"`` and
    ``"all_samples"`` as above (they differ in which samples have targets); ``"scale_free"``:
    ``||zn_i - t_i|| / sqrt(D)`` with ``zn`` the batch centred on its mean and divided by its RMS distance to
    it (all B rows; a batch of one row gives 0), ``t_i`` in the refresh-time latents' normalised frame;
    ``"orthogonal"``: ``||(I - U_i U_i^T)(z_i - t_i)|| / sqrt(D)``, with ``U_i`` the target's tangent basis.

    Args:
        z: (B, D) latents of the batch, with grad. A (B, ...) tensor is flattened to (B, D): pool it
            beforehand the same way the targets' latents were pooled.
        idx: (B,) int64/int32 dataset indices of the batch samples (the index space of ``targets``),
            on the targets' device. Repeated indices count once per row. Out-of-range indices raise
            a LatentccError on the CPU; on an accelerator they are not checked (that would be a host
            sync every step) and surface as a device-side assert.
        targets: :class:`LCCTargets` already on z's device (``targets.to(z.device)`` once per epoch).
        loss: the variant (``LCCConfig.loss``); None: the one the targets were computed for. A variant
            other than the targets' raises: each needs its own targets.

    Returns:
        0-d tensor (dtype of ``z`` promoted with float32), exactly 0 but still connected to ``z`` when
        no row of the batch has a target. float64 targets (of float64 latents) meet float32 z as float32
        targets, cast once per targets object (:meth:`LCCTargets.for_dtype`), never per step.
    """
    z = _check_inputs(z, idx, targets, loss)
    if targets.vectors.shape[0] == 0:  # no sample has a target this epoch (a shape, not a value: no sync)
        return z.sum() * 0.0
    vectors, scale = targets.for_dtype(z.dtype)
    s = targets.slot[idx]  # (B,), -1 = no target
    has = s >= 0
    # Rows without a target gather row 0 and are masked out (where, not * 0: an inf there would be NaN);
    # their gradient is exactly 0.
    row = s.clamp(min=0)
    if targets.loss == "scale_free":
        return _scale_free(z, vectors[row], has, scale)
    diff = z - vectors[row]
    if scale != 1.0:
        # Latents at extreme scales (1e-300, 1e200): their squares would vanish or overflow, so the
        # difference is brought to ~1 by the exact power of two fixed at refresh time, and back below.
        diff = diff * scale
    if targets.loss == "orthogonal":
        diff = _off_tangent(diff, targets.basis_for_dtype(z.dtype)[row])
    # vector_norm's backward is 0 (not NaN) at a zero vector, i.e. when z already equals its target.
    # No per-step rescaling against overflow beyond that fixed scale (a data-dependent one cost 1.7x per
    # step): a row of a diverged model whose distance overflows (|z - t| > ~1e19 in float32) gives an
    # inf loss, and fit stops with a clear message.
    out = _masked_mean_norm(diff, has)
    return out if scale == 1.0 else out / scale


def _check_inputs(z: Any, idx: Any, targets: Any, loss: str | None) -> torch.Tensor:
    """Validate lcc_loss's arguments without a host sync on accelerators; return z as (B, D)."""
    for param, t in (("z", z), ("idx", idx)):
        if not isinstance(t, torch.Tensor):
            raise param_error(param, _FUNC, "a torch.Tensor", type(t).__name__)
    if not isinstance(targets, LCCTargets):
        raise param_error(
            "targets", _FUNC, "an LCCTargets (from lcc_targets or epoch_start)", type(targets).__name__
        )
    if loss is not None and loss != targets.loss:
        raise param_error(
            "loss", _FUNC,
            f"None or the variant the targets were computed for ({targets.loss!r}; variants: {list(LCC_LOSSES)})",
            loss,
            f"Fix: compute the targets for it (lcc_targets(..., loss={loss!r}), or epoch_start with "
            f"LCCConfig(loss={loss!r})), or pass loss={targets.loss!r}.",
        )  # fmt: skip
    if z.is_meta or idx.is_meta or targets.vectors.is_meta:  # attributes only: no sync
        param = "z" if z.is_meta else "idx" if idx.is_meta else "targets"
        raise param_error(
            param, _FUNC, "a tensor with data (not on the 'meta' device)", "a tensor on the meta device",
            "Fix: run the loss on real latents, with targets from lcc_targets/epoch_start moved by "
            "targets.to(z.device).",
        )  # fmt: skip
    if not z.is_floating_point():
        raise param_error("z", _FUNC, "a floating-point (B, D) tensor of latents", f"dtype {z.dtype}")
    if z.ndim < 2:
        raise param_error("z", _FUNC, "a (B, D) tensor (extra dims are flattened)", f"shape {tuple(z.shape)}")
    z = z.flatten(1) if z.ndim > 2 else z
    if z.shape[1] != targets.vectors.shape[1]:
        raise param_error(
            "z", _FUNC, f"of width D = {targets.vectors.shape[1]}, the latent dim of the targets",
            f"(B, D) = {tuple(z.shape)}", "Pool/flatten z exactly as the latents the targets were computed from.",
        )  # fmt: skip
    _check_idx(z, idx, targets)
    return z


def _check_idx(z: torch.Tensor, idx: torch.Tensor, targets: LCCTargets) -> None:
    slot, vectors = targets.slot, targets.vectors
    if idx.ndim != 1 or idx.shape[0] != z.shape[0] or idx.dtype not in _INDEX_DTYPES:
        raise param_error(
            "idx", _FUNC, f"a (B,) = ({z.shape[0]},) int64 tensor of dataset indices",
            f"shape {tuple(idx.shape)}, {idx.dtype}",
        )  # fmt: skip
    if idx.device != slot.device or z.device != vectors.device:
        raise LatentccError(
            f"lcc_loss needs z, idx and targets on one device; got z on {z.device}, idx on {idx.device}, "
            f"targets on {vectors.device}. Move them once per epoch: targets = targets.to(z.device), and "
            "idx = idx.to(z.device, non_blocking=True)."
        )
    if idx.device.type == "cpu" and idx.numel():  # free on the CPU; a sync on accelerators, so not there
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= slot.shape[0]:
            raise param_error(
                "idx", _FUNC,
                f"dataset indices in 0..{slot.shape[0] - 1} (the N samples the targets were computed for)",
                f"indices from {lo} to {hi}",
                "Pass the sample indices the dataset yields, of the dataset the targets were computed on.",
            )  # fmt: skip


def _masked_mean_norm(diff: torch.Tensor, has: torch.Tensor) -> torch.Tensor:
    """Mean over the rows where ``has`` of ``||diff_i|| / sqrt(D)`` (0 when no row has a target)."""
    dist = torch.linalg.vector_norm(diff, ord=2, dim=1)
    dist = torch.where(has, dist, torch.zeros((), dtype=dist.dtype, device=dist.device))
    return dist.sum() / (has.sum().to(dist.dtype).clamp(min=1.0) * math.sqrt(diff.shape[1]))


def _off_tangent(diff: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """(B, D) ``(I - U U^T) diff`` per row, ``basis`` (B, r, D): r orthonormal (or zero) directions per row.

    One (B, D) multiply-and-sum per direction, never a (B, D, D) projector: at B = 256, D = 512, r = 2 this
    took 0.48 ms forward + backward on one CPU thread, against 0.72 ms for two torch.bmm of width r on a
    (B, D, r) layout (tiny batched matmuls are slow on the CPU)."""
    out = diff
    for j in range(basis.shape[1]):  # r, a Python int (tangent_dim): no sync
        u = basis[:, j]
        out = out - (diff * u).sum(dim=1, keepdim=True) * u
    return out


def _scale_free(z: torch.Tensor, t: torch.Tensor, has: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale_free``: the paper's distance between the batch in its own normalised frame and ``t`` (B, D),
    the targets already in the refresh-time latents' normalised frame. Invariant to z -> a z + b (a > 0)."""
    b = z.shape[0]
    if b < 2:  # one row is its own mean: no frame (a shape, not a value: no sync)
        return z.sum() * 0.0
    # float32 at least: the batch mean and radius in half precision would be coarse
    c = z.to(torch.promote_types(z.dtype, t.dtype))
    c = c - c.mean(dim=0, keepdim=True)
    if scale != 1.0:
        c = c * scale  # the refresh's power of two keeps the squares of extreme latents in range (exact)
    # RMS distance to the batch mean; vector_norm's backward is 0 (not NaN) for a batch of identical rows,
    # and the clamp keeps that case finite (every zn is then 0).
    radius = torch.linalg.vector_norm(c) / math.sqrt(b)
    zn = c / radius.clamp(min=torch.finfo(c.dtype).tiny)
    return _masked_mean_norm(zn - t, has)
