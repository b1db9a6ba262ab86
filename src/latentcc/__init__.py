"""latentcc: Latent Cluster Correction and latent-geometry probes for fine-tuning PyTorch models.

Public verbs are re-exported here; nothing heavy is imported at package import time.
"""

from latentcc.config import DataConfig, ModelConfig, TrainConfig
from latentcc.errors import CheckpointError, LatentccError, MissingExtraError
from latentcc.layers import capture, list_layers, resolve_layers

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "DataConfig",
    "LatentccError",
    "MissingExtraError",
    "ModelConfig",
    "TrainConfig",
    "__version__",
    "capture",
    "list_layers",
    "resolve_layers",
]
