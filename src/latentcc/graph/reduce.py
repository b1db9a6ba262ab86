"""Dimensionality reduction before the k-NN search (LCC step 1's optional projection).

Exact k-NN costs N^2 D multiply-adds, so a flattened 25,088-d feature map is 50x dearer than 512
PCA components; both methods here are seeded and deterministic.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from latentcc.errors import param_error

ReduceMethod = Literal["pca", "random"]
REDUCE_METHODS: tuple[str, ...] = ("pca", "random")


def reduce_dim(
    x: np.ndarray | torch.Tensor, dim: int | None, *, method: ReduceMethod = "pca", seed: int = 0
) -> np.ndarray:
    """Project (N, D) rows to (N, dim) float32.

    Args:
        x: (N, D) numpy array or torch tensor (moved to CPU).
        dim: target dimension >= 1; ``None`` or ``dim >= D`` returns x unchanged (as float32 numpy).
        method: ``"pca"``: centre, then the top ``dim`` principal-component scores (randomized SVD with
            ``random_state=seed``, signs fixed as scikit-learn does); ``"random"``: Gaussian random
            projection ``x @ R``, ``R ~ N(0, 1/dim)`` of shape (D, dim) drawn from ``seed`` (Johnson-Lindenstrauss).
        seed: seed of the randomized SVD or of R; same seed, same output.

    Returns:
        (N, dim) float32 numpy array (or (N, D) when no reduction applies).
    """
    func = "reduce_dim"
    a = _as_2d_float32(x, func)
    if method not in REDUCE_METHODS:
        raise param_error("method", func, f"one of {list(REDUCE_METHODS)}", method)
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or seed < 0:
        raise param_error("seed", func, "an int >= 0", seed)
    if dim is None:
        return a
    if not isinstance(dim, int | np.integer) or isinstance(dim, bool) or dim < 1:
        raise param_error("dim", func, "an int >= 1 or None (no reduction)", dim)
    n, d = a.shape
    if dim >= d:
        return a
    if method == "random":
        return _random_projection(a, int(dim), int(seed))
    if dim > n:
        raise param_error(
            "dim", func, f"<= N = {n} for method='pca' (rank is at most N)", dim, "Fix: use a smaller dim."
        )
    return _pca(a, int(dim), int(seed))


def _as_2d_float32(x: Any, func: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        a = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    except (TypeError, ValueError) as e:
        raise param_error("x", func, "a numeric (N, D) array or tensor", type(x).__name__) from e
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise param_error("x", func, "2-D with shape (N, D), N >= 1, D >= 1", f"shape {a.shape}")
    if not np.isfinite(a).all():
        raise param_error(
            "x", func, "finite (no NaN or inf)", f"{int((~np.isfinite(a).all(axis=1)).sum())} non-finite rows"
        )
    return a


# Up to this width the exact covariance route is used: a (D, D) float64 matrix (128 MiB at 4096).
_COVARIANCE_MAX_D = 4096
_BLOCK_ROWS = 65536


def _pca(a: np.ndarray, dim: int, seed: int) -> np.ndarray:
    mean = a.mean(axis=0, dtype=np.float64)
    if a.shape[1] <= _COVARIANCE_MAX_D:
        # Exact PCA from the D x D covariance (eigh), accumulated in float64 over row blocks: O(N D^2) in
        # one BLAS pass, ~10x faster than randomized SVD at N=50k, D=512 (0.2 s vs 2.1 s here) and exact.
        cov = np.zeros((a.shape[1], a.shape[1]), dtype=np.float64)
        for s in range(0, a.shape[0], _BLOCK_ROWS):
            blk = a[s : s + _BLOCK_ROWS].astype(np.float64) - mean
            cov += blk.T @ blk
        _, vecs = np.linalg.eigh(cov)  # ascending eigenvalues
        comps = vecs[:, ::-1][:, :dim].T  # (dim, D), largest variance first
        # deterministic signs as scikit-learn's svd_flip(u_based_decision=False): largest |loading| positive
        signs = np.sign(comps[np.arange(dim), np.abs(comps).argmax(axis=1)])
        comps *= np.where(signs == 0, 1.0, signs)[:, None]
        out = np.empty((a.shape[0], dim), dtype=np.float32)
        proj = comps.T.astype(np.float32)
        mu32 = mean.astype(np.float32)
        for s in range(0, a.shape[0], _BLOCK_ROWS):
            out[s : s + _BLOCK_ROWS] = (a[s : s + _BLOCK_ROWS] - mu32) @ proj
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
