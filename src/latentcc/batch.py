"""What a batch is: ``(x, y, idx)`` (or ``(x, y)``), and how its input moves to a device."""

from __future__ import annotations

from typing import Any

import torch

from latentcc.errors import LatentccError


def to_device(x: Any, device: torch.device) -> Any:
    """Move a batch input to ``device``: tensors and dicts of tensors move; text (lists of str) stays."""
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    return x


def unpack_batch(batch: Any, *, need_index: bool = False) -> tuple[Any, torch.Tensor, torch.Tensor | None]:
    """(x, y, idx) from a batch; plain (x, y) batches give idx None unless ``need_index``."""
    if isinstance(batch, (list, tuple)) and len(batch) == 3:
        return batch[0], batch[1], batch[2]
    if isinstance(batch, (list, tuple)) and len(batch) == 2 and not need_index:
        return batch[0], batch[1], None
    n = len(batch) if hasattr(batch, "__len__") else "?"
    want = "(x, y, idx)" if need_index else "(x, y, idx) or (x, y)"
    raise LatentccError(
        f"Each batch must be {want}; got {type(batch).__name__} of length {n}. "
        "Sample indices tie each latent to its sample whatever the loader's order: wrap your data with "
        "latentcc.data.from_arrays(...), or make your Dataset's __getitem__ return (x, y, index)."
    )
