"""Neural-collapse metrics NC1-NC4 and CDNV (docs/probes.md, Neural collapse), in two streamed passes over the rows.

Notation: features h_i (d,), labels y_i in 0..K-1, class means mu_k, global mean mu_G (the mean over
all N samples, so unbalanced classes weigh by their size), M = [mu_k - mu_G] (d x K), classifier
W (K x d) with bias b (K,).

Nothing here builds a d x d matrix. Sigma_B = M M^T / K, so Sigma_B^+ = K (M^+)^T M^+ and
NC1 = tr(Sigma_W Sigma_B^+) / K = (1/N) sum_i ||M^+ (h_i - mu_{y_i})||^2, with M^+ from a thin SVD of
M (d x K). Pass 1 accumulates counts and class sums (K x d, float64); pass 2 accumulates the
within-class sums of squares (exact two-pass, no E||h||^2 - ||mu||^2 cancellation), the NC1
projection sum and the NC4 disagreements. Rows are read ``chunk_size`` at a time and converted to
float64 one chunk at a time, so a memory-mapped (N, d) array is never loaded whole.

Two twins share the chunk math: :func:`neural_collapse` for an array in hand (it feeds its chunks
through the class) and :class:`NeuralCollapse` / :func:`neural_collapse_stream` for data that is
only available as batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, TypeAlias

import numpy as np
import torch

from latentcc.plumbing.errors import LatentccError, param_error
from latentcc.plumbing.scaling import pow2_scale
from latentcc.plumbing.validate import as_labels, as_matrix, to_numpy

Array: TypeAlias = np.ndarray | torch.Tensor

_EPS = float(np.finfo(np.float64).eps)
_CHUNK = 65536
# Pairwise class-mean distances are computed exactly in (rows, K, d) blocks of at most this many
# float64 elements (32 MiB), not by the ||a||^2 + ||b||^2 - 2ab expansion, so coinciding means give 0.
_PAIR_BLOCK = 2**22


def neural_collapse(
    features: Array,
    labels: Array,
    *,
    classifier_weight: Array | None = None,
    classifier_bias: Array | None = None,
    num_classes: int | None = None,
    chunk_size: int = _CHUNK,
) -> dict[str, float]:
    """Neural-collapse metrics of features (N, d) with labels (N,), exactly as docs/probes.md (Neural collapse) defines them.

    Args:
        features: (N, d) float numpy array (a ``np.memmap`` is read ``chunk_size`` rows at a time) or
            torch tensor (copied to the CPU). NaN/inf raise.
        labels: (N,) integer class ids. Without ``classifier_weight`` and ``num_classes`` they may be any ints:
            the distinct values are remapped to 0..K-1 in sorted order (class k of the result is the
            k-th smallest label). With ``classifier_weight`` or ``num_classes`` they must already be 0..K-1 and
            every class must have a sample.
        classifier_weight: (K, d) rows of the linear classifier W (numpy or torch, e.g. ``head.weight``),
            optional; adds ``nc2_etf_w``, ``nc3``, ``nc4``.
        classifier_bias: (K,) its bias b, optional (default zeros); only with ``classifier_weight``.
        num_classes: K, optional; labels must be in 0..K-1 and every class must occur.
        chunk_size: rows per chunk (memory ~ a few chunk_size x d float64 arrays).

    Returns:
        dict of python floats: ``nc1`` = tr(Sigma_W Sigma_B^+)/K, ``nc1_papyan`` = tr(Sigma_W Sigma_B^+)
        (= K * nc1), ``nc1_trace_ratio`` = tr(Sigma_W)/tr(Sigma_B), ``cdnv`` (mean over i != j),
        ``nc2_equinorm`` (population std / mean of ||mu_k - mu_G||, ddof=0), ``nc2_equiangular``
        (population std of the cosines over pairs k != k'), ``nc2_maxangle``, ``nc2_etf``
        (G = M^T M); with ``classifier_weight`` also ``nc2_etf_w`` (G = W W^T), ``nc3`` and ``nc4``; plus the
        ints ``num_classes`` and ``num_samples``.

    Semantics of the edge cases:
        * A class with a single sample is allowed: its Var_i is 0 (the sample is its own mean), which
          pulls ``nc1``, ``nc1_trace_ratio`` and ``cdnv`` towards collapse; use at least 2 samples per
          class where possible. When *every* class has a single sample the within-class metrics are 0
          by construction, not a measurement, so LatentccError names 'labels' instead.
        * ``cdnv`` is ``inf`` when two class means coincide exactly; ``nc2_equiangular`` and
          ``nc2_maxangle`` are ``nan`` when a class mean equals the global mean (its direction is
          undefined). All class means equal (e.g. constant features) raises LatentccError.
        * ``nc4`` ties: the classifier's prediction is the lowest index among equal top logits and the
          nearest class mean the lowest index among equal distances (numpy argmax / argmin).
        * NC1 uses M^+ with singular values s_j > s_max * sqrt(max(d, K) * eps) and at most K-1 of
          them (rank M <= K-1), the default cutoff of ``np.linalg.pinv(Sigma_B, rtol=None)``.
    """
    func = "neural_collapse"
    x = _features(features, func)
    y = as_labels(labels, len(x), func, min_classes=2)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int | np.integer) or chunk_size < 1:
        raise param_error("chunk_size", func, "an int >= 1", chunk_size)
    nk = None if num_classes is None else _as_num_classes(num_classes, func)
    w, b = _as_classifier(
        classifier_weight, classifier_bias, nk, func, dim=x.shape[1], k_hint=max(2, int(y.max()) + 1)
    )
    if w is not None:
        k = len(w)
        _check_classes(y, k, f"K = classifier_weight.shape[0] = {k}", func)
    elif nk is not None:
        k = nk
        _check_classes(y, k, f"num_classes = {k}", func)
    else:
        _, y = np.unique(y, return_inverse=True)  # any ints -> 0..K-1 in sorted order
        k = int(y.max()) + 1
    _check_within(np.bincount(y, minlength=k), func)
    nc = NeuralCollapse(k, classifier_weight=w, classifier_bias=b)
    nc._chunk_size = int(chunk_size)
    nc._consume(x, y, func)
    nc.end_first_pass()
    nc._consume(x, y, func)
    return nc.compute()


def neural_collapse_stream(
    batches: Callable[[], Iterable[tuple[Any, Any]]],
    *,
    num_classes: int,
    classifier_weight: Array | None = None,
    classifier_bias: Array | None = None,
) -> dict[str, float]:
    """:func:`neural_collapse` over batches that never fit in memory together.

    ``batches`` is a zero-argument callable returning a FRESH iterable of ``(features, labels)``
    batches, e.g. ``lambda: loader`` or ``lambda: ((x, y) for x, y, _ in loader)``; it is called
    twice (pass 1: means, pass 2: everything else) and both passes must yield the same samples
    (their order and batching may differ). Labels must be 0..num_classes-1, every class present.
    """
    func = "neural_collapse_stream"
    if not callable(batches):
        raise param_error(
            "batches",
            func,
            "a zero-argument callable returning a fresh iterable of (features, labels) batches",
            type(batches).__name__,
            "Wrap the loader, e.g. batches=lambda: loader; it is called once per pass (twice).",
        )
    nc = NeuralCollapse(num_classes, classifier_weight=classifier_weight, classifier_bias=classifier_bias)
    for features, labels in batches():
        nc.update(features, labels)
    nc.end_first_pass()
    for features, labels in batches():
        nc.update(features, labels)
    return nc.compute()


class NeuralCollapse:
    """Streaming twin of :func:`neural_collapse`: two passes over the same batches.

    **The same ``update`` call serves both passes; the object knows its phase**::

        nc = NeuralCollapse(num_classes=10, classifier_weight=head.weight, classifier_bias=head.bias)
        for x, y in loader:
            nc.update(x, y)  # pass 1: counts and class sums
        nc.end_first_pass()  # freezes the class means and the NC1 projection
        for x, y in loader:
            nc.update(x, y)  # pass 2: within-class scatter, NC1 sum, NC4
        metrics = nc.compute()

    Labels must be 0..num_classes-1 and every class must occur in pass 1. ``compute`` raises if
    pass 2 did not see exactly as many samples of each class as pass 1. The class holds state only;
    the math is in the module's private functions, shared with :func:`neural_collapse`.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        classifier_weight: Array | None = None,
        classifier_bias: Array | None = None,
    ) -> None:
        func = "NeuralCollapse"
        self.num_classes = _as_num_classes(num_classes, func)
        self._weight, self._bias = _as_classifier(classifier_weight, classifier_bias, self.num_classes, func)
        self._chunk_size = _CHUNK
        self._phase = "first"
        self._dim: int | None = None
        self._rows = 0  # rows seen so far in the current pass (for error messages)
        k = self.num_classes
        self._counts = np.zeros(k, dtype=np.int64)
        self._sums: np.ndarray | None = None  # (K, d) float64, allocated at the first batch
        # Every metric is translation invariant (NC4 too, with the bias moved alike): rows are shifted by
        # the first row seen, in float64, so a large common offset does not drown the class structure.
        self._shift: np.ndarray | None = None
        self._max_abs = (
            0.0  # max |h - shift| of pass 1: features far from 1 are rescaled (latentcc.plumbing.scaling)
        )
        self._scale = 1.0
        self._bias_used: np.ndarray | None = None  # (bias + weight @ shift) * scale, from end_first_pass
        # Frozen by end_first_pass:
        self._means = np.zeros((0, 0))
        self._mean_g = np.zeros(0)
        self._proj = np.zeros((0, 0))  # (r, d) = S_r^{-1} U_r^T, so ||M^+ v|| = ||proj @ v||
        # Pass-2 accumulators:
        self._counts2 = np.zeros(k, dtype=np.int64)
        self._within = np.zeros(k)  # sum over class k of ||h - mu_k||^2
        self._proj_sq = 0.0  # sum_i ||M^+ (h_i - mu_{y_i})||^2
        self._nc4_miss = 0

    @property
    def phase(self) -> str:
        """``"first"`` until :meth:`end_first_pass`, then ``"second"``."""
        return self._phase

    def update(self, features: Array, labels: Array) -> None:
        """Accumulate a batch: features (n, d), labels (n,) in 0..K-1, into the CURRENT pass."""
        func = "NeuralCollapse.update"
        x = _features(features, func)
        y = as_labels(labels, len(x), func)
        if y.min() < 0 or y.max() >= self.num_classes:
            raise param_error(
                "labels",
                func,
                f"class ids in 0..{self.num_classes - 1} (num_classes = {self.num_classes})",
                f"values in {int(y.min())}..{int(y.max())}",
                "Map the labels to 0..K-1 first, or pass the right num_classes.",
            )
        self._consume(x, y, func)

    def end_first_pass(self) -> None:
        """Freeze the class means and the NC1 projection; later ``update`` calls feed pass 2."""
        func = "NeuralCollapse.end_first_pass"
        if self._phase != "first":
            raise LatentccError(f"{func} was already called; the object is in its second pass.")
        if self._sums is None:
            raise LatentccError(f"{func} was called before any update: pass 1 saw no samples.")
        missing = np.flatnonzero(self._counts == 0)
        if missing.size:
            raise LatentccError(
                f"{func}: the first pass saw no samples of classes {missing[:20].tolist()}"
                f"{' ...' if missing.size > 20 else ''} ({missing.size} of {self.num_classes}), so their "
                "means are undefined. Check num_classes and that the batches cover every class."
            )
        _check_within(self._counts, "NeuralCollapse")
        # Every metric is scale-free (NC4 too, with the bias scaled alike): features whose squares would
        # overflow or vanish in float64 are multiplied by a power of two, exactly, from here on.
        self._scale = pow2_scale(self._max_abs)
        if self._weight is not None and self._bias is not None and self._shift is not None:
            self._bias_used = (self._bias + self._weight @ self._shift) * self._scale
        self._means = self._sums / self._counts[:, None] * self._scale
        self._mean_g = self._sums.sum(axis=0) / self._counts.sum() * self._scale
        self._proj = _nc1_projection(self._means, self._mean_g, self._counts)
        self._phase = "second"
        self._rows = 0

    def compute(self) -> dict[str, float]:
        """The metrics dict of :func:`neural_collapse`, from both passes."""
        func = "NeuralCollapse.compute"
        if self._phase != "second":
            raise LatentccError(
                f"{func} needs two passes: call end_first_pass() after the first pass, then update() "
                "again with the same batches."
            )
        if not np.array_equal(self._counts2, self._counts):
            diff = np.flatnonzero(self._counts2 != self._counts)
            raise LatentccError(
                f"{func}: the second pass saw {int(self._counts2.sum())} samples but the first saw "
                f"{int(self._counts.sum())} (per-class counts differ for classes {diff[:20].tolist()}). "
                "Both passes must go over the same samples; a batches callable must return a fresh "
                "iterable each time (not an exhausted generator)."
            )
        acc = (self._within, self._proj_sq, self._nc4_miss)
        return _metrics(self._counts, self._means, self._mean_g, *acc, self._weight)

    def _consume(self, x: np.ndarray, y: np.ndarray, func: str) -> None:
        """Feed validated rows (labels in 0..K-1) to the current pass, ``_chunk_size`` rows at a time."""
        if self._dim is None:
            if self._weight is not None and self._weight.shape[1] != x.shape[1]:
                raise _weight_shape_error(f"shape {self._weight.shape}", self.num_classes, x.shape[1], func)
            self._dim = x.shape[1]
            self._sums = np.zeros((self.num_classes, self._dim))
        elif x.shape[1] != self._dim:
            raise param_error(
                "features", func, f"(n, {self._dim}) like the earlier batches", f"shape {tuple(x.shape)}"
            )
        for start in range(0, len(x), self._chunk_size):
            # float64 one chunk at a time: a memmap is only ever read chunk_size rows at once.
            h = np.asarray(x[start : start + self._chunk_size], dtype=np.float64)
            yc = y[start : start + self._chunk_size]
            _check_finite(h, self._rows, func)
            self._rows += len(h)
            if self._shift is None and len(h):
                self._shift = h[0].copy()
            if self._shift is not None:
                h = h - self._shift
            if self._phase == "first":
                assert self._sums is not None
                self._counts += np.bincount(yc, minlength=self.num_classes)
                _add_class_sums(h, yc, self._sums)
                if h.size:
                    self._max_abs = max(self._max_abs, -float(h.min()), float(h.max()))
            else:
                self._counts2 += np.bincount(yc, minlength=self.num_classes)
                if self._scale != 1.0:
                    h = h * self._scale
                within, proj_sq, miss = _second_pass_chunk(
                    h, yc, self._means, self._mean_g, self._proj, self._weight, self._bias_used
                )
                self._within += within
                self._proj_sq += proj_sq
                self._nc4_miss += miss


# ----------------------------------------------------------------------------------------------
# Private math: trusts validated float64 inputs.


def _add_class_sums(h: np.ndarray, y: np.ndarray, sums: np.ndarray) -> None:
    """sums[k] += sum of the rows of class k (in place), by one sort + segment sums."""
    order = np.argsort(y, kind="stable")
    ys = y[order]
    starts = np.flatnonzero(np.r_[True, ys[1:] != ys[:-1]])
    sums[ys[starts]] += np.add.reduceat(h[order], starts, axis=0)


def _second_pass_chunk(
    h: np.ndarray,
    y: np.ndarray,
    means: np.ndarray,
    mean_g: np.ndarray,
    proj: np.ndarray,
    weight: np.ndarray | None,
    bias: np.ndarray | None,
) -> tuple[np.ndarray, float, int]:
    """Per-class sum ||h - mu_y||^2, sum ||M^+ (h - mu_y)||^2 and NC4 disagreements of one chunk."""
    r = h - means[y]
    within = np.bincount(y, weights=np.einsum("ij,ij->i", r, r), minlength=len(means))
    z = r @ proj.T
    proj_sq = float(np.einsum("ij,ij->", z, z))
    miss = 0
    if weight is not None:
        assert bias is not None
        pred = np.argmax(h @ weight.T + bias, axis=1)
        # argmin_k ||h - mu_k||^2 = argmin_k ||mu_k - mu_G||^2 - 2 (h - mu_G).(mu_k - mu_G): centring on
        # mu_G first keeps the expansion well conditioned when the features have a large common offset.
        mc = means - mean_g
        nearest = np.argmin(np.einsum("ij,ij->i", mc, mc) - 2.0 * ((h - mean_g) @ mc.T), axis=1)
        miss = int(np.count_nonzero(pred != nearest))
    return within, proj_sq, miss


def _nc1_projection(means: np.ndarray, mean_g: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(r, d) matrix P = S_r^{-1} U_r^T with ||P v|| = ||M^+ v|| for M = [mu_k - mu_G] (d x K), thin SVD."""
    m = means - mean_g  # (K, d) = M^T
    k, d = m.shape
    # The means are accumulated sums divided by counts: when all class means are equal (constant
    # features) M is summation rounding noise, at most ~ eps * count * |mu|, rather than exactly 0.
    noise = 4.0 * _EPS * float(counts.max()) * float(np.abs(means).max())
    if float(np.abs(m).max()) <= noise:
        raise LatentccError(
            "Neural-collapse metrics (NC1, the ETF distances) are undefined because the class means "
            "coincide (M = [mu_k - mu_G] is 0). Check the layer / features: they are probably constant "
            "(a dead or wrongly chosen layer) or do not depend on the class."
        )
    u, s, _ = np.linalg.svd(m.T, full_matrices=False)
    # Cutoff s_j > s_max * sqrt(max(d, K) * eps): Sigma_B = M M^T / K has eigenvalues s^2 / K, so this
    # is np.linalg.pinv(Sigma_B, rtol=None)'s cutoff (eigenvalues > d * eps * lambda_max) when d >= K,
    # and a hair stricter (K * eps) when d < K. At most K-1 values: sum_k n_k (mu_k - mu_G) = 0, so
    # rank M <= K-1 and a K-th singular value is rounding noise.
    keep = s > s[0] * math.sqrt(max(d, k) * _EPS)
    keep[k - 1 :] = False
    return u[:, keep].T / s[keep, None]


def _metrics(
    counts: np.ndarray,
    means: np.ndarray,
    mean_g: np.ndarray,
    within: np.ndarray,
    proj_sq: float,
    nc4_miss: int,
    weight: np.ndarray | None,
) -> dict[str, float]:
    """The metrics dict from the two passes' accumulators."""
    k = len(counts)
    n = int(counts.sum())
    m = means - mean_g  # (K, d) = M^T
    nc1 = proj_sq / n
    var = within / counts  # Var_k = mean ||h - mu_k||^2 over class k (0 for a single sample)
    off = ~np.eye(k, dtype=bool)  # ordered pairs k != k'
    with np.errstate(divide="ignore", invalid="ignore"):
        d2 = _pairwise_sq_dists(means)
        # coinciding means: inf, also when both variances are 0 (0/0 would be NaN), as documented
        cdnv = np.where(d2 > 0, (var[:, None] + var[None, :]) / (2.0 * d2), np.inf)
        norms = np.linalg.norm(m, axis=1)
        cos = (m @ m.T) / np.outer(norms, norms)
    out: dict[str, Any] = {
        "nc1": nc1,
        "nc1_papyan": k * nc1,
        "nc1_trace_ratio": (within.sum() / n) / (np.einsum("ij,ij->", m, m) / k),
        "cdnv": cdnv[off].mean(),
        "nc2_equinorm": norms.std() / norms.mean(),  # population std (ddof=0)
        "nc2_equiangular": cos[off].std(),  # population std over the K(K-1) ordered pairs
        "nc2_maxangle": np.abs(cos[off] + 1.0 / (k - 1)).mean(),
        "nc2_etf": _etf_distance(m @ m.T),
    }
    if weight is not None:
        out["nc2_etf_w"] = _etf_distance(weight @ weight.T)
        out["nc3"] = float(np.sum((weight / np.linalg.norm(weight) - m / np.linalg.norm(m)) ** 2))
        out["nc4"] = nc4_miss / n
    out = {key: float(v) for key, v in out.items()}
    out["num_classes"] = k
    out["num_samples"] = n
    return out


def _etf_distance(g: np.ndarray) -> float:
    """|| G/||G||_F - (I - 11^T/K)/sqrt(K-1) ||_F for a K x K Gram matrix G."""
    k = len(g)
    etf = (np.eye(k) - 1.0 / k) / math.sqrt(k - 1)
    return float(np.linalg.norm(g / np.linalg.norm(g) - etf))


def _pairwise_sq_dists(means: np.ndarray) -> np.ndarray:
    """(K, K) exact ||mu_i - mu_j||^2 from explicit differences, in row blocks of bounded memory."""
    k, d = means.shape
    out = np.empty((k, k))
    step = max(1, _PAIR_BLOCK // (k * d))
    for i in range(0, k, step):
        diff = means[i : i + step, None, :] - means[None, :, :]
        out[i : i + step] = np.einsum("ijk,ijk->ij", diff, diff)
    return out


# ----------------------------------------------------------------------------------------------
# Validation at the door.


def _check_finite(h: np.ndarray, first_row: int, func: str) -> None:
    finite = np.isfinite(h).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite) + first_row
        raise LatentccError(
            f"The 'features' parameter of {func} has NaN/inf values in {len(bad)} rows of rows "
            f"{first_row}..{first_row + len(h) - 1} of this pass (e.g. rows {bad[:5].tolist()}). Remove or "
            "fix those samples; a diverged model produces them."
        )


def _as_num_classes(num_classes: Any, func: str) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer) or num_classes < 2:
        raise param_error(
            "num_classes", func, "an int >= 2", num_classes, "Between-class metrics need at least 2 classes."
        )
    return int(num_classes)


def _features(features: Any, func: str) -> np.ndarray:
    """The door's checks (dtype, shape, device) without its finiteness pass: that is done chunk by chunk,
    so a memory map is read once per pass. Any accepted dtype is read as float64 one chunk at a time."""
    data = as_matrix(features, "features", func, check_finite=False).data
    assert isinstance(data, np.ndarray)  # validated without keep_device: numpy
    return data


def _as_matrix(x: Any, param: str, func: str) -> np.ndarray:
    return np.asarray(to_numpy(x, param, func), dtype=np.float64)


def _as_classifier(
    weight: Any,
    bias: Any,
    num_classes: int | None,
    func: str,
    *,
    dim: int | None = None,
    k_hint: int | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """classifier_weight (K, d) and classifier_bias (K,) as float64 (the bias defaults to zeros), or
    (None, None) without a weight.

    ``num_classes`` (if given) must equal K; ``k_hint`` (e.g. max label + 1) only makes the message
    about a wrongly shaped weight name the K the caller most likely meant.
    """
    if weight is None:
        if bias is not None:
            raise param_error(
                "classifier_bias", func, "None when no 'classifier_weight' is given", "an array",
                "Pass classifier_weight too.",
            )  # fmt: skip
        return None, None
    k_expected = num_classes if num_classes is not None else k_hint
    try:
        w = _as_matrix(weight, "classifier_weight", func)
    except LatentccError:  # the door's own message (e.g. a meta tensor)
        raise
    except (TypeError, ValueError):
        raise _weight_shape_error(type(weight).__name__, k_expected, dim, func) from None
    if (
        w.ndim != 2
        or len(w) < 2
        or (num_classes is not None and len(w) != num_classes)
        or (dim is not None and w.shape[1] != dim)
    ):
        raise _weight_shape_error(f"shape {tuple(w.shape)}", k_expected, dim, func)
    if not np.isfinite(w).all() or not w.any():
        raise param_error("classifier_weight", func, "finite and not all zero", "NaN/inf or all-zero values")
    k = len(w)
    if bias is None:
        return w, np.zeros(k)
    try:
        b = _as_matrix(bias, "classifier_bias", func)
    except LatentccError:
        raise
    except (TypeError, ValueError):
        raise param_error("classifier_bias", func, f"a ({k},) float array", type(bias).__name__) from None
    if b.shape != (k,):
        raise param_error(
            "classifier_bias",
            func,
            f"of shape ({k},), one entry per row of 'classifier_weight'",
            f"shape {b.shape}",
        )
    if not np.isfinite(b).all():
        raise param_error("classifier_bias", func, "finite", "NaN/inf values")
    return w, b


def _weight_shape_error(got: str, k: int | None, d: int | None, func: str) -> LatentccError:
    ks = "K" if k is None else str(k)
    ds = "d" if d is None else str(d)
    return param_error(
        "classifier_weight",
        func,
        f"a float array of shape (K, d) = ({ks}, {ds}): one classifier row per class (K >= 2), "
        "d = features.shape[1]",
        got,
        "Pass the linear head's weight (e.g. model.fc.weight, shape (out, in)), not its transpose.",
    )


def _check_within(counts: np.ndarray, func: str) -> None:
    """Within-class metrics need a class with 2 or more samples: with one sample per class every
    sample is its own class mean, so NC1 and CDNV would be 0 (perfect collapse) by construction."""
    if int(counts.max()) < 2:
        raise param_error(
            "labels",
            func,
            "labels with at least one class of 2 or more samples (NC1, CDNV and the within-class "
            "scatter compare samples with their class mean)",
            f"{int(counts.sum())} samples in {len(counts)} classes, one sample per class",
            "With a single sample per class every sample is its own class mean, so the within-class "
            "variance is 0 by construction. Fix: pass more samples per class (e.g. a larger "
            "max_samples, or the whole split).",
        )


def _check_classes(y: np.ndarray, k: int, what: str, func: str) -> None:
    """Labels must be 0..K-1 and every class must have a sample."""
    if y.min() < 0 or y.max() >= k:
        raise param_error(
            "labels",
            func,
            f"class ids in 0..{k - 1} ({what})",
            f"values in {int(y.min())}..{int(y.max())}",
            "Map the labels to 0..K-1 first (with classifier_weight: the row order of the classifier).",
        )
    missing = np.flatnonzero(np.bincount(y, minlength=k) == 0)
    if missing.size:
        raise param_error(
            "labels",
            func,
            f"samples of every class 0..{k - 1} ({what})",
            f"no samples for classes {missing[:20].tolist()}",
            "Class means are undefined without samples; check num_classes / the subset.",
        )
