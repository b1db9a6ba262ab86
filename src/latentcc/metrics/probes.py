"""Probes of latents: how well a simple classifier trained on train-split features labels the test split.

``linear_probe``: multinomial logistic regression (scikit-learn, lbfgs) on standardised features.
``knn_probe``: majority vote of the k nearest training samples (exact search, :mod:`latentcc.graph.knn`),
ties -> lowest class.
Both return the test accuracy as a Python float in [0, 1]. Test labels never seen in training are allowed:
no probe can predict them, so they count as errors (the accuracy stays comparable across splits).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from latentcc.config import ProbeConfig
from latentcc.graph.knn import knn_search_trusted
from latentcc.plumbing.arrays import Matrix, joint_frame
from latentcc.plumbing.errors import param_error
from latentcc.plumbing.validate import as_labels, as_matrix, check_choice, check_int

KnnMetric = Literal["cosine", "l2"]
KNN_METRICS: tuple[str, ...] = ("cosine", "l2")

# Test rows voted at a time: bounds the (rows, classes) vote table and the (rows, k) neighbour arrays.
_VOTE_BLOCK_ELEMS = 1 << 22


# --------------------------------------------------------------------------- validation (the door)


def _check_splits(
    train_feats: Any, train_y: Any, test_feats: Any, test_y: Any, func: str
) -> tuple[Matrix, np.ndarray, Matrix, np.ndarray]:
    mtr = as_matrix(train_feats, "train_feats", func)
    mte = as_matrix(test_feats, "test_feats", func)
    if mte.shape[1] != mtr.shape[1]:
        raise param_error(
            "test_feats",
            func,
            f"an (M, D) array with the train features' width D = {mtr.shape[1]}",
            f"shape {mte.shape}",
            "Extract both splits from the same layer with the same pooling / projection.",
        )
    ytr = as_labels(train_y, len(mtr), func, "train_y")
    yte = as_labels(test_y, len(mte), func, "test_y")
    return mtr, ytr, mte, yte


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
    mtr, ytr, mte, yte = _check_splits(train_feats, train_y, test_feats, test_y, func)
    # Both splits translated alike (in float64) before the solver: the unpenalised intercept absorbs any
    # translation, so the predictions are those of the features as given, while a large common offset
    # (latents around 1e5 with a spread of 1e-3) would otherwise drown the features in rounding. Features
    # at extreme scales (1e-300, 1e150, float32 1e-20) are also brought to ~1 by an exact power of two
    # (identity within [2^-24, 2^24]): otherwise their variance vanishes or overflows in the scaler and
    # lbfgs sees all-zero or huge features (chance accuracy). Standardised features are bitwise those
    # of the unscaled data, so the predictions are too.
    shift, scale = joint_frame(mtr, mte)
    xtr = mtr.centred(mtr.work_dtype, shift=shift, scale=scale)
    xte = mte.centred(mtr.work_dtype, shift=shift, scale=scale)
    assert isinstance(xtr, np.ndarray) and isinstance(xte, np.ndarray)  # no keep_device: numpy
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
    k: int = ProbeConfig.knn_k,
    metric: KnnMetric = "cosine",
) -> float:
    """Test accuracy of a k-nearest-neighbour majority vote among the TRAINING samples.

    Each test sample takes the most frequent label among its k nearest training samples (unweighted);
    ties between labels go to the lowest class id (as scikit-learn's KNeighborsClassifier).

    Args:
        train_feats: (N, D) float array or tensor; train_y: (N,) int labels.
        test_feats: (M, D), same D; test_y: (M,) int labels.
        k: neighbours voting, 1 <= k <= N.
        metric: ``"cosine"`` (cosine similarity of the features as given; all-zero rows are rejected)
            or ``"l2"`` (Euclidean). Exact search (:func:`~latentcc.graph.knn_search` with the test
            features as queries: float32 on rows prepared in float64 so that features far from the origin
            keep their neighbours, see :mod:`latentcc.plumbing.arrays`).
    """
    func = "knn_probe"
    mtr, ytr, mte, yte = _check_splits(train_feats, train_y, test_feats, test_y, func)
    n = len(mtr)
    k = check_int(k, "k", func, 1, n, f"Fix: use k <= {n} (the number of training samples).")
    metric = check_choice(metric, "metric", func, KNN_METRICS)
    # Both splits are translated alike in float64 before the float32 search (knn_search with queries), so a
    # large common offset does not drown the distances: for l2 the rows, for cosine the unit rows of the
    # features as given (all-zero rows raise, naming their split). Exact faiss, never torch: the two break
    # distance ties differently, and the probe's numbers (checked against scikit-learn) must not depend on size.
    neighbours, _ = knn_search_trusted(
        mtr, mte, k, metric=metric, backend="faiss", seed=0, exclude_self=False, exact=True, func=func
    )
    return float(np.mean(_vote(ytr, neighbours) == yte))


# --------------------------------------------------------------------------- private (trust their inputs)


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
