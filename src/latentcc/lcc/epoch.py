"""The LCC epoch-start step for one layer: latents -> k-NN graph -> communities -> owners -> targets.

Runs once per correction epoch (not in the hot loop). Every stage is a public function of its own
(``reduce_dim``, ``knn_graph``, ``communities``, ``match_clusters``, ``lcc_targets``), each with a
``*_trusted`` twin that skips validation. This module validates the latents, labels and settings once at
its door and chains the twins with the settings of one :class:`~latentcc.config.LCCConfig`, timing each
stage: every array is checked, copied and rescaled once per refresh (docs/algorithms.md, LCC items 1-6).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from latentcc.config import LCCConfig
from latentcc.graph.community import communities_trusted
from latentcc.graph.knn_graph import knn_graph_trusted
from latentcc.graph.reduce import pca_trusted
from latentcc.lcc.matching import cc_mask_trusted, match_clusters_trusted
from latentcc.lcc.targets import LCCTargets, check_tangent_dim, lcc_targets_trusted
from latentcc.plumbing.arrays import Matrix
from latentcc.plumbing.errors import LatentccError, param_error
from latentcc.plumbing.validate import as_labels, as_matrix, check_int, check_table_size


@dataclass(frozen=True)
class LatentClusters:
    """Steps 2-5 of LCC for one layer (:func:`cluster_latents`), all in sample-index order."""

    labels: np.ndarray  # (N,) int64 class ids, as validated
    clusters: np.ndarray  # (N,) int64 community of each sample
    owners: np.ndarray  # (C,) int64 owner class of each community (-1: none)
    cc: np.ndarray  # (N,) bool, correctly clustered
    seconds: dict[str, float] = field(default_factory=dict)  # time per stage


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

    ``latents``: any real dtype (float16 and bfloat16 included), numpy or torch on any device but meta
    (see :mod:`latentcc.plumbing.validate`); validated once here and shared by every stage, which then
    trust it (each array is checked, copied and rescaled once per refresh). ``labels`` (N,) are
    the true classes in the same sample-index order as ``latents``. ``initial`` (the previous epoch's
    clusters) warm-starts Leiden when ``config.warm_start``. PCA to ``config.graph_dim`` (if smaller
    than D) only shapes the graph; targets live in the full space because the loss compares them with
    the model's full latents; ``config.loss`` picks which targets (docs/algorithms.md, LCC item 11).
    Results do not depend on where the latents sit in space: every stage
    computes on them translated (in float64) to centre each column's range on 0. The exception is
    ``config.metric="cosine"``, which depends on the position by definition: without PCA it is the
    cosine of the latents as given (to float64's precision, however far from the origin they sit);
    with PCA it is the cosine of the principal-component scores, which are centred (as in scanpy).
    """
    where = _where(name)
    m, y, init = _door(latents, labels, config, initial, where)
    k_target = config.k_target or config.k
    check_tangent_dim(config.tangent_dim, config.loss, k_target, m.shape[1], where)
    c = cluster_latents_trusted(m, y, config, init, name)
    t = time.perf_counter()
    targets = lcc_targets_trusted(
        m, y, c.clusters, c.owners, c.cc, k_target=k_target, orphan_policy=config.orphan_policy,
        knn_backend=config.knn_backend, loss=config.loss, tangent_dim=config.tangent_dim,
    )  # fmt: skip
    c.seconds["targets"] = time.perf_counter() - t
    return EpochStart(targets, c.clusters, c.owners, c.cc, c.seconds)


def cluster_latents(
    latents: np.ndarray | torch.Tensor,
    labels: np.ndarray,
    config: LCCConfig,
    *,
    initial: np.ndarray | None = None,
    name: str | None = None,
) -> LatentClusters:
    """Steps 2-5 of LCC for (N, D) latents: PCA (graph only), k-NN graph, communities, owners and CC mask."""
    where = _where(name)
    m, y, init = _door(latents, labels, config, initial, where)
    return cluster_latents_trusted(m, y, config, init, name)


def _where(name: str | None) -> str:
    return "epoch_start" + (f" (layer {name!r})" if name else "")


def _door(
    latents: Any, labels: Any, config: Any, initial: Any, where: str
) -> tuple[Matrix, np.ndarray, np.ndarray | None]:
    """Validate the epoch start's inputs once: (latents, int64 labels, the warm start ids or None)."""
    m = as_matrix(latents, "latents", where, min_rows=2)
    if not isinstance(config, LCCConfig):
        raise param_error(
            "config", where, "an LCCConfig", type(config).__name__, "Fix: config=LCCConfig(...)."
        )
    n = len(m)
    y = as_labels(labels, n, where, "labels", non_negative=True)
    if np.unique(y).size < 2:
        raise LatentccError(
            f"{where}: all {len(y)} samples have the same class ({y[0]}); LCC needs at least 2 "
            "classes (with one class every sample is correctly clustered and there is nothing to correct)."
        )
    check_int(
        config.k,
        "k",
        where,
        1,
        n - 1,
        f"Fix: use k <= {n - 1} (N = {n} samples, excluding the sample itself).",
    )
    warm = initial is not None and config.warm_start and config.community != "louvain"
    init = as_labels(initial, n, where, "initial", non_negative=True) if warm else None
    return m, y, init


def cluster_latents_trusted(
    m: Matrix, y: np.ndarray, config: LCCConfig, initial: np.ndarray | None, name: str | None = None
) -> LatentClusters:
    """:func:`cluster_latents` of validated inputs: the latents, int64 labels in [0, 2**31) with >= 2
    classes, ``config.k`` < N, ``initial`` non-negative int64 ids (used as given: the caller decides)."""
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    n, d = m.shape
    # PCA only where it reduces something: a rank-N sample cannot give more than N components
    dim = config.graph_dim if config.graph_dim is not None and config.graph_dim < min(n, d) else None
    # The centred float32 copy (made once, shared with the targets) feeds PCA; without PCA the graph is
    # built from the validated latents themselves (l2 uses the same centred copy, cosine their unit rows).
    g = (
        m
        if dim is None
        else Matrix(pca_trusted(_numpy(m.centred()), dim, config.seed), m.param, m.func, np.float32)
    )
    seconds["reduce"] = time.perf_counter() - t

    t = time.perf_counter()
    graph = knn_graph_trusted(
        g, config.k, metric=config.metric, backend=config.knn_backend, seed=config.seed,
        weighted=config.weighted, func="knn_graph" + (f" (for {name!r})" if name else ""),
    )  # fmt: skip
    seconds["knn"] = time.perf_counter() - t

    t = time.perf_counter()
    clusters = communities_trusted(
        graph, config.community, config.resolution, config.seed, initial, config.leiden_iterations
    )
    seconds["communities"] = time.perf_counter() - t

    t = time.perf_counter()
    check_table_size(int(y.max()) + 1, int(clusters.max()) + 1, m.func)
    owners = match_clusters_trusted(y, clusters)
    cc = cc_mask_trusted(y, clusters, owners)
    seconds["matching"] = time.perf_counter() - t
    return LatentClusters(y, clusters, owners, cc, seconds)


def _numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.cpu().numpy() if isinstance(x, torch.Tensor) else x
