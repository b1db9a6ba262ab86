"""Name the layers of a model, capture their outputs, and pool them into one vector per sample.

Users target layers *by name*, never by subclassing their model. One matcher is used everywhere:
a requested name matches (1) exactly, (2) as a dotted suffix (``"fc"`` matches ``"backbone.head.fc"``
but not ``"backbone.head.myfc"``), or (3) as a regex when written ``"re:<pattern>"`` (fullmatch).

The package's one hook helper (:func:`hooks`, which :func:`capture` builds on) and one mode helper
(:func:`model_mode`) live here too: every hook latentcc adds is removed in ``finally``, and every
train/eval switch restores each module's own mode.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from latentcc.plumbing.errors import LatentccError, param_error

__all__ = [
    "POOLS",
    "Captured",
    "LayerMatch",
    "all_layers",
    "capture",
    "compiled_part",
    "hooks",
    "list_layers",
    "match_layer",
    "model_mode",
    "pool_latent",
    "resolve_layer",
    "resolve_layers",
]

POOLS = ("avg", "flatten")
_REGEX_PREFIX = "re:"
_HOW_TO_LIST = "List every layer name with latentcc.list_layers(model) or `latentcc layers --model ...`."


def list_layers(model: nn.Module, *, leaves_only: bool = False) -> list[str]:
    """Names of the submodules of ``model`` as in ``model.named_modules()``, without the root ``""``.

    These are the names ``layers=`` accepts. ``leaves_only=True`` keeps modules without children.
    """
    return [
        name
        for name, module in model.named_modules()
        if name and (not leaves_only or next(module.children(), None) is None)
    ]


# Modules whose output is their input (or a reshape of it): never worth a row of their own in a profile.
_PASS_THROUGH = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.Identity,
    nn.Flatten,
)


def all_layers(model: nn.Module) -> list[str]:
    """What ``layers="all"`` means for the probes, in ``named_modules`` order.

    Each block of an ``nn.ModuleList`` (a transformer's layers) counts as one layer and its insides
    are skipped; every other leaf module counts, except pass-throughs (Dropout, Identity, Flatten).
    For a CNN built from Sequentials this is every conv/activation/pool/linear layer; for a
    Hugging Face encoder it is the embeddings, each encoder block, the pooler and the head.
    """
    blocks: list[str] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(b + ".") for b in blocks):
            continue
        parent, _, _ = name.rpartition(".")
        parent_mod = model.get_submodule(parent) if parent else model
        if isinstance(parent_mod, nn.ModuleList) and not isinstance(module, nn.ModuleList):
            blocks.append(name)
        elif next(module.children(), None) is None and not isinstance(module, _PASS_THROUGH):
            blocks.append(name)
    return blocks


def resolve_layers(
    model: nn.Module, layers: str | Sequence[str], *, func: str = "resolve_layers", for_capture: bool = False
) -> dict[str, nn.Module]:
    """Map requested layer names to ``{full name: module}``, in the order requested, without duplicates.

    Each request matches by exact name, then by dotted suffix (an error if several layers end with
    it), or by regex when written ``"re:<pattern>"`` (fullmatch; may select several layers).
    ``func`` names the calling public function in error messages. ``for_capture=True`` (the layers'
    outputs will be read with :func:`capture`) also refuses layers inside a ``torch.compile``d module:
    checked here, once, so that a capture of the result on every training step need not walk the model.
    """
    requests = _validate_requests(layers, func)
    modules = dict(model.named_modules())
    modules.pop("", None)
    names = list(modules)
    resolved: dict[str, nn.Module] = {}
    for req in requests:
        m = _match(req, names)
        if not m.names:
            raise param_error("layers", func, m.expected, req, m.hint)
        for name in m.names:
            resolved.setdefault(name, modules[name])
    if for_capture:
        _check_not_compiled(model, resolved)
    return resolved


@dataclass(frozen=True)
class LayerMatch:
    """What one layer request matched: ``names`` (full names, in ``named_modules`` order; empty when none).

    When nothing usable matched, ``expected`` says what the request should have been and ``hint`` how to
    fix it (close names, or the full names an ambiguous suffix stands for); both are "" on a match.
    """

    request: str
    names: tuple[str, ...]
    expected: str = ""
    hint: str = ""


def match_layer(model: nn.Module, request: str) -> LayerMatch:
    """The layers of ``model`` one ``request`` names (exact, dotted suffix or ``"re:<regex>"``), as data.

    Never raises for a name that matches nothing, an ambiguous suffix or a bad regex: the result says
    why (``expected``, ``hint``), so each caller raises with its own parameter name.
    """
    return _match(request, [n for n, _ in model.named_modules() if n])


def resolve_layer(model: nn.Module, request: str, *, func: str, param: str = "layer") -> str:
    """The full name of the one layer ``request`` names; errors name ``param`` of ``func``."""
    m = match_layer(model, request)
    if not m.names:
        what = "the name of one layer of the model (exact, dotted suffix or 're:<regex>')"
        raise param_error(param, func, what, request, m.hint)
    if len(m.names) != 1:
        raise param_error(
            param, func, "a name that selects exactly one layer", request, f"It matches {list(m.names)}."
        )
    return m.names[0]


class Captured(dict[str, Tensor]):
    """``{full layer name: latest output}`` filled by :func:`capture`; ``model_ran`` says whether the
    model's own forward started inside the block (to tell "no forward ran" from "this layer was skipped")."""

    model_ran: bool = False


@contextmanager
def capture(
    model: nn.Module, layers: str | Sequence[str] | Mapping[str, nn.Module], *, detach: bool = False
) -> Iterator[Captured]:
    """Context manager yielding ``{full layer name: latest output tensor}``, filled by each forward pass.

    The tensor is the layer's output, or its first element when the layer returns a tuple/list
    (Hugging Face layers do), or ``last_hidden_state`` (else its only tensor) when it returns a
    ``ModelOutput``/dict. Anything else, a dict with several tensors and no ``last_hidden_state``,
    or a tensor without a feature dimension raises a ``LatentccError`` naming the layer. Outputs
    keep their autograd graph unless ``detach=True``, so a loss on a captured latent trains the
    model. Hooks are removed on exit, also when the body raises. Layers inside a ``torch.compile``d
    module are refused: a compiled graph need not run hooks added after compilation. ``layers`` may
    be a ``{name: module}`` mapping from ``resolve_layers(..., for_capture=True)``, which has done
    the name lookup and that check once; for a mapping only a compiled ``model`` itself is checked.

    >>> with capture(model, ["fc1"]) as out:
    ...     logits = model(x)
    >>> z = out["backbone.fc1"]  # (B, D)
    """
    if isinstance(layers, Mapping):
        # resolved once by the caller (it runs every training step): no name lookup, no walk of the model
        # for compiled parts; a compiled root, torch.compile(model), is the common case and a type check
        resolved = dict(layers)
        if _is_compiled(model):
            _check_not_compiled(model, resolved)
    else:
        resolved = resolve_layers(model, layers, func="capture", for_capture=True)
    outputs = Captured()
    # only a hook on the root tells "no forward ran" from "the layers were skipped": about 2 us a step
    # (adding/removing it and the root's hooked call), small next to a forward
    with hooks(
        pre=[(model, _mark_ran(outputs))],
        forward=[(module, _make_hook(name, outputs, detach)) for name, module in resolved.items()],
    ):
        yield outputs


# A forward hook (module, args, output) -> None or a new output; a pre-hook (module, args) -> None or new args
# (with_kwargs=True: (module, args, kwargs) -> None or (new args, new kwargs)).
Hook = Callable[..., Any]


class hooks:  # lower case: a context manager used like a function, `with hooks(...):`
    """Register forward hooks and forward pre-hooks for the body only; all removed on exit, also on error.

    ``forward`` / ``pre``: ``(module, hook)`` pairs, registered in order (pre-hooks first).
    ``with_kwargs``: the pre-hooks take and may return the keyword arguments too (PyTorch's flag).
    The package's one place that registers hooks: capture, SCL-FT's skip, GC's embedding of a layer's
    input, the fit checks and the model summary all go through it. A class, not a generator: capture
    enters it every training step, and this saves about 1 us there.
    """

    def __init__(
        self,
        *,
        forward: Iterable[tuple[nn.Module, Hook]] = (),
        pre: Iterable[tuple[nn.Module, Hook]] = (),
        with_kwargs: bool = False,
    ) -> None:
        self._forward, self._pre, self._with_kwargs = forward, pre, with_kwargs
        self._handles: list[Any] = []

    def __enter__(self) -> None:
        try:
            for module, hook in self._pre:
                self._handles.append(module.register_forward_pre_hook(hook, with_kwargs=self._with_kwargs))
            for module, hook in self._forward:
                self._handles.append(module.register_forward_hook(hook))
        except BaseException:
            self._remove()
            raise

    def __exit__(self, *exc: object) -> None:
        self._remove()

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


@contextmanager
def model_mode(model: nn.Module, *, training: bool) -> Iterator[None]:
    """Every module of ``model`` in train (``training=True``) or eval mode inside the body; on exit (also
    on error) each module gets back its own mode, so a model with some modules kept in eval mode (frozen
    BatchNorm) is restored exactly, not set uniformly by ``model.train(was_training)``."""
    modes = [(m, m.training) for m in model.modules()]
    model.train(training)
    try:
        yield
    finally:
        for m, was in modes:
            m.training = was


def compiled_part(model: nn.Module, name: str) -> str | None:
    """The name of the outermost ``torch.compile``d module on the path from ``model`` to its layer
    ``name`` (``""``: the model itself), or None when nothing on that path is compiled.

    ``torch.compile(m)`` returns a wrapper (``OptimizedModule``) holding ``m`` as ``_orig_mod``; a hook
    registered on a module inside it after compilation may never run (the compiled graph is reused).
    """
    parts = name.split(".") if name else []
    for depth in range(len(parts) + 1):
        prefix = ".".join(parts[:depth])
        try:
            module = model.get_submodule(prefix) if prefix else model
        except AttributeError:
            return None
        if _is_compiled(module):
            return prefix
    return None


def _is_compiled(module: nn.Module) -> bool:
    """Whether ``module`` is the wrapper ``torch.compile`` returns (checked by name: no dynamo import)."""
    return type(module).__name__ == "OptimizedModule" and hasattr(module, "_orig_mod")


def _check_not_compiled(model: nn.Module, resolved: Mapping[str, nn.Module]) -> None:
    for name in resolved:
        part = compiled_part(model, name)
        if part is None:
            continue
        where = "the model itself" if part == "" else f"its submodule '{part}'"
        inner = f"{part}._orig_mod" if part else "model._orig_mod"
        raise LatentccError(
            f"Layer '{name}' is inside a torch.compile'd module ({where}): a compiled graph may skip the hooks "
            "latentcc adds to capture a layer's output, so the layer would look as if it never ran. Fix: pass "
            f"the module as it was before torch.compile ({inner}), or compile only parts of the model that "
            "contain no captured layer."
        )


def pool_latent(t: Tensor, pool: str = "avg", *, mask: Tensor | None = None) -> Tensor:
    """Reduce a layer output to one vector per sample: ``(B, ...) -> (B, D)``.

    ``pool="avg"``: ``(B, C, H, W)`` (or any ``(B, C, *spatial)``, ndim >= 4) -> mean over the
    spatial dims, ``(B, C)``; ``(B, T, D)`` token sequences -> mean over ``T``, ``(B, D)``, counting
    only positions where ``mask`` (``(B, T)``, 1 = real token) is non-zero when a mask is given;
    ``(B, D)`` is returned unchanged. ``pool="flatten"``: ``reshape(B, -1)``.
    """
    if not isinstance(t, Tensor) or t.ndim < 2:
        got = f"a tensor of shape {tuple(t.shape)}" if isinstance(t, Tensor) else type(t).__name__
        raise param_error("t", "pool_latent", "a tensor with a batch dimension, (B, ...) with ndim >= 2", got)
    if pool not in POOLS:
        raise param_error("pool", "pool_latent", f"one of {list(POOLS)}", pool)
    if mask is not None and (t.ndim != 3 or tuple(mask.shape) != tuple(t.shape[:2])):
        raise param_error(
            "mask",
            "pool_latent",
            f"None or a (B, T) = {tuple(t.shape[:2])} attention mask for a (B, T, D) sequence",
            f"a mask of shape {tuple(mask.shape)} for t of shape {tuple(t.shape)}",
        )
    if pool == "flatten":
        return t.reshape(t.shape[0], -1)
    if t.ndim == 2:
        return t
    if t.ndim == 3:
        if mask is None:
            return t.mean(dim=1)
        w = mask.to(dtype=t.dtype, device=t.device).unsqueeze(-1)  # (B, T, 1)
        return (t * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)
    return t.mean(dim=tuple(range(2, t.ndim)))


def _validate_requests(layers: Any, func: str) -> list[str]:
    if isinstance(layers, str):
        requests = [layers]
    elif isinstance(layers, Sequence) and all(isinstance(r, str) for r in layers):
        requests = list(layers)
    else:
        raise param_error("layers", func, "a layer name or a list of layer names", layers, _HOW_TO_LIST)
    if not requests or any(not r for r in requests):
        raise param_error("layers", func, "non-empty layer names (the root model itself has no name)", layers)
    return requests


def _match(req: str, names: list[str]) -> LayerMatch:
    """The full names one request matches, or (no names) what it should be and how to fix it."""
    if req.startswith(_REGEX_PREFIX):
        pattern = req[len(_REGEX_PREFIX) :]
        try:
            regex = re.compile(pattern)
        except re.error as e:
            return LayerMatch(req, (), "valid 're:<regex>' patterns", f"Regex error: {e}.")
        hits = [n for n in names if regex.fullmatch(n)]
        if not hits:
            return LayerMatch(
                req,
                (),
                "patterns that fully match at least one layer name",
                f"{_did_you_mean(pattern, names)}{_HOW_TO_LIST}",
            )
        return LayerMatch(req, tuple(hits))
    if req in names:
        return LayerMatch(req, (req,))
    hits = [n for n in names if n.endswith("." + req)]
    if len(hits) == 1:
        return LayerMatch(req, tuple(hits))
    if hits:
        return LayerMatch(
            req,
            (),
            "a name that identifies one layer",
            f"It is a suffix of {len(hits)} layers: {hits}. Pass one of these full names, "
            "or 're:<regex>' to select several.",
        )
    return LayerMatch(
        req,
        (),
        "names of layers of the model (exact, dotted suffix, or 're:<regex>')",
        f"{_did_you_mean(req, names)}{_HOW_TO_LIST}",
    )


def _did_you_mean(req: str, names: list[str]) -> str:
    """Close matches of ``req`` among the full names and among their suffixes of the same depth."""
    depth = req.count(".") + 1
    by_suffix: dict[str, list[str]] = {}
    for n in names:
        by_suffix.setdefault(".".join(n.split(".")[-depth:]), []).append(n)
    close = difflib.get_close_matches(req, names, n=5)
    for suffix in difflib.get_close_matches(req, list(by_suffix), n=5):
        close += [n for n in by_suffix[suffix] if n not in close]
    if not close:
        return ""
    return f"Did you mean {', '.join(repr(c) for c in close[:5])}? "


def _mark_ran(outputs: Captured) -> Any:
    def hook(module: nn.Module, args: Any) -> None:
        outputs.model_ran = True

    return hook


def _make_hook(name: str, outputs: dict[str, Tensor], detach: bool) -> Any:
    def hook(module: nn.Module, args: Any, output: Any) -> None:
        t = _first_tensor(output, name)
        outputs[name] = t.detach() if detach else t

    return hook


_PICK_ANOTHER = (
    "Capture the submodule that computes the tensor you mean instead (see latentcc.list_layers(model)), "
    "or make this layer return that tensor."
)


def _first_tensor(output: Any, name: str) -> Tensor:
    """The tensor that stands for a layer's output (see ``capture``); raises where that is not clear."""
    t: Any = output
    if isinstance(output, (tuple, list)):  # Hugging Face layers return (hidden_states, attentions, ...)
        if not output or not isinstance(output[0], Tensor):
            first = type(output[0]).__name__ if output else "nothing (it is empty)"
            raise LatentccError(
                f"Layer '{name}' returned a {type(output).__name__} whose first element is {first}; latentcc "
                f"captures the first element of a tuple/list (the hidden state, as Hugging Face layers return "
                f"it), so it needs a tensor there. {_PICK_ANOTHER}"
            )
        t = output[0]
    elif isinstance(output, Mapping):  # HF ModelOutput is an OrderedDict
        tensors = [k for k, v in output.items() if isinstance(v, Tensor)]
        if isinstance(output.get("last_hidden_state"), Tensor):
            t = output["last_hidden_state"]
        elif len(tensors) == 1:
            t = output[tensors[0]]
        else:
            what = f"several tensors {tensors}" if tensors else "no tensor"
            raise LatentccError(
                f"Layer '{name}' returned a {type(output).__name__} with {what} and no 'last_hidden_state', "
                f"so which of its values is the layer's latent is not clear. {_PICK_ANOTHER}"
            )
    if not isinstance(t, Tensor):
        raise LatentccError(
            f"Layer '{name}' returned {type(output).__name__}, not a tensor (nor a tuple/list starting with one, "
            f"nor a dict/ModelOutput holding one). {_PICK_ANOTHER}"
        )
    if t.ndim < 2:
        raise LatentccError(
            f"Layer '{name}' returned a tensor of shape {tuple(t.shape)}; a latent needs a batch and a feature "
            f"dimension, (B, D) or (B, C, ...). {_PICK_ANOTHER}"
        )
    return t
