"""Linear and k-NN probes against scikit-learn computed directly in the test."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from latentcc.metrics.probes import knn_probe, linear_probe
from latentcc.plumbing.errors import LatentccError


def splits(n_train=300, n_test=200, dim=10, n_classes=4, sep=1.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim)) * sep
    ytr = rng.integers(0, n_classes, n_train)
    yte = rng.integers(0, n_classes, n_test)
    scale = rng.uniform(0.1, 20, dim)  # uneven feature scales: standardising matters
    xtr = ((centres[ytr] + rng.normal(size=(n_train, dim))) * scale).astype(np.float32)
    xte = ((centres[yte] + rng.normal(size=(n_test, dim))) * scale).astype(np.float32)
    return xtr, ytr, xte, yte


# --------------------------------------------------------------------------- linear probe


@pytest.mark.parametrize("standardize", [True, False])
@pytest.mark.parametrize("C", [1.0, 0.05])
def test_linear_probe_equals_sklearn(standardize, C):
    xtr, ytr, xte, yte = splits()
    clf = LogisticRegression(C=C, max_iter=1000, random_state=0)
    model = make_pipeline(StandardScaler(), clf) if standardize else clf
    pred = model.fit(xtr, ytr).predict(xte)
    acc = linear_probe(xtr, ytr, xte, yte, C=C, standardize=standardize)
    assert isinstance(acc, float)
    assert acc == float(np.mean(pred == yte))
    assert 0.3 < acc < 1.0  # informative
    # every single prediction agrees: scoring against sklearn's predictions gives 1
    assert linear_probe(xtr, ytr, xte, pred, C=C, standardize=standardize) == 1.0


def test_linear_probe_separable_is_perfect():
    xtr, ytr, xte, yte = splits(sep=40.0, seed=1)
    assert linear_probe(torch.from_numpy(xtr), torch.from_numpy(ytr), xte, yte) == 1.0


def test_linear_probe_unseen_test_class_counts_as_error():
    xtr, ytr, xte, yte = splits(sep=40.0, seed=1)
    yte = yte.copy()
    yte[:10] = 99
    assert linear_probe(xtr, ytr, xte, yte) == pytest.approx(1 - 10 / len(yte))


# --------------------------------------------------------------------------- k-NN probe


@pytest.mark.parametrize(("metric", "sk_metric"), [("l2", "euclidean"), ("cosine", "cosine")])
@pytest.mark.parametrize("k", [1, 4, 20])
def test_knn_probe_equals_sklearn(metric, sk_metric, k):
    # 3 classes, even k: vote ties happen, and both break them towards the lowest class id.
    xtr, ytr, xte, yte = splits(n_classes=3, sep=0.7, seed=k)
    sk = KNeighborsClassifier(n_neighbors=k, metric=sk_metric, algorithm="brute").fit(xtr, ytr)
    pred = sk.predict(xte)
    acc = knn_probe(xtr, ytr, xte, yte, k=k, metric=metric)
    assert isinstance(acc, float)
    assert acc == float(np.mean(pred == yte))
    assert knn_probe(xtr, ytr, xte, pred, k=k, metric=metric) == 1.0


def test_knn_probe_ties_go_to_lowest_class():
    xtr = np.array([[0.0], [1.0], [-1.0], [10.0]], dtype=np.float32)
    ytr = np.array([7, 3, 5, 3])
    xte = np.array([[0.1]], dtype=np.float32)
    # nearest 2: labels {7, 3} -> 3; nearest 3: {7, 3, 5} -> 3; nearest 1: 7
    assert knn_probe(xtr, ytr, xte, [3], k=2, metric="l2") == 1.0
    assert knn_probe(xtr, ytr, xte, [3], k=3, metric="l2") == 1.0
    assert knn_probe(xtr, ytr, xte, [7], k=1, metric="l2") == 1.0
    assert knn_probe(xtr, ytr, xte, [3], k=4, metric="l2") == 1.0  # 3 wins 2 votes to 1


def test_knn_probe_separable_is_perfect():
    xtr, ytr, xte, yte = splits(sep=40.0, seed=2)
    assert knn_probe(xtr, ytr, xte, yte, k=20) == 1.0
    assert knn_probe(xtr, ytr, xte, yte, k=20, metric="l2") == 1.0


# --------------------------------------------------------------------------- errors


def test_errors():
    xtr, ytr, xte, yte = splits(n_train=30, n_test=10, dim=3)
    bad = xtr.copy()
    bad[3, 1] = np.nan
    zero = xte.copy()
    zero[2] = 0
    cases = [
        (lambda: linear_probe(xtr, ytr, xte[:, :2], yte), "test_feats"),
        (lambda: linear_probe(bad, ytr, xte, yte), "train_feats"),
        (lambda: linear_probe(xtr, ytr[:5], xte, yte), "train_y"),
        (lambda: linear_probe(xtr, ytr, xte, yte[:5]), "test_y"),
        (lambda: linear_probe(xtr, np.zeros(30, int), xte, yte), "train_y"),
        (lambda: linear_probe(xtr, ytr, xte, yte, C=0.0), "C"),
        (lambda: linear_probe(xtr, ytr, xte, yte, max_iter=0), "max_iter"),
        (lambda: linear_probe(xtr, ytr, xte, yte, standardize=1), "standardize"),
        (lambda: linear_probe(xtr, ytr, xte, yte, seed=-1), "seed"),
        (lambda: knn_probe(xtr, ytr, xte, yte, k=31), "k"),
        (lambda: knn_probe(xtr, ytr, xte, yte, k=0), "k"),
        (lambda: knn_probe(xtr, ytr, xte, yte, k=2.0), "k"),
        (lambda: knn_probe(xtr, ytr, xte, yte, metric="manhattan"), "metric"),
        (lambda: knn_probe(xtr, ytr, xte[:, :2], yte), "test_feats"),
        (lambda: knn_probe(xtr, ytr, zero, yte), "test_feats"),
        (lambda: knn_probe(xtr, ytr, np.where(np.isnan(bad[:10]), np.inf, xte), yte), "test_feats"),
        (lambda: knn_probe(xtr, ytr.astype(float) + 0.5, xte, yte), "train_y"),
    ]
    for call, param in cases:
        with pytest.raises(LatentccError, match=f"'{param}'"):
            call()
    # zero rows are fine with l2; k = N is allowed
    assert 0 <= knn_probe(xtr, ytr, zero, yte, k=30, metric="l2") <= 1


def _noisy_probe_data() -> tuple[np.ndarray, np.ndarray]:
    """4 overlapping classes (accuracy well between chance and 1), centred half-range in [1, 2): the exact
    power-of-two rescale of a scaled copy gives back these very features."""
    rng = np.random.default_rng(5)
    y = np.repeat(np.arange(4), 40)
    x = rng.normal(size=(160, 6))
    x[np.arange(160), y] += 1.0
    x -= (x.max(0) + x.min(0)) / 2
    return x / 2.0 ** np.frexp(np.abs(x).max())[1] * 2, y


@pytest.mark.parametrize("standardize", [True, False])
@pytest.mark.parametrize("scale", [2.0**-1000, 2.0**-500, 2.0**500, 2.0**-70])
def test_linear_probe_at_extreme_scales_equals_scale_one(standardize: bool, scale: float) -> None:
    """Features near 1e-300 (or 1e150, 1e-150 without standardisation) used to give chance accuracy."""
    x, y = _noisy_probe_data()
    ref = linear_probe(x[::2], y[::2], x[1::2], y[1::2], standardize=standardize)
    assert 0.4 < ref < 1.0
    xs = x * scale
    if scale == 2.0**-70:
        xs = xs.astype(np.float32)  # float32 features around 1e-21
        ref = linear_probe(
            x.astype(np.float32)[::2], y[::2], x.astype(np.float32)[1::2], y[1::2], standardize=standardize
        )
    assert linear_probe(xs[::2], y[::2], xs[1::2], y[1::2], standardize=standardize) == ref


@pytest.mark.parametrize("scale", [1e-300, 1e150, 1e-150])
def test_linear_probe_separable_features_at_extreme_scales_are_perfect(scale: float) -> None:
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(4), 40)
    x = rng.normal(size=(160, 6))
    x[np.arange(160), y] += 5.0
    for std in (True, False):
        assert linear_probe(scale * x[::2], y[::2], scale * x[1::2], y[1::2], standardize=std) == 1.0
    assert knn_probe(scale * x[::2], y[::2], scale * x[1::2], y[1::2], k=5, metric="l2") == 1.0
