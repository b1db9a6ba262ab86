"""Layer naming, matching, capture hooks and pooling on a table of tiny named models."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from latentcc.latents.layers import (
    capture,
    hooks,
    list_layers,
    match_layer,
    model_mode,
    pool_latent,
    resolve_layer,
    resolve_layers,
)
from latentcc.plumbing.errors import LatentccError


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin0 = nn.Linear(4, 8)
        self.act = nn.ReLU()
        self.lin1 = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin1(self.act(self.lin0(x)))


class TupleLayer(nn.Module):
    """Returns (hidden, extra) like a Hugging Face layer."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.proj(x)
        return h, h.sum()


class DictLayer(nn.Module):
    """Returns a ModelOutput-like OrderedDict."""

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict(logits=x[:, :2], last_hidden_state=2 * x)


class TupleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = TupleLayer()
        self.out = DictLayer()
        self.head = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.block(x)
        return self.head(self.out(h)["last_hidden_state"])


class Backbone(nn.Module):
    """Two layers named 'fc' at different depths, plus 'myfc' (a suffix only without the dot)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.ModuleDict(
            {"head": nn.ModuleDict({"fc": nn.Linear(4, 4)}), "neck": nn.ModuleDict({"fc": nn.Linear(4, 4)})}
        )
        self.myfc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.myfc(self.backbone["neck"]["fc"](self.backbone["head"]["fc"](x)))


def nested() -> nn.Module:
    return nn.Sequential(nn.Sequential(nn.Linear(4, 6), nn.ReLU()), nn.Linear(6, 2))


# (factory, requested name, full name it resolves to, captured shape for a (2, 4) input)
TABLE = [
    (MLP, "lin0", "lin0", (2, 8)),
    (MLP, "act", "act", (2, 8)),
    (nested, "0.1", "0.1", (2, 6)),
    (nested, "1", "1", (2, 2)),
    (TupleNet, "block", "block", (2, 5)),
    (TupleNet, "out", "out", (2, 5)),
    (Backbone, "head.fc", "backbone.head.fc", (2, 4)),
    (Backbone, "myfc", "myfc", (2, 2)),
]


def test_list_layers() -> None:
    assert list_layers(MLP()) == ["lin0", "act", "lin1"]
    assert list_layers(nested()) == ["0", "0.0", "0.1", "1"]
    assert list_layers(nested(), leaves_only=True) == ["0.0", "0.1", "1"]
    assert list_layers(Backbone(), leaves_only=True) == ["backbone.head.fc", "backbone.neck.fc", "myfc"]


@pytest.mark.parametrize(("factory", "request_", "full", "shape"), TABLE)
def test_resolve_and_capture_table(factory, request_, full, shape) -> None:
    torch.manual_seed(0)
    model = factory()
    resolved = resolve_layers(model, request_)
    assert list(resolved) == [full]
    assert resolved[full] is dict(model.named_modules())[full]
    x = torch.randn(2, 4)
    with capture(model, request_) as out:
        model(x)
    assert tuple(out[full].shape) == shape
    assert all(not m._forward_hooks for m in model.modules())


def test_capture_values_and_gradient() -> None:
    torch.manual_seed(0)
    model = MLP()
    x = torch.randn(3, 4)
    with capture(model, ["lin0", "lin1"]) as out:
        y = model(x)
    torch.testing.assert_close(out["lin0"], model.lin0(x))
    assert out["lin1"] is y
    out["lin0"].sum().backward()  # the latent keeps its graph: a loss on it reaches the weights
    assert model.lin0.weight.grad is not None and model.lin0.weight.grad.abs().sum() > 0
    with capture(model, "lin0", detach=True) as out:
        model(x)
    assert not out["lin0"].requires_grad


def test_capture_tuple_and_dict_outputs() -> None:
    torch.manual_seed(0)
    model = TupleNet()
    x = torch.randn(2, 4)
    with capture(model, ["block", "out"]) as out:
        model(x)
    h = model.block.proj(x)
    torch.testing.assert_close(out["block"], h)  # first element of the tuple
    torch.testing.assert_close(out["out"], 2 * h)  # last_hidden_state of the dict


def test_hooks_removed_after_exception() -> None:
    model = MLP()
    with pytest.raises(RuntimeError, match="boom"), capture(model, ["lin0", "lin1"]):
        model(torch.randn(2, 4))
        raise RuntimeError("boom")
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(RuntimeError), capture(model, "lin0"):
        model(torch.randn(2, 5))  # shape error inside forward
    assert all(not m._forward_hooks for m in model.modules())


def test_uncapturable_output_names_layer_and_type() -> None:
    class Bad(nn.Module):
        def forward(self, x: torch.Tensor) -> str:
            return "not a tensor"

    model = nn.Sequential(nn.Linear(4, 4), Bad())
    with pytest.raises(LatentccError, match=r"Layer '1' returned str"), capture(model, "1"):
        model(torch.randn(2, 4))
    assert all(not m._forward_hooks for m in model.modules())


def test_suffix_only_at_dot_boundary_and_ambiguity() -> None:
    model = Backbone()
    with pytest.raises(LatentccError) as err:
        resolve_layers(model, "fc")  # 'myfc' is not a match; two 'fc' layers are
    msg = str(err.value)
    assert "backbone.head.fc" in msg and "backbone.neck.fc" in msg and "'layers'" in msg
    assert "myfc" not in msg.split("suffix of")[1]
    assert list(resolve_layers(model, "neck.fc")) == ["backbone.neck.fc"]


def test_regex_order_and_duplicates() -> None:
    model = Backbone()
    assert list(resolve_layers(model, "re:backbone\\.\\w+\\.fc")) == ["backbone.head.fc", "backbone.neck.fc"]
    assert list(resolve_layers(model, "re:.*fc")) == ["backbone.head.fc", "backbone.neck.fc", "myfc"]
    # requested order kept, duplicates (same full name via different requests) removed
    got = resolve_layers(model, ["myfc", "neck.fc", "backbone.neck.fc", "re:backbone\\..*\\.fc"])
    assert list(got) == ["myfc", "backbone.neck.fc", "backbone.head.fc"]
    with pytest.raises(LatentccError, match="fully match"):
        resolve_layers(model, "re:fc")  # fullmatch, not search
    with pytest.raises(LatentccError, match="Regex error"):
        resolve_layers(model, "re:(")


def test_unknown_name_lists_close_matches_and_how_to_list() -> None:
    with pytest.raises(LatentccError) as err:
        resolve_layers(MLP(), "lin2", func="collect_latents")
    msg = str(err.value)
    assert "'layers' parameter of collect_latents" in msg and "'lin2'" in msg
    assert "'lin1'" in msg and "'lin0'" in msg
    assert "latentcc.list_layers(model)" in msg and "latentcc layers --model" in msg
    with pytest.raises(LatentccError, match=r"'fc_layers\.1'"):
        resolve_layers(nn.Sequential(OrderedDict(fc_layers=nested())), "fc_layer.1")


@pytest.mark.parametrize("bad", [[], [""], 3, ["lin0", 1], None])
def test_invalid_layers_argument(bad) -> None:
    with pytest.raises(LatentccError, match="'layers' parameter of resolve_layers"):
        resolve_layers(MLP(), bad)


def test_pool_latent_shapes_and_values() -> None:
    torch.manual_seed(0)
    img = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(pool_latent(img), img.mean(dim=(2, 3)))
    assert pool_latent(img, "flatten").shape == (2, 60)
    seq = torch.randn(2, 4, 6)
    torch.testing.assert_close(pool_latent(seq), seq.mean(dim=1))
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    pooled = pool_latent(seq, mask=mask)
    torch.testing.assert_close(pooled[0], seq[0, :2].mean(dim=0))
    torch.testing.assert_close(pooled[1], seq[1].mean(dim=0))
    flat = torch.randn(2, 7)
    assert pool_latent(flat) is flat
    assert pool_latent(torch.randn(2, 3, 2, 2, 2)).shape == (2, 3)


def test_pool_latent_validation() -> None:
    with pytest.raises(LatentccError, match="'pool' parameter of pool_latent must be one of"):
        pool_latent(torch.randn(2, 3), "max")
    with pytest.raises(LatentccError, match="'t' parameter"):
        pool_latent(torch.randn(3))
    with pytest.raises(LatentccError, match="'mask' parameter"):
        pool_latent(torch.randn(2, 4, 6), mask=torch.ones(2, 5))


class Emits(nn.Module):
    """Returns ``make(h)`` for h = lin(x): whatever shape of output a test needs."""

    def __init__(self, make) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 5)
        self.make = make

    def forward(self, x: torch.Tensor):
        return self.make(self.lin(x))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda h: {"logits": h[:, :2], "hidden": h},
            r"'layer' returned a dict with several tensors \['logits', 'hidden'\]",
        ),
        (lambda h: {"n": 3}, r"'layer' returned a dict with no tensor"),
        (lambda h: (None, h), r"'layer' returned a tuple whose first element is NoneType"),
        (lambda h: [], r"'layer' returned a list whose first element is nothing"),
        (lambda h: 7, r"'layer' returned int, not a tensor"),
        (
            lambda h: h.sum(1),
            r"'layer' returned a tensor of shape \(2,\); a latent needs a batch and a feature",
        ),
    ],
)
def test_capture_refuses_outputs_without_one_clear_latent(make, message) -> None:
    model = nn.Sequential()
    model.add_module("layer", Emits(make))
    with pytest.raises(LatentccError, match=message + r".*Capture the submodule"), capture(model, ["layer"]):
        model(torch.randn(2, 4))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_capture_takes_the_only_tensor_of_a_dict_and_says_whether_the_model_ran() -> None:
    model = nn.Sequential()
    model.add_module("layer", Emits(lambda h: {"hidden": h, "count": 2}))
    x = torch.randn(2, 4)
    with capture(model, ["layer"]) as out:
        assert not out.model_ran
        model(x)
    assert out.model_ran
    torch.testing.assert_close(out["layer"], model.layer.lin(x))


def test_capture_refuses_layers_inside_a_compiled_module() -> None:
    inner = MLP()
    compiled = torch.compile(inner)  # lazy: nothing compiles until a call
    with pytest.raises(
        LatentccError,
        match=r"'_orig_mod.lin0' is inside a torch.compile'd module \(the model itself\).*model._orig_mod",
    ):
        with capture(compiled, ["lin0"]):
            pass
    outer = nn.Sequential()
    outer.add_module("body", torch.compile(MLP()))
    with pytest.raises(LatentccError, match=r"its submodule 'body'.*\(body._orig_mod\)"):
        with capture(outer, ["body._orig_mod.lin1"]):
            pass
    with capture(inner, ["lin0"]) as out:  # the uncompiled module: captured as usual
        inner(torch.randn(2, 4))
    assert out["lin0"].shape == (2, 8)
    # resolving names alone (e.g. which parameters train) is fine on a compiled model; capturing is not
    assert list(resolve_layers(compiled, ["lin0"])) == ["_orig_mod.lin0"]
    with pytest.raises(LatentccError, match=r"'_orig_mod.lin0' is inside a torch.compile'd module"):
        resolve_layers(compiled, ["lin0"], for_capture=True)
    with pytest.raises(LatentccError, match=r"\(the model itself\).*model._orig_mod"):  # a resolved mapping
        with capture(compiled, {"_orig_mod.lin0": inner.lin0}):
            pass


def test_the_compiled_check_runs_once_per_resolution_not_every_capture(monkeypatch) -> None:
    """capture runs every training step: with layers resolved once (a mapping, as LatentClusterCorrection
    passes) it must not walk the model for compiled parts again."""
    from latentcc.config import LCCConfig
    from latentcc.latents import layers as layers_mod
    from latentcc.lcc.correction import LatentClusterCorrection

    walks: list[str] = []
    real = layers_mod.compiled_part
    monkeypatch.setattr(layers_mod, "compiled_part", lambda m, name: walks.append(name) or real(m, name))
    model = MLP()
    resolved = resolve_layers(model, ["lin0", "lin1"], for_capture=True)
    assert walks == ["lin0", "lin1"]
    for _ in range(3):
        with capture(model, resolved) as out:
            model(torch.randn(2, 4))
        assert set(out) == {"lin0", "lin1"}
    assert walks == ["lin0", "lin1"]
    walks.clear()
    lcc = LatentClusterCorrection(LCCConfig(layers=("lin1",)))
    for _ in range(3):
        with lcc.capture(model) as out:
            model(torch.randn(2, 4))
        assert out["lin1"].shape == (2, 3)
    assert walks == ["lin1"]  # once, when the LCC layers were resolved for this model
    outer = nn.Sequential()
    outer.add_module("body", torch.compile(MLP()))
    with pytest.raises(LatentccError, match=r"its submodule 'body'.*\(body._orig_mod\)"):
        with LatentClusterCorrection(LCCConfig(layers=("lin1",))).capture(outer):
            pass


def test_match_layer_returns_what_matched_and_why_not_as_data() -> None:
    model = Backbone()
    assert match_layer(model, "neck.fc").names == ("backbone.neck.fc",)
    assert match_layer(model, "re:.*fc").names == ("backbone.head.fc", "backbone.neck.fc", "myfc")
    ambiguous = match_layer(model, "fc")  # no exception: the caller decides which parameter to name
    assert ambiguous.names == () and ambiguous.expected == "a name that identifies one layer"
    assert ambiguous.hint.startswith("It is a suffix of 2 layers: ['backbone.head.fc', 'backbone.neck.fc']")
    missing = match_layer(MLP(), "lin2")
    assert missing.names == () and missing.hint.startswith("Did you mean 'lin1', 'lin0'?")  # closest first
    assert match_layer(model, "re:(").hint.startswith("Regex error: ")
    assert match_layer(model, "myfc") == match_layer(model, "myfc") and match_layer(model, "myfc").hint == ""


def test_resolve_layer_names_the_callers_parameter() -> None:
    model = Backbone()
    assert resolve_layer(model, "head.fc", func="f") == "backbone.head.fc"
    with pytest.raises(LatentccError, match=r"^The 'block' parameter of f must be the name of one layer .*"
                       r"Got 'fcc' instead\. Did you mean 'backbone.head.fc', 'backbone.neck.fc'"):  # fmt: skip
        resolve_layer(model, "fcc", func="f", param="block")
    with pytest.raises(LatentccError, match=r"'head' parameter of f must be a name that selects exactly one "
                       r"layer.*It matches \['backbone.head.fc', 'backbone.neck.fc', 'myfc'\]"):  # fmt: skip
        resolve_layer(model, "re:.*fc", func="f", param="head")
    with pytest.raises(LatentccError, match=r"'layer' parameter of f.*It is a suffix of 2 layers"):
        resolve_layer(model, "fc", func="f")


def test_hooks_are_removed_on_exit_and_on_error_and_pre_hooks_may_change_inputs() -> None:
    model = MLP()
    seen: list[tuple[int, ...]] = []
    x = torch.randn(2, 4)

    def double_input(module: nn.Module, args: tuple) -> tuple:
        return (2 * args[0],)

    def record(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        seen.append(tuple(out.shape))

    with hooks(pre=[(model.lin1, double_input)], forward=[(model.lin0, record), (model.act, record)]):
        y = model(x)
    assert seen == [(2, 8), (2, 8)]
    torch.testing.assert_close(
        y, model.lin1(2 * model.act(model.lin0(x)))
    )  # the pre-hook changed lin1's input
    torch.testing.assert_close(model(x), model.lin1(model.act(model.lin0(x))))  # and is gone
    with pytest.raises(RuntimeError, match="boom"), hooks(forward=[(model.lin0, record)]):
        raise RuntimeError("boom")
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_model_mode_restores_each_modules_own_mode_also_on_error() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout(0.5))
    model.train()
    model[1].eval()  # a frozen BatchNorm inside a training model: model.train(True) would not give this back
    before = [m.training for m in model.modules()]
    with model_mode(model, training=False):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == before == [True, True, False, True]
    with pytest.raises(RuntimeError, match="boom"), model_mode(model.eval(), training=True):
        assert all(m.training for m in model.modules())
        raise RuntimeError("boom")
    assert not any(m.training for m in model.modules())
