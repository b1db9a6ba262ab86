"""Dimensionality reduction before the k-NN search (LCC step 1's optional projection).

Exact k-NN costs N^2 D multiply-adds, so a flattened 25,088-d feature map is 50x dearer than 512
PCA components; both methods here are seeded and deterministic.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

from latentcc.config import LCCConfig
from latentcc.plumbing.errors import param_error
from latentcc.plumbing.validate import as_matrix, check_choice, check_int

ReduceMethod = Literal["pca", "random"]
REDUCE_METHODS: tuple[str, ...] = ("pca", "random")


def reduce_dim(
    x: np.ndarray | torch.Tensor, dim: int | None, *, method: ReduceMethod = "pca", seed: int = LCCConfig.seed
) -> np.ndarray:
    """Project (N, D) rows to (N, dim) float32.

    Args:
        x: (N, D) numpy array, torch tensor (moved to CPU) or nested list, any real dtype
            (:mod:`latentcc.plumbing.validate`).
        dim: target dimension >= 1; ``None`` or ``dim >= D`` returns x unchanged (as float32 numpy).
        method: ``"pca"``: the top ``dim`` principal-component scores (randomized SVD with
            ``random_state=seed`` for D > 4096, signs fixed as scikit-learn does); ``"random"``:
            Gaussian random projection ``(x - c) @ R``, ``R ~ N(0, 1/dim)`` of shape (D, dim) drawn from
            ``seed`` (Johnson-Lindenstrauss), with c the column midranges. Both work on the rows translated
            in float64 before any float32 arithmetic (a translation changes no distance): latents with a
            large common offset keep their geometry (PCA scores are centred by definition).
        seed: seed of the randomized SVD or of R; same seed, same output.

    Returns:
        (N, dim) float32 numpy array (or (N, D) when no reduction applies), in the units of x. The
        arithmetic runs on x rescaled by an exact power of two where its spread is extreme, and the
        result is scaled back; a result that float32 cannot hold in its normal range (largest
        |value| above 3.4e38, or non-zero but below 1.2e-38, which would come back as inf or as
        zeros) raises instead, naming the power of two that would bring x into range.
    """
    func = "reduce_dim"
    m = as_matrix(x, "x", func)
    method = check_choice(method, "method", func, REDUCE_METHODS)
    seed = check_int(seed, "seed", func, 0)
    if dim is not None:
        dim = check_int(dim, "dim", func, 1, fix="Or pass None (no reduction).")
    n, d = m.shape
    if dim is None or dim >= d:
        return _float32(m.values(), func)  # x itself: only the range check
    if method == "pca" and dim > n:
        raise param_error(
            "dim", func, f"<= N = {n} for method='pca' (rank is at most N)", dim, "Fix: use a smaller dim."
        )
    a = m.centred()
    assert isinstance(a, np.ndarray)  # as_matrix without keep_device gives numpy
    out = _random_projection(a, dim, seed) if method == "random" else pca_trusted(a, dim, seed)
    # back to the units of x, via float64 so the range check sees the true values, not inf or 0
    return _float32(out.astype(np.float64) / m.scale if m.scale != 1.0 else out, func)


_F32_MAX, _F32_TINY = float(np.finfo(np.float32).max), float(np.finfo(np.float32).tiny)


def _float32(a: np.ndarray, func: str) -> np.ndarray:
    """``a`` as C-contiguous float32; a result beyond float32's normal range raises rather than
    becoming inf (above 3.4e38) or silently losing its digits down to all zeros (below 1.2e-38)."""
    peak = float(np.abs(a).max()) if a.size else 0.0
    if peak > _F32_MAX or 0.0 < peak < _F32_TINY:
        e = 1 - math.frexp(peak)[1]  # the result of x * 2**e peaks in [1, 2): exact, nothing lost
        raise param_error(
            "x",
            func,
            "data whose float32 result (in the units of x) lies in float32's normal range, largest "
            f"|value| within [{_F32_TINY:.2g}, {_F32_MAX:.2g}]",
            f"a result with largest |value| {peak:.3g}",
            f"Fix: rescale x by a power of two first, e.g. x * 2.0**{e} (exact: the neighbours and "
            "PCA directions do not change, the scores scale by the same factor), or pass x directly to "
            "knn_search, knn_graph or epoch_start (with graph_dim), which rescale internally.",
        )
    return np.ascontiguousarray(a, dtype=np.float32)


# Up to this width the exact covariance route is used: a (D, D) float64 matrix (128 MiB at 4096).
_COVARIANCE_MAX_D = 4096
_BLOCK_ROWS = 4096  # 16 MiB float64 blocks at D=512: cache-friendly, few page faults


def pca_trusted(a: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """(N, dim) float32 principal-component scores of the float32 (N, D) rows ``a`` (already translated and
    scaled: :meth:`~latentcc.plumbing.arrays.Matrix.centred`), dim < D; the trusting twin of :func:`reduce_dim`."""
    mean = a.mean(axis=0, dtype=np.float64)
    if a.shape[1] <= _COVARIANCE_MAX_D:
        # Exact PCA from the D x D covariance (eigh), accumulated in float64 over row blocks: O(N D^2) in
        # one BLAS pass, ~10x faster than randomized SVD at N=50k, D=512 (0.2 s vs 2.1 s here) and exact.
        # Blocks go through two reused buffers: fresh (N, D) float64 temporaries cost more in page faults
        # than the arithmetic (0.8 s of 1.1 s at N=50k, D=512 on a 2-core VM; 0.3 s with buffers).
        n, d = a.shape
        rows = min(n, _BLOCK_ROWS)
        buf = np.empty((rows, d), dtype=np.float64)
        cov = np.zeros((d, d), dtype=np.float64)
        for s in range(0, n, rows):
            blk = np.subtract(a[s : s + rows], mean, out=buf[: min(rows, n - s)])
            cov += blk.T @ blk
        del buf
        _, vecs = np.linalg.eigh(cov)  # ascending eigenvalues
        comps = vecs[:, ::-1][:, :dim].T  # (dim, D), largest variance first
        # deterministic signs as scikit-learn's svd_flip(u_based_decision=False): largest |loading| positive
        signs = np.sign(comps[np.arange(dim), np.abs(comps).argmax(axis=1)])
        comps *= np.where(signs == 0, 1.0, signs)[:, None]
        out = np.empty((n, dim), dtype=np.float32)
        proj = comps.T.astype(np.float32)
        mu32 = mean.astype(np.float32)
        buf32 = np.empty((rows, d), dtype=np.float32)
        for s in range(0, n, rows):
            e = min(n, s + rows)
            np.matmul(np.subtract(a[s:e], mu32, out=buf32[: e - s]), proj, out=out[s:e])
        return out
    from sklearn.utils.extmath import randomized_svd, svd_flip

    centred = a - mean.astype(np.float32)
    # Wide latents (e.g. flattened conv maps): randomized SVD costs O(N D dim) instead of O(N D^2); 7 power
    # iterations match the exact components to float precision when the spectrum decays, as latent spectra do.
    u, sv, vt = randomized_svd(centred, dim, n_iter=7, random_state=seed)
    u, vt = svd_flip(u, vt, u_based_decision=False)  # deterministic signs: largest |loading| positive
    return np.ascontiguousarray(u * sv, dtype=np.float32)


def _random_projection(a: np.ndarray, dim: int, seed: int) -> np.ndarray:
    r = np.random.default_rng(seed).standard_normal((a.shape[1], dim), dtype=np.float32)
    r /= np.float32(np.sqrt(dim))
    return np.ascontiguousarray(a @ r, dtype=np.float32)
