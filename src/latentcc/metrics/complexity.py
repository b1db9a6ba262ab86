"""Geometric complexity (GC) of an embedding, its estimators, geometric collapse and the GC penalty.

GC(f, D) = (1/|D|) Σ_x ‖∂f(x)/∂x‖²_F, with f(x) the embedding of one example flattened to a vector
(a layer's output as a function of the input; see :func:`layer_fn`). Definitions: docs/probes.md, Geometric complexity.

Estimators of the per-example value ‖J‖²_F (J = ∂f(x)/∂x, shape (m, d)):

* ``"exact"``: the full per-example Jacobian, ``vmap(jacrev(f))``; cost ~ m backward passes.
* ``"hutchinson"``: ‖J‖²_F = E_v ‖Jᵀv‖² with v ~ N(0, I_m); one VJP per draw.
* ``"outputs"``: output-dimension subsampling, v = √m·e_j with j uniform in 1..m, so
  ‖Jᵀv‖² = m·‖∇f_j(x)‖²; one VJP per draw.

Both randomized estimators are the same formula, E_v ‖Jᵀv‖², with two probe distributions that
satisfy E[v vᵀ] = I, hence both are unbiased. A probe is drawn independently for every example, and
one VJP of Σ_i ⟨v_i, f(x_i)⟩ gives every Jᵢᵀvᵢ of a chunk at once because examples are independent
in ``fn``. Example subsampling (``n_examples``) adds an unbiased outer average over a random subset.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from latentcc.config import MethodConfig, ProbeConfig
from latentcc.latents.layers import POOLS, capture, pool_latent, resolve_layer
from latentcc.plumbing.batch import input_dtype
from latentcc.plumbing.errors import LatentccError, param_error
from latentcc.plumbing.validate import as_labels, check_int

__all__ = [
    "ESTIMATORS",
    "GCResult",
    "gc_penalty",
    "geometric_collapse",
    "geometric_complexity",
    "layer_fn",
    "per_class_gc",
]

ESTIMATORS = ("exact", "hutchinson", "outputs")
_RANDOMIZED = ("hutchinson", "outputs")
_EVAL_HINT = (
    "Put the model in eval mode (model.eval()) so that examples are independent (BatchNorm, dropout)."
)

Embedding = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class GCResult:
    """A GC estimate. Unpacks as ``mean, stderr = result``.

    ``mean``: the estimate of GC over all given examples. ``stderr``: its standard error (see
    :func:`geometric_complexity`). ``n_examples``: examples used; ``n_projections``: draws per example
    (1 for ``"exact"``). ``per_example``: (n_examples,) float64 estimates of ‖J‖²_F averaged over the
    draws, for the rows ``indices`` (int64) of ``x``.
    """

    mean: float
    stderr: float
    estimator: str
    n_examples: int
    n_projections: int
    per_example: np.ndarray = field(repr=False, compare=False)
    indices: np.ndarray = field(repr=False, compare=False)

    def __iter__(self) -> Iterator[float]:
        yield self.mean
        yield self.stderr

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary without the arrays; a non-finite ``stderr`` (one draw) becomes ``None``."""
        return {
            "mean": _json_float(self.mean),
            "stderr": _json_float(self.stderr),
            "estimator": self.estimator,
            "n_examples": self.n_examples,
            "n_projections": self.n_projections,
        }


def geometric_complexity(
    fn: Embedding,
    x: Tensor | np.ndarray,
    *,
    estimator: str = ProbeConfig.gc_estimator,
    n_projections: int = ProbeConfig.gc_projections,
    n_examples: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
) -> GCResult:
    """GC(fn, x) = mean over the N examples of ‖∂fn(x_i)/∂x_i‖²_F, the output flattened per example.

    ``fn``: maps a batch (B, ...) to outputs (B, ...) (flattened to (B, m)); examples must be
    independent in it, so put a model in eval mode (eval BatchNorm, no dropout): a model, a
    :func:`layer_fn` or a model's bound method with BatchNorm/dropout in train mode is refused.
    ``x``: (N, ...) float tensor or numpy array. When fn shows its model (those three kinds), x takes
    the model's dtype and device, as in training (a float32 x for a float64 model is upcast exactly);
    otherwise everything runs on ``x``'s device and an fn failing on x (dtype, device, train-mode
    BatchNorm on one example) raises a LatentccError naming the fix. Gradients are taken w.r.t. a
    detached copy of ``x`` with ``torch.autograd.grad``/``torch.func``: nothing is accumulated in
    any ``.grad`` and the caller's tensors and model are untouched.

    ``estimator``: ``"exact"`` (per-example Jacobian, memory ~ batch_size·m·d), ``"hutchinson"``
    (Gaussian projections) or ``"outputs"`` (one random output coordinate, rescaled by m); the
    randomized ones use ``n_projections`` draws per example. ``n_examples``: if set and < N, a seeded
    uniform subset of that many examples without replacement. ``batch_size``: examples per
    forward/Jacobian chunk (bounds memory). ``seed``: a private CPU ``torch.Generator`` draws the
    subset and the probes (the global RNG is untouched); same seed and batch_size -> same result.

    ``stderr`` is the standard error of ``mean`` as an estimate of GC over ALL given examples. With
    m examples of N used (f = m/N) and draw-averaged per-example estimates ŷ_i with estimated
    projection variance v̂_i (sample variance over the draws / n_projections, 0 for exact)::

        stderr² = (1 - f)·s²(ŷ)/m + f·Σ_i v̂_i/m²

    This two-stage (examples, then projections) variance estimator is unbiased: s²(ŷ) already
    includes the projection noise, and the second term adds the share of it the finite-population
    factor removes. Cases: exact on all examples -> 0.0; randomized on all examples -> the
    projection noise only (the pooled per-example form of std over the n_projections full-set means /
    √n_projections, same expectation, more degrees of freedom), nan when n_projections == 1; subsampled with
    one draw -> (1 - f)·s²(ŷ)/m (projection share not estimable); a single example of several -> nan.
    """
    func = "geometric_complexity"
    _check_estimator(estimator, func, ESTIMATORS)
    check_int(n_projections, "n_projections", func, 1)
    check_int(batch_size, "batch_size", func, 1)
    check_int(seed, "seed", func, 0)
    x = _fit_to_fn(fn, _as_input(x, func), func)
    n = len(x)
    if n_examples is not None:
        check_int(n_examples, "n_examples", func, 1)
        if n_examples > n:
            raise param_error(
                "n_examples",
                func,
                f"None or an int in 1..{n} (the number of rows of x)",
                n_examples,
                "Pass None to use every example.",
            )
    gen = torch.Generator().manual_seed(seed)
    return _estimate(fn, x, estimator, n_projections, n_examples, batch_size, gen, func)[0]


def per_class_gc(
    fn: Embedding,
    x: Tensor | np.ndarray,
    labels: Any,
    *,
    estimator: str = ProbeConfig.gc_estimator,
    n_projections: int = ProbeConfig.gc_projections,
    batch_size: int = 256,
    seed: int = 0,
) -> dict[int, GCResult]:
    """``{class: GCResult}``: GC of ``fn`` on the examples of each class (all of them), classes sorted.

    Arguments as in :func:`geometric_complexity`; ``labels``: (N,) integer class labels. One seeded
    generator draws the probes of all classes in turn.
    """
    return _per_class(fn, x, labels, estimator, n_projections, batch_size, seed, "per_class_gc", 1)[0]


def geometric_collapse(
    fn: Embedding,
    x: Tensor | np.ndarray,
    labels: Any,
    *,
    estimator: str = ProbeConfig.gc_estimator,
    n_projections: int = ProbeConfig.gc_projections,
    batch_size: int = 256,
    seed: int = 0,
) -> float:
    """Geometric collapse: the CDNV with the class variance replaced by the class GC (docs/probes.md, Geometric complexity).

    mean over ordered pairs i != j of (GC_i + GC_j) / (2 ‖μ_i - μ_j‖²), with GC_c the GC of ``fn`` on
    class c and μ_c the mean of the flattened ``fn`` outputs of class c. Lower = more collapsed.
    Needs >= 2 classes; arguments as in :func:`per_class_gc`.
    """
    func = "geometric_collapse"
    results, means = _per_class(fn, x, labels, estimator, n_projections, batch_size, seed, func, 2)
    gc = np.array([r.mean for r in results.values()])
    dist2 = ((means[:, None, :] - means[None, :, :]) ** 2).sum(-1)
    off = ~np.eye(len(gc), dtype=bool)
    if (dist2[off] == 0).any():
        raise LatentccError(
            "geometric_collapse is undefined: two classes have identical mean embeddings "
            f"(classes {list(results)}). Check the labels and that fn is not constant."
        )
    v = (gc[:, None] + gc[None, :]) / (2 * np.where(off, dist2, 1.0))
    return float(v[off].mean())


def gc_penalty(
    fn: Embedding,
    x: Tensor,
    *,
    n_projections: int = MethodConfig.gc_projections,
    estimator: str = "hutchinson",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Differentiable unbiased estimate of the batch GC, for GC regularisation: loss = CE + λ·gc_penalty.

    A scalar tensor: the mean over the batch of ‖Jᵢᵀvᵢ‖² averaged over ``n_projections`` probes
    (``"hutchinson"`` or ``"outputs"``), built with ``create_graph=True`` so that its backward
    (double backprop) reaches the parameters of ``fn``. Costs one forward and ``n_projections`` VJPs on top
    of the training step. ``generator`` draws the probes (on its device); ``None`` uses the global
    torch RNG, like dropout. No finiteness check here (it would sync the GPU every step).
    """
    func = "gc_penalty"
    _check_estimator(estimator, func, _RANDOMIZED)
    check_int(n_projections, "n_projections", func, 1)
    x = _as_input(x, func)
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        out = _flat_output(_run(fn, xg, func), len(xg), func)
        est = _probe_sq_norms(out, xg, estimator, n_projections, generator, create_graph=True)
    return est.mean()


def layer_fn(model: nn.Module, layer: str, *, pool: str = "avg") -> Embedding:
    """``fn(x)`` = the output of the named ``layer`` while ``model(x)`` runs, pooled to (B, D).

    The layer is resolved once (exact name, dotted suffix or ``"re:<regex>"`` matching exactly one
    layer). Each call registers a non-detaching capture hook, runs ``model(x)`` and removes the hook
    in ``finally``. ``pool``: ``"avg"`` (mean over spatial/token dims) or ``"flatten"`` (all
    non-batch dims; GC flattens outputs anyway, so this is the raw layer output). The model is not
    put in eval mode: do it yourself (see :func:`geometric_complexity`).
    """
    func = "layer_fn"
    if pool not in POOLS:
        raise param_error("pool", func, f"one of {list(POOLS)}", pool)
    name = resolve_layer(model, layer, func=func, param="layer")
    return _LayerFn(model, name, {name: model.get_submodule(name)}, pool)


class _LayerFn:
    """The embedding ``layer_fn`` returns: a callable that also names its model, so that GC can check
    the model's mode and match x to its dtype and device (a closure would hide the model)."""

    def __init__(self, model: nn.Module, name: str, resolved: Any, pool: str) -> None:
        self.model, self.name, self.resolved, self.pool = model, name, resolved, pool

    def __call__(self, x: Tensor) -> Tensor:
        with capture(self.model, self.resolved) as out:
            self.model(x)
        if self.name not in out:
            raise LatentccError(
                f"Layer '{self.name}' did not run during model(x), so layer_fn has no output for it. "
                "Choose a layer on the forward path; see latentcc.list_layers(model)."
            )
        return pool_latent(out[self.name], self.pool)


# --- private: trusted inputs from here on -----------------------------------------------------


def _estimate(
    fn: Embedding,
    x: Tensor,
    estimator: str,
    n_projections: int,
    n_examples: int | None,
    batch_size: int,
    gen: torch.Generator,
    func: str,
) -> tuple[GCResult, np.ndarray]:
    """(GCResult, mean flattened output of the examples used as float64 (m,))."""
    n = len(x)
    if n_examples is not None and n_examples < n:
        idx = torch.randperm(n, generator=gen)[:n_examples]
        xs = x[idx.to(x.device)]
    else:
        idx = torch.arange(n)
        xs = x
    draws = 1 if estimator == "exact" else n_projections
    est = np.empty((draws, len(xs)), dtype=np.float64)  # (draws, examples)
    out_sum: Tensor | None = None
    for start in range(0, len(xs), batch_size):
        xc = xs[start : start + batch_size].detach()
        if estimator == "exact":
            sq, out = _exact_sq_norms(fn, xc, func)
            sq = sq[None]
        else:
            with torch.enable_grad():
                xg = xc.requires_grad_(True)
                out = _flat_output(_run(fn, xg, func), len(xg), func)
                _check_finite(out, func, "outputs")
                sq = _probe_sq_norms(out, xg, estimator, n_projections, gen, create_graph=False, stack=True)
        est[:, start : start + len(xc)] = sq.detach().double().cpu().numpy()  # sync point, once a chunk
        chunk_sum = out.detach().double().sum(0)
        out_sum = chunk_sum if out_sum is None else out_sum + chunk_sum
    if not np.isfinite(est).all():
        raise LatentccError(
            f"The 'fn' parameter of {func} has non-finite input gradients for "
            f"{int((~np.isfinite(est)).any(0).sum())} examples (its outputs are finite). "
            "Check fn for operations with infinite slope (sqrt/log at 0) or a diverged model."
        )
    assert out_sum is not None
    result = _summarize(est, n, estimator, n_projections, idx.numpy())
    return result, (out_sum / len(xs)).cpu().numpy()


def _summarize(
    est: np.ndarray, n_total: int, estimator: str, n_projections: int, idx: np.ndarray
) -> GCResult:
    """Mean and two-stage standard error (see geometric_complexity) of (draws, m) estimates."""
    draws, m = est.shape
    y = est.mean(0)
    f = m / n_total
    if estimator == "exact":
        proj_var: np.ndarray | None = np.zeros(m)
    elif draws > 1:
        proj_var = est.var(0, ddof=1) / draws  # v̂_i: the projection noise of ŷ_i
    else:
        proj_var = None  # one draw: the projection noise is not estimable on its own
    if f == 1:
        between = 0.0
    else:
        between = (1 - f) * y.var(ddof=1) / m if m > 1 else math.nan
    if proj_var is None:
        var = between if f < 1 else math.nan
    else:
        var = between + f * float(proj_var.sum()) / m**2
    return GCResult(
        mean=float(y.mean()),
        stderr=float(math.sqrt(var)),
        estimator=estimator,
        n_examples=m,
        n_projections=1 if estimator == "exact" else n_projections,
        per_example=y,
        indices=idx.astype(np.int64),
    )


def _exact_sq_norms(fn: Embedding, xc: Tensor, func: str) -> tuple[Tensor, Tensor]:
    """(‖J_i‖²_F (B,), outputs (B, m)) from per-example Jacobians of shape (B, m, *x.shape[1:])."""

    def f_single(xi: Tensor) -> tuple[Tensor, Tensor]:
        y = _flat_output(fn(xi[None]), 1, func)[0]
        return y, y.detach()

    with torch.enable_grad():
        _flat_output(_run(fn, xc[:1], func), 1, func)  # a plain call first: errors named, not vmap's
        try:
            jac, out = torch.func.vmap(torch.func.jacrev(f_single, has_aux=True))(xc)
        except LatentccError:  # fn's own validation: already a clear message
            raise
        except (RuntimeError, ValueError, NotImplementedError) as e:  # torch.func cannot transform fn
            raise LatentccError(
                f"The 'fn' parameter of {func} cannot be differentiated per example by torch.func "
                f"(vmap + jacrev) with estimator='exact': {type(e).__name__}: {str(e).splitlines()[0]}. "
                "Fix: use estimator='hutchinson' (plain autograd), or keep .item()/.tolist()/.numpy() and "
                "in-place updates of captured tensors out of fn."
            ) from e
    _check_finite(out, func, "outputs")
    return jac.reshape(len(xc), -1).pow(2).sum(1), out


def _probe_sq_norms(
    out: Tensor,
    x: Tensor,
    estimator: str,
    n_projections: int,
    gen: torch.Generator | None,
    *,
    create_graph: bool,
    stack: bool = False,
) -> Tensor:
    """‖J_iᵀv_i‖² for ``n_projections`` probes per example: (n_projections, B) if ``stack`` else their mean (B,).

    ``out``: (B, m) = fn(x) flattened. One VJP per draw covers the whole batch, because examples are
    independent in fn: ∂/∂x_i Σ_k ⟨v_k, f(x_k)⟩ = J_iᵀv_i.
    """
    b, m = out.shape
    rows = []
    for s in range(n_projections):
        v = _draw_probes(estimator, b, m, out, gen)
        if not out.requires_grad:  # fn is constant in x (or detaches): every Jacobian is 0
            rows.append(torch.zeros(b, dtype=out.dtype, device=out.device))
            continue
        # the graph of fn is reused by every draw; free it with the last one
        (g,) = torch.autograd.grad(
            out,
            x,
            grad_outputs=v,
            retain_graph=create_graph or s < n_projections - 1,
            create_graph=create_graph,
            allow_unused=True,
        )
        rows.append(
            torch.zeros(b, dtype=out.dtype, device=out.device)
            if g is None
            else g.reshape(b, -1).pow(2).sum(1)
        )
    sq = torch.stack(rows)
    return sq if stack else sq.mean(0)


def _draw_probes(estimator: str, b: int, m: int, out: Tensor, gen: torch.Generator | None) -> Tensor:
    """(b, m) probes with E[v vᵀ] = I, drawn on the generator's device, returned on ``out``'s."""
    device = gen.device if gen is not None else out.device
    if estimator == "hutchinson":
        dtype = out.dtype if out.dtype in (torch.float32, torch.float64) else torch.float32
        v = torch.randn(b, m, generator=gen, dtype=dtype, device=device)
    else:  # "outputs": √m·e_j, j uniform, so ‖Jᵀv‖² = m·‖∇f_j‖²
        j = torch.randint(m, (b,), generator=gen, device=device).to(out.device)
        v = torch.zeros(b, m, dtype=out.dtype, device=out.device)
        v[torch.arange(b, device=out.device), j] = math.sqrt(m)
    return v.to(device=out.device, dtype=out.dtype)


def _per_class(
    fn: Embedding,
    x: Tensor | np.ndarray,
    labels: Any,
    estimator: str,
    n_projections: int,
    batch_size: int,
    seed: int,
    func: str,
    min_classes: int,
) -> tuple[dict[int, GCResult], np.ndarray]:
    """({class: GCResult}, class means (K, m) float64) with validation at the door."""
    _check_estimator(estimator, func, ESTIMATORS)
    check_int(n_projections, "n_projections", func, 1)
    check_int(batch_size, "batch_size", func, 1)
    check_int(seed, "seed", func, 0)
    x = _fit_to_fn(fn, _as_input(x, func), func)
    y = as_labels(labels, len(x), func, min_classes=min_classes)
    gen = torch.Generator().manual_seed(seed)
    results: dict[int, GCResult] = {}
    means = []
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        res, mu = _estimate(
            fn, x[torch.from_numpy(rows).to(x.device)], estimator, n_projections, None, batch_size, gen, func
        )
        results[int(c)] = res
        means.append(mu)
    return results, np.stack(means)


def _as_input(x: Any, func: str) -> Tensor:
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "fiub":
            raise param_error(
                "x", func, "a numeric tensor or numpy array of shape (N, ...)", f"an array of dtype {x.dtype}",
                "Fix: convert the inputs to floats first, e.g. np.asarray(x, dtype=np.float32).",
            )  # fmt: skip
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, Tensor):
        raise param_error("x", func, "a tensor or numpy array of shape (N, ...)", type(x).__name__)
    if x.is_meta:
        raise param_error(
            "x", func, "a tensor with data (not on the 'meta' device)", f"a {x.dtype} tensor on the meta device",
            "Fix: pass real inputs (GC differentiates fn at them).",
        )  # fmt: skip
    if x.ndim < 1 or x.shape[0] < 1 or x.numel() == 0:
        raise param_error("x", func, "a non-empty batch (N, ...) with N >= 1", f"shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise param_error(
            "x",
            func,
            "a floating-point tensor (GC differentiates w.r.t. the input)",
            f"dtype {x.dtype}",
            "Cast with x.float(); for token ids, pass an fn of the input embeddings instead.",
        )
    return x


def _model_of(fn: Any) -> nn.Module | None:
    """The model behind ``fn`` when it can be seen: a module, a :func:`layer_fn`, a module's bound method."""
    if isinstance(fn, nn.Module):
        return fn
    if isinstance(fn, _LayerFn):
        return fn.model
    owner = getattr(fn, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


def _mode_dependent(module: nn.Module) -> bool:
    """Whether the module's output depends on train/eval mode (batch statistics or dropout)."""
    from torch.nn.modules.batchnorm import _BatchNorm
    from torch.nn.modules.dropout import _DropoutNd
    from torch.nn.modules.instancenorm import _InstanceNorm

    if isinstance(module, _BatchNorm):
        return True
    if isinstance(module, _InstanceNorm):
        return bool(module.track_running_stats)
    if isinstance(module, _DropoutNd):
        return float(module.p) > 0
    if isinstance(module, nn.MultiheadAttention):
        return float(module.dropout) > 0
    return False


def _fit_to_fn(fn: Any, x: Tensor, func: str) -> Tensor:
    """Check the model behind ``fn`` (when visible) and give x its dtype and device.

    GC runs examples on their own (one at a time for ``"exact"``) and treats them as independent: a
    model whose BatchNorm or dropout is in train mode would mix the examples of a batch, fail on
    batches of one, and update its running statistics, so it is refused. Float inputs take the model's
    dtype and device, as :func:`latentcc.collect_latents` and training give them (a float32 x for a
    float64 model is upcast exactly). Callables that hide their model are checked when called
    (see :func:`_run`).
    """
    model = _model_of(fn)
    if model is None:
        return x
    meta = [n for n, p in model.named_parameters() if p.is_meta]
    if meta:
        raise param_error(
            "fn", func, "a model with materialised parameters", f"parameters on the meta device ({meta[:3]})",
            "Fix: load the weights first, e.g. model.to_empty(device='cpu') then model.load_state_dict(...).",
        )  # fmt: skip
    training = [n or type(m).__name__ for n, m in model.named_modules() if m.training and _mode_dependent(m)]
    if training:
        raise param_error(
            "fn", func, "a model in eval mode (GC treats examples as independent, one at a time)",
            f"{type(model).__name__} with train-mode BatchNorm/dropout layers {training[:3]}",
            "Fix: call model.eval() first (and model.train() afterwards to resume training).",
        )  # fmt: skip
    dtype = input_dtype(model)
    devices = {p.device for p in model.parameters()}
    if dtype is not None and x.dtype != dtype:
        x = x.to(dtype)
    if len(devices) == 1:
        x = x.to(devices.pop())
    return x


def _run(fn: Embedding, x: Tensor, func: str) -> Tensor:
    """``fn(x)``; an error raised inside fn becomes a LatentccError naming 'fn' or 'x' and the likely fix."""
    try:
        return fn(x)
    except LatentccError:
        raise
    except (RuntimeError, ValueError, TypeError, NotImplementedError) as e:
        text = (str(e).splitlines() or [""])[0]
        low = text.lower()
        got = f"{type(e).__name__} from fn on x of shape {tuple(x.shape)}, {x.dtype}, on {x.device}: {text}"
        if "more than 1 value per channel" in low or "training" in low:
            raise param_error(
                "fn", func, "a model in eval mode (GC treats examples as independent, one at a time)", got,
                "Fix: call model.eval() first: train-mode BatchNorm needs several examples per batch.",
            ) from e  # fmt: skip
        if "dtype" in low or "scalar type" in low or ("float" in low and "double" in low):
            raise param_error(
                "x", func, "of the dtype fn computes in (its parameters' dtype)", got,
                "Fix: cast x to the model's dtype, e.g. x.to(next(model.parameters()).dtype), or pass the "
                "model (or layer_fn(model, ...)) itself as fn: then x is cast for you.",
            ) from e  # fmt: skip
        if "device" in low:
            raise param_error(
                "x", func, "on the device of fn's parameters", got,
                "Fix: move x to the model's device, e.g. x.to(next(model.parameters()).device), or pass the "
                "model (or layer_fn(model, ...)) itself as fn: then x is moved for you.",
            ) from e  # fmt: skip
        raise param_error(
            "fn", func, "a callable mapping a batch (B, ...) to outputs (B, ...)", got,
            "Fix: check that fn runs on a batch like x[:2] by itself.",
        ) from e  # fmt: skip


def _flat_output(out: Any, b: int, func: str) -> Tensor:
    """``fn``'s output as (b, m); raises unless it is a float tensor with a leading batch dim b."""
    if not isinstance(out, Tensor) or out.ndim < 1 or out.shape[0] != b or out[0].numel() == 0:
        got = f"an output of shape {tuple(out.shape)}" if isinstance(out, Tensor) else type(out).__name__
        raise param_error(
            "fn",
            func,
            f"a callable returning a tensor (B, ...) with the input's batch size B = {b} first",
            got,
            "Return one non-empty output per example; do not reduce over the batch.",
        )
    if not out.is_floating_point():
        raise param_error("fn", func, "a callable returning floating-point outputs", f"dtype {out.dtype}")
    return out.reshape(b, -1)


def _check_finite(out: Tensor, func: str, what: str) -> None:
    bad = ~torch.isfinite(out).all(1)
    if bool(bad.any()):  # sync point
        raise LatentccError(
            f"The 'fn' parameter of {func} returned NaN/inf {what} for {int(bad.sum())} of {len(out)} "
            f"examples. Remove or fix those inputs; a diverged model produces them. {_EVAL_HINT}"
        )


def _check_estimator(estimator: Any, func: str, allowed: tuple[str, ...]) -> None:
    if estimator not in allowed:
        raise param_error("estimator", func, f"one of {list(allowed)}", estimator)


def _json_float(v: float) -> float | None:
    return v if math.isfinite(v) else None
