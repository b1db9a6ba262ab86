"""Settings a profile would ignore or could not honour, refused at the door (``profile`` and ``latentcc probe``).

Which ProbeConfig fields belong to which metric family is read from the registry (``Family.settings``).
"""

from __future__ import annotations

from typing import Any

from latentcc.config import ProbeConfig
from latentcc.plumbing.errors import param_error
from latentcc.probes.inputs import as_splits, split_length
from latentcc.probes.registry import FAMILIES, select_families


def _flag(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def check_settings_used(cfg: ProbeConfig, *, groups: bool = False, func: str = "profile") -> None:
    """Refuse unknown metric families and settings the run would ignore, so that no result silently lacks
    what was asked for.

    A ProbeConfig field away from its default whose metric family (``Family.settings``) is not selected by
    ``cfg.metrics`` (``knn_k`` without "knn_probe", ``gc_examples`` without "gc", ...), ``groups`` (given:
    True) without "clusterability", ``overcluster`` with Leiden (which takes no cluster count) and
    ``gc_projections`` with the exact GC estimator (which draws nothing). ``clustering`` and ``view_points``
    also shape the report's views, which are drawn whatever the metrics, so they belong to no family.
    ``profile`` and ``latentcc probe`` call it before any work; ``func`` names the caller in the message.
    """
    chosen = {f.name for f in select_families(cfg.metrics, func)}
    default = ProbeConfig()
    unused = [
        (f"{s}={getattr(cfg, s)!r} ({_flag(s)})", fam.name)
        for fam in FAMILIES.values()
        if fam.name not in chosen
        for s in fam.settings
        if getattr(cfg, s) != getattr(default, s)
    ]
    if groups and "clusterability" not in chosen:
        unused.append(("groups (--groups)", "clusterability"))
    if unused:
        said = "; ".join(f"{what} is read by {family}" for what, family in unused)
        raise param_error(
            "metrics", func, f"metric families that read the settings given ({said})", list(cfg.metrics),
            "Without their family those settings would change nothing. Fix: add the family to metrics "
            "(--metrics), or leave the settings out.",
        )  # fmt: skip
    if cfg.clustering == "leiden" and cfg.overcluster != default.overcluster:
        raise param_error(
            "overcluster", func, f"{default.overcluster} with clustering='leiden': overcluster multiplies "
            "the cluster count of ward and kmeans, and Leiden takes no cluster count (its resolution decides "
            "how many clusters come out)", cfg.overcluster,
            "Fix: clustering='ward' or 'kmeans' (--clustering) to over-cluster, or leave overcluster "
            "at 1 (drop --overcluster).",
        )  # fmt: skip
    if cfg.gc_estimator == "exact" and cfg.gc_projections != default.gc_projections:
        raise param_error(
            "gc_projections", func, f"left at its default ({default.gc_projections}) with gc_estimator='exact': "
            "the exact Jacobian draws no random projections", cfg.gc_projections,
            "Fix: gc_estimator='hutchinson' or 'outputs' (--gc-estimator) for a randomized estimate, or drop "
            "gc_projections (--gc-projections).",
        )  # fmt: skip


def check_knn_k(cfg: ProbeConfig, data: Any, *, func: str = "profile") -> None:
    """Refuse a ``knn_k`` of at least the training samples ``profile(data, config=cfg)`` would probe.

    With k >= N every vote spans the whole training split, so the k-NN probe would only measure the
    share of the majority class. ``profile`` checks it itself; ``latentcc probe`` calls this as soon as the
    data is loaded. Nothing to check without "knn_probe" or a held-out split, or for a dataset of no length.
    """
    if any(f.name == "knn_probe" for f in select_families(cfg.metrics, func)):
        splits = as_splits(data, cfg)
        if "test" in splits:
            check_knn_k_below(cfg, split_length(splits["train"]), func)


def check_knn_k_below(cfg: ProbeConfig, n_train: int | None, func: str = "profile") -> None:
    """Refuse ``cfg.knn_k >= n_train`` (the training samples probed; None: unknown, nothing to check)."""
    if n_train is not None and cfg.knn_k >= n_train:
        raise param_error(
            "knn_k", func, f"an int below the number of training samples probed ({n_train})", cfg.knn_k,
            f"With k >= {n_train} every test sample's vote spans the whole training split, and the k-NN probe "
            "accuracy would only be the share of the majority class. Fix: a smaller knn_k (--knn-k; default "
            f"{ProbeConfig.knn_k}), or more training samples (max_samples_per_split / --max-samples-per-split; "
            "0 = all).",
        )  # fmt: skip
