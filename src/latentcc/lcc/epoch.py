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
from latentcc.graph import communities
from latentcc.graph.knn import _knn_graph
from latentcc.graph.reduce import _pca
from latentcc.lcc.matching import cc_mask, check_labels, match_clusters
from latentcc.lcc.targets import LCCTargets, _targets_of
from latentcc.plumbing.arrays import Matrix, as_matrix
from latentcc.plumbing.errors import LatentccError, param_error


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
    (see :mod:`latentcc.plumbing.arrays`); validated once here and shared by every stage. ``labels`` (N,) are
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
    m = as_matrix(latents, "latents", where, min_rows=2)
    y, clusters, owners, cc, seconds = _cluster_latents(m, labels, config, initial, name, where)
    t = time.perf_counter()
    k = config.k_target or config.k
    targets = _targets_of(
        m, y, clusters, owners, k, config.orphan_policy, "auto", config.loss, config.tangent_dim
    )
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
    where = _where(name)
    m = as_matrix(latents, "latents", where, min_rows=2)
    return _cluster_latents(m, labels, config, initial, name, where)


def _where(name: str | None) -> str:
    return "epoch_start" + (f" (layer {name!r})" if name else "")


def _cluster_latents(
    m: Matrix,
    labels: Any,
    config: LCCConfig,
    initial: np.ndarray | None,
    name: str | None,
    where: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, float]]:
    if not isinstance(config, LCCConfig):
        raise param_error(
            "config", where, "an LCCConfig", type(config).__name__, "Fix: config=LCCConfig(...)."
        )
    y = check_labels(labels, "labels", where)
    if len(y) != len(m):
        raise param_error(
            "labels", where, f"(N,) class ids with N = {len(m)} latent rows", f"shape {y.shape}"
        )
    if np.unique(y).size < 2:
        raise LatentccError(
            f"{where}: all {len(y)} samples have the same class ({y[0]}); LCC needs at least 2 "
            "classes (with one class every sample is correctly clustered and there is nothing to correct)."
        )
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    n, d = m.shape
    # PCA only where it reduces something: a rank-N sample cannot give more than N components
    dim = config.graph_dim if config.graph_dim is not None and config.graph_dim < min(n, d) else None
    # The centred float32 copy (made once, shared with the targets) feeds PCA; without PCA the graph is
    # built from the validated latents themselves (l2 uses the same centred copy, cosine their unit rows).
    g = m if dim is None else as_matrix(_pca(_numpy(m.centred()), dim, config.seed), "latents", where)
    seconds["reduce"] = time.perf_counter() - t

    t = time.perf_counter()
    graph = _knn_graph(
        g, config.k, config.metric, config.knn_backend, config.seed, config.weighted,
        "knn_graph" + (f" (for {name!r})" if name else ""),
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


def _numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.cpu().numpy() if isinstance(x, torch.Tensor) else x
