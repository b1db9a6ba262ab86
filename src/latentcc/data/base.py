"""Indexed datasets and deterministic stratified train/val/test splits.

Every sample travels with its index (``(x, y, idx)``) so latents, cluster labels and LCC targets
are addressed by position and nothing ever needs re-sorting. A split stores one storage tensor
(or list of strings) shared by its train/val/test views plus an array of rows into it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from latentcc.data.pixels import UINT8_TOP, array_pixels, unit_pixels
from latentcc.plumbing.errors import LatentccError, param_error
from latentcc.plumbing.validate import check_int

Kind = Literal["image", "text", "tabular"]
KINDS: tuple[str, ...] = ("image", "text", "tabular")

# Storage of all samples: images (N, C, H, W) uint8 (0..255) or float32 ([0, 1]); tabular (N, D)
# float32; text a list of N strings.
Storage = torch.Tensor | list[str]


class IndexedDataset(Dataset[tuple[Any, int, int]]):
    """Samples ``(x, y, idx)`` of one split; ``idx`` is the position in this split (0..len-1).

    ``x`` is a float32 tensor: an image (C, H, W) with values in [0, 1] (unnormalised: models
    normalise themselves), a feature vector (D,) for tabular data, or a ``str`` for text. ``y`` is
    a python int, so the default collate gives a LongTensor.

    Args:
        data: storage shared with sibling splits: (N, C, H, W) uint8/float32 images, (N, D) float32
            features, or a list of N strings (kept as they are); any other array or tensor is validated
            and converted as ``from_arrays`` does (e.g. uint16 pixels / 65535). uint8 images are scaled
            to [0, 1] on access.
        targets: (M,) int labels of this dataset's samples, in idx order.
        classes: class names; labels are positions in this list.
        kind: "image", "text" or "tabular".
        rows: (M,) rows of ``data`` that make up this dataset, in idx order; default all rows.
        source_index: (M,) row of each sample in the original full dataset; default ``rows``.
    """

    def __init__(
        self,
        data: Storage | np.ndarray,
        targets: np.ndarray | Sequence[int],
        *,
        classes: Sequence[str],
        kind: str,
        rows: np.ndarray | None = None,
        source_index: np.ndarray | None = None,
    ) -> None:
        if kind not in KINDS:
            raise param_error("kind", "IndexedDataset", f"one of {list(KINDS)}", kind)
        if not _is_storage(data, kind):  # the storage dtypes are trusted: the views of one storage share it
            data = as_storage(data, kind, "IndexedDataset", param="data")
        n_data = len(data)
        self._data = data
        self._rows = np.arange(n_data, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        self.targets: np.ndarray = np.asarray(targets, dtype=np.int64)
        self.source_index: np.ndarray = (
            self._rows.copy() if source_index is None else np.asarray(source_index, dtype=np.int64)
        )
        self.classes: list[str] = list(classes)
        self.kind: str = kind
        m = len(self._rows)
        if self.targets.shape != (m,) or self.source_index.shape != (m,):
            raise LatentccError(
                f"IndexedDataset needs one target and one source index per row: got {m} rows, "
                f"targets of shape {self.targets.shape} and source_index of shape {self.source_index.shape}."
            )
        if m and (self._rows.min() < 0 or self._rows.max() >= n_data):
            raise param_error("rows", "IndexedDataset", f"row numbers in 0..{n_data - 1}", self._rows)
        self._labels: list[int] = self.targets.tolist()  # python ints, looked up once per sample

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i: int) -> tuple[Any, int, int]:
        i = int(i)
        if not 0 <= i < len(self._rows):
            raise IndexError(f"index {i} is out of range for an IndexedDataset of length {len(self._rows)}")
        row = int(self._rows[i])
        data = self._data
        if isinstance(data, list):
            return data[row], self._labels[i], i
        x = data[row]
        if x.dtype == torch.uint8:
            x = x.to(torch.float32).div_(UINT8_TOP)
        return x, self._labels[i], i

    def __iter__(self) -> Iterator[tuple[Any, int, int]]:
        for i in range(len(self._rows)):
            yield self[i]

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """Shape of one ``x``: (C, H, W) for images, (D,) for tabular, None for text."""
        if isinstance(self._data, list):
            return None
        return tuple(self._data.shape[1:])

    def subset(self, indices: np.ndarray | torch.Tensor | Sequence[int]) -> IndexedDataset:
        """A new dataset of the samples at ``indices`` (positions in this one), re-indexed 0..m-1.

        The storage is shared, not copied; ``source_index`` is carried through. A boolean mask of
        length ``len(self)`` is accepted too.
        """
        idx = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices)
        if idx.dtype == np.bool_:
            if idx.shape != (len(self),):
                raise param_error(
                    "indices", "IndexedDataset.subset", f"a mask of shape ({len(self)},)", idx.shape
                )
            idx = np.flatnonzero(idx)
        if idx.size == 0:
            idx = idx.astype(np.int64)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise param_error(
                "indices",
                "IndexedDataset.subset",
                "a 1-D array of integer positions",
                f"{idx.dtype} of shape {idx.shape}",
            )
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise param_error(
                "indices",
                "IndexedDataset.subset",
                f"positions in 0..{len(self) - 1}",
                f"values from {idx.min()} to {idx.max()}",
            )
        return IndexedDataset(
            self._data,
            self.targets[idx],
            classes=self.classes,
            kind=self.kind,
            rows=self._rows[idx],
            source_index=self.source_index[idx],
        )

    def relabel(self, class_map: Sequence[int] | np.ndarray, classes: Sequence[str]) -> IndexedDataset:
        """The same samples with label ``class_map[y]`` and class names ``classes`` (storage shared).

        E.g. subclasses -> superclasses: ``class_map[c]`` is the superclass id of class ``c``.
        """
        cmap = np.asarray(class_map, dtype=np.int64)
        if cmap.shape != (len(self.classes),) or (
            len(cmap) and (cmap.min() < 0 or cmap.max() >= len(classes))
        ):
            raise param_error(
                "class_map",
                "IndexedDataset.relabel",
                f"{len(self.classes)} ints (one per class) in 0..{len(classes) - 1}",
                cmap.tolist(),
            )
        return IndexedDataset(
            self._data,
            cmap[self.targets],
            classes=classes,
            kind=self.kind,
            rows=self._rows,
            source_index=self.source_index,
        )

    def class_counts(self) -> np.ndarray:
        """(K,) number of samples of each class."""
        return np.bincount(self.targets, minlength=len(self.classes))

    def __repr__(self) -> str:
        return (
            f"IndexedDataset(kind={self.kind!r}, n={len(self)}, classes={len(self.classes)}, "
            f"input_shape={self.input_shape})"
        )


@dataclass(frozen=True)
class DatasetSplits:
    """Train/val/test splits of one dataset; all three share ``classes`` and ``kind``."""

    name: str
    train: IndexedDataset
    val: IndexedDataset
    test: IndexedDataset
    classes: list[str]
    kind: str

    def __post_init__(self) -> None:
        for split in ("train", "val", "test"):
            ds = getattr(self, split)
            if ds.classes != self.classes or ds.kind != self.kind:
                raise LatentccError(
                    f"DatasetSplits '{self.name}': the {split} split has classes {ds.classes} and kind "
                    f"{ds.kind!r}, but the splits were declared with {self.classes} and {self.kind!r}."
                )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """(C, H, W) for images, (D,) for tabular, None for text."""
        return self.train.input_shape

    def relabel(
        self, class_map: Sequence[int] | np.ndarray, classes: Sequence[str], *, name: str
    ) -> DatasetSplits:
        """All three splits relabelled with ``class_map`` (see :meth:`IndexedDataset.relabel`)."""
        return DatasetSplits(
            name,
            self.train.relabel(class_map, classes),
            self.val.relabel(class_map, classes),
            self.test.relabel(class_map, classes),
            list(classes),
            self.kind,
        )

    def summary(self) -> dict[str, Any]:
        """Sizes, classes and per-split class counts (lists aligned with ``classes``), JSON-ready."""
        splits = {"train": self.train, "val": self.val, "test": self.test}
        return {
            "name": self.name,
            "kind": self.kind,
            "input_shape": list(self.input_shape) if self.input_shape is not None else None,
            "num_classes": self.num_classes,
            "classes": list(self.classes),
            "sizes": {k: len(v) for k, v in splits.items()},
            "class_counts": {k: v.class_counts().tolist() for k, v in splits.items()},
        }


# ----------------------------------------------------------------------------- validation at the door


def as_storage(x: Any, kind: str, func: str, param: str = "x") -> Storage:
    """Validate samples and convert them to the storage ``IndexedDataset`` keeps.

    images: (N, H, W) or (N, C, H, W) pixels scaled by their dtype (``latentcc.data.pixels.array_pixels``):
    uint8 kept (read as value / 255), uint16 / 65535 (float32), other integer dtypes with values in 0..255
    as uint8, floats in [0, 1] as float32; tabular: (N, D) finite numbers (float32); text: a sequence of
    N strings.
    """
    if kind not in KINDS:
        raise param_error("kind", func, f"one of {list(KINDS)}", kind)
    if kind == "text":
        if isinstance(x, str) or not isinstance(x, Sequence | np.ndarray):
            raise param_error(param, func, "a sequence of strings for text data", type(x).__name__)
        texts = list(x)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise param_error(
                    param, func, "a sequence of strings for text data", f"{type(t).__name__} at position {i}"
                )
        return [str(t) for t in texts]  # plain str, also for numpy string scalars
    # numpy is the working form: torch has no min/max/division for uint16, uint32 and uint64
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if t.is_floating_point() and t.dtype not in (torch.float16, torch.float32, torch.float64):
            t = t.float()  # bfloat16, float8: exact in float32, and numpy has no such dtypes
        try:
            arr = t.resolve_conj().resolve_neg().numpy()
        except (TypeError, RuntimeError) as e:  # sparse, quantized or nested tensors
            raise param_error(
                param, func, f"a dense numeric tensor for {kind} data", f"a {t.layout} tensor of dtype {t.dtype}",
                "Fix: x.to_dense() (sparse) or x.dequantize() (quantized).",
            ) from e  # fmt: skip
    else:
        arr = np.asarray(x)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            raise param_error(
                param, func, f"a numeric array for {kind} data", f"an array of dtype {arr.dtype}"
            )
    if kind == "tabular":
        if arr.dtype.kind in "bc":
            raise param_error(
                param, func, "real-valued tabular data", f"dtype {arr.dtype}",
                "Fix: x.astype(np.float32) (numpy) or x.float() (torch); complex values: put the real and "
                "imaginary parts in columns of their own.",
            )  # fmt: skip
        if arr.ndim != 2:
            raise param_error(param, func, "a 2-D (N, D) array for tabular data", f"shape {tuple(arr.shape)}")
        t = _tensor(arr.astype(np.float32, copy=False))
        _check_finite(t, param, func)
        return t
    # images
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4:
        raise param_error(
            param, func, "images of shape (N, H, W) or (N, C, H, W)", f"shape {tuple(arr.shape)}"
        )
    if arr.shape[-1] in (1, 3, 4) and arr.shape[1] not in (1, 3, 4):
        raise param_error(
            param,
            func,
            "channels-first images (N, C, H, W)",
            f"shape {tuple(arr.shape)}, which looks channels-last",
            "Fix: pass x.permute(0, 3, 1, 2) (torch) or x.transpose(0, 3, 1, 2) (numpy).",
        )
    if arr.size == 0:
        return torch.zeros(arr.shape, dtype=torch.uint8)
    if arr.dtype.kind == "f":  # before the range check, which cannot say which samples hold NaN or inf
        if arr.dtype.itemsize > 8:  # longdouble: torch has no such dtype
            arr = arr.astype(np.float64)
        _check_finite(_tensor(arr), param, func)
    return _tensor(array_pixels(arr, param, func))


def _tensor(arr: np.ndarray) -> torch.Tensor:
    """A contiguous tensor of ``arr``, sharing its memory where it can."""
    if not arr.flags.writeable:  # torch would warn about sharing memory with a read-only array
        arr = arr.copy()
    return torch.from_numpy(np.ascontiguousarray(arr))


def _check_finite(t: torch.Tensor, param: str, func: str) -> None:
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        rows = torch.nonzero(bad.reshape(len(t), -1).any(dim=1)).flatten()[:5].tolist()
        raise param_error(
            param,
            func,
            "finite (no NaN or inf)",
            f"{int(bad.sum())} non-finite values, in samples {rows}{' ...' if int(bad.sum()) > len(rows) else ''}",
            "Fix: drop or impute those samples.",
        )


# Integer labels are positions in the class list, so ids up to max(y) imply max(y) + 1 classes. Above
# MAX_GAPPY_CLASSES implied classes, ids more than SPARSE_FACTOR times the number of distinct labels are
# identifiers (1000000, 2**63), not positions: building that many (mostly empty) classes gives NaN class means or
# exhausts memory, so they are refused. Small gaps (labels 0, 2, 4 -> 5 classes, 2 empty) stay allowed.
MAX_GAPPY_CLASSES = 1000
SPARSE_FACTOR = 10
_REMAP = "y = np.unique(y, return_inverse=True)[1] makes ids 0..K-1 (pass the unique values as classes=)"


def _positions(mask: np.ndarray, rows: Any = None) -> str:
    """ "positions [3, 7, ...]" of the True entries of ``mask``; ``rows(pos)`` words them otherwise (HF rows)."""
    pos = np.flatnonzero(mask)
    if rows is not None:
        return str(rows(pos))
    return f"positions {pos[:5].tolist()}{' ...' if len(pos) > 5 else ''}"


def label_ids(
    y: Any,
    func: str,
    param: str = "y",
    *,
    n_classes: int | None = None,
    rows: Any = None,
    drop: str = "x[y >= 0], y[y >= 0]",
) -> np.ndarray:
    """(N,) int64 class ids from integer-valued labels, or a LatentccError naming ``param`` and the fix.

    The one check every label path shares (``from_arrays``, ``from_hf``, ``make_splits``). Accepted: any integer
    dtype, floats holding whole numbers (1.0 is class 1), bool (False is class 0, True class 1) and lists of
    such numbers. Refused: None (an unlabelled sample), NaN / inf, fractions (0.5: a regression target, not a
    class), negative ids (-1 marks unlabelled samples in many datasets), ids >= ``n_classes`` when the class
    list is known, and without it (classes "0".."max(y)") ids implying more than ``MAX_GAPPY_CLASSES`` classes
    and more than ``SPARSE_FACTOR`` times the distinct labels. ``rows(positions)`` may word the positions of
    offending labels (default "positions [...]"); ``drop`` is the code that drops negative ids, for the fix.
    """
    if isinstance(y, torch.Tensor):
        t = y.detach().cpu()
        y = (
            t.float()
            if t.is_floating_point() and t.dtype not in (torch.float16, torch.float32, torch.float64)
            else t
        )
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise param_error(param, func, "a 1-D array of labels (one per sample)", f"shape {arr.shape}")
    if arr.dtype == object:
        arr = _numbers_of(arr, func, param, rows)
    arr = _whole_numbers(arr, func, param, rows)
    if arr.size:
        _check_id_range(arr, func, param, n_classes, rows, drop)
    return arr.astype(np.int64)


def _numbers_of(arr: np.ndarray, func: str, param: str, rows: Any) -> np.ndarray:
    """An object array of labels (a Python list of mixed values) as a numeric array, or the error."""
    items = arr.tolist()
    missing = np.array([v is None for v in items], dtype=bool)
    if missing.any():
        raise param_error(
            param, func, "a class label for every sample",
            f"{int(missing.sum())} missing labels (None) at {_positions(missing, rows)}",
            "Fix: drop the unlabelled samples (or give each a class) before loading.",
        )  # fmt: skip
    odd = np.array([isinstance(v, str) or not isinstance(v, int | float | np.number) for v in items], bool)
    if odd.any():
        first = items[int(np.flatnonzero(odd)[0])]
        raise param_error(
            param, func, "integer class ids, or class-name strings for every sample (not a mix)",
            f"{type(first).__name__} {first!r} at {_positions(odd, rows)}",
            "Fix: make every label a class name (str) or every label a class id (int).",
        )  # fmt: skip
    out = np.asarray(items)  # numbers: int64, float64 or bool
    if out.dtype == object:  # python ints beyond 64 bits
        raise param_error(param, func, "class ids 0..K-1", "integers beyond 64 bits", f"Fix: {_REMAP}.")
    return out


def _whole_numbers(arr: np.ndarray, func: str, param: str, rows: Any) -> np.ndarray:
    """Bool labels as 0/1; float labels checked finite and whole; any other non-integer dtype refused."""
    kind = arr.dtype.kind
    if kind == "b":
        return arr.astype(np.int64)  # a yes/no label: False is class 0, True class 1
    if kind == "f":
        finite = np.isfinite(arr)
        if not finite.all():
            raise param_error(
                param, func, "finite class ids (no NaN or inf)",
                f"{int((~finite).sum())} non-finite labels at {_positions(~finite, rows)}",
                "Fix: drop those samples or give each a class (NaN often marks an unlabelled sample).",
            )  # fmt: skip
        frac = arr != np.floor(arr)
        if frac.any():
            values = np.unique(arr[frac])
            raise param_error(
                param, func, "integer class ids (whole numbers; 1.0 is class 1)",
                f"fractional labels {values[:5].tolist()} at {_positions(frac, rows)}",
                "Labels are classes, not regression targets. Fix: if each value is a class, "
                f"{_REMAP}.",
            )  # fmt: skip
    elif kind not in "iu":
        raise param_error(
            param, func, "integer class ids", f"an array of dtype {arr.dtype}", f"Fix: {_REMAP}."
        )
    return arr


def _check_id_range(
    arr: np.ndarray, func: str, param: str, n_classes: int | None, rows: Any, drop: str
) -> None:
    """Ids >= 0, below ``n_classes`` when the class list is known, else not implausibly sparse."""
    lo, hi = int(arr.min()), int(arr.max())  # python ints: uint64 ids above 2**63 must not wrap
    if lo < 0:
        neg = arr < 0
        raise param_error(
            param, func, "class ids >= 0",
            f"{int(neg.sum())} negative labels {np.unique(arr[neg])[:5].tolist()} at {_positions(neg, rows)}",
            f"-1 usually marks an unlabelled sample. Fix: drop those samples ({drop}), or "
            f"{_REMAP}.",
        )  # fmt: skip
    if n_classes is not None:
        bad = arr >= n_classes
        if bad.any():
            offending = np.unique(arr[bad])
            raise param_error(
                param, func, f"integer labels in 0..{n_classes - 1} (one per class in classes, {n_classes} given)",
                f"{int(bad.sum())} labels outside that range: {offending[:10].tolist()}"
                f"{' ...' if len(offending) > 10 else ''}",
                "Fix: pass one class name per label value, or remap labels to 0..K-1 "
                "(e.g. np.unique(y, return_inverse=True)).",
            )  # fmt: skip
    elif hi + 1 > MAX_GAPPY_CLASSES:
        distinct = int(np.unique(arr).size)
        if hi + 1 > SPARSE_FACTOR * distinct:
            raise param_error(
                param, func,
                f"class ids 0..K-1 (classes default to '0'..max(y), so ids are positions in the class list; "
                f"at most {SPARSE_FACTOR}x the distinct labels once above {MAX_GAPPY_CLASSES} classes)",
                f"ids up to {hi} for {distinct} distinct labels: {hi + 1} classes, "
                f"{hi + 1 - distinct} of them empty",
                f"Fix: {_REMAP}; or, if the ids are positions in a longer class list, pass that list as classes=.",
            )  # fmt: skip


def check_labels(y: Any, n: int, classes: Sequence[str], func: str, param: str = "y") -> np.ndarray:
    """(N,) int64 labels in 0..K-1 with N == n, or a LatentccError naming the offending values."""
    shape = tuple(y.shape) if isinstance(y, torch.Tensor) else np.shape(np.asarray(y, dtype=object))
    if len(shape) != 1 or shape[0] != n:
        raise param_error(param, func, f"a 1-D array of {n} labels (one per sample)", f"shape {shape}")
    return label_ids(y, func, param, n_classes=len(classes))


def check_classes(classes: Any, func: str) -> list[str]:
    """At least two unique class names, as strings."""
    if isinstance(classes, str) or not isinstance(classes, Sequence | np.ndarray):
        raise param_error("classes", func, "a list of class names", type(classes).__name__)
    names = [str(c) for c in classes]
    if len(names) < 2:
        raise param_error(
            "classes",
            func,
            "a list of at least 2 class names",
            names,
            "Fix: classification needs two or more classes.",
        )
    if len(set(names)) != len(names):
        dupes = sorted({c for c in names if names.count(c) > 1})
        raise param_error("classes", func, "unique class names", f"duplicates {dupes}")
    return names


# The keyword arguments every adapter passes on to make_splits.
SPLIT_KEYS = ("seed", "val_fraction", "test_fraction", "max_samples")


def check_keywords(kw: dict[str, Any], valid: Sequence[str], who: str) -> None:
    """Refuse keyword arguments outside ``valid``; ``who`` names the call in the message ("from_arrays").

    Adapters pass ``**kw`` on to make_splits: without this a typo surfaces as a TypeError of a function
    the caller never called.
    """
    unknown = sorted(set(kw) - set(valid))
    if unknown:
        close = [c for u in unknown for c in difflib.get_close_matches(u, list(valid), n=1)]
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise LatentccError(
            f"{who} got the unknown keyword argument(s) {unknown}; it takes {list(valid)}.{hint}"
        )


def _check_fraction(value: Any, param: str, func: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) < 1.0:
        raise param_error(param, func, "a float in [0, 1)", value)
    return float(value)


# ----------------------------------------------------------------------------- splitting


def _allocate(quota: np.ndarray, total: int, cap: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Integer counts per class summing to ``total``, each the floor or ceiling of its quota.

    Largest-remainder rounding (ties broken by the seeded generator), never above ``cap``.
    """
    counts = np.minimum(np.floor(quota).astype(np.int64), cap)
    tiebreak = rng.permutation(len(quota))
    while (short := total - int(counts.sum())) > 0:
        remainder = np.where(counts < cap, quota - counts, -np.inf)
        order = np.lexsort((tiebreak, -remainder))
        eligible = order[counts[order] < cap[order]]
        if eligible.size == 0:
            break
        counts[eligible[:short]] += 1
    return counts


def _round_total(n: int, fraction: float) -> int:
    """round(n * fraction), but at least 1 when the fraction is positive (a requested split is never empty)."""
    if fraction <= 0.0 or n == 0:
        return 0
    return max(1, int(np.floor(n * fraction + 0.5)))


def stratified_indices(y: Any, size: int, *, seed: int = 0) -> np.ndarray:
    """Sorted positions of a seeded stratified random subset of ``size`` of the labels ``y`` (all if size >= len)."""
    y = np.asarray(y, dtype=np.int64)
    if size >= len(y):
        return np.arange(len(y))
    _, codes = np.unique(y, return_inverse=True)
    return _stratified_pick(codes, size, int(codes.max()) + 1, np.random.default_rng(seed))


def _stratified_pick(y: np.ndarray, size: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions of a stratified random subset of ``size`` samples."""
    n_c = np.bincount(y, minlength=k)
    take = _allocate(n_c * (size / len(y)), size, n_c, rng)
    return np.sort(_carve(y, [take], k, rng)[0])


def _carve(y: np.ndarray, counts: list[np.ndarray], k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Split positions by class: part j takes ``counts[j][c]`` random samples of class c; the rest is last.

    Vectorised: one random permutation, stably sorted by label, gives each class its samples in
    random order; a sample's rank within its class decides its part.
    """
    perm = rng.permutation(len(y))
    order = perm[np.argsort(y[perm], kind="stable")]
    labels = y[order]
    starts = np.concatenate(([0], np.cumsum(np.bincount(y, minlength=k))[:-1]))
    rank = np.arange(len(y)) - starts[labels]
    part = np.full(len(y), len(counts), dtype=np.int64)
    bounds = np.cumsum(np.stack(counts), axis=0)  # (J, K): part j holds ranks [bounds[j-1], bounds[j])
    for j in reversed(range(len(counts))):  # earlier parts overwrite later ones
        part[rank < bounds[j][labels]] = j
    return [order[part == j] for j in range(len(counts) + 1)]


def make_splits(  # long: a third of it is the docstring of every argument; the body reads top to bottom
    x: Any,
    y: Any,
    classes: Sequence[str],
    *,
    name: str,
    kind: str,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    max_samples: int | None = None,
    test: tuple[Any, Any] | None = None,
    func: str = "make_splits",
) -> DatasetSplits:
    """Deterministic stratified train/val/test splits of ``(x, y)``.

    Args:
        x: images (N, H, W) / (N, C, H, W), pixels scaled by their dtype (``as_storage``: uint8 0..255,
            uint16 0..65535, other integers 0..255, floats in [0, 1]); tabular (N, D); or N strings
            (``kind="text"``).
        y: (N,) int labels in 0..len(classes)-1.
        classes: class names (at least 2).
        name, kind: dataset name and "image" | "text" | "tabular".
        seed: every random choice (subset, split, order) is drawn from ``np.random.default_rng(seed)``.
        val_fraction, test_fraction: fractions of the samples, each in [0, 1) with sum < 1. Every
            class contributes its share rounded to within one sample; a positive fraction gives at
            least one sample, 0 gives an empty split.
        max_samples: first keep a stratified random subset of this many samples (of train + test
            when ``test`` is given, in proportion); None keeps all.
        test: the dataset's own test set ``(x_test, y_test)``: used as the test split, and
            ``test_fraction`` is ignored; val is ``val_fraction`` of ``(x, y)``. Its source
            indices are numbered after the N training rows.
        func: the public function named in error messages (an adapter passes its own name).

    Each split lists its samples in a seeded random order (never sorted by label).
    """
    names = check_classes(classes, func)
    k = len(names)
    seed = check_int(seed, "seed", func, 0)
    vf = _check_fraction(val_fraction, "val_fraction", func)
    tf = _check_fraction(test_fraction, "test_fraction", func)
    if test is None and vf + tf >= 1.0:
        raise param_error(
            "val_fraction", func, "such that val_fraction + test_fraction < 1", f"{vf} + {tf}",
            "Fix: leave room for training.",
        )  # fmt: skip
    if max_samples is not None:
        max_samples = check_int(max_samples, "max_samples", func, 1)
    data = as_storage(x, kind, func)
    labels = check_labels(y, len(data), names, func)
    rng = np.random.default_rng(seed)

    test_data: Storage | None = None
    test_labels = np.zeros(0, dtype=np.int64)
    if test is not None:
        data, test_data, test_labels = _own_test_split(test, data, kind, names, func)
    n = len(data)
    n_total = n + (len(test_data) if test_data is not None else 0)
    if n == 0:
        raise param_error("x", func, "at least one sample", "an empty dataset")
    keep = np.arange(n, dtype=np.int64)
    keep_test = np.arange(n_total - n, dtype=np.int64)
    if max_samples is not None and max_samples < n_total:
        keep, keep_test = _subsample(
            labels, test_labels if test_data is not None else None, max_samples, k, rng
        )
        # Compact the storage so a small subset of a big dataset holds only its own rows.
        data, labels = _take(data, keep), labels[keep]
        if test_data is not None:
            test_data, test_labels = _take(test_data, keep_test), test_labels[keep_test]

    n_c = np.bincount(labels, minlength=k)
    n_test = _allocate(n_c * tf, _round_total(len(labels), tf), n_c, rng) if test_data is None else 0 * n_c
    n_val = _allocate(n_c * vf, _round_total(len(labels), vf), n_c - n_test, rng)
    test_pos, val_pos, train_pos = _carve(labels, [n_test, n_val], k, rng)

    def view(storage: Storage, targets: np.ndarray, pos: np.ndarray, source: np.ndarray) -> IndexedDataset:
        pos = rng.permutation(pos)  # a random order, so no split is sorted by label
        return IndexedDataset(
            storage, targets[pos], classes=names, kind=kind, rows=pos, source_index=source[pos]
        )

    train = view(data, labels, train_pos, keep)
    val = view(data, labels, val_pos, keep)
    if test_data is None:
        test_ds = view(data, labels, test_pos, keep)
    else:
        test_ds = view(test_data, test_labels, np.arange(len(test_labels)), n + keep_test)

    splits = DatasetSplits(name=name, train=train, val=val, test=test_ds, classes=names, kind=kind)
    _check_not_empty(splits, func, n_total, vf, tf, own_test=test is not None, max_samples=max_samples)
    return splits


def _subsample(
    labels: np.ndarray, test_labels: np.ndarray | None, max_samples: int, k: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified rows to keep of the samples and of the dataset's own test set (None: no own test set),
    ``max_samples`` in all, shared in proportion to the two sets' sizes."""
    if test_labels is None:
        return _stratified_pick(labels, max_samples, k, rng), np.zeros(0, dtype=np.int64)
    n, n_total = len(labels), len(labels) + len(test_labels)
    n_keep = int(np.floor(max_samples * n / n_total + 0.5))
    keep = _stratified_pick(labels, n_keep, k, rng) if n_keep else np.zeros(0, dtype=np.int64)
    return keep, _stratified_pick(test_labels, max_samples - n_keep, k, rng)


def _own_test_split(
    test: Any, data: Storage, kind: str, names: list[str], func: str
) -> tuple[Storage, Storage, np.ndarray]:
    """``make_splits(test=(x_test, y_test))`` checked against the training samples: (data, test data,
    test labels), image pixels of two dtypes both moved to the float scale."""
    if not isinstance(test, tuple | list) or len(test) != 2:
        raise param_error("test", func, "a pair (x_test, y_test)", type(test).__name__)
    test_data = as_storage(test[0], kind, func, param="test")
    test_labels = check_labels(test[1], len(test_data), names, func, param="test")
    if isinstance(data, torch.Tensor) and isinstance(test_data, torch.Tensor):
        if data.shape[1:] != test_data.shape[1:]:
            raise param_error(
                "test",
                func,
                f"samples like x: shape {tuple(data.shape[1:])}",
                f"shape {tuple(test_data.shape[1:])}",
            )
        if data.dtype != test_data.dtype:  # uint8 and float32 pixels: both on the float scale
            data, test_data = _unit_tensor(data), _unit_tensor(test_data)
    return data, test_data, test_labels


def _check_not_empty(
    splits: DatasetSplits,
    func: str,
    n_total: int,
    vf: float,
    tf: float,
    *,
    own_test: bool,
    max_samples: int | None,
) -> None:
    """Every split asked for (a positive fraction; train, and a dataset's own test set, always) is not empty."""
    test_frac = 1.0 if own_test else tf
    for split, ds, frac in (
        ("train", splits.train, 1.0),
        ("val", splits.val, vf),
        ("test", splits.test, test_frac),
    ):
        if frac > 0 and len(ds) == 0:
            raise LatentccError(
                f"{func}('{splits.name}'): the {split} split is empty ({n_total} samples, "
                f"val_fraction={vf}, test_fraction={tf}, max_samples={max_samples}). "
                "Fix: use more samples or smaller fractions; every split needs at least one sample."
            )


def _is_storage(data: Any, kind: str) -> bool:
    """Whether ``data`` already is what ``as_storage`` returns for ``kind`` (so it is kept as it is)."""
    if kind == "text":
        return isinstance(data, list)
    storage = (torch.uint8, torch.float32) if kind == "image" else (torch.float32,)
    return isinstance(data, torch.Tensor) and data.dtype in storage


def _unit_tensor(pixels: torch.Tensor) -> torch.Tensor:
    """Stored pixels (uint8 or float32) as float32 in [0, 1]."""
    return torch.from_numpy(unit_pixels(pixels.numpy()))


def _take(data: Storage, rows: np.ndarray) -> Storage:
    if isinstance(data, list):
        return [data[i] for i in rows.tolist()]
    return data[torch.from_numpy(rows)].contiguous()


__all__ = ["KINDS", "DatasetSplits", "IndexedDataset", "Kind", "make_splits"]
