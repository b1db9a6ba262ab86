"""What a batch is: ``(x, y, idx)`` (or ``(x, y)``), how its input and labels move to a device, what its
labels must be, and what a classifier returns for it (:func:`logits_of`).

The checks here run on one example batch at the door, or on the error path after PyTorch raised: never per
training step (no host sync in the hot loop).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch

from latentcc.plumbing.errors import LatentccError, param_error


def to_device(x: Any, device: torch.device, dtype: torch.dtype | None = None) -> Any:
    """Move a batch input to ``device``: tensors and dicts of tensors move; text (lists of str) stays.

    ``dtype`` (the model's, see :func:`input_dtype`): floating-point tensors are cast to it, so a
    float64 model takes the float32 inputs datasets yield; integer tensors (token ids) keep theirs.
    """
    if isinstance(x, torch.Tensor):
        if dtype is not None and x.is_floating_point() and x.dtype != dtype:
            return x.to(device, dtype=dtype, non_blocking=True)
        return x.to(device, non_blocking=True)
    if isinstance(x, dict):
        return {k: to_device(v, device, dtype) for k, v in x.items()}
    return x


def input_dtype(model: torch.nn.Module) -> torch.dtype | None:
    """The one floating-point dtype of ``model``'s parameters (what its float inputs are cast to), else None.

    None when the model has no floating parameters or mixes dtypes (then inputs are passed as they come).
    """
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    return dtypes.pop() if len(dtypes) == 1 else None


def unpack_batch(batch: Any, *, need_index: bool = False) -> tuple[Any, torch.Tensor, torch.Tensor | None]:
    """(x, y, idx) from a batch; plain (x, y) batches give idx None unless ``need_index``."""
    if isinstance(batch, (list, tuple)) and len(batch) == 3:
        return batch[0], batch[1], batch[2]
    if isinstance(batch, (list, tuple)) and len(batch) == 2 and not need_index:
        return batch[0], batch[1], None
    n = len(batch) if hasattr(batch, "__len__") else "?"
    want = "(x, y, idx)" if need_index else "(x, y, idx) or (x, y)"
    raise LatentccError(
        f"Each batch must be {want}; got {type(batch).__name__} of length {n}. "
        "Sample indices tie each latent to its sample whatever the loader's order: wrap your data with "
        "latentcc.data.from_arrays(...), or make your Dataset's __getitem__ return (x, y, index)."
    )


def read_batches(loader: Iterable[Any], role: str) -> Iterable[Any]:
    """The batches of ``loader``, sized like it; a dataset that cannot read an index its ``__len__``
    promises raises a :class:`LatentccError` naming the dataset, ``role`` (e.g. "the training split of
    fit"), the index and the fix, instead of a raw IndexError from inside the DataLoader.

    Every latentcc loop over user data reads through this (fit, evaluate, collect_latents). Also for
    ``num_workers > 0``: the worker's IndexError is re-raised in this process and caught here.
    """
    batches = _guarded(loader, role)
    try:
        n = len(loader)  # type: ignore[arg-type]
    except TypeError:  # an iterable dataset, a generator: no length to show
        return batches
    return _Sized(batches, n)


class _Sized:
    """An iterator with a length, so progress bars keep their total."""

    def __init__(self, it: Iterator[Any], n: int) -> None:
        self._it, self._n = it, n

    def __iter__(self) -> Iterator[Any]:
        return self._it

    def __len__(self) -> int:
        return self._n


def _guarded(loader: Iterable[Any], role: str) -> Iterator[Any]:
    it = iter(loader)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except (IndexError, KeyError) as e:  # KeyError: a dict- or pandas-backed __getitem__
            clear = _unreadable_error(getattr(loader, "dataset", None), role, e)
            if clear is None:
                raise
            raise clear from e
        yield batch


def _unreadable_error(dataset: Any, role: str, e: BaseException) -> LatentccError | None:
    """Name the index a dataset cannot read although its ``__len__`` covers it, or None if none is found."""
    try:
        n = len(dataset)
    except TypeError:
        return None
    k = _first_unreadable(dataset, n)
    if k is None:  # every probed index reads: the error came from elsewhere (a sampler, a collate_fn)
        return None
    # a worker's error arrives as "Caught IndexError in DataLoader worker ... IndexError: <message>"
    cause = str(e).strip().splitlines()[-1].removeprefix(f"{type(e).__name__}: ") if str(e).strip() else ""
    name = type(dataset).__name__
    # no prefix reads: a bug in __getitem__ or a transform (a missing key) far more often than a length
    if k == 0:
        return LatentccError(
            f"The dataset {name} ({role}) fails to read even its first sample: its __getitem__ raised "
            f"{type(e).__name__}: {cause}, and dataset[0] fails too (len() = {n}). Fix: run dataset[0] to see "
            "where in __getitem__ (or in a transform it applies) the error comes from; if the dataset holds no "
            "samples, make __len__ return 0."
        )
    return LatentccError(
        f"The dataset {name} ({role}) says it holds {n} samples (len() = {n}), but its __getitem__ raised "
        f"{type(e).__name__}: {cause}. It reads index {k - 1} but not {k}: it holds fewer samples than its "
        "__len__ says. Fix: make __len__ return the number of samples __getitem__ can read, or make "
        f"__getitem__ accept every index in 0..{n - 1}."
    )


def _first_unreadable(dataset: Any, n: int) -> int | None:
    """The first index in 0..n-1 whose ``__getitem__`` raises IndexError/KeyError, found by bisection
    (log2(n) reads, only on the error path); None if the last index reads, or a read fails otherwise."""

    def fails(i: int) -> bool:
        try:
            dataset[i]
        except (IndexError, KeyError):
            return True
        return False

    try:
        if n < 1 or not fails(n - 1):
            return None
        if fails(0):
            return 0
        lo, hi = 0, n - 1  # lo reads, hi does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if fails(mid) else (mid, hi)
        return hi
    except Exception:  # another error while probing: leave the original error as it was
        return None


# --- labels, and what the model makes of a batch ------------------------------------------------------


def to_labels(y: Any, device: torch.device) -> Any:
    """Move batch labels to ``device``; integer labels of any width become int64, the dtype cross-entropy
    takes (numpy int32 labels collate to int32, bools to bool). Float labels keep their dtype, so that
    :func:`check_labels` refuses them instead of a cast silently truncating 2.7 to 2."""
    if not isinstance(y, torch.Tensor):
        return y
    if y.is_floating_point() or y.is_complex():
        return y.to(device, non_blocking=True)
    return y.to(device, dtype=torch.long, non_blocking=True)


def check_labels(
    y: Any,
    batch: int,
    *,
    func: str,
    param: str = "data",
    num_classes: int | None = None,
    classes_from: str = "",
    idx: Any = None,
    role: str = "",
) -> None:
    """Refuse batch labels that are not one integer class id per sample, in 0..num_classes-1 when given.

    Runs on one example batch at the door and on the error path (:func:`explain_label_error`); the range
    check reads the labels back to the host, so it never runs per training step. ``classes_from`` says where
    ``num_classes`` comes from (e.g. "the model's 10 outputs"); ``idx`` (the batch's sample indices) and
    ``role`` (e.g. "a training batch of epoch 2") let the message name the offending sample.
    """
    want = "integer class ids, one per sample (collated into an int tensor of shape (batch,))"
    if not isinstance(y, torch.Tensor) and np.asarray(y).dtype.kind in "biuf":  # a list, an array
        y = torch.as_tensor(np.asarray(y))
    if not isinstance(y, torch.Tensor):
        raise param_error(
            param, func, want, f"labels of type {type(y).__name__}",
            "Fix: map class names to 0..K-1 (e.g. np.unique(y, return_inverse=True)) and return the int "
            "class id from __getitem__.",
        )  # fmt: skip
    shape = tuple(y.shape)
    multi = y.ndim == 2 and shape[0] == batch and shape[1] > 1
    if y.is_floating_point() or y.is_complex():
        if multi:
            got = f"float labels of shape {shape} (one-hot or soft labels: a row of {shape[1]} per sample)"
            fix = "Fix: pass class indices instead: y.argmax(1) (np.argmax(y, axis=1) for arrays)."
        else:
            got = f"labels of dtype {y.dtype} (shape {shape})"
            fix = (
                "Fix: give integer class ids, e.g. y.astype('int64') for arrays, or return int(y) (or a "
                "torch.long tensor) from __getitem__."
            )
        raise param_error(param, func, want, got, fix)
    if shape != (batch,):
        if shape == (batch, 1):
            got = f"labels of shape {shape} (a 1-element label per sample)"
            fix = "Fix: return a scalar label from __getitem__ (int(y), not a 1-element array), or pass y.ravel()."
        elif multi:
            got = f"labels of shape {shape} (several targets per sample: one-hot or multi-label)"
            fix = (
                "Training is single-label classification with cross-entropy. Fix: pass the class index "
                "(y.argmax(1) for one-hot labels); multi-label targets need a loss and metrics of your own."
            )
        else:
            got = f"labels of shape {shape} for a batch of {batch} samples"
            fix = "Fix: return one label per sample from __getitem__ (an int)."
        raise param_error(param, func, want, got, fix)
    if num_classes is None or y.numel() == 0:
        return
    bad = (y < 0) | (y >= num_classes)
    if not bool(bad.any()):  # sync point: the example batch, or the error path
        return
    pos = bad.nonzero().flatten().cpu()
    label = int(y[pos[0]])
    where = f"batch position {int(pos[0])}"
    if isinstance(idx, torch.Tensor) and idx.shape == y.shape:
        where = f"sample {int(idx[pos[0]])}"
    more = f", and {len(pos) - 1} more in this batch" if len(pos) > 1 else ""
    raise param_error(
        param, func, f"labels in 0..{num_classes - 1} ({classes_from or f'{num_classes} classes'})",
        f"label {label} ({where}{more}{f'; in {role}' if role else ''})",
        "Fix: remap the labels to 0..K-1 (e.g. np.unique(y, return_inverse=True)), or give the model one "
        "output per class.",
    )  # fmt: skip


def explain_label_error(
    e: BaseException, y: Any, idx: Any, logits: torch.Tensor, *, func: str, role: str
) -> LatentccError | None:
    """A clear error for PyTorch's raw error about a batch's labels (``Target 10 is out of bounds``, float
    or one-hot labels) in a batch no door check saw, e.g. a later training batch; None if the labels are fine
    (the error came from elsewhere). Only runs after an error, so its host sync costs nothing."""
    if isinstance(e, LatentccError) or not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        return None
    width = logits.shape[1]
    try:
        check_labels(
            y, logits.shape[0], func=func, num_classes=width, idx=idx, role=role,
            classes_from=f"the model's {width} outputs, one per class",
        )  # fmt: skip
    except LatentccError as clear:
        return clear
    except Exception:  # reading the labels failed too (a CUDA device-side assert poisons the context)
        return None
    return None


def check_materialised(model: torch.nn.Module, func: str) -> None:
    """Refuse a model whose weights are on the 'meta' device (shapes without values): nothing could run it."""
    named = itertools.chain(model.named_parameters(), model.named_buffers())
    meta = [name for name, t in named if t.is_meta]
    if meta:
        raise param_error(
            "model", func, "a model whose weights hold values",
            f"{len(meta)} parameter(s)/buffer(s) on the 'meta' device, e.g. '{meta[0]}'",
            "A model on 'meta' has shapes but no values (built under torch.device('meta'), "
            "init_empty_weights, or low_cpu_mem_usage loading). Fix: materialise and load the weights first, "
            "e.g. model.to_empty(device='cpu') then model.load_state_dict(state).",
        )  # fmt: skip


def run_model(model: torch.nn.Module, x: Any, func: str) -> Any:
    """``model(x)``; PyTorch's raw dtype error for inputs of the wrong kind becomes a clear one: integers
    into a float layer (Linear, Conv, RNN), or floats into an ``nn.Embedding`` (which takes token ids).

    Inputs are never cast here: integer inputs are right for token ids, float ones for everything else, and
    only the model's first layer knows which it wants; the error is translated after that layer refused.
    """
    try:
        return model(x)
    except (RuntimeError, ValueError) as e:
        clear = None if isinstance(e, LatentccError) else _input_dtype_error(e, x, model, func)
        if clear is None:
            raise
        raise clear from e


# PyTorch's messages for integer inputs to Linear ("mat1 and mat2 must have the same dtype"), Conv ("Input type
# (long int) and bias type (float) should be the same"), RNNs ("input dtype ... does not match weight dtype")
_DTYPE_CLASH = re.compile(r"same dtype|should be the same|does not match weight dtype|expected scalar type")
_EMBEDDING_CLASH = "argument #1 'indices'"  # nn.Embedding given float inputs


def _input_dtype_error(e: BaseException, x: Any, model: torch.nn.Module, func: str) -> LatentccError | None:
    if not isinstance(x, torch.Tensor) or x.is_complex():
        return None
    raw = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if x.is_floating_point():
        if _EMBEDDING_CLASH not in str(e):
            return None
        return param_error(
            "data", func, "integer token ids for a model that starts with an nn.Embedding",
            f"inputs of dtype {x.dtype}",
            f"PyTorch raised: {raw}. Fix: return the ids as an int64 tensor from __getitem__ "
            "(torch.as_tensor(ids, dtype=torch.long)).",
        )  # fmt: skip
    floats = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if not floats or not _DTYPE_CLASH.search(str(e)):
        return None
    computes = " / ".join(sorted(str(d).removeprefix("torch.") for d in floats))
    return param_error(
        "data", func, f"float inputs for a model that computes in {computes}",
        f"inputs of dtype {x.dtype}",
        f"PyTorch raised: {raw}. Integer inputs suit token ids fed to an nn.Embedding, not a Linear or Conv "
        "layer. Fix: convert the data to float, e.g. latentcc.data.from_arrays(x.astype('float32'), ...), or "
        "return x.float() from __getitem__ (x.float() / 255 for 0..255 pixels).",
    )  # fmt: skip


def logits_of(output: Any, func: str) -> torch.Tensor:
    """The logits in a model's output: a tensor as is; a dict or Hugging Face ``ModelOutput`` with a
    ``"logits"`` entry, or an object with a ``.logits`` tensor (torchvision's ``InceptionOutputs``).

    Anything else (a plain tuple, a dict without "logits") raises, naming what the model returned: which
    element of a tuple holds the logits is not something to guess.
    """
    if isinstance(output, torch.Tensor):
        return output
    logits = output.get("logits") if isinstance(output, Mapping) else getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    raise param_error(
        "model", func, "a classifier whose forward returns the logits: a tensor (batch, classes), or a dict / "
        "Hugging Face ModelOutput with a 'logits' tensor", _describe(output),
        "Fix: make forward return the logits tensor, or wrap the model in a module whose forward picks them, "
        "e.g. return self.model(x)[0] for a tuple whose first element holds them.",
    )  # fmt: skip


def check_logits(logits: torch.Tensor, batch: int, func: str) -> None:
    """Refuse logits that are not (batch, classes): cross-entropy and top-k accuracy read them that way."""
    shape = tuple(logits.shape)
    if logits.ndim == 2 and shape[0] == batch:
        return
    if logits.ndim == 3 and shape[0] == batch and shape[1] == 1:
        fix = "Fix: drop the extra dimension in forward: return logits.squeeze(1)."
    elif logits.ndim >= 3 and shape[0] == batch:
        fix = "Fix: reduce them to one row per sample in forward (pool over positions, or take the class token)."
    elif logits.ndim == 1:
        fix = "Fix: one output per class (2 for a binary task, with cross-entropy), shape (batch, classes)."
    else:
        fix = "Fix: return one row of class scores per sample, shape (batch, classes)."
    raise param_error(
        "model", func, f"a classifier returning logits of shape (batch, classes) = ({batch}, K)",
        f"logits of shape {shape}", fix,
    )  # fmt: skip


def _describe(output: Any) -> str:
    """What a model returned, in words: "a tuple (Tensor, Tensor)", "a dict with keys ['a', 'b']"."""
    if isinstance(output, tuple | list):
        return f"a {type(output).__name__} ({', '.join(type(v).__name__ for v in output[:5])}{', ...' if len(output) > 5 else ''})"
    if isinstance(output, Mapping):
        return f"a {type(output).__name__} with keys {list(output)[:8]} and no 'logits' tensor"
    return f"a {type(output).__name__}"
