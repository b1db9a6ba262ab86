"""Probes of latents: how well a simple classifier trained on train-split features labels the test split.

``linear_probe``: multinomial logistic regression (scikit-learn, lbfgs) on standardised features.
``knn_probe``: majority vote of the k nearest training samples (exact faiss search), ties -> lowest class.
Both return the test accuracy as a Python float in [0, 1]. Test labels never seen in training are allowed:
no probe can predict them, so they count as errors (the accuracy stays comparable across splits).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from latentcc.errors import check_int, param_error, require
from latentcc.metrics._validate import as_features, as_labels

KnnMetric = Literal["cosine", "l2"]
KNN_METRICS: tuple[str, ...] = ("cosine", "l2")

# Test rows voted at a time: bounds the (rows, classes) vote table and the (rows, k) neighbour arrays.
_VOTE_BLOCK_ELEMS = 1 << 22


# --------------------------------------------------------------------------- validation (the door)


def _check_splits(
    train_feats: Any, train_y: Any, test_feats: Any, test_y: Any, func: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    xtr = as_features(train_feats, func, "train_feats")
    xte = as_features(test_feats, func, "test_feats")
    if xte.shape[1] != xtr.shape[1]:
        raise param_error(
            "test_feats",
            func,
            f"an (M, D) array with the train features' width D = {xtr.shape[1]}",
            f"shape {xte.shape}",
            "Extract both splits from the same layer with the same pooling / projection.",
        )
    ytr = as_labels(train_y, len(xtr), func, "train_y")
    yte = as_labels(test_y, len(xte), func, "test_y")
    return xtr, ytr, xte, yte


def _check_nonzero(x: np.ndarray, param: str, func: str) -> None:
    zero = np.flatnonzero(~np.any(x != 0, axis=1))
    if zero.size:
        raise param_error(
            param,
            func,
            "free of all-zero rows when metric='cosine' (their cosine distance is undefined)",
            f"{zero.size} all-zero rows (first: {zero[:5].tolist()})",
            "Fix: use metric='l2', or drop those samples.",
        )


# --------------------------------------------------------------------------- public API


def linear_probe(
    train_feats: Any,
    train_y: Any,
    test_feats: Any,
    test_y: Any,
    *,
    C: float = 1.0,
    max_iter: int = 1000,
    standardize: bool = True,
    seed: int = 0,
) -> float:
    """Test accuracy of a multinomial logistic regression fitted on the training features.

    Args:
        train_feats: (N, D) float array or tensor; train_y: (N,) int labels with >= 2 classes.
        test_feats: (M, D), same D; test_y: (M,) int labels (classes unseen in training count as errors).
        C: inverse L2 regularisation strength (> 0), as scikit-learn's LogisticRegression.
        max_iter: lbfgs iterations; scikit-learn warns (ConvergenceWarning) when they do not suffice.
        standardize: z-score every feature with the TRAIN mean and std (StandardScaler) before fitting;
            lbfgs converges far faster on standardised features.
        seed: ``random_state`` of the solver (lbfgs itself is deterministic).
    """
    func = "linear_probe"
    xtr, ytr, xte, yte = _check_splits(train_feats, train_y, test_feats, test_y, func)
    if len(np.unique(ytr)) < 2:
        raise param_error("train_y", func, "labels with at least 2 distinct classes", "1 distinct class")
    ok = isinstance(C, int | float | np.floating) and not isinstance(C, bool) and np.isfinite(C) and C > 0
    if not ok:
        raise param_error("C", func, "a finite float > 0", C)
    max_iter = check_int(max_iter, "max_iter", func, 1)
    if not isinstance(standardize, bool):
        raise param_error("standardize", func, "a bool", standardize)
    seed = check_int(seed, "seed", func, 0)

    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if standardize:
        scaler = StandardScaler().fit(xtr)
        xtr, xte = scaler.transform(xtr), scaler.transform(xte)
    clf = LogisticRegression(C=float(C), max_iter=max_iter, random_state=seed)
    clf.fit(xtr, ytr)
    return float(np.mean(clf.predict(xte) == yte))


def knn_probe(
    train_feats: Any,
    train_y: Any,
    test_feats: Any,
    test_y: Any,
    *,
    k: int = 20,
    metric: KnnMetric = "cosine",
) -> float:
    """Test accuracy of a k-nearest-neighbour majority vote among the TRAINING samples.

    Each test sample takes the most frequent label among its k nearest training samples (unweighted);
    ties between labels go to the lowest class id (as scikit-learn's KNeighborsClassifier).

    Args:
        train_feats: (N, D) float array or tensor; train_y: (N,) int labels.
        test_feats: (M, D), same D; test_y: (M,) int labels.
        k: neighbours voting, 1 <= k <= N.
        metric: ``"cosine"`` (inner product of unit-normalised rows; all-zero rows are rejected) or
            ``"l2"`` (Euclidean). Exact search (faiss flat index, float32).
    """
    func = "knn_probe"
    xtr, ytr, xte, yte = _check_splits(train_feats, train_y, test_feats, test_y, func)
    n = len(xtr)
    k = check_int(k, "k", func, 1, n, f"Fix: use k <= {n} (the number of training samples).")
    if metric not in KNN_METRICS:
        raise param_error("metric", func, f"one of {list(KNN_METRICS)}", metric)
    if metric == "cosine":
        _check_nonzero(xtr, "train_feats", func)
        _check_nonzero(xte, "test_feats", func)
    neighbours = _knn(xtr, xte, k, str(metric))
    return float(np.mean(_vote(ytr, neighbours) == yte))


# --------------------------------------------------------------------------- private (trust their inputs)


def _knn(base: np.ndarray, queries: np.ndarray, k: int, metric: str) -> np.ndarray:
    """(M, k) int64 indices into ``base`` of each query's k nearest rows (exact), nearest first."""
    faiss = require("faiss", "graph", purpose="the k-NN probe", pip_name="faiss-cpu")
    # faiss's OpenMP pool and torch's intra-op pool would otherwise both take every core.
    faiss.omp_set_num_threads(torch.get_num_threads())
    base = np.ascontiguousarray(base, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if metric == "cosine":
        base = base / np.linalg.norm(base, axis=1, keepdims=True)
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        index = faiss.IndexFlatIP(base.shape[1])
    else:
        index = faiss.IndexFlatL2(base.shape[1])
    index.add(base)
    _, idx = index.search(queries, k)
    return np.asarray(idx, dtype=np.int64)


def _vote(train_y: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """(M,) majority label of each row's neighbours; ties -> lowest class id."""
    classes, y = np.unique(train_y, return_inverse=True)
    y = y.reshape(-1)
    n_classes = len(classes)
    m = len(neighbours)
    winners = np.empty(m, dtype=np.int64)
    step = max(1, _VOTE_BLOCK_ELEMS // n_classes)
    for s in range(0, m, step):
        votes = y[neighbours[s : s + step]]  # (rows, k) compact class ids
        rows = np.arange(len(votes))[:, None]
        table = np.bincount((rows * n_classes + votes).ravel(), minlength=len(votes) * n_classes)
        # argmax takes the first maximum: the lowest compact id, i.e. the lowest class id (classes is sorted).
        winners[s : s + step] = table.reshape(len(votes), n_classes).argmax(axis=1)
    return classes[winners]
