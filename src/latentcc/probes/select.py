"""Which layers a profile probes: the named ones, or with ``layers=("all",)`` every layer with a per-sample output.

``ProbeConfig.layers`` has one meaning: ``("all",)`` (the default) or at least one name (exact, dotted
suffix or ``"re:<regex>"``, the package's one matcher); an empty selection is refused by ProbeConfig.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from latentcc.latents.layers import all_layers, hooks, resolve_layers
from latentcc.plumbing.errors import LatentccError, param_error


def choose_layers(
    model: nn.Module, layers: tuple[str, ...], loader: DataLoader[Any], device: torch.device
) -> list[str]:
    """Full names of the layers to probe, in the order requested (``("all",)``: model order)."""
    if layers != ("all",):
        return list(resolve_layers(model, list(layers), func="profile"))
    candidates = all_layers(model)
    if not candidates:
        raise param_error("layers", "profile", "layer names (the model has no submodules)", layers)
    return per_sample_layers(model, candidates, loader, device)


def per_sample_layers(
    model: nn.Module, names: list[str], loader: DataLoader[Any], device: torch.device
) -> list[str]:
    """Keep the layers whose output is a float tensor (batch, ...): one forward on the first batch.

    ``layers="all"`` includes everything; some modules return something else (a position embedding
    of shape (1, T, D), a tuple of non-tensors) and cannot be probed per sample. This scan registers its
    hooks through :func:`~latentcc.latents.layers.hooks`, not :func:`~latentcc.latents.layers.capture`:
    capture refuses such outputs during the forward, and here they are to be dropped, not refused.
    """
    from latentcc.plumbing.batch import input_dtype, read_batches, to_device, unpack_batch

    shapes: dict[str, Any] = {}
    modules = dict(model.named_modules())

    def hook(name: str) -> Callable[..., None]:
        def f(module: nn.Module, args: Any, output: Any) -> None:
            out = output[0] if isinstance(output, (tuple, list)) and output else output
            shapes[name] = (tuple(out.shape), out.dtype) if isinstance(out, torch.Tensor) else None

        return f

    x, y, _ = unpack_batch(next(iter(read_batches(loader, "probed by profile"))), need_index=True)
    with hooks(forward=[(modules[n], hook(n)) for n in names]), torch.no_grad():
        model(to_device(x, device, input_dtype(model)))  # as the latent pass does (a float64 model)
    b = len(y)
    keep = [
        n
        for n in names
        if shapes.get(n) is not None
        and len(shapes[n][0]) >= 2
        and shapes[n][0][0] == b
        and shapes[n][1].is_floating_point
    ]
    if not keep:
        raise LatentccError(
            "profile found no layer with a (batch, ...) float output; pass layers= explicitly."
        )
    return keep
