"""Transfer methods: which parameters fine-tune, and what is added to the model or the loss.

Definitions: docs/methods.md (LP, Layer-FT, SCL-FT, GC regularisation).

==========  ==================================================================================
``ft``        every parameter trains (full fine-tuning)
``lp``        the head only (linear probing)
``layer_ft``  one intermediate ``block`` + the head
``scl_ft``    ``block`` + head + a skip carrying the block's pooled output to the head's input
``gc_reg``    every parameter, and the loss gains ``gc_weight`` · GC of an embedding
==========  ==================================================================================

:func:`apply_method` is the one entry: it sets ``requires_grad`` on the model's parameters (that is its
point: it mutates the model) and returns a :class:`MethodSetup`: the model to train, exact parameter
counts, and for ``gc_reg`` a penalty that ``fit(penalty=...)`` adds to each step's loss. The jobs live
apart: :mod:`latentcc.train.freeze` (which layers train), :mod:`latentcc.train.scl_ft` (the skip's model
surgery) and :mod:`latentcc.train.gc_reg` (the GC penalty).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from latentcc.config import MethodConfig
from latentcc.plumbing.errors import param_error
from latentcc.train.freeze import FUNC, resolve_block, resolve_head, set_trainable, trainable_parameters
from latentcc.train.gc_reg import Penalty, gc_reg_penalty
from latentcc.train.scl_ft import with_skip

__all__ = ["MethodSetup", "apply_method"]


@dataclass
class MethodSetup:
    """What :func:`apply_method` prepared: train ``model`` (with ``penalty`` added to the loss if set)."""

    model: nn.Module  # the model to train: the given one, or a SkipConnection around it (scl_ft)
    method: str
    trainable: int  # parameters with requires_grad (shared parameters counted once)
    total: int  # all parameters of ``model``
    trainable_names: list[str] = field(repr=False)
    penalty: Penalty | None = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "trainable": self.trainable,
            "total": self.total,
            "fraction": self.trainable / self.total if self.total else 0.0,
        }


def apply_method(
    model: nn.Module, cfg: MethodConfig | None = None, *, example_input: Any = None
) -> MethodSetup:
    """Prepare ``model`` for the transfer method ``cfg.method``; MUTATES the model's ``requires_grad`` flags.

    Parameters outside what the method trains get ``requires_grad=False`` (and ``True`` inside), so
    ``fit`` hands only the trainable ones to the optimizer and frozen weights stay bit-identical.
    Buffers are not parameters: BatchNorm running statistics of frozen layers still update in
    training mode, as in plain PyTorch.
    Layers are named as in ``latentcc.list_layers(model)`` (exact, dotted suffix or ``"re:<regex>"``
    matching one layer). An empty layer name means "not set": ``cfg.head`` empty = the last ``nn.Linear``
    in ``named_modules`` order, ``cfg.gc_layer`` empty = the head's input, ``cfg.block`` empty is refused
    by the methods that need a block (the error lists candidates).

    ``scl_ft`` returns a :class:`~latentcc.train.scl_ft.SkipConnection` around ``model`` (its state dict has
    ``base.*`` and ``skip.*`` keys); with ``skip="concat"`` the head inside ``model`` is replaced by a wider
    one. The widths of the block's pooled output and of the head's input are measured by one eval-mode,
    no-grad forward of ``example_input`` (a batch the model accepts); without it they are read from
    the block (``out_features``/``out_channels``, ``skip_pool="avg"``) and the head (an ``nn.Linear``).

    ``gc_reg`` trains every parameter and returns ``penalty(model, x, y, logits) = gc_weight ·
    gc_penalty`` of the embedding ``cfg.gc_layer`` (see :func:`~latentcc.train.gc_reg.gc_reg_penalty` for
    its cost). It needs float tensor inputs (images).

    Settings the chosen method does not read (``gc_weight`` with ``ft``, ``block`` with ``lp``, ...) must be
    left at their defaults: they would change nothing, so the error names them and the method they belong to.
    """
    if not isinstance(model, nn.Module):
        raise param_error("model", FUNC, "a torch.nn.Module", type(model).__name__)
    cfg = MethodConfig() if cfg is None else cfg
    if not isinstance(cfg, MethodConfig):
        raise param_error("cfg", FUNC, "a latentcc.MethodConfig", type(cfg).__name__)
    _check_settings_used(cfg)
    penalty: Penalty | None = None
    train: list[str]  # names of the modules whose parameters train; "" = the whole model
    if cfg.method == "ft":
        train = [""]
    elif cfg.method == "gc_reg":
        train = [""]
        penalty = gc_reg_penalty(model, cfg, example_input)
    else:
        head = resolve_head(model, cfg.head)
        if cfg.method == "lp":
            train = [head]
        else:
            block = resolve_block(model, cfg.block, head, cfg.method)
            if cfg.method == "layer_ft":
                train = [block, head]
            else:  # scl_ft
                model = with_skip(model, block, head, cfg, example_input)
                train = [f"base.{block}", f"base.{head}", "skip"]
    names = set_trainable(model, train)
    total = sum(p.numel() for p in model.parameters())
    return MethodSetup(model, cfg.method, trainable_parameters(model), total, names, penalty)


# The MethodConfig fields each method reads; one set away from its default is refused by the others.
_READS = {
    "ft": (),
    "lp": ("head",),
    "layer_ft": ("block", "head"),
    "scl_ft": ("block", "head", "skip", "skip_pool"),
    "gc_reg": ("head", "gc_weight", "gc_layer", "gc_projections"),  # head: only while gc_layer is empty
}
_OPTIONAL = ("block", "head", "skip", "skip_pool", "gc_weight", "gc_layer", "gc_projections")


def _check_settings_used(cfg: MethodConfig) -> None:
    """Refuse settings the chosen method ignores (e.g. --gc-weight with --method ft): they would change nothing."""
    default = MethodConfig()
    reads = set(_READS[cfg.method])
    if cfg.method == "gc_reg" and cfg.gc_layer:
        reads.discard("head")
    unused = [f for f in _OPTIONAL if f not in reads and getattr(cfg, f) != getattr(default, f)]
    if not unused:
        return
    said = "; ".join(
        f"{f}={getattr(cfg, f)!r} (--{f.replace('_', '-')}) is read by "
        + ", ".join(m for m, fields in _READS.items() if f in fields)
        for f in unused
    )
    note = (
        " (gc_reg reads head only while gc_layer is empty.)"
        if cfg.method == "gc_reg" and "head" in unused
        else ""
    )
    raise param_error(
        "method", FUNC, f"a method that reads the settings given ({said})", cfg.method,
        f"Method '{cfg.method}' ignores them, so they would change nothing. Fix: choose the method they "
        f"belong to, or leave them out.{note}",
    )  # fmt: skip
