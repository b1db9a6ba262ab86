"""The LCC engine's graph side: k-NN search and graph, dimensionality reduction, communities."""

from latentcc.graph.community import communities, modularity
from latentcc.graph.knn import knn_recall, knn_search
from latentcc.graph.knn_graph import knn_graph, knn_graph_from_indices
from latentcc.graph.reduce import reduce_dim

__all__ = [
    "communities",
    "knn_graph",
    "knn_graph_from_indices",
    "knn_recall",
    "knn_search",
    "modularity",
    "reduce_dim",
]
