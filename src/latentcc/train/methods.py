"""Transfer methods: which parameters fine-tune, and what is added to the model or the loss.

Definitions: docs/methods.md (LP, Layer-FT, SCL-FT, GC regularisation).

==========  ==================================================================================
``ft``        every parameter trains (full fine-tuning)
``lp``        the head only (linear probing)
``layer_ft``  one intermediate ``block`` + the head
``scl_ft``    ``block`` + head + a skip carrying the block's pooled output to the head's input
``gc_reg``    every parameter, and the loss gains ``gc_lambda`` · GC of an embedding
==========  ==================================================================================

:func:`apply_method` sets ``requires_grad`` on the model's parameters (that is its point: it
mutates the model) and returns a :class:`MethodSetup`: the model to train, exact parameter counts,
and for ``gc_reg`` a penalty that ``fit(penalty=...)`` adds to each step's loss.

SCL-FT wraps the model in :class:`SkipConnection`: its submodule ``base`` is the original model
and ``skip`` (a :class:`SkipJoin`) computes the penultimate feature with the skip, h' = join(h, b),
which replaces the head's input. ``skip`` is a named layer, so LCC and the probes can target h'.
The skip starts neutral where it has weights: ``add`` with a projection P (widths differ) starts
with P = 0, and ``concat`` widens the head with zero columns for b, so at initialisation the model
computes exactly what it computed before. ``add`` with equal widths uses no projection (the paper's
"projected if widths differ"), so it starts from h + b.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from latentcc.config import MethodConfig
from latentcc.latents.layers import all_layers, capture, pool_latent, resolve_layers
from latentcc.metrics.complexity import gc_penalty, layer_fn
from latentcc.plumbing.errors import LatentccError, param_error

__all__ = [
    "MethodSetup",
    "Penalty",
    "SkipConnection",
    "SkipJoin",
    "apply_method",
    "eval_mode",
    "join_skip",
    "trainable_parameters",
    "widen_head",
]

# (model, x, y, logits) -> a scalar added to the task loss; x is the batch input on the model's device.
Penalty = Callable[[nn.Module, Any, Tensor, Tensor], Tensor]

_FUNC = "apply_method"
_HOW_TO_LIST = "List layer names with `latentcc layers --model ...` or latentcc.list_layers(model)."


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


def trainable_parameters(model: nn.Module) -> int:
    """Number of parameters of ``model`` with ``requires_grad`` (a parameter shared by modules counts once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def apply_method(
    model: nn.Module, cfg: MethodConfig | None = None, *, example_input: Any = None
) -> MethodSetup:
    """Prepare ``model`` for the transfer method ``cfg.method``; MUTATES the model's ``requires_grad`` flags.

    Parameters outside what the method trains get ``requires_grad=False`` (and ``True`` inside), so
    ``fit`` hands only the trainable ones to the optimizer and frozen weights stay bit-identical.
    Buffers are not parameters: BatchNorm running statistics of frozen layers still update in
    training mode, as in plain PyTorch.
    Layers are named as in ``latentcc.list_layers(model)`` (exact, dotted suffix or ``"re:<regex>"``
    matching one layer). ``cfg.head`` empty = the last ``nn.Linear`` in ``named_modules`` order.

    ``scl_ft`` returns a :class:`SkipConnection` around ``model`` (its state dict has ``base.*`` and
    ``skip.*`` keys); with ``skip="concat"`` the head inside ``model`` is replaced by a wider one.
    The widths of the block's pooled output and of the head's input are measured by one eval-mode,
    no-grad forward of ``example_input`` (a batch the model accepts); without it they are read from
    the block (``out_features``/``out_channels``, ``skip_pool="avg"``) and the head (an ``nn.Linear``).

    ``gc_reg`` trains every parameter and returns ``penalty(model, x, y, logits) = gc_lambda ·
    gc_penalty`` of the embedding ``cfg.gc_layer`` (its output, avg-pooled as in the probes; empty = the
    head's input, the penultimate feature), a Hutchinson estimate with ``gc_draws`` projections. Cost per step: one extra forward (in eval
    mode, so examples are independent and BatchNorm statistics update once) plus ``gc_draws`` VJPs,
    all double-backpropagated. It needs float tensor inputs (images), and is 0 without any work when
    the model is not in training mode or ``gc_lambda == 0``.

    Settings the chosen method does not read (``gc_lambda`` with ``ft``, ``block`` with ``lp``, ...) must be
    left at their defaults: they would change nothing, so the error names them and the method they belong to.
    """
    if not isinstance(model, nn.Module):
        raise param_error("model", _FUNC, "a torch.nn.Module", type(model).__name__)
    cfg = MethodConfig() if cfg is None else cfg
    if not isinstance(cfg, MethodConfig):
        raise param_error("cfg", _FUNC, "a latentcc.MethodConfig", type(cfg).__name__)
    _check_settings_used(cfg)
    penalty: Penalty | None = None
    train: list[str]  # names of the modules whose parameters train; "" = the whole model
    if cfg.method == "ft":
        train = [""]
    elif cfg.method == "gc_reg":
        train = [""]
        penalty = _gc_reg_penalty(model, cfg, example_input)
    else:
        head = _resolve_head(model, cfg.head)
        if cfg.method == "lp":
            train = [head]
        else:
            block = _resolve_block(model, cfg, head)
            if cfg.method == "layer_ft":
                train = [block, head]
            else:  # scl_ft
                model = _with_skip(model, block, head, cfg, example_input)
                train = [f"base.{block}", f"base.{head}", "skip"]
    names = _set_trainable(model, train)
    total = sum(p.numel() for p in model.parameters())
    return MethodSetup(model, cfg.method, trainable_parameters(model), total, names, penalty)


class SkipJoin(nn.Module):
    """The penultimate feature with the SCL-FT skip: ``forward(h, b) = join_skip(h, proj(pool(b)), mode)``.

    ``h``: the head's input ``(B, d_h)``; ``b``: the block's output ``(B, ...)``, pooled to ``(B, d_b)``
    with ``pool`` (see ``latentcc.latents.layers.pool_latent``; token sequences are averaged over all positions).
    ``proj``: ``nn.Identity`` or ``nn.Linear(d_b, d_h, bias=False)``.
    """

    def __init__(self, proj: nn.Module, *, mode: str, pool: str) -> None:
        super().__init__()
        self.proj = proj
        self.mode = mode
        self.pool = pool

    def forward(self, h: Tensor, b: Tensor) -> Tensor:
        return join_skip(h, self.proj(pool_latent(b, self.pool)), self.mode)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, pool={self.pool!r}"


def join_skip(h: Tensor, s: Tensor, mode: str) -> Tensor:
    """``h + s`` (``"add"``, same shape) or ``[h, s]`` along the last dim (``"concat"``)."""
    return h + s if mode == "add" else torch.cat([h, s], dim=-1)


class SkipConnection(nn.Module):
    """``base`` with the output of its layer ``block`` joined to the input of its layer ``head`` by ``skip``.

    ``forward`` takes what ``base`` takes and returns its logits. The two hooks that route the block's
    output into the head live only for the duration of each forward (removed in ``finally``), so the
    module moves between devices, deep-copies and saves like any other; ``block`` and ``head`` are
    full names inside ``base``.
    """

    def __init__(self, base: nn.Module, *, block: str, head: str, skip: SkipJoin) -> None:
        super().__init__()
        self.base = base
        self.skip = skip
        self.block = block
        self.head = head

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        block = self.base.get_submodule(self.block)
        with capture(self.base, {self.block: block}) as out:
            handle = self.base.get_submodule(self.head).register_forward_pre_hook(self._join_hook(out))
            try:
                return self.base(*args, **kwargs)
            finally:
                handle.remove()

    def _join_hook(self, out: dict[str, Tensor]) -> Callable[[nn.Module, tuple[Any, ...]], tuple[Any, ...]]:
        def join(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            if self.block not in out:
                raise LatentccError(
                    f"SCL-FT: the block '{self.block}' did not run before the head '{self.head}', so there is "
                    "nothing to carry to the head's input. Choose a block on the forward path before the head."
                )
            return (self.skip(args[0], out[self.block]), *args[1:])

        return join

    def extra_repr(self) -> str:
        return f"block={self.block!r}, head={self.head!r}"


def widen_head(head: nn.Linear, extra: int) -> nn.Linear:
    """``Linear(in + extra, out)``: ``head``'s weights on the first ``in`` inputs, zeros on the ``extra`` ones.

    So ``widen_head(head, e)(cat([h, s]))`` equals ``head(h)`` until the new columns train.
    """
    new = nn.utils.skip_init(  # skip_init: no random init, so the global RNG stream is untouched
        nn.Linear,
        head.in_features + extra,
        head.out_features,
        bias=head.bias is not None,
        device=head.weight.device,
        dtype=head.weight.dtype,
    )
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : head.in_features].copy_(head.weight)
        if head.bias is not None:
            new.bias.copy_(head.bias)
    return new


# --- private -------------------------------------------------------------------------------------

# The MethodConfig fields each method reads; one set away from its default is refused by the others.
_READS = {
    "ft": (),
    "lp": ("head",),
    "layer_ft": ("block", "head"),
    "scl_ft": ("block", "head", "skip", "skip_pool"),
    "gc_reg": ("head", "gc_lambda", "gc_layer", "gc_draws"),  # head: only while gc_layer is empty
}
_OPTIONAL = ("block", "head", "skip", "skip_pool", "gc_lambda", "gc_layer", "gc_draws")


def _check_settings_used(cfg: MethodConfig) -> None:
    """Refuse settings the chosen method ignores (e.g. --gc-lambda with --method ft): they would change nothing."""
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
        "method", _FUNC, f"a method that reads the settings given ({said})", cfg.method,
        f"Method '{cfg.method}' ignores them, so they would change nothing. Fix: choose the method they "
        f"belong to, or leave them out.{note}",
    )  # fmt: skip


def _set_trainable(model: nn.Module, modules: list[str]) -> list[str]:
    """requires_grad = (the parameter belongs to one of ``modules``); returns the trainable names."""
    names = []
    for name, p in model.named_parameters():
        on = any(m == "" or name.startswith(m + ".") for m in modules)
        p.requires_grad_(on)
        if on:
            names.append(name)
    return names


def _resolve_one(model: nn.Module, request: str, param: str) -> str:
    """The full name of the one layer ``request`` names; errors name ``param`` (block, head, gc_layer)."""
    try:
        found = list(resolve_layers(model, request, func=_FUNC))
    except LatentccError as e:
        fix = str(e).split(" instead. ", 1)[-1]
        raise param_error(
            param,
            _FUNC,
            "the name of one layer of the model (exact, dotted suffix or 're:<regex>')",
            request,
            fix,
        ) from e
    if len(found) != 1:
        raise param_error(
            param, _FUNC, "a name that selects exactly one layer", request, f"It matches {found}."
        )
    return found[0]


def _resolve_head(model: nn.Module, head: str) -> str:
    if head:
        name = _resolve_one(model, head, "head")
    else:
        linears = [n for n, m in model.named_modules() if n and isinstance(m, nn.Linear)]
        if not linears:
            raise param_error(
                "head", _FUNC, "the name of the classifier layer (the model has no nn.Linear to pick)", head,
                f"Pass head=... (--head NAME). {_HOW_TO_LIST}",
            )  # fmt: skip
        name = linears[-1]
    if next(model.get_submodule(name).parameters(), None) is None:
        raise param_error("head", _FUNC, "a layer with parameters (the classifier)", name, _HOW_TO_LIST)
    return name


def _resolve_block(model: nn.Module, cfg: MethodConfig, head: str) -> str:
    if not cfg.block:
        cands = [n for n in _with_params(model) if n != head]
        shown = ", ".join(cands[:12]) + (f", ... ({len(cands)} in all)" if len(cands) > 12 else "")
        raise param_error(
            "block", _FUNC, f"the layer that trains for method '{cfg.method}'", cfg.block,
            f"Pass block=NAME (--block NAME); candidates: {shown}.",
        )  # fmt: skip
    block = _resolve_one(model, cfg.block, "block")
    if block == head or head.startswith(block + ".") or block.startswith(head + "."):
        raise param_error(
            "block", _FUNC, f"an intermediate layer apart from the head '{head}' (not it, inside it or around it)",
            cfg.block, "Pick a layer before the head; the head trains anyway.",
        )  # fmt: skip
    if cfg.method == "layer_ft" and next(model.get_submodule(block).parameters(), None) is None:
        raise param_error(
            "block", _FUNC, "a layer with parameters for method 'layer_ft' (otherwise only the head trains)",
            cfg.block, f"Candidates: {', '.join(n for n in _with_params(model) if n != head)}.",
        )  # fmt: skip
    return block


def _with_params(model: nn.Module) -> list[str]:
    return [n for n in all_layers(model) if next(model.get_submodule(n).parameters(), None) is not None]


def _with_skip(
    model: nn.Module, block: str, head: str, cfg: MethodConfig, example_input: Any
) -> SkipConnection:
    d_b, d_h = _skip_widths(model, block, head, cfg.skip_pool, example_input)
    head_mod = model.get_submodule(head)
    ref = next(head_mod.parameters())  # the new weights live where the head's do
    proj: nn.Module = nn.Identity()
    if cfg.skip == "concat":
        if not isinstance(head_mod, nn.Linear):
            raise param_error(
                "head", _FUNC, "an nn.Linear for skip='concat' (it is rebuilt with d_b more inputs)",
                f"{head} ({type(head_mod).__name__})", "Use skip='add' or name a Linear head.",
            )  # fmt: skip
        model.set_submodule(head, widen_head(head_mod, d_b))
    elif d_b != d_h:  # P starts at zero: the skip adds nothing until it trains
        lin = nn.utils.skip_init(nn.Linear, d_b, d_h, bias=False, device=ref.device, dtype=ref.dtype)
        nn.init.zeros_(lin.weight)
        proj = lin
    join = SkipJoin(proj, mode=cfg.skip, pool=cfg.skip_pool)
    return SkipConnection(model, block=block, head=head, skip=join)


def _skip_widths(model: nn.Module, block: str, head: str, pool: str, example_input: Any) -> tuple[int, int]:
    """(d_b, d_h): the width of the block's pooled output and of the head's input."""
    if example_input is not None:
        return _measure_widths(model, block, head, pool, example_input)
    blk, hd = model.get_submodule(block), model.get_submodule(head)
    d_b = getattr(blk, "out_features", None) if pool == "flatten" else _out_width(blk)
    d_h = hd.in_features if isinstance(hd, nn.Linear) else None
    if d_b is None or d_h is None:
        raise param_error(
            "example_input", _FUNC, f"a batch of model inputs, to measure the widths of '{block}' and '{head}'",
            None, "The layers do not state their widths (out_features/out_channels, an nn.Linear head).",
        )  # fmt: skip
    return int(d_b), int(d_h)


def _out_width(module: nn.Module) -> int | None:
    for attr in ("out_features", "out_channels"):
        if isinstance(getattr(module, attr, None), int):
            return int(getattr(module, attr))
    return None


def _measure_widths(model: nn.Module, block: str, head: str, pool: str, x: Any) -> tuple[int, int]:
    seen: dict[str, Tensor] = {}

    def head_input(module: nn.Module, args: tuple[Any, ...]) -> None:
        if block in out:  # the block ran before the head
            seen["b"] = out[block]
        seen.setdefault("h", args[0])

    handle = model.get_submodule(head).register_forward_pre_hook(head_input)
    try:
        with torch.no_grad(), eval_mode(model), capture(model, [block]) as out:
            model(x)
    finally:
        handle.remove()
    if "b" not in seen:
        raise param_error(
            "block", _FUNC, f"a layer that runs before the head '{head}' in model(x)", block, _HOW_TO_LIST
        )
    h = seen["h"]
    if not isinstance(h, Tensor) or h.ndim != 2:
        got = f"shape {tuple(h.shape)}" if isinstance(h, Tensor) else type(h).__name__
        raise param_error(
            "head",
            _FUNC,
            "a layer whose input is a (B, D) feature (the penultimate feature)",
            f"{head}: {got}",
        )
    return int(pool_latent(seen["b"], pool).shape[1]), int(h.shape[1])


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Every module in eval mode inside; each module's own mode restored after (also on error)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _gc_reg_penalty(model: nn.Module, cfg: MethodConfig, example_input: Any) -> Penalty:
    if example_input is not None and not (
        isinstance(example_input, Tensor) and example_input.is_floating_point()
    ):
        raise param_error(
            "method", _FUNC, "a method other than 'gc_reg' for non-float inputs (GC differentiates w.r.t. x)",
            cfg.method, f"The model takes {type(example_input).__name__}; text models take strings.",
        )  # fmt: skip
    if cfg.gc_layer:
        layer, at_input = _resolve_one(model, cfg.gc_layer, "gc_layer"), False
    else:
        layer, at_input = _resolve_head(model, cfg.head), True
    weight, draws = cfg.gc_lambda, cfg.gc_draws

    def penalty(model: nn.Module, x: Any, y: Tensor, logits: Tensor) -> Tensor:
        if weight == 0 or not model.training:  # training steps only; never during evaluation
            return logits.new_zeros(())
        fn = _input_of(model, layer) if at_input else layer_fn(model, layer)
        with eval_mode(model):  # independent examples, as the estimator needs; BN stats untouched
            return weight * gc_penalty(fn, x, n_samples=draws)

    return penalty


def _input_of(model: nn.Module, layer: str) -> Callable[[Tensor], Tensor]:
    """``fn(x)`` = the (first) input of the named ``layer`` while ``model(x)`` runs, e.g. the head's feature."""
    module = model.get_submodule(layer)

    def embedding(x: Tensor) -> Tensor:
        seen: dict[str, Tensor] = {}

        def keep(m: nn.Module, args: tuple[Any, ...]) -> None:
            seen.setdefault("h", args[0])

        handle = module.register_forward_pre_hook(keep)
        try:
            model(x)
        finally:
            handle.remove()
        if "h" not in seen:
            raise LatentccError(
                f"Layer '{layer}' did not run during model(x); name a layer on the forward path."
            )
        return seen["h"]

    return embedding
