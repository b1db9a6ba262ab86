"""One row per layer: its name (what ``layers=`` takes), its module type and its output shape.

Output shapes come from two forward passes on placeholder inputs of different batch sizes (and, for
text, lengths): a dimension that follows the batch size prints as ``B``, one that follows the number
of tokens as ``T``. Only the embedded model kinds have a known input (``ImageClassifier``,
``TextClassifier``); for other models the shape column stays empty.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from latentcc.latents.layers import hooks, model_mode
from latentcc.models.image import ImageClassifier
from latentcc.models.text import TextClassifier

# Two placeholder batches: 2 and 3 samples; for text, 5 and 9 tokens ([CLS] + words + [SEP] for BERT-like
# tokenizers). Distinct sizes, so a dimension's role is read off the pair of values it takes.
_BATCHES = (2, 3)
_TEXTS = ("a b c", "a b c d e f g")


def layer_summary(model: nn.Module) -> list[dict[str, str | None]]:
    """``[{"layer": name, "type": class name, "output_shape": "(B, 256)" or None}, ...]`` in
    ``named_modules`` order (the names ``list_layers`` gives).

    The shape is None where the layer did not run, returned no tensor, or the model's input is
    unknown (not an ``ImageClassifier`` / ``TextClassifier``). The model's train/eval mode is restored.
    """
    rows: list[dict[str, str | None]] = [
        {"layer": name, "type": type(module).__name__, "output_shape": None}
        for name, module in model.named_modules()
        if name
    ]
    inputs = _placeholders(model)
    if inputs is None:
        return rows
    first, second = (_output_shapes(model, x) for x in inputs)
    sizes: dict[tuple[int, ...], str] = {_BATCHES: "B"}
    if isinstance(model, TextClassifier):
        sizes[tuple(len(model.tokenize([t])["input_ids"][0]) for t in _TEXTS)] = "T"
    for row in rows:
        a, b = first.get(str(row["layer"])), second.get(str(row["layer"]))
        if a is not None and b is not None and len(a) == len(b):
            dims = [str(u) if u == v else sizes.get((u, v), "?") for u, v in zip(a, b, strict=True)]
            row["output_shape"] = "(" + ", ".join(dims) + ")"
    return rows


def _placeholders(model: nn.Module) -> tuple[Any, Any] | None:
    if isinstance(model, ImageClassifier):
        side, c = model.input_size, model.in_channels
        return (torch.zeros(_BATCHES[0], c, side, side), torch.zeros(_BATCHES[1], c, side, side))
    if isinstance(model, TextClassifier):
        return ([_TEXTS[0]] * _BATCHES[0], [_TEXTS[1]] * _BATCHES[1])
    return None


def _output_shapes(model: nn.Module, x: Any) -> dict[str, tuple[int, ...]]:
    """``{layer name: output shape}`` of one forward pass (eval mode, no gradients); hooks removed after."""
    shapes: dict[str, tuple[int, ...]] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(module: nn.Module, args: Any, output: Any) -> None:
            t = _first_tensor(output)
            if t is not None:
                shapes[name] = tuple(t.shape)

        return record

    forward = [(m, hook(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad(), model_mode(model, training=False), hooks(forward=forward):
            model(x)
    except Exception:  # a model that cannot run the placeholder: the table keeps names and types
        return {}
    return shapes


def _first_tensor(output: Any) -> Tensor | None:
    """The tensor ``capture`` would take: the output, its first element, or a mapping's last_hidden_state."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, tuple | list) and output:
        return _first_tensor(output[0])
    if isinstance(output, Mapping):
        if isinstance(output.get("last_hidden_state"), Tensor):
            return output["last_hidden_state"]
        return next((v for v in output.values() if isinstance(v, Tensor)), None)
    return None


__all__ = ["layer_summary"]
