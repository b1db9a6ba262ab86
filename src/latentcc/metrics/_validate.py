"""Validation at the door for the metrics: features (N, D) and labels (N,), with one message shape."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from latentcc.errors import LatentccError, param_error


def _describe(x: Any) -> str:
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return f"{x.dtype} array of shape {tuple(x.shape)}"
    return type(x).__name__


def as_features(x: Any, func: str, param: str = "features", *, check_finite: bool = True) -> np.ndarray:
    """``x`` as a 2-D float numpy array (N, D), N >= 1, D >= 1; float64 inputs keep float64.

    Torch tensors are detached and copied to the CPU; numpy arrays (incl. memory maps) are not copied
    unless their dtype is not floating. NaN/inf raise, naming how many rows are affected.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x.numpy() if x.dtype in (torch.float32, torch.float64) else x.float().numpy()
    elif not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception:  # report what was passed, whatever went wrong
            raise param_error(param, func, "a 2-D float array (N, D)", type(x).__name__) from None
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise param_error(
            param,
            func,
            "a 2-D float array (N, D) with N >= 1 and D >= 1",
            _describe(x),
            "Flatten or pool per-sample features first, e.g. x.reshape(len(x), -1).",
        )
    if not np.issubdtype(x.dtype, np.floating):
        if not (np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_):
            raise param_error(param, func, "a 2-D float array (N, D)", _describe(x))
        x = x.astype(np.float32)
    elif x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32)
    if check_finite:
        finite = np.isfinite(x).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise LatentccError(
                f"The '{param}' parameter of {func} has NaN/inf values in {len(bad)} of {len(x)} rows "
                f"(e.g. rows {bad[:5].tolist()}). Remove or fix those samples; a diverged model produces them."
            )
    return x


def as_labels(y: Any, n: int, func: str, param: str = "labels", *, min_classes: int = 1) -> np.ndarray:
    """``y`` as a 1-D int64 numpy array of length ``n`` with at least ``min_classes`` distinct values."""
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise param_error(
            param, func, f"a 1-D array of {n} labels, one per row of the features", _describe(y)
        )
    if len(y) and not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
        if np.issubdtype(y.dtype, np.floating) and np.isfinite(y).all() and (y == np.round(y)).all():
            y = y.astype(np.int64)
        else:
            raise param_error(param, func, "integer class labels", _describe(y), "Map names to ids first.")
    y = y.astype(np.int64, copy=False)
    k = len(np.unique(y))
    if k < min_classes:
        raise param_error(
            param,
            func,
            f"labels with at least {min_classes} distinct classes",
            f"{k} distinct class(es)",
            "A between-class quantity is undefined with fewer classes; check the labels and any subsetting.",
        )
    return y
