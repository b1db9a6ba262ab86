"""Latent Cluster Correction engine: matching, per-epoch targets, per-step loss (docs/algorithms.md, Latent Cluster Correction items 1-11)."""

from latentcc.lcc.epoch import EpochStart, epoch_start
from latentcc.lcc.loss import lcc_loss
from latentcc.lcc.matching import cc_mask, contingency, match_clusters, orphan_classes
from latentcc.lcc.targets import LCCTargets, lcc_targets

__all__ = [
    "EpochStart",
    "LCCTargets",
    "cc_mask",
    "contingency",
    "epoch_start",
    "lcc_loss",
    "lcc_targets",
    "match_clusters",
    "orphan_classes",
]
