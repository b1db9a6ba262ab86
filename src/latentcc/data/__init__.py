"""Datasets that yield ``(x, y, idx)``: embedded real data, adapters for user data, and a registry.

``load_dataset("animal-mnist")`` loads an embedded dataset by name; ``load_dataset(path)`` reads a
folder of class sub-folders of images, or a folder written by HF ``datasets`` ``save_to_disk``.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from latentcc.data.adapters import HF_KEYS, from_arrays, from_hf, from_hf_disk, image_folder
from latentcc.data.base import SPLIT_KEYS, DatasetSplits, IndexedDataset, check_keywords, make_splits
from latentcc.data.embedded import animal_mnist, digits, fashion_mnist, mnist5k, read_idx, rotten_tomatoes
from latentcc.plumbing.errors import LatentccError, param_error

DATASETS: dict[str, Callable[..., DatasetSplits]] = {
    "animal-mnist": animal_mnist,
    "mnist5k": mnist5k,
    "digits": digits,
    "rotten-tomatoes": rotten_tomatoes,
    "fashion-mnist": fashion_mnist,
}


def list_datasets() -> list[str]:
    """Names that ``load_dataset`` knows."""
    return list(DATASETS)


def _is_hf_saved(folder: Path) -> bool:
    # Dataset.save_to_disk writes state.json; DatasetDict.save_to_disk writes dataset_dict.json.
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def load_dataset(
    name_or_path: str | Path, *, label_column: str = "label", input_column: str | None = None, **kw: Any
) -> DatasetSplits:
    """Splits of a named embedded dataset, or of a folder (class sub-folders of images, or an HF save).

    ``label_column`` / ``input_column`` name the columns of a saved Hugging Face dataset (see
    ``from_hf``); other sources refuse them. Further keyword arguments go to the loader: seed,
    val_fraction, test_fraction, max_samples, and loader-specific ones (``root`` for fashion-mnist,
    ``size``/``grayscale`` for image folders and HF images).
    """
    if isinstance(name_or_path, str) and name_or_path in DATASETS:
        bound: tuple[str, ...] = ()
        loader, what = DATASETS[name_or_path], "an embedded dataset"
        call = loader
    else:
        path = Path(name_or_path)
        if not path.is_dir():
            name = str(name_or_path)
            close = difflib.get_close_matches(name, list(DATASETS), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise LatentccError(
                f"The 'name_or_path' parameter of load_dataset must be a known dataset name {list(DATASETS)} "
                f"or an existing folder. Got {name!r} instead.{hint}"
            )
        if _is_hf_saved(path):
            check_keywords(
                kw, HF_KEYS + SPLIT_KEYS, f"load_dataset({str(path)!r}) (a saved Hugging Face dataset)"
            )
            return from_hf_disk(path, label_column=label_column, input_column=input_column, **kw)
        loader, what, bound = image_folder, "an image folder", ("root",)  # root: the path itself
        call = functools.partial(image_folder, path)
    for param, value, default in (
        ("label_column", label_column, "label"),
        ("input_column", input_column, None),
    ):
        if value != default:
            flag = "--" + param.replace("_", "-")
            raise param_error(
                param, "load_dataset", f"left unset for {what} (it names a column of a saved Hugging Face "
                "dataset)", value,
                f"Fix: drop {param}= ({flag}); embedded datasets have fixed inputs and labels, and image folders "
                "take their labels from the class sub-folder names.",
            )  # fmt: skip
    check_keywords(kw, _keywords(loader, bound), f"load_dataset({str(name_or_path)!r}) ({what})")
    return call(**kw)


def _keywords(fn: Callable[..., Any], bound: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The keyword arguments ``fn`` takes (less those ``bound`` already), and those it passes on to
    make_splits (its ``**kw``)."""
    params = inspect.signature(fn).parameters.values()
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    own = tuple(p.name for p in params if p.kind in named and p.name not in bound)
    return own + (SPLIT_KEYS if any(p.kind == p.VAR_KEYWORD for p in params) else ())


__all__ = [
    "DATASETS",
    "DatasetSplits",
    "IndexedDataset",
    "animal_mnist",
    "digits",
    "fashion_mnist",
    "from_arrays",
    "from_hf",
    "from_hf_disk",
    "image_folder",
    "list_datasets",
    "load_dataset",
    "make_splits",
    "mnist5k",
    "read_idx",
    "rotten_tomatoes",
]
