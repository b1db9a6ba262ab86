"""Classification metrics computed on the model's device (one host sync per pass, not per batch)."""

from __future__ import annotations

import torch


def topk_correct(logits: torch.Tensor, y: torch.Tensor, ks: tuple[int, ...]) -> dict[int, torch.Tensor]:
    """Per-sample correctness (bool, shape (B,)) of top-k predictions for each k in ``ks``."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices  # (B, kmax)
    hit = top == y[:, None]
    return {k: hit[:, : min(k, kmax)].any(dim=1) for k in ks}
