"""Turn the user's own data into ``DatasetSplits``: arrays, image folders, Hugging Face datasets.

Each adapter only converts and validates; splitting is ``make_splits``. Extra keyword arguments
(``seed``, ``val_fraction``, ``test_fraction``, ``max_samples``) are passed on to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentcc.data.base import (
    SPLIT_KEYS,
    DatasetSplits,
    check_classes,
    check_keywords,
    label_ids,
    make_splits,
)
from latentcc.data.pixels import pil_to_chw, unit_pixels
from latentcc.plumbing.errors import LatentccError, param_error, require

# What Pillow reads (torchvision's ImageFolder list, plus GIF); a file with another suffix is not an image here.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


def _is_text(x: Any) -> bool:
    if isinstance(x, np.ndarray):
        return x.dtype.kind in "US" or (x.dtype == object and x.size > 0 and isinstance(x.flat[0], str))
    return isinstance(x, list | tuple) and len(x) > 0 and all(isinstance(t, str) for t in x)


def _infer_kind(x: Any, func: str) -> str:
    if _is_text(x):
        return "text"
    ndim = x.ndim if isinstance(x, torch.Tensor | np.ndarray) else np.asarray(x).ndim
    if ndim == 2:
        return "tabular"
    if ndim in (3, 4):
        return "image"
    raise param_error(
        "x",
        func,
        "images (N, H, W) / (N, C, H, W), features (N, D) or a list of strings",
        f"an array with {ndim} dims",
    )


def labels_and_classes(
    y: Any, classes: Sequence[str] | None, func: str, param: str = "y", **check: Any
) -> tuple[np.ndarray, list[str]]:
    """(N,) int labels and class names from int labels or class-name strings.

    String labels map to positions in ``classes`` (default: the sorted unique names); int labels
    default to classes "0".."max(y)", bool labels to "False", "True". Numeric labels are checked by
    ``label_ids`` (``param`` and its ``check`` keywords, rows= / drop=, word its errors).
    """
    arr: torch.Tensor | np.ndarray
    if isinstance(y, torch.Tensor):
        arr = y.detach().cpu()
    else:
        text = np.asarray(y)
        if text.dtype.kind in "USO" and text.size and all(isinstance(v, str) for v in text.tolist()):
            return _named_labels(text, classes, func, param)
        arr = text
    if arr.ndim != 1:
        raise param_error(param, func, "a 1-D array of labels (one per sample)", f"shape {tuple(arr.shape)}")
    if classes is not None:
        return label_ids(arr, func, param, n_classes=len(classes), **check), list(classes)
    boolean = arr.dtype == (torch.bool if isinstance(arr, torch.Tensor) else np.bool_)
    ids = label_ids(arr, func, param, **check)
    if ids.size == 0:
        raise param_error(
            param, func, "a non-empty array of labels (one per sample)", "0 labels",
            "The dataset is empty: check the path, filter or subset that produced it.",
        )  # fmt: skip
    distinct = np.unique(ids)
    if distinct.size < 2:
        raise param_error(
            param, func, "labels of at least 2 classes (classification needs two or more)",
            f"all {ids.size} labels equal to {bool(distinct[0]) if boolean else int(distinct[0])!r}",
            "Check the label column, or a subset that kept a single class.",
        )  # fmt: skip
    names = ["False", "True"] if boolean else [str(i) for i in range(int(ids.max()) + 1)]
    return ids, names


def _named_labels(
    arr: np.ndarray, classes: Sequence[str] | None, func: str, param: str
) -> tuple[np.ndarray, list[str]]:
    """Class-name labels as positions in ``classes`` (default: the sorted unique names)."""
    names = check_classes(classes, func) if classes is not None else sorted({str(v) for v in arr.tolist()})
    position = {c: i for i, c in enumerate(names)}
    unknown = sorted({str(v) for v in arr.tolist()} - position.keys())
    if unknown:
        raise param_error(
            param, func, f"class names from classes={names}", f"unknown names {unknown[:10]}",
            "Fix: add them to classes.",
        )  # fmt: skip
    return np.asarray([position[str(v)] for v in arr.tolist()], dtype=np.int64), names


def from_arrays(
    x: Any,
    y: Any,
    *,
    classes: Sequence[str] | None = None,
    name: str = "arrays",
    kind: str | None = None,
    **split_kw: Any,
) -> DatasetSplits:
    """Splits from in-memory data.

    Args:
        x: numpy array or torch tensor of images (N, H, W) / (N, C, H, W): uint8 (0..255, read as
            value / 255), uint16 (value / 65535), other integer dtypes with values in 0..255 (read as
            8-bit: an int 0/1 mask becomes 0 and 1/255) or floats in [0, 1] (see
            ``latentcc.data.pixels``); of features (N, D) (kind "tabular": each x is a float32 (D,)
            tensor); or a list of N strings (kind "text").
        y: (N,) int labels, or class-name strings.
        classes: class names; default "0".."max(y)" for ints, sorted unique names for strings.
        kind: "image" | "tabular" | "text"; default inferred from ``x``.
        **split_kw: seed, val_fraction, test_fraction, max_samples (see ``make_splits``).
    """
    check_keywords(split_kw, ("classes", "name", "kind", *SPLIT_KEYS), "from_arrays")
    kind = kind if kind is not None else _infer_kind(x, "from_arrays")
    labels, names = labels_and_classes(y, classes, "from_arrays")
    return make_splits(x, labels, names, name=name, kind=kind, func="from_arrays", **split_kw)


# ----------------------------------------------------------------------------- images via PIL


def _target_hw(size: int | tuple[int, int] | None, func: str) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int) and not isinstance(size, bool) and size >= 1:
        return (size, size)
    if (
        isinstance(size, tuple | list)
        and len(size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size)
    ):
        return (int(size[0]), int(size[1]))
    raise param_error("size", func, "an int >= 1 or a (height, width) pair", size)


def _stack_images(
    images: Sequence[Any], describe: Sequence[str], mode: str, hw: tuple[int, int] | None
) -> np.ndarray:
    """(N, C, H, W) pixels of PIL images (or callables opening them); ``describe[i]`` names image i in errors.

    uint8 (0..255) while every image is 8-bit; float32 in [0, 1] once one is deeper (16-bit, float):
    each image is scaled by its own mode's range (``latentcc.data.pixels``), so mixed folders agree.
    """
    out: np.ndarray | None = None
    for i, item in enumerate(images):
        try:
            img = item() if callable(item) else item
            if hw is None:
                hw = (img.height, img.width)
            chw = pil_to_chw(img, mode, hw, describe[i])
        except LatentccError:
            raise
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
            raise LatentccError(
                f"Could not read the image {describe[i]}: {type(e).__name__}: {e}. "
                "Fix: remove or replace that file (it is unreadable or corrupt)."
            ) from e
        if out is None:
            out = np.empty((len(images), *chw.shape), dtype=chw.dtype)  # one block: no per-sample objects
        elif chw.dtype != out.dtype:  # 8-bit and deeper images mixed: everything on the float scale
            if out.dtype == np.uint8:
                out = unit_pixels(out)
            chw = unit_pixels(chw)
        out[i] = chw
    return out if out is not None else np.empty((0, 1 if mode == "L" else 3, 1, 1), dtype=np.uint8)


def image_folder(
    root: str | Path,
    *,
    size: int | tuple[int, int] | None = None,
    grayscale: bool = False,
    name: str | None = None,
    **split_kw: Any,
) -> DatasetSplits:
    """Splits from ``root/<class name>/<image>`` (classes = sorted sub-folder names; ``IMAGE_EXTENSIONS``).

    Images become (3, H, W) RGB, or (1, H, W) with ``grayscale=True``, values in [0, 1], all resized
    to ``size`` (int or (height, width); default the first image's size). Every mode is scaled by its
    own range (16-bit by 65535, ...; transparent pixels composited onto white; see
    ``latentcc.data.pixels``), so a folder may mix modes and bit depths. Loads every image into one
    block: uint8 when all are 8-bit, else float32 (4 bytes a value).
    """
    from PIL import Image

    func = "image_folder"
    check_keywords(split_kw, ("size", "grayscale", "name", *SPLIT_KEYS), func)
    folder = Path(root)
    if not folder.is_dir():
        raise param_error(
            "root", func, "an existing folder with one sub-folder of images per class", str(folder)
        )
    hw = _target_hw(size, func)
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) < 2:
        raise param_error(
            "root", func, "a folder with at least 2 class sub-folders (root/<class>/<image>)",
            f"{str(folder)!r} with {len(class_dirs)} sub-folders {[p.name for p in class_dirs]}",
            "Fix: put each class's images in its own sub-folder.",
        )  # fmt: skip
    files: list[Path] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        found = sorted(p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not found:
            raise LatentccError(
                f"image_folder: the class folder {class_dir} has no images ({', '.join(IMAGE_EXTENSIONS)}). "
                "Fix: add images or remove the folder."
            )
        files += found
        labels += [label] * len(found)

    def opener(path: Path) -> Any:
        def open_image() -> Any:
            with Image.open(path) as img:
                img.load()  # decode now, inside the error handler, and release the file
                return img

        return open_image

    x = _stack_images([opener(p) for p in files], [str(p) for p in files], "L" if grayscale else "RGB", hw)
    return make_splits(
        x, np.asarray(labels, dtype=np.int64), [p.name for p in class_dirs],
        name=name if name is not None else folder.resolve().name, kind="image", func=func, **split_kw,
    )  # fmt: skip


# ----------------------------------------------------------------------------- Hugging Face datasets


# How each column-naming keyword appears on the command line (the flags come from DataConfig).
_FLAGS = {"label_column": "--label-column", "input_column": "--input-column"}


def _column_error(param: str, col: str, columns: list[str], what: str) -> LatentccError:
    flag = f" ({_FLAGS[param]} on the command line)" if param in _FLAGS else ""
    return param_error(
        param, "from_hf", f"one of the dataset's columns {columns}", col,
        f"Fix: pass {param}={flag} naming the column that holds {what}.",
    )  # fmt: skip


def _hf_columns(ds: Any, datasets: Any, given: dict[str, str | None], label_column: str) -> tuple[str, str]:
    """(column, kind) holding the inputs: the one named in ``given``, or the one Image / string / array column.

    ``given`` maps input_column / image_column / text_column to a name or None; kind is "image", "text"
    or "array" (images or feature vectors, told apart by their number of dims later).
    """
    columns = list(ds.column_names)
    func = "from_hf"
    if label_column not in columns:
        raise _column_error("label_column", label_column, columns, "the class labels")
    named = {k: v for k, v in given.items() if v is not None}
    if len(named) > 1:
        raise LatentccError(
            f"from_hf: pass one of input_column=, image_column= or text_column=, not {sorted(named)}."
        )
    feats = ds.features
    for param, col in named.items():
        if col not in columns:
            raise _column_error(param, col, columns, "the inputs (images, text or arrays)")
        if col == label_column:
            raise param_error(
                param, func, f"a column other than label_column ({label_column!r})", col,
                "The inputs and the labels must be different columns.",
            )  # fmt: skip
        if param == "image_column":
            return col, "image"
        if param == "text_column":
            return col, "text"
        return col, _column_kind(feats[col], datasets, col, columns)
    images = [c for c in columns if isinstance(feats[c], datasets.Image)]
    texts = [
        c
        for c in columns
        if c != label_column
        and isinstance(feats[c], datasets.Value)
        and feats[c].dtype in ("string", "large_string")
    ]
    if len(images) == 1:
        return images[0], "image"
    if not images and len(texts) == 1:
        return texts[0], "text"
    if not images and "text" in texts:
        return "text", "text"
    # Numeric array columns (lists of lists, Array2D/3D): images or feature vectors, told by ndim later.
    arrays = [
        c
        for c in columns
        if c != label_column and not isinstance(feats[c], datasets.Value | datasets.ClassLabel)
    ]
    if not images and not texts and len(arrays) == 1:
        return arrays[0], "array"
    raise LatentccError(
        f"from_hf: cannot tell which column holds the inputs (columns {columns}; image columns {images}, "
        f"text columns {texts}, array columns {arrays}). Fix: pass input_column= (--input-column on the "
        "command line)."
    )


def _column_kind(feature: Any, datasets: Any, col: str, columns: list[str]) -> str:
    """What a named input column holds, from its feature type: "image", "text" or "array"."""
    if isinstance(feature, datasets.Image):
        return "image"
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        return "text"
    if isinstance(feature, datasets.Value | datasets.ClassLabel):
        raise param_error(
            "input_column", "from_hf", "a column of images, strings or arrays (one input per row)",
            f"{col!r}, a column of single {getattr(feature, 'dtype', 'class label')} values",
            f"Fix: name the column holding the inputs (columns {columns}).",
        )  # fmt: skip
    return "array"


def _hf_inputs(ds: Any, datasets: Any, column: str, kind: str, hw: tuple[int, int] | None, mode: str) -> Any:
    if kind == "text":
        return [str(t) for t in ds[column]]
    if isinstance(ds.features[column], datasets.Image):
        images = list(ds[column])
        missing = [i for i, img in enumerate(images) if img is None]
        if missing:  # a row without an image, not an unreadable file
            raise LatentccError(
                f"from_hf: {len(missing)} rows of the image column '{column}' hold no image (None): rows "
                f"{missing[:5]}{' ...' if len(missing) > 5 else ''}. Fix: drop those rows first, e.g. "
                f"ds = ds.filter(lambda r: r['{column}'] is not None)."
            )
        return _stack_images(images, [f"row {i} of column '{column}'" for i in range(len(ds))], mode, hw)
    arr = np.asarray(ds.with_format("numpy")[column][:])
    if arr.dtype == object:
        raise LatentccError(
            f"from_hf: the arrays in column '{column}' differ in shape; store them as an Image feature "
            "(ds.cast_column(column, datasets.Image())) so they are resized to a common size."
        )
    declared = _declared_dtype(ds.features[column])
    if declared is not None and arr.dtype != declared and arr.dtype.kind in "iufb":
        # datasets' numpy format widens every integer to int64: the column's own dtype (uint16) says how
        # its pixels scale, so it is restored (lossless: the values came from that dtype)
        arr = arr.astype(declared)
    if arr.ndim == 4 and arr.shape[-1] in (1, 3, 4) and arr.shape[1] not in (1, 3, 4):
        arr = arr.transpose(0, 3, 1, 2)  # HF array features are usually channels-last
    return arr


def _declared_dtype(feature: Any) -> np.dtype | None:
    """The numeric dtype an array feature declares (Array2D(..., "uint16"), List(Value("uint8"))), or None."""
    while getattr(feature, "feature", None) is not None:  # Sequence / List / LargeList: their items
        feature = feature.feature
    name = getattr(feature, "dtype", None)
    try:
        dtype = np.dtype(name) if isinstance(name, str) else None
    except TypeError:  # "string", "timestamp[s]", ...: no numpy dtype
        return None
    return dtype if dtype is not None and dtype.kind in "iufb" else None


HF_KEYS = ("input_column", "image_column", "text_column", "label_column", "name", "size", "grayscale")


def from_hf(
    ds: Any,
    *,
    input_column: str | None = None,
    image_column: str | None = None,
    text_column: str | None = None,
    label_column: str = "label",
    name: str | None = None,
    size: int | tuple[int, int] | None = None,
    grayscale: bool = False,
    **split_kw: Any,
) -> DatasetSplits:
    """Splits from a Hugging Face ``datasets.Dataset`` (or a ``DatasetDict`` with "train", optional "test").

    The input column is an ``Image`` feature (decoded to (3, H, W) RGB or (1, H, W) grayscale,
    resized to ``size`` or the first image's size), an array column ((N, H, W), (N, C, H, W) or
    channels-last; pixels scaled by their dtype as in ``from_arrays``: uint8 / 255, uint16 / 65535),
    or a string column (text). Class names come from a ``ClassLabel`` label
    feature, else from the label values. A "test" split is used as the test set.

    ``input_column`` names the input column (its kind read from its feature type); without it the
    one Image, string or array column is used. ``image_column`` / ``text_column`` name it and force
    its kind. ``label_column`` holds the labels (ints or class-name strings).
    """
    datasets = require("datasets", "hf", purpose="reading Hugging Face datasets")
    func = "from_hf"
    check_keywords(split_kw, HF_KEYS + SPLIT_KEYS, func)
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise param_error("ds", func, "a DatasetDict with a 'train' split", f"splits {list(ds.keys())}")
        train, test = ds["train"], ds.get("test")
    elif isinstance(ds, datasets.Dataset):
        train, test = ds, None
    else:
        raise param_error("ds", func, "a datasets.Dataset or DatasetDict", type(ds).__name__)
    given = {"input_column": input_column, "image_column": image_column, "text_column": text_column}
    column, kind = _hf_columns(train, datasets, given, label_column)
    hw = _target_hw(size, func)
    mode = "L" if grayscale else "RGB"

    y_train, y_test, names = _hf_labels(train, test, label_column, datasets, func)
    x_train = _hf_inputs(train, datasets, column, kind, hw, mode)
    if kind == "array":
        kind = "tabular" if np.ndim(x_train) == 2 else "image"
    test_pair = None
    if test is not None:
        if hw is None and kind == "image" and isinstance(x_train, np.ndarray):
            hw = (int(x_train.shape[-2]), int(x_train.shape[-1]))  # test images take the train size
        test_pair = (_hf_inputs(test, datasets, column, kind, hw, mode), y_test)
    return make_splits(
        x_train,
        y_train,
        names,
        name=name if name is not None else "hf",
        kind=kind,
        test=test_pair,
        func=func,
        **split_kw,
    )


def _hf_labels(
    train: Any, test: Any, label_column: str, datasets: Any, func: str
) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """(train labels, test labels or None, class names) of a Hugging Face train (and test) split: class
    names from a ``ClassLabel`` feature, else from the values of both splits at once, so that they agree."""
    label_feature = train.features[label_column]
    y_train = np.asarray(list(train[label_column]))
    y_test = np.asarray(list(test[label_column])) if test is not None else None
    n_train = len(y_train)

    def rows(pos: np.ndarray) -> str:  # positions in train + test -> each split's own row numbers
        parts = {"train": pos[pos < n_train], "test": pos[pos >= n_train] - n_train}
        return "; ".join(
            f"rows {p[:5].tolist()}{' ...' if len(p) > 5 else ''} of the {split} split's column '{label_column}'"
            for split, p in parts.items()
            if len(p)
        )

    names: list[str] | None = None
    if isinstance(label_feature, datasets.ClassLabel):
        names = list(label_feature.names)
        if test is not None and y_test is not None:
            y_test = _to_train_classes(y_test, test.features[label_column], names, label_column, datasets)
    # classes from all labels at once, so train and test agree (ClassLabel: its names, ids checked)
    both = np.concatenate([y_train, y_test]) if y_test is not None else y_train
    labels, names = labels_and_classes(
        both, names, func, "label_column",
        rows=rows, drop=f"ds = ds.filter(lambda r: r['{label_column}'] >= 0)",
    )  # fmt: skip
    return labels[:n_train], (labels[n_train:] if y_test is not None else None), names


def _to_train_classes(
    y: np.ndarray, feature: Any, names: list[str], column: str, datasets: Any
) -> np.ndarray:
    """A test split's ClassLabel ids as ids of the train split's classes, matched by name.

    Each split of a DatasetDict carries its own ClassLabel: ids are positions in that split's names, so
    a split listing ["dog", "cat"] beside a train split's ["cat", "dog"] would swap its labels if its ids
    were used as they are. Ids outside the split's names (-1: unlabelled) are kept for the label check.
    """
    if not isinstance(feature, datasets.ClassLabel) or list(feature.names) == names:
        return y
    unknown = [n for n in feature.names if n not in names]
    if unknown:
        raise LatentccError(
            f"from_hf: the test split's ClassLabel in column '{column}' has the names {unknown[:10]}, which the "
            f"train split's ClassLabel {names[:20]} lacks, so its labels cannot be matched to the train classes. "
            "Fix: append those names to the train split's ClassLabel (ds['train'] = ds['train'].cast_column("
            f"'{column}', datasets.ClassLabel(names=train_names + extra_names)) keeps the train ids), or drop "
            "the test rows of those classes."
        )
    position = {n: i for i, n in enumerate(names)}
    to_train = np.asarray([position[n] for n in feature.names], dtype=np.int64)
    if y.dtype.kind not in "iu":  # None / odd values: left to the label check, which names the rows
        return y
    known = (y >= 0) & (y < len(to_train))
    return np.where(known, to_train[np.clip(y, 0, len(to_train) - 1)], y)


def from_hf_disk(path: str | Path, **kw: Any) -> DatasetSplits:
    """``datasets.load_from_disk(path)`` then ``from_hf`` (a DatasetDict's "test" split is the test set)."""
    datasets = require("datasets", "hf", purpose="reading Hugging Face datasets")
    check_keywords(kw, HF_KEYS + SPLIT_KEYS, "from_hf_disk")
    folder = Path(path)
    if not folder.is_dir():
        raise param_error("path", "from_hf_disk", "a folder written by Dataset.save_to_disk", str(folder))
    try:
        ds = datasets.load_from_disk(str(folder))
    except (FileNotFoundError, ValueError, OSError) as e:
        raise LatentccError(
            f"from_hf_disk: {folder} is not a dataset saved with save_to_disk ({e}). "
            "Fix: pass the folder given to Dataset.save_to_disk / DatasetDict.save_to_disk."
        ) from e
    kw.setdefault("name", folder.resolve().name)
    return from_hf(ds, **kw)
