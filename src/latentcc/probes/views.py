"""The report's 2-D views: a PCA of a few layers' training latents, with a clustering of the same points."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from latentcc.config import ProbeConfig
from latentcc.latents.collect import Latents
from latentcc.latents.layers import resolve_layers
from latentcc.plumbing.errors import LatentccError, param_error


@dataclass
class LayerView:
    """A 2-D PCA projection of one layer's training latents (a subset), with classes and clusters."""

    layer: str
    xy: np.ndarray  # (n, 2)
    labels: np.ndarray  # (n,) class ids
    clusters: np.ndarray  # (n,) cluster ids from ProbeConfig.clustering, n_clusters = #classes


def requested_view_layers(model: nn.Module, names: list[str], requested: Sequence[str] | None) -> list[str]:
    """Full names of the ``view_layers`` asked for (each must be profiled); [] when none were asked for."""
    if not requested:
        return []
    chosen = list(resolve_layers(model, list(requested), func="profile"))
    missing = [n for n in chosen if n not in names]
    if missing:
        raise param_error("view_layers", "profile", "layers that are also profiled", missing)
    return chosen


def default_view_layers(names: list[str], rows: list[dict[str, Any]]) -> list[str]:
    """The first, the best-AMI (else the last) and the last profiled layer, without repeats."""
    ami = {r["layer"]: r["value"] for r in rows if r["metric"] == "ami" and math.isfinite(r["value"])}
    best = max(ami, key=lambda n: ami[n]) if ami else names[-1]
    return list(dict.fromkeys([names[0], best, names[-1]]))


def layer_views(tr: Latents, chosen: list[str], cfg: ProbeConfig) -> dict[str, LayerView]:
    """2-D PCA of a stratified training subset (``view_points``) per chosen layer, with a clustering of the
    same points into as many clusters as classes (``clustering``; all zeros where it is undefined)."""
    from latentcc.data.base import stratified_indices
    from latentcc.metrics import cluster
    from latentcc.report.latent_map import pca_2d

    pick = stratified_indices(tr.labels, cfg.view_points, seed=cfg.seed)
    y = tr.labels[pick]
    n_classes = len(np.unique(y))
    views = {}
    for name in chosen:
        z = np.asarray(tr[name][pick], dtype=np.float64)
        try:
            clusters = cluster(z, n_classes, clustering=cfg.clustering, seed=cfg.seed)
        except LatentccError:
            clusters = np.zeros(len(z), dtype=np.int64)
        views[name] = LayerView(name, pca_2d(z), y, clusters)
    return views
