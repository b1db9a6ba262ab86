"""Which parameters train: the head and block a method names, and ``requires_grad`` set to match.

Layers are named as in ``latentcc.list_layers(model)`` (exact, dotted suffix or ``"re:<regex>"`` matching
one layer); an empty name means "not set" (docs/methods.md): the head is then the last ``nn.Linear``, and a
method that needs a block refuses with the candidates.
"""

from __future__ import annotations

from torch import nn

from latentcc.latents.layers import all_layers, resolve_layer
from latentcc.plumbing.errors import param_error

__all__ = ["layers_with_parameters", "resolve_block", "resolve_head", "set_trainable", "trainable_parameters"]

FUNC = "apply_method"  # the public function whose parameters the errors below name
HOW_TO_LIST = "List layer names with `latentcc layers --model ...` or latentcc.list_layers(model)."


def trainable_parameters(model: nn.Module) -> int:
    """Number of parameters of ``model`` with ``requires_grad`` (a parameter shared by modules counts once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def set_trainable(model: nn.Module, modules: list[str]) -> list[str]:
    """``requires_grad`` = (the parameter belongs to one of ``modules``; ``""`` = the whole model); MUTATES
    the model's flags and returns the names of the trainable parameters."""
    names = []
    for name, p in model.named_parameters():
        on = any(m == "" or name.startswith(m + ".") for m in modules)
        p.requires_grad_(on)
        if on:
            names.append(name)
    return names


def resolve_head(model: nn.Module, head: str) -> str:
    """The full name of the classifier layer ``head`` names; empty = the last ``nn.Linear`` of the model."""
    if head:
        name = resolve_layer(model, head, func=FUNC, param="head")
    else:
        linears = [n for n, m in model.named_modules() if n and isinstance(m, nn.Linear)]
        if not linears:
            raise param_error(
                "head", FUNC, "the name of the classifier layer (the model has no nn.Linear to pick)", head,
                f"Pass head=... (--head NAME). {HOW_TO_LIST}",
            )  # fmt: skip
        name = linears[-1]
    if next(model.get_submodule(name).parameters(), None) is None:
        raise param_error("head", FUNC, "a layer with parameters (the classifier)", name, HOW_TO_LIST)
    return name


def resolve_block(model: nn.Module, block: str, head: str, method: str) -> str:
    """The full name of the intermediate layer ``block`` names for ``method`` (layer_ft, scl_ft), apart from
    the resolved ``head``; empty is refused with the layers that could be meant."""
    if not block:
        cands = [n for n in layers_with_parameters(model) if n != head]
        shown = ", ".join(cands[:12]) + (f", ... ({len(cands)} in all)" if len(cands) > 12 else "")
        raise param_error(
            "block", FUNC, f"the layer that trains for method '{method}'", block,
            f"Pass block=NAME (--block NAME); candidates: {shown}.",
        )  # fmt: skip
    name = resolve_layer(model, block, func=FUNC, param="block")
    if name == head or head.startswith(name + ".") or name.startswith(head + "."):
        raise param_error(
            "block", FUNC, f"an intermediate layer apart from the head '{head}' (not it, inside it or around it)",
            block, "Pick a layer before the head; the head trains anyway.",
        )  # fmt: skip
    if method == "layer_ft" and next(model.get_submodule(name).parameters(), None) is None:
        raise param_error(
            "block", FUNC, "a layer with parameters for method 'layer_ft' (otherwise only the head trains)",
            block, f"Candidates: {', '.join(n for n in layers_with_parameters(model) if n != head)}.",
        )  # fmt: skip
    return name


def layers_with_parameters(model: nn.Module) -> list[str]:
    """The layers of ``all_layers(model)`` that own parameters (what a block can be)."""
    return [n for n in all_layers(model) if next(model.get_submodule(n).parameters(), None) is not None]
