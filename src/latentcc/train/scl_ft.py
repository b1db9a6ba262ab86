"""SCL-FT's model surgery: a skip from an intermediate block to the head's input (docs/methods.md, SCL-FT).

:func:`with_skip` wraps the model in :class:`SkipConnection`: its submodule ``base`` is the original model
and ``skip`` (a :class:`SkipJoin`) computes the penultimate feature with the skip, h' = join(h, b), which
replaces the head's input. ``skip`` is a named layer, so LCC and the probes can target h'.
The skip starts neutral where it has weights: ``add`` with a projection P (widths differ) starts
with P = 0, and ``concat`` widens the head with zero columns for b, so at initialisation the model
computes exactly what it computed before. ``add`` with equal widths uses no projection (the paper's
"projected if widths differ"), so it starts from h + b.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from latentcc.config import MethodConfig
from latentcc.latents.layers import capture, hooks, model_mode, pool_latent
from latentcc.plumbing.errors import LatentccError, param_error
from latentcc.train.freeze import FUNC, HOW_TO_LIST

__all__ = ["SkipConnection", "SkipJoin", "join_skip", "widen_head", "with_skip"]


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
            with hooks(pre=[(self.base.get_submodule(self.head), self._join_hook(out))]):
                return self.base(*args, **kwargs)

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


def with_skip(
    model: nn.Module, block: str, head: str, cfg: MethodConfig, example_input: Any
) -> SkipConnection:
    """``model`` (MUTATED when ``cfg.skip="concat"``: its head is replaced by a wider one) wrapped in a
    :class:`SkipConnection` from the resolved ``block`` to the resolved ``head``, neutral at initialisation."""
    d_b, d_h = _skip_widths(model, block, head, cfg.skip_pool, example_input)
    head_mod = model.get_submodule(head)
    ref = next(head_mod.parameters())  # the new weights live where the head's do
    proj: nn.Module = nn.Identity()
    if cfg.skip == "concat":
        if not isinstance(head_mod, nn.Linear):
            raise param_error(
                "head", FUNC, "an nn.Linear for skip='concat' (it is rebuilt with d_b more inputs)",
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
            "example_input", FUNC, f"a batch of model inputs, to measure the widths of '{block}' and '{head}'",
            None, "The layers do not state their widths (out_features/out_channels, an nn.Linear head).",
        )  # fmt: skip
    return int(d_b), int(d_h)


def _out_width(module: nn.Module) -> int | None:
    for attr in ("out_features", "out_channels"):
        if isinstance(getattr(module, attr, None), int):
            return int(getattr(module, attr))
    return None


def _measure_widths(model: nn.Module, block: str, head: str, pool: str, x: Any) -> tuple[int, int]:
    """One eval-mode, no-grad forward of ``x``: the block's pooled width and the head's input width."""
    seen: dict[str, Tensor] = {}

    def head_input(module: nn.Module, args: tuple[Any, ...]) -> None:
        if block in out:  # the block ran before the head
            seen["b"] = out[block]
        seen.setdefault("h", args[0])

    with torch.no_grad(), model_mode(model, training=False), capture(model, [block]) as out:
        with hooks(pre=[(model.get_submodule(head), head_input)]):
            model(x)
    if "b" not in seen:
        raise param_error(
            "block", FUNC, f"a layer that runs before the head '{head}' in model(x)", block, HOW_TO_LIST
        )
    h = seen["h"]
    if not isinstance(h, Tensor) or h.ndim != 2:
        got = f"shape {tuple(h.shape)}" if isinstance(h, Tensor) else type(h).__name__
        raise param_error(
            "head",
            FUNC,
            "a layer whose input is a (B, D) feature (the penultimate feature)",
            f"{head}: {got}",
        )
    return int(pool_latent(seen["b"], pool).shape[1]), int(h.shape[1])
