"""Datasets that yield ``(x, y, idx)``: embedded real data, adapters for user data, and a registry.

``load_dataset("animal-mnist")`` loads an embedded dataset by name; ``load_dataset(path)`` reads a
folder of class sub-folders of images, or a folder written by HF ``datasets`` ``save_to_disk``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from latentcc.data.adapters import from_arrays, from_hf, from_hf_disk, image_folder
from latentcc.data.base import DatasetSplits, IndexedDataset, make_splits
from latentcc.data.embedded import animal_mnist, digits, fashion_mnist, mnist5k, read_idx, rotten_tomatoes
from latentcc.errors import LatentccError

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


def load_dataset(name_or_path: str | Path, **kw: Any) -> DatasetSplits:
    """Splits of a named embedded dataset, or of a folder (class sub-folders of images, or an HF save).

    Keyword arguments go to the loader: seed, val_fraction, test_fraction, max_samples, and
    loader-specific ones (``root`` for fashion-mnist, ``size``/``grayscale`` for image folders).
    """
    if isinstance(name_or_path, str) and name_or_path in DATASETS:
        return DATASETS[name_or_path](**kw)
    path = Path(name_or_path)
    if path.is_dir():
        return from_hf_disk(path, **kw) if _is_hf_saved(path) else image_folder(path, **kw)
    name = str(name_or_path)
    close = difflib.get_close_matches(name, list(DATASETS), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise LatentccError(
        f"The 'name_or_path' parameter of load_dataset must be a known dataset name {list(DATASETS)} or an "
        f"existing folder. Got {name!r} instead.{hint}"
    )


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
