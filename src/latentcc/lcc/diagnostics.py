"""The LCC paper's diagnostic: top-1 of correctly clustered (CC) vs misclustered (MC) samples of a split.

Not part of the correction (which lives in :mod:`latentcc.lcc.correction`): it clusters a split's own latents
as a refresh would and reads the classifier's accuracy on each group (docs/algorithms.md, LCC item 10).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from latentcc.config import LCCConfig
from latentcc.latents.collect import collect_latents
from latentcc.latents.layers import resolve_layers
from latentcc.lcc.epoch import cluster_latents
from latentcc.plumbing.errors import param_error

__all__ = ["cc_mc_accuracy"]


def cc_mc_accuracy(
    model: nn.Module,
    dataset: Dataset[Any],
    correct: np.ndarray,
    config: LCCConfig,
    *,
    device: torch.device | str | None = None,
    batch_size: int = 256,
) -> dict[str, float]:
    """Top-1 accuracy of correctly clustered vs misclustered samples of ``dataset`` (the paper's observation).

    The split's own latents are clustered with ``config`` (k-NN graph, communities, plurality owners);
    ``correct`` (N,) bool is per-sample top-1 correctness in index order (``EvalResult.correct``).
    Returns, per layer, ``{layer}/cc_top1``, ``{layer}/mc_top1`` (NaN when a group is empty) and
    ``{layer}/mc_fraction``.
    """
    names = list(resolve_layers(model, list(config.layers), func="cc_mc_accuracy"))
    loader = DataLoader(dataset, batch_size=batch_size)
    lat = collect_latents(
        model, loader, names, pool=config.pool, dim=config.dim, device=device, seed=config.seed
    )
    correct = np.asarray(correct, dtype=bool)
    if correct.shape != lat.labels.shape:
        raise param_error("correct", "cc_mc_accuracy", f"(N,) = {lat.labels.shape} booleans", correct.shape)
    out: dict[str, float] = {}
    if np.unique(lat.labels).size < 2 or len(lat.labels) <= config.k:
        return out  # too small or single-class split: nothing to cluster
    for name in names:
        cc = cluster_latents(lat[name], lat.labels, config, name=name).cc
        out[f"{name}/cc_top1"] = float(correct[cc].mean()) if cc.any() else float("nan")
        out[f"{name}/mc_top1"] = float(correct[~cc].mean()) if (~cc).any() else float("nan")
        out[f"{name}/mc_fraction"] = float(1.0 - cc.mean())
    return out
