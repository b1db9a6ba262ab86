"""The one door: every check of an argument of a public latentcc function lives here.

Public functions call these once, at the door, and hand plain validated values (an int, an int64 label
array, a :class:`~latentcc.plumbing.arrays.Matrix`) to twins that trust them; a chain of steps (the LCC
epoch start) validates its inputs once and calls the trusting twins only. Every error names the parameter,
the function, what was expected, what was given and the fix (:func:`~latentcc.plumbing.errors.param_error`).

Matrices (latents, features): :func:`as_matrix` accepts numpy arrays (memory maps read in row blocks),
torch tensors on any device but ``meta`` (detached, any strides, never modified) and nested lists of
numbers, of dtype float16, bfloat16, float32, float64, signed or unsigned integer, or bool; complex,
strings, dates and object arrays of non-numbers are refused. float64 and integers wider than 16 bits are
worked on in float64, everything else in float32 (:mod:`latentcc.plumbing.arrays` holds the arithmetic).

Labels (class ids, cluster ids, owners): :func:`as_labels`. One rule everywhere: integers and bools are
labels; a float array is accepted when every value is a finite whole number (``[0., 2., 1.]``, what a
float tensor of class ids holds) and refused otherwise, so that no cast silently truncates 2.7 to 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias, TypeVar

import numpy as np
import scipy.sparse as sp
import torch

from latentcc.plumbing.arrays import Matrix
from latentcc.plumbing.errors import LatentccError, param_error

Labels: TypeAlias = np.ndarray | torch.Tensor | Sequence[int]
_T = TypeVar("_T")

_ACCEPTED = "a real-valued numeric (N, D) array or tensor (float16/bfloat16/float32/float64, integer or bool)"
_CONVERT_FIX = "Fix: convert it to numbers first, e.g. np.asarray(x, dtype=np.float32)."
# Labels that index tables (class x cluster counts, y_true * C + y_clst in int64) stay below this.
MAX_LABEL = 2**31
# A dense class x cluster table holds K * C int64 counts; beyond this it is a sign of sparse cluster ids.
MAX_TABLE_CELLS = 2**28


# --------------------------------------------------------------------------- scalars


def check_int(
    value: Any, param: str, func: str, lo: int, hi: int | None = None, fix: str | None = None
) -> int:
    """``value`` as an int in ``[lo, hi]`` (numpy ints accepted, bools refused), else the standard error."""
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if not ok or value < lo or (hi is not None and value > hi):
        req = f"an int >= {lo}" if hi is None else f"an int with {lo} <= {param} <= {hi}"
        raise param_error(param, func, req, value, fix)
    return int(value)


def check_float(
    value: Any, param: str, func: str, *, lo: float | None = None, positive: bool = False, what: str = ""
) -> float:
    """``value`` as a finite float (Python or numpy ints and floats, bools refused), ``> 0`` when
    ``positive``, ``>= lo`` when given; ``what`` replaces the default requirement in the message."""
    number = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    if not number or not np.isfinite(value) or (positive and value <= 0) or (lo is not None and value < lo):
        bound = " > 0" if positive else f" >= {lo}" if lo is not None else ""
        raise param_error(param, func, what or f"a finite float{bound}", value)
    return float(value)


def check_bool(value: Any, param: str, func: str) -> bool:
    """``value`` if it is a bool (an int such as 1 is refused: it usually means another parameter)."""
    if not isinstance(value, bool):
        raise param_error(param, func, "a bool", value)
    return value


def check_choice(value: _T, param: str, func: str, choices: Sequence[str]) -> _T:
    """``value`` if it is one of ``choices``, else the standard error listing them."""
    if not isinstance(value, str) or value not in choices:
        raise param_error(param, func, f"one of {list(choices)}", value)
    return value


# --------------------------------------------------------------------------- labels


def to_numpy(x: Any, param: str, func: str) -> np.ndarray:
    """Any array-like (tensor on any device but meta, numpy, list) as a numpy array, without checks of
    shape or dtype: for labels, classifier weights and other small inputs."""
    if isinstance(x, torch.Tensor):
        _check_tensor(x, param, func)
        t = x.detach().cpu().resolve_conj().resolve_neg()
        return t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()
    if sp.issparse(x):
        raise param_error(param, func, "a dense array", type(x).__name__, "Fix: x.toarray().")
    return np.asarray(x)


def as_labels(
    y: Any,
    n: int | None,
    func: str,
    param: str = "labels",
    *,
    min_classes: int = 1,
    non_negative: bool = False,
) -> np.ndarray:
    """``y`` as a 1-D int64 numpy array (no copy when it already is one); see the module docstring for
    which dtypes are labels.

    Args:
        n: the required length (one label per row of the features); None: any length >= 1.
        min_classes: at least this many distinct values.
        non_negative: ids that index tables (classes, clusters): in ``[0, 2**31)``. Otherwise any
            integers, negative and with gaps, are accepted.
    """
    arr = to_numpy(y, param, func)
    if n is not None and (arr.ndim != 1 or len(arr) != n):
        raise param_error(
            param, func, f"a 1-D array of {n} labels, one per row of the features", _describe(arr)
        )
    if n is None and (arr.ndim != 1 or arr.size == 0):
        raise param_error(param, func, "a non-empty 1-D array of int labels, (N,)", f"shape {arr.shape}")
    if len(arr) and arr.dtype.kind not in "iub":
        whole = arr.dtype.kind == "f" and bool(np.isfinite(arr).all() and (arr == np.round(arr)).all())
        if not whole:
            raise param_error(
                param, func, "integer class labels (or floats holding whole numbers)", _describe(arr),
                "Map names to ids first, e.g. np.unique(labels, return_inverse=True)[1].",
            )  # fmt: skip
    if arr.dtype.kind == "f" and len(arr) and float(np.abs(arr).max()) >= 2.0**63:
        raise param_error(param, func, "labels that fit int64", _describe(arr))
    arr = arr.astype(np.int64, copy=False)
    if non_negative and len(arr):
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= MAX_LABEL:
            raise param_error(
                param, func, "labels in [0, 2**31)", f"labels in [{lo}, {hi}]",
                "Relabel, e.g. np.unique(labels, return_inverse=True)[1].",
            )  # fmt: skip
    if min_classes > 1:
        k = len(np.unique(arr))
        if k < min_classes:
            raise param_error(
                param, func, f"labels with at least {min_classes} distinct classes", f"{k} distinct class(es)",
                "A between-class quantity is undefined with fewer classes; check the labels and any subsetting.",
            )  # fmt: skip
    return arr


def as_label_pair(y_true: Any, y_clst: Any, func: str) -> tuple[np.ndarray, np.ndarray]:
    """(y_true, y_clst) as int64 ids in ``[0, 2**31)`` of one length: class and cluster of each sample,
    in the SAME sample order."""
    yt = as_labels(y_true, None, func, "y_true", non_negative=True)
    yc = as_labels(y_clst, None, func, "y_clst", non_negative=True)
    if yt.shape != yc.shape:
        raise param_error(
            "y_clst",
            func,
            f"the same length as y_true ({yt.size}), in the same sample order",
            f"length {yc.size}",
        )
    return yt, yc


def as_owners(owners: Any, func: str, *, num_clusters: int | None = None) -> np.ndarray:
    """(C,) int64 owner class per cluster, values >= -1 (-1: owned by no class), with C >=
    ``num_clusters`` when given."""
    arr = to_numpy(owners, "owners", func)
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise param_error(
            "owners",
            func,
            "a 1-D integer array, one owner class per cluster",
            f"shape {arr.shape}, {arr.dtype}",
        )
    arr = arr.astype(np.int64, copy=False)
    if arr.size and int(arr.min()) < -1:
        raise param_error("owners", func, "class ids >= 0 (or -1 for no owner)", f"an owner {int(arr.min())}")
    if num_clusters is not None and arr.size < num_clusters:
        raise param_error(
            "owners", func,
            f"one entry per cluster id in y_clst (length >= max(y_clst) + 1 = {num_clusters})", f"length {arr.size}",
            "Compute owners with match_clusters on the same labels.",
        )  # fmt: skip
    return arr


def check_table_size(num_classes: int, num_clusters: int, func: str) -> None:
    """Refuse a class x cluster table too large to be meant (sparse cluster ids such as 0 and 2**30)."""
    if num_classes * num_clusters > MAX_TABLE_CELLS:
        raise LatentccError(
            f"{func}: the class x cluster table would have {num_classes} x {num_clusters} cells; cluster ids "
            "look sparse. Relabel them contiguously first: y_clst = np.unique(y_clst, return_inverse=True)[1]."
        )


def _describe(x: np.ndarray) -> str:
    return f"{x.dtype} array of shape {tuple(x.shape)}"


# --------------------------------------------------------------------------- graphs


def as_adjacency(graph: Any, func: str) -> sp.csr_matrix:
    """``graph`` as a canonical (N, N) CSR adjacency, N >= 2: symmetric, weights finite and >= 0, float32 or
    float64, no explicit zeros. The caller's matrix is never modified (copied only when it must be cleaned)."""
    if not sp.issparse(graph):
        raise param_error(
            "graph",
            func,
            "a scipy.sparse (N, N) adjacency matrix",
            type(graph).__name__,
            "Fix: build it with latentcc.graph.knn_graph, or wrap a dense array in scipy.sparse.csr_matrix(a).",
        )
    if graph.ndim != 2 or graph.shape[0] != graph.shape[1] or graph.shape[0] < 2:
        raise param_error("graph", func, "square (N, N) with N >= 2", f"shape {graph.shape}")
    # No float64 copy of a large graph (31M entries at N=40k, k=500): keep a float CSR as given, and copy
    # only when it must be cleaned, so the caller's matrix is never modified.
    g = graph.tocsr()
    if g.dtype not in (np.float32, np.float64):
        g = g.astype(np.float64)
    if g is graph and (not g.has_canonical_format or not g.data.all()):
        g = g.copy()
    g.sum_duplicates()
    if not np.isfinite(g.data).all() or (g.data < 0).any():
        raise param_error(
            "graph",
            func,
            "non-negative and finite (modularity needs weights >= 0)",
            "negative or non-finite weights",
        )
    # 0.04 s at N=50k, k=50: cheap insurance, since the upper triangle of an asymmetric matrix drops edges.
    if (g != g.T).nnz:
        raise param_error(
            "graph",
            func,
            "symmetric (an undirected graph)",
            "an asymmetric matrix",
            "Fix: symmetrise, e.g. a.maximum(a.T).",
        )
    g.eliminate_zeros()
    return g


# --------------------------------------------------------------------------- matrices


def as_matrix(
    x: Any,
    param: str,
    func: str,
    *,
    min_rows: int = 1,
    check_finite: bool = True,
    keep_device: bool = False,
) -> Matrix:
    """Validate ``x`` as an (N, D) matrix with N >= ``min_rows``, D >= 1; the one door for latents.

    ``param`` and ``func`` name the argument in errors ("The 'x' parameter of knn_graph must be ...").
    ``check_finite``: NaN/inf rows raise (one blocked pass that also finds each column's range).
    ``keep_device``: a tensor on an accelerator stays there (else it is copied to the CPU).
    """
    data = _as_array(x, param, func, keep_device)
    if data.ndim != 2:
        raise param_error(
            param, func, "2-D with shape (N, D)", f"shape {tuple(data.shape)}",
            "Fix: reshape to (N, D), e.g. x.reshape(len(x), -1) (or pool per-sample features first).",
        )  # fmt: skip
    if data.shape[0] < min_rows:
        raise param_error(
            param, func, f"an array with N >= {min_rows} rows (samples)", f"shape {tuple(data.shape)}"
        )
    if data.shape[1] < 1:
        raise param_error(param, func, "an array with D >= 1 columns", f"shape {tuple(data.shape)}")
    m = Matrix(data, param, func, _work_dtype(data))
    if check_finite:
        m.check_finite()
    return m


def _check_tensor(x: torch.Tensor, param: str, func: str) -> None:
    if x.is_meta:
        raise param_error(
            param, func, "a tensor with data (not on the 'meta' device)",
            f"a {x.dtype} tensor of shape {tuple(x.shape)} on the meta device",
            "A meta tensor has a shape but no values. Fix: compute it from a materialised model "
            "(model.to_empty(device='cpu'), then load its weights) on real inputs.",
        )  # fmt: skip
    if x.layout != torch.strided:
        raise param_error(
            param, func, "a dense tensor", f"a tensor with layout {x.layout}", "Fix: x.to_dense()."
        )
    if x.is_quantized:
        raise param_error(param, func, _ACCEPTED, f"a quantized {x.dtype} tensor", "Fix: x.dequantize().")


def _as_array(x: Any, param: str, func: str, keep_device: bool) -> np.ndarray | torch.Tensor:
    """``x`` as a numpy array (or a tensor on its accelerator) of an accepted real dtype; no copies
    except bfloat16 -> float32, object -> float64 and accelerator -> CPU."""
    if isinstance(x, torch.Tensor):
        _check_tensor(x, param, func)
        if x.is_complex() or not (x.is_floating_point() or x.dtype == torch.bool or _is_int(x.dtype)):
            raise param_error(param, func, _ACCEPTED, f"a tensor of dtype {x.dtype}", _CONVERT_FIX)
        t = x.detach()
        if keep_device and t.device.type != "cpu":
            return t
        t = t.cpu()
        if t.dtype in (torch.float16, torch.float32, torch.float64, torch.bool) or _is_int(t.dtype):
            try:
                return t.numpy()  # a view: no copy, any strides
            except TypeError:  # integer dtypes numpy cannot view (e.g. uint16 on older numpy)
                return t.double().numpy()
        return t.float().numpy()  # bfloat16, float8: exact in float32
    if sp.issparse(x):
        raise param_error(
            param, func, "a dense (N, D) array", f"a sparse {type(x).__name__}", "Fix: x.toarray()."
        )
    try:
        a = np.asarray(x)
    except (TypeError, ValueError) as e:  # ragged lists and the like
        raise param_error(param, func, _ACCEPTED, type(x).__name__, _CONVERT_FIX) from e
    if a.dtype == object:
        try:
            a = a.astype(np.float64)  # numbers (or None -> NaN) in an object array
        except (TypeError, ValueError) as e:
            raise param_error(
                param, func, _ACCEPTED, f"{type(x).__name__} of dtype object", _CONVERT_FIX
            ) from e
    if a.dtype.kind not in "fiub":
        raise param_error(param, func, _ACCEPTED, f"{type(x).__name__} of dtype {a.dtype}", _CONVERT_FIX)
    if a.dtype.kind == "f" and a.dtype.itemsize > 8:  # longdouble: the engine computes in float64 at most
        a = a.astype(np.float64)
    return a


def _is_int(dtype: torch.dtype) -> bool:
    return not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool


def _work_dtype(data: np.ndarray | torch.Tensor) -> type:
    if isinstance(data, torch.Tensor):
        wide = data.dtype == torch.float64 or (_is_int(data.dtype) and data.element_size() > 2)
    else:
        wide = data.dtype.kind in "iuf" and data.dtype.itemsize > (4 if data.dtype.kind == "f" else 2)
    return np.float64 if wide else np.float32
