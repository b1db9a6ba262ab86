"""What a profile reads: the data as named loaders, class names, per-sample groups and the GC examples.

``profile`` accepts ``DatasetSplits``, a ``{"train": ..., "test": ...}`` mapping of datasets or DataLoaders,
or one dataset/loader; :func:`as_splits` turns each into DataLoaders yielding ``(x, y, index)``, subsampled
to ``ProbeConfig.max_samples_per_split`` samples per split (stratified, seeded).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from latentcc.config import ProbeConfig
from latentcc.plumbing.errors import param_error


def as_splits(data: Any, cfg: ProbeConfig) -> dict[str, DataLoader[Any]]:
    """Named loaders: 'train' and, when available, 'test' (falling back to 'val')."""
    from latentcc.data import DatasetSplits

    if isinstance(data, DatasetSplits):
        raw: dict[str, Any] = {"train": data.train, "test": data.test if len(data.test) else data.val}
    elif isinstance(data, Mapping):
        if "train" not in data:
            raise param_error("data", "profile", "a mapping with a 'train' entry (and 'test')", sorted(data))
        raw = {"train": data["train"]}
        for key in ("test", "val"):
            if key in data and data[key] is not None:
                raw["test"] = data[key]
                break
    else:
        raw = {"train": data}
    return {split: _loader(d, cfg, split) for split, d in raw.items()}


def _loader(d: Any, cfg: ProbeConfig, split: str) -> DataLoader[Any]:
    from latentcc.data import DatasetSplits, IndexedDataset
    from latentcc.data.base import stratified_indices

    n = cfg.max_samples_per_split
    if isinstance(d, DatasetSplits):  # e.g. {"train": from_arrays(...)}: a whole set of splits as one split
        raise param_error(
            "data", "profile", f"one dataset or DataLoader per entry of the mapping, also its '{split}' entry",
            type(d).__name__, "Pass the DatasetSplits itself as data, or its .train and .test splits as the entries.",
        )  # fmt: skip
    if isinstance(d, DataLoader):
        if not n:
            return d
        if not isinstance(d.dataset, IndexedDataset):
            raise param_error(
                "max_samples_per_split", "profile", "0 when the data is a DataLoader over a plain dataset", n,
                "Pass a latentcc IndexedDataset (latentcc.data.from_arrays) or subset the data yourself.",
            )  # fmt: skip
        ds = d.dataset.subset(stratified_indices(d.dataset.targets, n, seed=cfg.seed))
        return DataLoader(ds, batch_size=d.batch_size or cfg.batch_size, collate_fn=d.collate_fn)
    if isinstance(d, IndexedDataset):
        if n:
            d = d.subset(stratified_indices(d.targets, n, seed=cfg.seed))
        if len(d) == 0:
            raise param_error("data", "profile", f"a non-empty '{split}' split", "0 samples")
        return DataLoader(d, batch_size=cfg.batch_size)
    if hasattr(d, "__getitem__") and hasattr(d, "__len__"):
        if n:
            raise param_error(
                "max_samples_per_split", "profile", "0 for a plain torch Dataset", n,
                "Wrap the data with latentcc.data.from_arrays to subsample, or subset it yourself.",
            )  # fmt: skip
        return DataLoader(d, batch_size=cfg.batch_size)
    raise param_error(
        "data", "profile",
        "DatasetSplits, a {'train': ..., 'test': ...} mapping, a Dataset or a DataLoader yielding (x, y, index)",
        type(d).__name__,
    )  # fmt: skip


def split_length(loader: DataLoader[Any]) -> int | None:
    """Samples in a loader's dataset, or None when it has no length (an iterable dataset)."""
    try:
        return len(loader.dataset)  # type: ignore[arg-type]
    except TypeError:
        return None


def class_names(loader: DataLoader[Any], labels: np.ndarray) -> list[str]:
    """The dataset's class names when it has one per label, else the label ids as strings."""
    names = getattr(loader.dataset, "classes", None)
    if names is not None and len(names) > int(labels.max()):
        return [str(c) for c in names]
    return [str(c) for c in range(int(labels.max()) + 1)]


def sample_groups(groups: Any, labels: np.ndarray, classes: list[str]) -> np.ndarray:
    """Per-sample group ids from a per-class sequence or a {class name or id: group} mapping."""
    if isinstance(groups, Mapping):
        per_class: list[Any] = []
        for c, name in enumerate(classes):
            if name in groups:
                per_class.append(groups[name])
            elif c in groups or str(c) in groups:
                per_class.append(groups[c] if c in groups else groups[str(c)])
            else:
                raise param_error(
                    "groups", "profile", "a mapping that gives every class a group",
                    f"no entry for class {c} ({name!r})", f"Classes are {classes}.",
                )  # fmt: skip
    else:
        per_class = list(groups)
        if len(per_class) != len(classes):
            raise param_error(
                "groups",
                "profile",
                f"one group per class ({len(classes)} classes)",
                f"{len(per_class)} entries",
            )
    _, codes = np.unique(np.array([str(g) for g in per_class]), return_inverse=True)
    return codes[labels]


def gc_inputs(loader: DataLoader[Any], cfg: ProbeConfig, notes: list[str]) -> torch.Tensor | None:
    """``gc_examples`` training inputs (seeded, stratified) as one float tensor, or None (with a note)."""
    from latentcc.data.base import stratified_indices

    ds = loader.dataset
    targets = getattr(ds, "targets", None)
    n = len(ds)  # type: ignore[arg-type]
    pick = (
        stratified_indices(targets, cfg.gc_examples, seed=cfg.seed)
        if targets is not None
        else np.random.default_rng(cfg.seed).permutation(n)[: cfg.gc_examples]
    )
    xs = [ds[int(i)][0] for i in pick]
    if not all(isinstance(x, torch.Tensor) and x.is_floating_point() for x in xs):
        notes.append(
            "gc skipped: geometric complexity is a derivative w.r.t. the input and these inputs are not float "
            "tensors (e.g. text tokens)."
        )
        return None
    return torch.stack(xs)
