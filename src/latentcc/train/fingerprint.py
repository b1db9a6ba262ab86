"""What a run started from: fingerprints of its model and data, kept in config.json and checked on resume.

Settings are compared by name on resume (``data: "digits"``), but names do not pin down the objects: a
Python caller can pass other arrays under the same name, an image folder can change on disk, an
architecture can change without changing a shape (ReLU -> Tanh), other pretrained weights can be
loaded. ``fit`` therefore records, at a run's first start:

* **model**: every module's type and hyper-parameters (``Linear(in_features=64, out_features=32, ...)``);
  every parameter's and buffer's name, dtype, shape and role (trainable, frozen, buffer); and the sha256
  of the weights as ``fit`` received them, before training (the pretrained weights and the seeded new
  head): the run's starting point.
* **data**: per split, the number of samples, a sha256 of the labels, and a sha256 of the content of up
  to :data:`SAMPLES` evenly spaced samples, read with python's, numpy's and torch's generators fixed (so a
  random augmentation hashes the same way every time) and restored after; and a sha256 of the class names.
  The samples are read twice: a dataset that draws from a generator of its own (``np.random.default_rng()``
  unseeded, its own ``torch.Generator``) reads differently every time, in every process, so its content
  (and its sampled labels, if they differ too) are recorded as ``null``, not comparable, and a resume
  compares its sizes and labels only, instead of refusing every resume as "input content changed".

* **training**: what turns the model and data into updates, when the caller passes it (``None``: fit's
  own, from TrainConfig, whose settings config.json compares): the identity of ``loss_fn`` and
  ``penalty`` (:func:`callable_identity`), the optimizer's class and hyper-parameters (its
  ``param_groups`` without the tensors, and how many tensors each group trains), and the scheduler's
  class and state as constructed.

Hashing costs about what reading the weights once costs (a 390k-parameter CNN: a few ms) plus reading
3 x 64 samples twice.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import random
import re
import sys
import sysconfig
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

SAMPLES = 64  # samples per split whose content is hashed
SPLITS = ("train", "val", "test")
RANDOM = "not comparable: the dataset's samples are random"  # content_of/labels_of of such a split
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")  # reprs of functions/objects: differ between processes


def run_fingerprint(
    model: nn.Module,
    data: Any,
    *,
    loss_fn: Callable[..., Any] | None = None,
    penalty: Callable[..., Any] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
) -> dict[str, Any]:
    """The model's, the data's and the training's fingerprints, JSON-ready; taken before anything trains."""
    return {
        "model": model_fingerprint(model),
        "data": data_fingerprint(data),
        "training": training_fingerprint(
            loss_fn=loss_fn, penalty=penalty, optimizer=optimizer, scheduler=scheduler
        ),
    }


def model_fingerprint(model: nn.Module) -> dict[str, Any]:
    """Architecture (modules, tensors) and the sha256 of the current weights of ``model``."""
    params = dict(model.named_parameters(remove_duplicate=False))
    tensors, h = {}, hashlib.sha256()
    for name, t in model.state_dict().items():
        p = params.get(name)
        role = "buffer" if p is None else ("trainable" if p.requires_grad else "frozen")
        tensors[name] = [str(t.dtype).removeprefix("torch."), list(t.shape), role]
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(_tensor_bytes(t))
    modules = {name or "<model>": _module_repr(m) for name, m in model.named_modules()}
    return {"modules": modules, "tensors": tensors, "weights_sha256": h.hexdigest()}


def data_fingerprint(data: Any) -> dict[str, Any]:
    """Per split: samples, labels sha256, sampled content sha256; and the class names' sha256."""
    out: dict[str, Any] = {}
    for split in SPLITS:
        ds = getattr(data, split, None)
        if ds is not None:
            out[split] = _split_fingerprint(ds)
    classes = getattr(data, "classes", None)
    if classes is not None:
        out["classes"] = {"count": len(classes), "sha256": _sha256_json([str(c) for c in classes])}
    return out


def fingerprint_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs in the model or data between two :func:`run_fingerprint` records (empty: the same)."""
    return _model_changes(saved.get("model") or {}, now.get("model") or {}) + _data_changes(
        saved.get("data") or {}, now.get("data") or {}
    )


# ----------------------------------------------------------------------------- model


def _module_repr(m: nn.Module) -> str:
    """``Linear(in_features=64, out_features=32, bias=True)``: the type and its own settings, no children."""
    return f"{type(m).__name__}({_ADDRESS.sub('', m.extra_repr())})"


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach()
    if t.is_sparse or t.is_quantized or t.device.type == "meta":  # no plain byte view: hash their repr
        return repr(t).encode()
    flat = t.cpu().contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    return flat.view(torch.uint8).numpy().tobytes()  # one copy: ~1 ms per 4 MB


def _fmt_tensor(entry: list[Any]) -> str:
    dtype, shape, role = entry
    return f"{dtype}[{', '.join(map(str, shape))}] {role}"


def _few(items: list[str], n: int = 4) -> str:
    return "; ".join(items[:n]) + (f"; and {len(items) - n} more" if len(items) > n else "")


def _model_changes(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    if not a or not b:
        return []
    out = []
    ta, tb = a.get("tensors", {}), b.get("tensors", {})
    fit_ = [f"{k}: size mismatch, {_fmt_tensor(ta[k])} in the run, {_fmt_tensor(tb[k])} now"
            for k in ta if k in tb and ta[k][1] != tb[k][1]]  # fmt: skip
    fit_ += [f"{k} missing now" for k in ta if k not in tb] + [
        f"{k} not in the run" for k in tb if k not in ta
    ]
    if fit_:  # the checkpoint could not even be loaded: say so in load_weights' words
        out.append(f"the run's checkpoint does not fit this model ({_few(fit_)})")
    kinds = [f"{k}: {_fmt_tensor(ta[k])} -> {_fmt_tensor(tb[k])}"
             for k in ta if k in tb and ta[k][1] == tb[k][1] and ta[k] != tb[k]]  # fmt: skip
    if kinds:
        out.append(f"parameter dtype or training role changed ({_few(kinds)})")
    ma, mb = a.get("modules", {}), b.get("modules", {})
    layers = [f"layer {k} {ma[k]} -> {mb[k]}" for k in ma if k in mb and ma[k] != mb[k]]
    layers += [f"layer {k} {ma[k]} removed" for k in ma if k not in mb]
    layers += [f"layer {k} {mb[k]} added" for k in mb if k not in ma]
    if layers:
        out.append(f"model architecture changed: {_few(layers)}")
    if not fit_ and not kinds and a.get("weights_sha256") != b.get("weights_sha256"):
        out.append(
            f"initial weights changed (sha256 {str(a.get('weights_sha256'))[:12]}... in the run, "
            f"{str(b.get('weights_sha256'))[:12]}... now): the model does not hold the weights the run started "
            "from (other pretrained weights, another seed for a new layer, or a model already trained)"
        )
    return out


# ----------------------------------------------------------------------------- data


@contextmanager
def _fixed_generators() -> Iterator[None]:
    """Seed python's, numpy's and torch's CPU generators for the block; restore their states after."""
    py, npy = random.getstate(), np.random.get_state()  # noqa: NPY002 - the global RNG datasets draw from
    with torch.random.fork_rng(devices=[]):
        random.seed(0)
        np.random.seed(0)  # noqa: NPY002
        torch.default_generator.manual_seed(0)
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)  # noqa: NPY002


def _split_fingerprint(ds: Any) -> dict[str, Any]:
    n = len(ds)
    rows = np.unique(np.linspace(0, n - 1, min(n, SAMPLES)).round().astype(np.int64))
    # twice: a dataset with a generator of its own (which _fixed_generators cannot fix) reads differently
    # each time, also in the resumed process; its hash would refuse every resume, so it records null
    (content, sampled), (again, sampled_again) = _read_rows(ds, rows), _read_rows(ds, rows)
    labels = _all_labels(ds, n)
    labels_sha = _sha256_json(labels if labels is not None else sampled)
    random_labels = labels is None and labels_sha != _sha256_json(sampled_again)
    return {
        "samples": n,
        "labels_sha256": None if random_labels else labels_sha,
        "labels_of": RANDOM if random_labels else ("all" if labels is not None else f"{len(rows)} sampled"),
        "content_sha256": None if content != again else content,
        "content_of": RANDOM if content != again else f"{len(rows)} sampled",
    }


def _read_rows(ds: Any, rows: np.ndarray) -> tuple[str, list[Any]]:
    """The sha256 of the inputs of ``ds[rows]`` and their labels, read with the global generators fixed."""
    content, sampled_labels = hashlib.sha256(), []
    with _fixed_generators():
        for i in rows:
            item = ds[int(i)]
            if isinstance(item, list | tuple) and len(item) >= 2:  # (x, y) or (x, y, idx)
                _feed(content, item[0])
                sampled_labels.append(_plain(item[1]))
            else:  # a dict or another structure: all of it is content
                _feed(content, item)
    return content.hexdigest(), sampled_labels


def _all_labels(ds: Any, n: int) -> list[Any] | None:
    """Every label of ``ds`` without reading its samples (``targets``/``labels`` attribute), else None."""
    for attr in ("targets", "labels"):
        y = getattr(ds, attr, None)
        if y is not None and not callable(y) and hasattr(y, "__len__") and len(y) == n:
            arr = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
            return arr.tolist() if arr.dtype != object else [_plain(v) for v in arr]
    return None


def _plain(v: Any) -> Any:
    if isinstance(v, torch.Tensor | np.ndarray | np.generic):
        return np.asarray(v.cpu() if isinstance(v, torch.Tensor) else v).tolist()
    return v if v is None or isinstance(v, bool | int | float | str) else repr(v)


def _sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, default=str).encode()).hexdigest()


def _feed(h: Any, obj: Any) -> None:
    """Hash ``obj``'s content: tensors and arrays by dtype, shape and bytes; containers element-wise."""
    if isinstance(obj, torch.Tensor):
        h.update(f"T{obj.dtype}{tuple(obj.shape)}".encode())
        h.update(_tensor_bytes(obj))
    elif isinstance(obj, np.ndarray) and obj.dtype != object:
        a = np.ascontiguousarray(obj)
        h.update(f"A{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            h.update(f"K{k!s}".encode())
            _feed(h, obj[k])
    elif isinstance(obj, list | tuple | np.ndarray):
        h.update(f"L{len(obj)}".encode())
        for v in obj:
            _feed(h, v)
    elif obj is None or isinstance(obj, str | bytes | bool | int | float | np.generic):
        h.update(repr(obj).encode())
    elif hasattr(obj, "tobytes"):  # PIL images and the like
        h.update(type(obj).__name__.encode())
        h.update(obj.tobytes())
    else:  # its type only: a repr may hold a memory address, which differs between processes
        h.update(type(obj).__qualname__.encode())


def _data_changes(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    out = []
    for split in SPLITS:
        sa, sb = a.get(split), b.get(split)
        if sa is None or sb is None:
            if (sa is None) != (sb is None):
                out.append(f"{split} split {'absent' if sa is None else 'present'} in the run, "
                           f"{'absent' if sb is None else 'present'} now")  # fmt: skip
            continue
        if sa["samples"] != sb["samples"]:
            out.append(f"{split} split: {sa['samples']} -> {sb['samples']} samples")
            continue
        for key, what in (("labels", "labels"), ("content", "input content")):
            ha, hb = sa.get(f"{key}_sha256"), sb.get(f"{key}_sha256")
            if ha is None:  # random in the run (two reads differed): nothing to compare
                continue
            if hb is None:
                out.append(f"{split} {what} changed (the same on every read in the run, random now)")
            elif ha != hb:
                out.append(f"{split} {what} changed")
    ca, cb = a.get("classes"), b.get("classes")
    if ca is not None and cb is not None and ca != cb:
        out.append(f"class names changed ({ca['count']} classes in the run, {cb['count']} now)")
    return out


# ----------------------------------------------------------------------------- training


def training_fingerprint(
    *,
    loss_fn: Callable[..., Any] | None = None,
    penalty: Callable[..., Any] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
) -> dict[str, Any]:
    """Identities of the caller's loss, penalty, optimizer and scheduler (``None``: fit's own / none)."""
    return {
        "loss_fn": callable_identity(loss_fn) if loss_fn is not None else None,
        "penalty": callable_identity(penalty) if penalty is not None else None,
        "optimizer": _optimizer_identity(optimizer) if optimizer is not None else None,
        "scheduler": _scheduler_identity(scheduler) if scheduler is not None else None,
    }


def callable_identity(fn: Callable[..., Any]) -> dict[str, Any]:
    """``{"name", "sha256", "python"}``: a callable's name and a hash of what it computes, stable across processes.

    The name is ``module.qualname`` (``train.<locals>.<lambda>`` for a lambda). The hash covers, for a
    function, its bytecode (``co_code``), the names it looks up and its constants, nested functions'
    code, its default arguments and the values it captured from an enclosing function (numbers, strings,
    tensors and arrays by content; other objects by their type only); for a ``functools.partial``, the
    function and its bound arguments; for a bound method, the function and its object; for an object
    (an ``nn.Module`` loss such as ``CrossEntropyLoss(label_smoothing=0.1)``, or a class with
    ``__call__``), its class, the plain values of its attributes, and its tensors.

    Limits: module-level globals a function reads (``SMOOTHING = 0.9`` at the top of a script) are
    looked up by name only, not by value; bytecode differs between Python versions, so across versions
    (recorded as ``python``) only names are compared; and code of torch and of installed packages
    (``site-packages``, the standard library) and of latentcc is compared by name, so upgrading them
    between a run and its resume is not a change.
    """
    h = hashlib.sha256()
    _feed_callable(h, fn, set())
    return {"name": _callable_name(fn), "sha256": h.hexdigest(), "python": _PYTHON}


def training_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two :func:`training_fingerprint` records, in words (empty: the same)."""
    out = []
    for key, own in (("loss_fn", "the default (cross-entropy)"), ("penalty", "none"),
                     ("optimizer", "the default (built from TrainConfig)"),
                     ("scheduler", "the default (TrainConfig.scheduler)")):  # fmt: skip
        a, b = saved.get(key), now.get(key)
        if a is None and b is None:
            continue
        if a is None or b is None:
            name_a, name_b = (_say(x, own) for x in (a, b))
            out.append(f"{key}: {name_a} in the run, {name_b} now")
        elif a.get("name") != b.get("name"):
            out.append(f"{key}: {a.get('name')} in the run, {b.get('name')} now")
        elif key in ("optimizer", "scheduler"):
            out += [f"{key} {a['name']}: {d}" for d in _settings_changes(a, b)]
        elif a.get("python") == b.get("python") and a.get("sha256") != b.get("sha256"):
            out.append(f"{key} {a['name']}: its code, default arguments or captured values changed")
    return out


_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def _say(identity: dict[str, Any] | None, own: str) -> str:
    return own if identity is None else str(identity.get("name"))


def _callable_name(fn: Any) -> str:
    if isinstance(fn, functools.partial):
        return f"functools.partial({_callable_name(fn.func)})"
    if isinstance(fn, types.FunctionType | types.BuiltinFunctionType | types.MethodType):
        return f"{getattr(fn, '__module__', None) or '?'}.{getattr(fn, '__qualname__', fn.__name__)}"
    cls = type(fn)
    return f"{cls.__module__}.{cls.__qualname__}"


@functools.cache
def _is_library(module: str) -> bool:
    """Code we compare by name: torch, latentcc, the standard library and installed packages."""
    top = module.partition(".")[0]
    if top in ("torch", "latentcc", "builtins", "functools", "operator"):
        return True
    file = getattr(sys.modules.get(module), "__file__", None)
    if not file:
        return False
    roots = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    return any(str(file).startswith(str(r)) for r in roots if r)


def _feed_callable(h: Any, fn: Any, seen: set[int]) -> None:
    if id(fn) in seen:  # a function that reaches itself through what it captured
        h.update(b"<recursive>")
        return
    seen.add(id(fn))
    h.update(_callable_name(fn).encode())
    if isinstance(fn, functools.partial):
        _feed_callable(h, fn.func, seen)
        _feed_value(h, list(fn.args), seen)
        _feed_value(h, dict(fn.keywords), seen)
    elif isinstance(fn, types.MethodType):
        _feed_callable(h, fn.__func__, seen)
        _feed_object(h, fn.__self__, seen)
    elif isinstance(fn, types.FunctionType):
        if not _is_library(fn.__module__ or ""):
            consts = fn.__code__.co_consts
            skip_doc = fn.__doc__ is not None and bool(consts) and consts[0] == fn.__doc__
            _feed_code(h, fn.__code__, skip_doc=skip_doc)
        _feed_value(h, fn.__defaults__, seen)
        _feed_value(h, fn.__kwdefaults__, seen)
        for cell in fn.__closure__ or ():
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell (a name not assigned yet)
                value = "<empty>"
            _feed_value(h, value, seen)
    elif not isinstance(fn, types.BuiltinFunctionType):
        _feed_object(h, fn, seen)


def _feed_code(h: Any, code: types.CodeType, *, skip_doc: bool = False) -> None:
    """Bytecode, looked-up names and constants; line numbers and local names are left out (moving or
    renaming inside the file does not change what the code computes)."""
    h.update(code.co_code)
    h.update(repr(code.co_names).encode())
    for i, c in enumerate(code.co_consts):
        if i == 0 and skip_doc:  # the docstring
            continue
        if isinstance(c, types.CodeType):
            _feed_code(h, c)
        else:
            h.update(_stable_repr(c).encode())


def _stable_repr(c: Any) -> str:
    """``repr`` of a constant, with set members sorted (their order follows string hashing, per process)."""
    if isinstance(c, frozenset | set):
        return "{" + ", ".join(sorted(_stable_repr(v) for v in c)) + "}"
    if isinstance(c, tuple):
        return "(" + ", ".join(_stable_repr(v) for v in c) + ")"
    return _ADDRESS.sub("", repr(c))


def _feed_object(h: Any, obj: Any, seen: set[int]) -> None:
    """An object's class (and its code, if it is the caller's), plain attribute values and tensors."""
    cls = type(obj)
    h.update(f"{cls.__module__}.{cls.__qualname__}".encode())
    if not _is_library(cls.__module__):
        for meth in ("__call__", "forward"):
            f = getattr(cls, meth, None)
            if isinstance(f, types.FunctionType):
                _feed_code(h, f.__code__)
    attrs = getattr(obj, "__dict__", None)
    if isinstance(attrs, dict):
        for k in sorted(attrs, key=str):
            if not str(k).startswith("_") and k != "training":
                h.update(f"A{k}".encode())
                _feed_value(h, attrs[k], seen)
    if isinstance(obj, nn.Module):
        for name, t in obj.state_dict().items():  # e.g. CrossEntropyLoss(weight=...)
            h.update(f"S{name}".encode())
            _feed(h, t)
        for name, child in obj.named_children():
            h.update(f"C{name}".encode())
            _feed_object(h, child, seen)


def _feed_value(h: Any, v: Any, seen: set[int]) -> None:
    """A default argument, captured value or attribute: by content when plain, else by type."""
    if v is None or isinstance(v, bool | int | float | complex | str | bytes):
        h.update(repr(v).encode())
    elif isinstance(v, torch.Tensor | np.ndarray):
        _feed(h, v)
    elif isinstance(v, list | tuple):
        h.update(f"L{len(v)}".encode())
        for x in v:
            _feed_value(h, x, seen)
    elif isinstance(v, dict):
        for k in sorted(v, key=str):
            h.update(f"K{k!s}".encode())
            _feed_value(h, v[k], seen)
    elif isinstance(v, set | frozenset):
        h.update(_stable_repr(frozenset(map(repr, v))).encode())
    elif isinstance(v, functools.partial | types.FunctionType | types.MethodType):
        _feed_callable(h, v, seen)
    else:  # a model, a dataset, an open file...: its type only (its state is not what the loss computes)
        h.update(f"T{type(v).__module__}.{type(v).__qualname__}".encode())


def _plain_json(v: Any) -> Any:
    """``v`` as config.json stores it (tensors as lists, non-finite floats as null, tuples as lists), so a
    record read back compares equal to one taken now; what is not plain becomes its type's name."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, torch.Tensor | np.ndarray | np.generic):
        return _plain_json(_plain(v))
    if isinstance(v, list | tuple):
        return [_plain_json(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain_json(x) for k, x in v.items()}
    return f"<{type(v).__qualname__}>"


def _optimizer_identity(opt: torch.optim.Optimizer) -> dict[str, Any]:
    """Class and hyper-parameters per param group (the tensors replaced by how many there are)."""
    groups = [
        {**{k: _plain_json(v) for k, v in g.items() if k != "params"}, "params": len(g["params"])}
        for g in opt.param_groups
    ]
    return {"name": _callable_name(opt), "settings": {"param_groups": groups}}


def _scheduler_identity(sched: Any) -> dict[str, Any]:
    """Class and state as constructed (``state_dict`` values; ``lr_lambdas`` by :func:`callable_identity`)."""
    state = sched.state_dict() if hasattr(sched, "state_dict") else {}
    settings = {k: _plain_json(v) for k, v in state.items() if k != "lr_lambdas"}
    fns = getattr(sched, "lr_lambdas", None)  # LambdaLR, MultiplicativeLR: functions, not in state_dict
    if isinstance(fns, list):
        settings["lr_lambdas"] = [callable_identity(f)["sha256"] for f in fns]
    return {"name": _callable_name(sched), "settings": settings}


def _settings_changes(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Differences of two settings trees, as ``path: run -> now``; keys only one side has are skipped (a
    torch upgrade adds hyper-parameters with their defaults, which is not the caller's change)."""
    out: list[str] = []

    def walk(x: Any, y: Any, path: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for k in x:
                if k in y:
                    walk(x[k], y[k], f"{path}.{k}" if path else str(k))
        elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
            for i, (u, v) in enumerate(zip(x, y, strict=True)):
                walk(u, v, f"{path}[{i}]")
        elif x != y:
            out.append(f"{path} {x!r} -> {y!r}")

    walk(a.get("settings") or {}, b.get("settings") or {}, "")
    return out
