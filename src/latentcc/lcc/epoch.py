"""The LCC epoch-start step for one layer: latents -> k-NN graph -> communities -> owners -> targets.

Runs once per correction epoch (not in the hot loop). Every stage is a public function of its own
(``knn_graph``, ``communities``, ``match_clusters``, ``lcc_targets``); this module only chains them
with the settings of one :class:`~latentcc.config.LCCConfig` and times each stage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from latentcc.config import LCCConfig
from latentcc.errors import LatentccError, param_error
from latentcc.graph import communities, knn_graph, reduce_dim
from latentcc.lcc.matching import cc_mask, match_clusters
from latentcc.lcc.targets import LCCTargets, lcc_targets


@dataclass
class EpochStart:
    """What one layer's epoch-start step produced (all in sample-index order)."""

    targets: LCCTargets
    clusters: np.ndarray  # (N,) community of each sample
    owners: np.ndarray  # (C,) owner class of each community
    cc: np.ndarray  # (N,) bool, correctly clustered
    seconds: dict[str, float] = field(default_factory=dict)  # time per stage

    def stats(self) -> dict[str, Any]:
        """Numbers worth logging per epoch."""
        return {
            "clusters": int(self.owners.size),
            "mc_fraction": float(1.0 - self.cc.mean()),
            "with_target": self.targets.num_with_target,
            "orphan_classes": int(self.targets.orphans.size),
            "owning_classes": int(np.unique(self.owners[self.owners >= 0]).size),  # -1: a cluster nobody owns
            **{f"time_{k}_s": round(v, 4) for k, v in self.seconds.items()},
        }


def epoch_start(
    latents: np.ndarray | torch.Tensor,
    labels: np.ndarray,
    config: LCCConfig,
    *,
    initial: np.ndarray | None = None,
    name: str | None = None,
) -> EpochStart:
    """Cluster one layer's (N, D) latents and compute the targets of its misclustered samples.

    ``labels`` (N,) are the true classes in the same sample-index order as ``latents``. ``initial``
    (the previous epoch's clusters) warm-starts Leiden when ``config.warm_start``. PCA to
    ``config.graph_dim`` (if smaller than D) only shapes the graph; targets live in the full space
    because the loss compares them with the model's full latents.
    """
    y, clusters, owners, cc, seconds = cluster_latents(latents, labels, config, initial=initial, name=name)
    t = time.perf_counter()
    targets = lcc_targets(
        latents, y, clusters, k=config.k_target or config.k, owners=owners, orphan_policy=config.orphan_policy,
        name=name,
    )  # fmt: skip
    seconds["targets"] = time.perf_counter() - t
    return EpochStart(targets, clusters, owners, cc, seconds)


def cluster_latents(
    latents: np.ndarray | torch.Tensor,
    labels: np.ndarray,
    config: LCCConfig,
    *,
    initial: np.ndarray | None = None,
    name: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, float]]:
    """Steps 2-5 of LCC: (labels, clusters, owners, cc mask, seconds per stage) for (N, D) latents."""
    where = "epoch_start" + (f" (layer {name!r})" if name else "")
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != len(latents):
        raise param_error(
            "labels", where, f"(N,) class ids with N = {len(latents)} latent rows", f"shape {y.shape}"
        )
    if np.unique(y).size < 2:
        raise LatentccError(
            f"{where}: all {len(y)} samples have the same class ({y[0] if len(y) else '-'}); LCC needs at least 2 "
            "classes (with one class every sample is correctly clustered and there is nothing to correct)."
        )
    bad = np.asarray(~np.isfinite(np.asarray(latents, dtype=np.float32)).all(axis=1))
    if bad.any():
        raise LatentccError(
            f"{where}: {int(bad.sum())} of {bad.size} latent rows hold NaN/inf (e.g. sample {int(np.flatnonzero(bad)[0])}); "
            "the model produced non-finite activations: lower the learning rate or check the inputs."
        )
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    n, d = np.shape(latents)
    # PCA only where it reduces something: a rank-N sample cannot give more than N components
    dim = config.graph_dim if config.graph_dim is not None and config.graph_dim < min(n, d) else None
    x_graph = reduce_dim(latents, dim, method="pca", seed=config.seed)
    seconds["reduce"] = time.perf_counter() - t

    t = time.perf_counter()
    graph = knn_graph(
        x_graph, config.k, metric=config.metric, backend=config.knn_backend, seed=config.seed,
        weighted=config.weighted, name=name,
    )  # fmt: skip
    seconds["knn"] = time.perf_counter() - t

    t = time.perf_counter()
    init = initial if (config.warm_start and config.method != "louvain") else None
    iterations = -1 if config.method == "louvain" else config.leiden_iterations  # Louvain runs to convergence
    clusters = communities(
        graph, method=config.method, resolution=config.resolution, seed=config.seed, initial=init,
        n_iterations=iterations,
    )  # fmt: skip
    seconds["communities"] = time.perf_counter() - t

    t = time.perf_counter()
    owners = match_clusters(y, clusters)
    cc = cc_mask(y, clusters, owners)
    seconds["matching"] = time.perf_counter() - t

    return y, clusters, owners, cc, seconds
