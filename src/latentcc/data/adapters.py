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

from latentcc.data.base import DatasetSplits, check_classes, make_splits
from latentcc.errors import LatentccError, param_error, require

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


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


def labels_and_classes(y: Any, classes: Sequence[str] | None, func: str) -> tuple[np.ndarray, list[str]]:
    """(N,) int labels and class names from int labels or class-name strings.

    String labels map to positions in ``classes`` (default: the sorted unique names); int labels
    default to classes "0".."max(y)".
    """
    arr = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y)
    if arr.dtype.kind in "USO" and arr.size and all(isinstance(v, str) for v in arr.tolist()):
        names = (
            check_classes(classes, func) if classes is not None else sorted({str(v) for v in arr.tolist()})
        )
        position = {c: i for i, c in enumerate(names)}
        unknown = sorted({str(v) for v in arr.tolist()} - position.keys())
        if unknown:
            raise param_error(
                "y",
                func,
                f"class names from classes={names}",
                f"unknown names {unknown[:10]}",
                "Fix: add them to classes.",
            )
        return np.asarray([position[str(v)] for v in arr.tolist()], dtype=np.int64), names
    if classes is None and arr.ndim == 1:  # the classes come from y: say so when y cannot give two
        if arr.size == 0:
            raise param_error(
                "y", func, "a non-empty array of labels (one per sample)", "0 labels",
                "The dataset is empty: check the path, filter or subset that produced it.",
            )  # fmt: skip
        distinct = np.unique(arr) if arr.dtype.kind in "iufb" else arr[:2]  # others: make_splits checks
        if distinct.size < 2:
            raise param_error(
                "y", func, "labels of at least 2 classes (classification needs two or more)",
                f"all {arr.size} labels equal to {distinct.tolist()[0]!r}",
                "Check the label column, or a subset that kept a single class.",
            )  # fmt: skip
    if classes is None:
        top = (
            int(arr.max())
            if arr.size and np.issubdtype(arr.dtype, np.number) and np.all(np.isfinite(arr))
            else 0
        )
        classes = [str(i) for i in range(max(top + 1, 0))]
    return arr, list(classes)  # make_splits validates ranges and dtypes with its one message shape


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
        x: numpy array or torch tensor of images (N, H, W) / (N, C, H, W) (uint8 0..255 or floats in
            [0, 1]), of features (N, D) (kind "tabular": each x is a float32 (D,) tensor), or a list
            of N strings (kind "text").
        y: (N,) int labels, or class-name strings.
        classes: class names; default "0".."max(y)" for ints, sorted unique names for strings.
        kind: "image" | "tabular" | "text"; default inferred from ``x``.
        **split_kw: seed, val_fraction, test_fraction, max_samples (see ``make_splits``).
    """
    kind = kind if kind is not None else _infer_kind(x, "from_arrays")
    labels, names = labels_and_classes(y, classes, "from_arrays")
    return make_splits(x, labels, names, name=name, kind=kind, **split_kw)


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


def _pil_to_chw(img: Any, mode: str, hw: tuple[int, int]) -> np.ndarray:
    """(C, H, W) uint8 array of a PIL image converted to ``mode`` and resized to ``hw``."""
    from PIL import Image

    img = img.convert(mode)
    if (img.height, img.width) != hw:
        img = img.resize((hw[1], hw[0]), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _stack_images(
    images: Sequence[Any], describe: Sequence[str], mode: str, hw: tuple[int, int] | None
) -> np.ndarray:
    """(N, C, H, W) uint8 from PIL images (or callables opening them); ``describe[i]`` names image i in errors."""
    out: np.ndarray | None = None
    for i, item in enumerate(images):
        try:
            img = item() if callable(item) else item
            if hw is None:
                hw = (img.height, img.width)
            chw = _pil_to_chw(img, mode, hw)
        except LatentccError:
            raise
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
            raise LatentccError(
                f"Could not read the image {describe[i]}: {type(e).__name__}: {e}. "
                "Fix: remove or replace that file (it is unreadable or corrupt)."
            ) from e
        if out is None:
            out = np.empty((len(images), *chw.shape), dtype=np.uint8)  # one block: no per-sample objects
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
    """Splits from ``root/<class name>/*.png|jpg|jpeg|bmp|gif`` (classes = sorted sub-folder names).

    Images become (3, H, W) RGB, or (1, H, W) with ``grayscale=True``, values in [0, 1], all resized
    to ``size`` (int or (height, width); default the first image's size). Loads every image into
    one uint8 block.
    """
    from PIL import Image

    func = "image_folder"
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
        name=name if name is not None else folder.resolve().name, kind="image", **split_kw,
    )  # fmt: skip


# ----------------------------------------------------------------------------- Hugging Face datasets


def _hf_columns(
    ds: Any, datasets: Any, image_column: str | None, text_column: str | None, label_column: str
) -> tuple[str, str]:
    """(column, kind) holding the inputs: given, or the one Image / string column."""
    columns = list(ds.column_names)
    func = "from_hf"
    if label_column not in columns:
        raise param_error("label_column", func, f"one of the dataset's columns {columns}", label_column)
    if image_column is not None and text_column is not None:
        raise LatentccError("from_hf: pass image_column= or text_column=, not both.")
    for param, col in (("image_column", image_column), ("text_column", text_column)):
        if col is not None and col not in columns:
            raise param_error(param, func, f"one of the dataset's columns {columns}", col)
    if image_column is not None:
        return image_column, "image"
    if text_column is not None:
        return text_column, "text"
    feats = ds.features
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
        f"text columns {texts}). Fix: pass image_column= or text_column=."
    )


def _hf_inputs(ds: Any, datasets: Any, column: str, kind: str, hw: tuple[int, int] | None, mode: str) -> Any:
    if kind == "text":
        return [str(t) for t in ds[column]]
    if isinstance(ds.features[column], datasets.Image):
        return _stack_images(
            list(ds[column]), [f"row {i} of column '{column}'" for i in range(len(ds))], mode, hw
        )
    arr = np.asarray(ds.with_format("numpy")[column][:])
    if arr.dtype == object:
        raise LatentccError(
            f"from_hf: the arrays in column '{column}' differ in shape; store them as an Image feature "
            "(ds.cast_column(column, datasets.Image())) so they are resized to a common size."
        )
    if arr.ndim == 4 and arr.shape[-1] in (1, 3, 4) and arr.shape[1] not in (1, 3, 4):
        arr = arr.transpose(0, 3, 1, 2)  # HF array features are usually channels-last
    return arr


def from_hf(
    ds: Any,
    *,
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
    channels-last), or a string column (text). Class names come from a ``ClassLabel`` label
    feature, else from the label values. A "test" split is used as the test set.
    """
    datasets = require("datasets", "hf", purpose="reading Hugging Face datasets")
    func = "from_hf"
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise param_error("ds", func, "a DatasetDict with a 'train' split", f"splits {list(ds.keys())}")
        train, test = ds["train"], ds.get("test")
    elif isinstance(ds, datasets.Dataset):
        train, test = ds, None
    else:
        raise param_error("ds", func, "a datasets.Dataset or DatasetDict", type(ds).__name__)
    column, kind = _hf_columns(train, datasets, image_column, text_column, label_column)
    hw = _target_hw(size, func)
    mode = "L" if grayscale else "RGB"

    label_feature = train.features[label_column]
    y_train = np.asarray(list(train[label_column]))
    y_test = np.asarray(list(test[label_column])) if test is not None else None
    if isinstance(label_feature, datasets.ClassLabel):
        names = list(label_feature.names)
    else:  # derive classes from all labels at once, so train and test agree
        both = np.concatenate([y_train, y_test]) if y_test is not None else y_train
        labels, names = labels_and_classes(both, None, func)
        y_train, y_test = labels[: len(y_train)], (labels[len(y_train) :] if y_test is not None else None)

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
        **split_kw,
    )


def from_hf_disk(path: str | Path, **kw: Any) -> DatasetSplits:
    """``datasets.load_from_disk(path)`` then ``from_hf`` (a DatasetDict's "test" split is the test set)."""
    datasets = require("datasets", "hf", purpose="reading Hugging Face datasets")
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
