"""latentcc: Latent Cluster Correction and latent-geometry probes for fine-tuning PyTorch models.

Public verbs are re-exported here; nothing heavy is imported at package import time.
"""

from latentcc import metrics
from latentcc.config import DataConfig, LCCConfig, MethodConfig, ModelConfig, ProbeConfig, TrainConfig
from latentcc.graph import communities, knn_graph, knn_recall, knn_search, reduce_dim
from latentcc.latents.collect import Latents, collect_latents
from latentcc.latents.layers import capture, list_layers, resolve_layers
from latentcc.lcc import LCCTargets, cc_mask, epoch_start, lcc_loss, lcc_targets, match_clusters
from latentcc.plumbing.errors import CheckpointError, LatentccError, MissingExtraError, WriteError
from latentcc.probes.profile import Profile, profile
from latentcc.train.freeze import trainable_parameters
from latentcc.train.methods import MethodSetup, apply_method

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "DataConfig",
    "LCCConfig",
    "LCCTargets",
    "LatentccError",
    "Latents",
    "MethodConfig",
    "MethodSetup",
    "MissingExtraError",
    "ModelConfig",
    "ProbeConfig",
    "Profile",
    "TrainConfig",
    "WriteError",
    "__version__",
    "apply_method",
    "capture",
    "cc_mask",
    "collect_latents",
    "communities",
    "epoch_start",
    "knn_graph",
    "knn_recall",
    "knn_search",
    "lcc_loss",
    "lcc_targets",
    "list_layers",
    "match_clusters",
    "metrics",
    "profile",
    "reduce_dim",
    "resolve_layers",
    "trainable_parameters",
]
