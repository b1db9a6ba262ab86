"""Neural-collapse metrics against a textbook numpy reference (d x d scatter matrices, explicit loops)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentcc.metrics.collapse import NeuralCollapse, neural_collapse, neural_collapse_stream
from latentcc.plumbing.errors import LatentccError

BASE_KEYS = {
    "nc1",
    "nc1_papyan",
    "nc1_trace_ratio",
    "cdnv",
    "nc2_equinorm",
    "nc2_equiangular",
    "nc2_maxangle",
    "nc2_etf",
    "num_classes",
    "num_samples",
}
W_KEYS = {"nc2_etf_w", "nc3", "nc4"}


def reference(h, y, weight=None, bias=None):
    """docs/probes.md's neural-collapse definitions written out literally: d x d Sigma_W / Sigma_B, np.linalg.pinv, loops over pairs."""
    h = np.asarray(h, dtype=np.float64)
    n = len(h)
    k = int(y.max()) + 1
    mu = np.stack([h[y == c].mean(axis=0) for c in range(k)])
    mu_g = h.mean(axis=0)
    m = (mu - mu_g).T  # d x K
    sigma_w = sum(np.outer(h[i] - mu[y[i]], h[i] - mu[y[i]]) for i in range(n)) / n
    sigma_b = sum(np.outer(m[:, c], m[:, c]) for c in range(k)) / k
    # rtol=None: the array-API cutoff d * eps. numpy's legacy default (1e-15) can keep the rounding-noise
    # eigenvalues of the rank-(K-1) Sigma_B when d is larger than a few.
    tr = np.trace(sigma_w @ np.linalg.pinv(sigma_b, rtol=None))
    var = [np.mean([np.sum((x - mu[c]) ** 2) for x in h[y == c]]) for c in range(k)]
    pairs = [(i, j) for i in range(k) for j in range(k) if i != j]
    cdnv = np.mean([(var[i] + var[j]) / (2 * np.sum((mu[i] - mu[j]) ** 2)) for i, j in pairs])
    norms = [np.linalg.norm(m[:, c]) for c in range(k)]
    cos = [m[:, i] @ m[:, j] / (norms[i] * norms[j]) for i, j in pairs]

    def etf(g):
        return np.linalg.norm(g / np.linalg.norm(g) - (np.eye(k) - np.ones((k, k)) / k) / np.sqrt(k - 1))

    out = {
        "nc1": tr / k,
        "nc1_papyan": tr,
        "nc1_trace_ratio": np.trace(sigma_w) / np.trace(sigma_b),
        "cdnv": cdnv,
        "nc2_equinorm": np.std(norms) / np.mean(norms),
        "nc2_equiangular": np.std(cos),
        "nc2_maxangle": np.mean([abs(c + 1 / (k - 1)) for c in cos]),
        "nc2_etf": etf(m.T @ m),
        "num_classes": k,
        "num_samples": n,
    }
    if weight is not None:
        w = np.asarray(weight, dtype=np.float64)
        b = np.zeros(k) if bias is None else np.asarray(bias, dtype=np.float64)
        out["nc2_etf_w"] = etf(w @ w.T)
        out["nc3"] = np.linalg.norm(w.T / np.linalg.norm(w) - m / np.linalg.norm(m)) ** 2
        miss = 0
        for x in h:
            pred = int(np.argmax(w @ x + b))
            nearest = int(np.argmin([np.linalg.norm(x - mu[c]) for c in range(k)]))
            miss += pred != nearest
        out["nc4"] = miss / n
    return out


def assert_metrics_close(got, want, rtol=1e-9, atol=0.0):
    assert set(got) == set(want)
    for key, value in want.items():
        if key.startswith("num_"):
            assert got[key] == value and type(got[key]) is int, key
        else:
            assert type(got[key]) is float, key
            np.testing.assert_allclose(got[key], value, rtol=rtol, atol=atol, err_msg=key)


def make_data(n, d, k, seed, *, spread=2.0):
    """Unbalanced classes (so mu_G != mean of the class means), every class present."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.5, 1.5, size=k)
    y = np.concatenate([np.arange(k), rng.choice(k, size=n - k, p=p / p.sum())])
    rng.shuffle(y)
    centers = spread * rng.normal(size=(k, d))
    h = centers[y] + rng.normal(size=(n, d)) + 5.0  # common offset
    w = rng.normal(size=(k, d))
    b = rng.normal(size=k)
    return h, y, w, b


@pytest.mark.parametrize(
    ("n", "d", "k"),
    [(60, 7, 4), (20, 50, 4), (60, 3, 6)],  # generic; d > N; d < K-1 (rank M = d)
    ids=["generic", "d>N", "d<K-1"],
)
def test_matches_textbook_reference(n, d, k):
    h, y, w, b = make_data(n, d, k, seed=n + d + k)
    assert_metrics_close(neural_collapse(h, y), reference(h, y))
    got = neural_collapse(h, y, classifier_weight=w, classifier_bias=b)
    assert set(got) == BASE_KEYS | W_KEYS
    assert_metrics_close(got, reference(h, y, w, b))
    # W = M^T makes NC3 zero-ish and the nearest-class-mean classifier w_k = mu_k, b_k = -||mu_k||^2/2
    # makes NC4 exactly zero: checks the default bias and NC4 against a reference with real agreement.
    mu = np.stack([h[y == c].mean(axis=0) for c in range(k)])
    assert_metrics_close(
        neural_collapse(h, y, classifier_weight=mu, classifier_bias=-0.5 * (mu**2).sum(1)),
        reference(h, y, mu, -0.5 * (mu**2).sum(1)),
    )
    assert neural_collapse(h, y, classifier_weight=mu, classifier_bias=-0.5 * (mu**2).sum(1))["nc4"] == 0.0
    assert_metrics_close(neural_collapse(h, y, classifier_weight=w), reference(h, y, w))


def test_singleton_class_has_zero_variance():
    h, y, w, b = make_data(40, 5, 3, seed=1)
    y = y.copy()
    y[y == 2] = 1
    y[7] = 2  # class 2 has a single sample
    ref = reference(h, y, w, b)
    assert_metrics_close(neural_collapse(h, y, classifier_weight=w, classifier_bias=b), ref)


def test_one_sample_per_class_is_refused():
    """Every sample its own class mean: NC1 = 0 ("perfect collapse") by construction, not a measurement.
    Before the fix neural_collapse(F[:3], np.arange(3))["nc1"] returned 0.0."""
    h, _, _, _ = make_data(40, 5, 3, seed=1)
    msg = (
        r"The 'labels' parameter of {} must be labels with at least one class of 2 or more samples.*"
        r"Got '3 samples in 3 classes, one sample per class' instead.*Fix: pass more samples per class"
    )
    with pytest.raises(LatentccError, match=msg.format("neural_collapse")):
        neural_collapse(h[:3], np.arange(3))
    with pytest.raises(LatentccError, match=msg.format("neural_collapse")):
        neural_collapse(h[:3], np.array([7, 2, 5]))  # any ints, remapped to 0..2
    with pytest.raises(LatentccError, match=msg.format("NeuralCollapse")):
        neural_collapse_stream(lambda: [(h[:3], np.arange(3))], num_classes=3)
    # one class with two samples is enough for the within-class metrics to mean something
    y = np.array([0, 1, 2, 2])
    r = neural_collapse(h[:4], y)
    assert r["nc1"] > 0 and r["nc1"] == pytest.approx(reference(h[:4], y)["nc1"], rel=1e-9)


def simplex_etf_features(k=5, d=8, per_class=6, seed=0):
    """Each sample equals its class mean; the centred means form a simplex ETF; offset orthogonal to it."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    u = q[:, :k]
    etf = np.sqrt(k / (k - 1)) * (np.eye(k) - np.ones((k, k)) / k)  # columns: unit norm, cos -1/(K-1)
    means = (u @ etf).T  # (K, d)
    offset = 3.0 * q[:, k]  # orthogonal to the means' span, so the offset does not change the logits
    y = np.repeat(np.arange(k), per_class)
    return means[y] + offset, y, means


def test_perfect_collapse():
    h, y, means = simplex_etf_features()
    got = neural_collapse(h, y, classifier_weight=2.5 * means)
    assert got["nc1"] == pytest.approx(0.0, abs=1e-12)
    assert got["nc1_papyan"] == pytest.approx(0.0, abs=1e-12)
    assert got["nc1_trace_ratio"] == pytest.approx(0.0, abs=1e-12)
    assert got["cdnv"] == pytest.approx(0.0, abs=1e-12)
    for key in ("nc2_etf", "nc2_etf_w", "nc2_equinorm", "nc2_equiangular", "nc2_maxangle", "nc3"):
        assert got[key] == pytest.approx(0.0, abs=1e-10), key
    assert got["nc4"] == 0.0


def test_random_features_are_far_from_collapse():
    # No class structure: class means differ only by sampling noise, ||mu_k - mu_G||^2 ~ d / n_k, so the
    # K-1 nonzero singular values of M satisfy s^2 ~ d / n_k and NC1 ~ (K-1) n_k / d ~ 3 * 500 / 16 ~ 90.
    rng = np.random.default_rng(0)
    n, d, k = 2000, 16, 4
    h = rng.normal(size=(n, d))
    y = rng.integers(0, k, size=n)
    w = rng.normal(size=(k, d))
    got = neural_collapse(h, y, classifier_weight=w)
    assert 30 < got["nc1"] < 300
    assert got["cdnv"] > 10
    assert got["nc1_trace_ratio"] > 100
    # A random head agrees with the nearest class mean no better than chance (1/K).
    assert 0.5 < got["nc4"] < 0.95
    # The nearest-class-mean head agrees everywhere, even without class structure.
    mu = np.stack([h[y == c].mean(axis=0) for c in range(k)])
    assert neural_collapse(h, y, classifier_weight=mu, classifier_bias=-0.5 * (mu**2).sum(1))["nc4"] == 0.0


def test_memmap_chunks_torch_and_label_remapping(tmp_path):
    h, y, w, b = make_data(500, 9, 5, seed=3)
    h32 = h.astype(np.float32)
    mm = np.memmap(tmp_path / "h.f32", dtype=np.float32, mode="w+", shape=h32.shape)
    mm[:] = h32
    mm.flush()
    mm = np.memmap(tmp_path / "h.f32", dtype=np.float32, mode="r", shape=h32.shape)
    base = neural_collapse(h32, y, classifier_weight=w, classifier_bias=b)
    assert_metrics_close(neural_collapse(mm, y, classifier_weight=w, classifier_bias=b), base, rtol=1e-12)
    assert_metrics_close(
        neural_collapse(h32, y, classifier_weight=w, classifier_bias=b, chunk_size=7), base, rtol=1e-10
    )
    t = neural_collapse(
        torch.from_numpy(h32),
        torch.from_numpy(y),
        classifier_weight=torch.from_numpy(w),
        classifier_bias=torch.from_numpy(b),
    )
    assert_metrics_close(t, base, rtol=1e-12)
    # Without weight any ints work: {3, 10, 42} is remapped to {0, 1, 2} in sorted order.
    y3 = y % 3
    relabelled = np.array([3, 10, 42])[y3]
    assert_metrics_close(neural_collapse(h, relabelled), neural_collapse(h, y3), rtol=1e-12)
    assert_metrics_close(neural_collapse(h, y, num_classes=5), neural_collapse(h, y), rtol=1e-12)


def test_streaming_twins_equal_the_function():
    h, y, w, b = make_data(300, 6, 4, seed=5)
    want = neural_collapse(h, y, classifier_weight=w, classifier_bias=b)
    nc = NeuralCollapse(4, classifier_weight=torch.from_numpy(w), classifier_bias=b)
    assert nc.phase == "first"
    for s in range(0, 300, 64):
        nc.update(torch.from_numpy(h[s : s + 64]), y[s : s + 64])
    nc.end_first_pass()
    assert nc.phase == "second"
    order = np.random.default_rng(0).permutation(300)  # pass 2 may see another order and batching
    for s in range(0, 300, 37):
        nc.update(h[order[s : s + 37]], y[order[s : s + 37]])
    assert_metrics_close(nc.compute(), want, rtol=1e-10)

    def batches():
        return ((h[s : s + 50], y[s : s + 50]) for s in range(0, 300, 50))

    assert_metrics_close(
        neural_collapse_stream(batches, num_classes=4, classifier_weight=w, classifier_bias=b),
        want,
        rtol=1e-10,
    )
    assert_metrics_close(neural_collapse_stream(batches, num_classes=4), neural_collapse(h, y), rtol=1e-10)


def test_streaming_phase_errors():
    h, y, _, _ = make_data(40, 3, 3, seed=2)
    nc = NeuralCollapse(3)
    with pytest.raises(LatentccError, match="before any update"):
        nc.end_first_pass()
    with pytest.raises(LatentccError, match="two passes"):
        nc.compute()
    nc.update(h, y)
    nc.end_first_pass()
    with pytest.raises(LatentccError, match="already called"):
        nc.end_first_pass()
    nc.update(h[:20], y[:20])
    with pytest.raises(LatentccError, match=r"second pass saw 20 samples but the first saw 40"):
        nc.compute()
    nc.update(h[20:], y[20:])
    assert nc.compute()["num_samples"] == 40

    missing = NeuralCollapse(4)
    missing.update(h, y)
    with pytest.raises(LatentccError, match=r"no samples of classes \[3\]"):
        missing.end_first_pass()

    gen = iter([(h, y)])  # an exhausted iterator on the second call
    with pytest.raises(LatentccError, match="fresh iterable"):
        neural_collapse_stream(lambda: gen, num_classes=3)
    with pytest.raises(LatentccError, match="'batches'"):
        neural_collapse_stream([(h, y)], num_classes=3)  # type: ignore[arg-type]

    bad = NeuralCollapse(3)
    with pytest.raises(LatentccError, match=r"'labels'.*0\.\.2"):
        bad.update(h, y + 1)
    h_nan = h.copy()
    h_nan[5, 1] = np.nan
    with pytest.raises(LatentccError, match=r"'features'.*NaN.*rows \[45\]"):
        bad.update(h, y)
        bad.update(h_nan, y)
    with pytest.raises(LatentccError, match=r"'features'.*\(n, 3\)"):
        bad.update(h[:, :2], y)
    with pytest.raises(LatentccError, match="'num_classes'"):
        NeuralCollapse(1)


def test_degenerate_inputs_raise_naming_the_parameter():
    h, y, w, _ = make_data(60, 7, 4, seed=4)
    with pytest.raises(LatentccError, match="'labels'.*at least 2 distinct"):
        neural_collapse(h, np.zeros(60, dtype=int))
    with pytest.raises(LatentccError, match="class means coincide.*constant"):
        neural_collapse(np.ones((60, 7), dtype=np.float32), y)
    with pytest.raises(LatentccError, match="class means coincide"):
        neural_collapse(np.full((60, 7), 0.1), y)  # float64: the class sums carry rounding noise
    h_nan = h.copy()
    h_nan[3, 2] = np.inf
    with pytest.raises(LatentccError, match=r"'features'.*NaN/inf.*rows \[3\]"):
        neural_collapse(h_nan, y, chunk_size=2)
    with pytest.raises(LatentccError, match="'features'.*2-D"):
        neural_collapse(h[:, 0], y)
    with pytest.raises(LatentccError, match=r"'classifier_weight'.*\(K, d\) = \(4, 7\)"):
        neural_collapse(h, y, classifier_weight=w.T)
    with pytest.raises(LatentccError, match=r"'classifier_weight'.*\(K, d\) = \(4, 7\)"):
        neural_collapse(h, y, classifier_weight=w[:, :5])
    with pytest.raises(LatentccError, match=r"'classifier_weight'.*\(K, d\) = \(5, 7\)"):
        neural_collapse(h, y, classifier_weight=w, num_classes=5)
    with pytest.raises(LatentccError, match=r"'labels'.*0\.\.3 \(K = classifier_weight.shape\[0\] = 4\)"):
        neural_collapse(h, y + 1, classifier_weight=w)
    with pytest.raises(LatentccError, match=r"'labels'.*num_classes = 5.*no samples for classes \[4\]"):
        neural_collapse(h, y, num_classes=5)
    with pytest.raises(LatentccError, match="'classifier_bias'"):
        neural_collapse(h, y, classifier_weight=w, classifier_bias=np.zeros(3))
    with pytest.raises(LatentccError, match="'classifier_bias'"):
        neural_collapse(h, y, classifier_bias=np.zeros(4))
    with pytest.raises(LatentccError, match="'chunk_size'"):
        neural_collapse(h, y, chunk_size=0)


def test_invariances():
    h, y, w, b = make_data(80, 6, 5, seed=6)
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    t = rng.normal(size=6) * 10
    base = neural_collapse(h, y, classifier_weight=w, classifier_bias=b)
    # h' = Q^T h + t with W' = W Q and b' = b - W' t leaves every logit and distance unchanged.
    moved = neural_collapse(h @ q + t, y, classifier_weight=w @ q, classifier_bias=b - (w @ q) @ t)
    keys = [k for k in base if k.startswith(("nc1", "cdnv", "nc2", "nc3"))]
    for key in keys:
        np.testing.assert_allclose(moved[key], base[key], rtol=1e-8, err_msg=key)
    assert moved["nc4"] == base["nc4"]
    scaled = neural_collapse(3.7 * h, y)
    for key in ("nc1", "nc1_papyan", "nc1_trace_ratio", "cdnv", "nc2_equinorm", "nc2_etf"):
        np.testing.assert_allclose(scaled[key], base[key], rtol=1e-10, err_msg=key)
