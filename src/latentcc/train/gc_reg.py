"""GC regularisation (method ``gc_reg``): the loss gains ``gc_weight`` · GC of an embedding (docs/methods.md).

:func:`gc_reg_penalty` builds the :data:`Penalty` that ``fit(penalty=...)`` adds to each training step's
loss; the estimate itself is :func:`latentcc.metrics.complexity.gc_penalty`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from latentcc.config import MethodConfig
from latentcc.latents.layers import hooks, model_mode, resolve_layer
from latentcc.metrics.complexity import gc_penalty, layer_fn
from latentcc.plumbing.errors import LatentccError, param_error
from latentcc.train.freeze import FUNC, resolve_head

__all__ = ["Penalty", "gc_reg_penalty", "input_of"]

# (model, x, y, logits) -> a scalar added to the task loss; x is the batch input on the model's device.
Penalty = Callable[[nn.Module, Any, Tensor, Tensor], Tensor]


def gc_reg_penalty(model: nn.Module, cfg: MethodConfig, example_input: Any) -> Penalty:
    """``penalty(model, x, y, logits) = cfg.gc_weight · gc_penalty`` of the embedding ``cfg.gc_layer`` (its
    output, avg-pooled as in the probes; empty = the head's input, the penultimate feature), a Hutchinson
    estimate with ``cfg.gc_projections`` projections.

    Per training step: one extra forward (in eval mode, so examples are independent and BatchNorm
    statistics update once) plus ``gc_projections`` VJPs, all double-backpropagated. 0 without any work
    when the model is not in training mode (evaluation) or ``gc_weight == 0``.
    """
    if example_input is not None and not (
        isinstance(example_input, Tensor) and example_input.is_floating_point()
    ):
        raise param_error(
            "method", FUNC, "a method other than 'gc_reg' for non-float inputs (GC differentiates w.r.t. x)",
            cfg.method, f"The model takes {type(example_input).__name__}; text models take strings.",
        )  # fmt: skip
    if cfg.gc_layer:
        layer, at_input = resolve_layer(model, cfg.gc_layer, func=FUNC, param="gc_layer"), False
    else:
        layer, at_input = resolve_head(model, cfg.head), True
    weight, projections = cfg.gc_weight, cfg.gc_projections

    def penalty(model: nn.Module, x: Any, y: Tensor, logits: Tensor) -> Tensor:
        if weight == 0 or not model.training:  # training steps only; never during evaluation
            return logits.new_zeros(())
        fn = input_of(model, layer) if at_input else layer_fn(model, layer)
        # eval mode: independent examples, as the estimator needs; BatchNorm statistics untouched
        with model_mode(model, training=False):
            return weight * gc_penalty(fn, x, n_projections=projections)

    return penalty


def input_of(model: nn.Module, layer: str) -> Callable[[Tensor], Tensor]:
    """``fn(x)`` = the (first) input of the named ``layer`` while ``model(x)`` runs, e.g. the head's feature."""
    module = model.get_submodule(layer)

    def embedding(x: Tensor) -> Tensor:
        seen: dict[str, Tensor] = {}

        def keep(m: nn.Module, args: tuple[Any, ...]) -> None:
            seen.setdefault("h", args[0])

        with hooks(pre=[(module, keep)]):
            model(x)
        if "h" not in seen:
            raise LatentccError(
                f"Layer '{layer}' did not run during model(x); name a layer on the forward path."
            )
        return seen["h"]

    return embedding
