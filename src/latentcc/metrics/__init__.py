"""Latent-geometry metrics: clusterability, neural collapse, geometric complexity, probes.

Each metric is a pure function on arrays/tensors (and, where data may not fit in memory, a streaming
twin); definitions in docs/probes.md, references in the tests.
"""

from latentcc.metrics.clustering import cluster, cluster_consistency, clusterability, purity
from latentcc.metrics.collapse import NeuralCollapse, neural_collapse, neural_collapse_stream
from latentcc.metrics.complexity import (
    GCResult,
    gc_penalty,
    geometric_collapse,
    geometric_complexity,
    layer_fn,
    per_class_gc,
)
from latentcc.metrics.probes import knn_probe, linear_probe

__all__ = [
    "GCResult",
    "NeuralCollapse",
    "cluster",
    "cluster_consistency",
    "clusterability",
    "gc_penalty",
    "geometric_collapse",
    "geometric_complexity",
    "knn_probe",
    "layer_fn",
    "linear_probe",
    "neural_collapse",
    "neural_collapse_stream",
    "per_class_gc",
    "purity",
]
