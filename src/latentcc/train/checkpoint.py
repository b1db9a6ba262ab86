"""Training checkpoints as safetensors + JSON, written atomically and verified by checksum.

Layout of ``<run>/checkpoints/``::

    epoch-0003/model.safetensors      model weights
    epoch-0003/state.safetensors      every other tensor (optimizer moments, RNG states)
    epoch-0003/state.json             the rest (epoch, step, best so far, scheduler, param groups)
    epoch-0003/MANIFEST.json          sha256 of each file above; written last
    latest.json                       {"dir": "epoch-0003"}; replaced atomically after MANIFEST

A checkpoint is written into a temporary folder and renamed into place, then ``latest.json`` is
swapped, so an interruption at any point leaves the previous checkpoint intact and pointed to.
No pickle is involved anywhere: loading a checkpoint never executes code.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from latentcc.plumbing import atomic
from latentcc.plumbing.atomic import (
    atomic_write_json,
    describe_owner,
    file_mode,
    fsync_dir,
    make_temp_folder,
    remove_stale_temps,
    sha256_file,
    write_error,
)
from latentcc.plumbing.errors import CheckpointError, WriteError

_TENSOR = "__tensor__"
_FLOAT = "__float__"  # NaN / inf: strict JSON has no token for them, so they are tagged


def flatten_state(obj: Any, prefix: str = "") -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a nested state (dicts/lists/tensors/scalars) into a JSON tree and a flat tensor dict."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(o: Any, key: str) -> Any:
        if isinstance(o, torch.Tensor):
            name = key or "tensor"
            tensors[name] = o.detach().contiguous().cpu()
            return {_TENSOR: name}
        if isinstance(o, dict):
            if not all(isinstance(k, (str, int)) for k in o):
                raise TypeError(f"checkpoint state keys must be str or int; got {list(o)[:5]}")
            # int keys (optimizer param ids) are kept by tagging them, JSON only has string keys
            return {"__dict__": [[k, walk(v, f"{key}.{k}" if key else str(k))] for k, v in o.items()]}
        if isinstance(o, (list, tuple)):
            return [walk(v, f"{key}.{i}" if key else str(i)) for i, v in enumerate(o)]
        if isinstance(o, float) and not math.isfinite(o):
            return {_FLOAT: repr(o)}  # 'nan', 'inf', '-inf': float() reads them back exactly
        if o is None or isinstance(o, (bool, int, float, str)):
            return o
        raise TypeError(
            f"cannot store {type(o).__name__} at '{key}' in a checkpoint (only tensors, numbers, str, lists, dicts)"
        )

    return walk(obj, prefix), tensors


def unflatten_state(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(tree, dict):
        if _TENSOR in tree:
            return tensors[tree[_TENSOR]]
        if _FLOAT in tree:
            return float(tree[_FLOAT])
        return {k: unflatten_state(v, tensors) for k, v in tree["__dict__"]}
    if isinstance(tree, list):
        return [unflatten_state(v, tensors) for v in tree]
    return tree


def save_checkpoint(
    ckpt_root: Path, name: str, model: nn.Module, state: dict[str, Any], *, keep: int = 2
) -> Path:
    """Write ``model`` weights and ``state`` (nested, may hold tensors) as checkpoint ``name``; prune to ``keep``."""
    try:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        tmp = make_temp_folder(ckpt_root, prefix=f".{name}.")
    except OSError as e:
        raise _ckpt_write_error(ckpt_root, name, e) from e
    try:
        weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        _save_tensors(weights, tmp / "model.safetensors")
        tree, tensors = flatten_state(state)
        _save_tensors(tensors, tmp / "state.safetensors")
        (tmp / "state.json").write_text(json.dumps(tree, allow_nan=False))  # strict JSON
        manifest = {f: sha256_file(tmp / f) for f in _FILES}
        atomic_write_json(tmp / "MANIFEST.json", manifest)
        fsync_dir(tmp)
        final = ckpt_root / name
        if final.exists():  # an earlier, unreferenced attempt at the same epoch: replace it
            shutil.rmtree(final)
        atomic.replace(tmp, final)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise _ckpt_write_error(ckpt_root, name, e) from e
        raise
    fsync_dir(ckpt_root)
    atomic_write_json(ckpt_root / "latest.json", {"dir": name})
    _prune(ckpt_root, keep=keep, protect=name)
    return final


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file(tensors, str(path))
    os.chmod(path, file_mode())  # safetensors creates its files 0600 whatever the umask


def _ckpt_write_error(ckpt_root: Path, name: str, e: OSError) -> WriteError:
    try:
        prev = latest_checkpoint(ckpt_root)
    except CheckpointError:
        prev = None
    kept = (
        f"the previous checkpoint {prev.name} is intact" if prev is not None else "no checkpoint was written"
    )
    return write_error(ckpt_root / name, e, what=f"checkpoint {name} in {ckpt_root}", kept=kept)


def _prune(ckpt_root: Path, *, keep: int, protect: str) -> None:
    dirs = sorted(p for p in ckpt_root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for p in dirs[: max(0, len(dirs) - keep)]:
        if p.name != protect:
            shutil.rmtree(p, ignore_errors=True)
    for p in ckpt_root.iterdir():  # temp folders of interrupted writes
        if p.is_dir() and p.name.startswith("."):
            shutil.rmtree(p, ignore_errors=True)
    remove_stale_temps(ckpt_root)  # e.g. the .latest.json.<random>.tmp of a run killed while committing


_FILES = ("model.safetensors", "state.safetensors", "state.json")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # a plain folder name: no path separators, no ".."


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    pointer = ckpt_root / "latest.json"
    if not pointer.is_file():
        return None
    try:
        name = json.loads(_read_text(pointer))["dir"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"{pointer} is corrupt ({e}); nothing was changed. Delete it to start over."
        ) from e
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise CheckpointError(
            f"{pointer} names {name!r}, not a checkpoint folder inside {ckpt_root}; refusing to follow it. "
            "Delete it to start over."
        )
    return ckpt_root / name


def verify_checkpoint(path: Path) -> None:
    """Raise CheckpointError unless MANIFEST.json lists every checkpoint file and each matches its sha256."""
    manifest_path = path / "MANIFEST.json"
    if not manifest_path.is_file():
        raise CheckpointError(
            f"checkpoint {path} has no MANIFEST.json (an interrupted or foreign write); refusing to load it."
        )
    try:
        manifest = json.loads(_read_text(manifest_path))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{manifest_path} is corrupt ({e}); refusing to load {path}.") from e
    if (
        not isinstance(manifest, dict)
        or sorted(manifest) != sorted(_FILES)
        or not all(isinstance(v, str) for v in manifest.values())
    ):
        raise CheckpointError(
            f"{manifest_path} must map exactly {list(_FILES)} to sha256 digests; it holds "
            f"{sorted(manifest) if isinstance(manifest, dict) else type(manifest).__name__}. Refusing to load {path}."
        )
    for fname, digest in manifest.items():
        f = path / fname
        if not f.is_file():
            raise CheckpointError(f"checkpoint {path} lacks {fname}; refusing to load it.")
        if _sha256(f) != digest:
            raise CheckpointError(
                f"checkpoint file {f} fails its sha256 check (truncated or corrupt); refusing to load it."
            )


def load_checkpoint(path: Path, model: nn.Module, *, verified: bool = False) -> dict[str, Any]:
    """Verify and load checkpoint ``path`` into ``model`` (in place); return the saved ``state``.

    ``verified``: :func:`verify_checkpoint` already passed on ``path`` (e.g. in :func:`peek_state`).
    """
    if not verified:
        verify_checkpoint(path)
    load_weights(path / "model.safetensors", model)
    tensors = load_file(str(path / "state.safetensors"))
    return unflatten_state(json.loads(_read_text(path / "state.json")), tensors)


def peek_state(path: Path, key: str) -> Any:
    """Top-level entry ``key`` of checkpoint ``path``'s state.json (no tensors), or None if absent.

    Read before :func:`load_checkpoint` so a check can refuse a resume before the model changes. The
    checkpoint is verified first (a CheckpointError for a corrupt or truncated one, rather than a check
    that reads "absent" from it); pass ``verified=True`` to the :func:`load_checkpoint` that follows.
    """
    verify_checkpoint(path)
    try:
        tree = json.loads((path / "state.json").read_text())
        entries = dict(tree["__dict__"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None
    try:
        return unflatten_state(entries.get(key), {})
    except (KeyError, TypeError, ValueError):
        return entries.get(key)  # not latentcc's shape: returned raw, and the caller calls it corrupt


def load_weights(path: Path, model: nn.Module) -> None:
    """Load a safetensors weight file strictly, with a message that says which model it does not fit."""
    _check_readable(path)  # a permission problem is not a corrupt file
    try:
        weights = load_file(str(path))
    except FileNotFoundError as e:
        raise CheckpointError(f"The weights file {path} does not exist.") from e
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({type(e).__name__}: {e}); it is truncated, corrupt or "
            "of another format. Nothing was loaded: the model is unchanged."
        ) from e
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        # torch's text is a wall of every key; name the model and a few keys of each kind instead
        what = _misfit(weights, model) or str(e).splitlines()[0]
        raise CheckpointError(
            f"{path} does not fit this model ({type(model).__name__}: {what}). It was "
            "saved from another architecture or number of classes: use the same --model and --data as the run "
            "that wrote it (a run folder's config.json names them)."
        ) from e


def _misfit(weights: dict[str, Any], model: nn.Module) -> str:
    """Which tensors of ``weights`` the model lacks, which it needs but misses, and which differ in size."""
    own = model.state_dict()

    def few(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    sizes = [
        f"{k}: {list(weights[k].shape)} in the file, {list(own[k].shape)} in the model"
        for k in own
        if k in weights and weights[k].shape != own[k].shape
    ]
    parts = [f"size mismatch for {few(sizes)}"] if sizes else []
    if missing:
        parts.append(
            f"{len(missing)} {_weights(missing)} of the model missing from the file ({few(missing)})"
        )
    if unexpected:
        parts.append(
            f"{len(unexpected)} {_weights(unexpected)} in the file not in the model ({few(unexpected)})"
        )
    return "; ".join(parts)


def _weights(keys: list[str]) -> str:
    return "weight" if len(keys) == 1 else "weights"


def unreadable_error(path: Path, e: OSError) -> CheckpointError:
    """The CheckpointError for a run file this process may not read (another user's run, a 0600 file)."""
    owner = describe_owner(path)
    return CheckpointError(
        f"{path} cannot be read ({e.strerror or e}{'; ' + owner if owner else ''}); nothing was loaded or changed. "
        "Use it as the user who owns it, or copy the run folder to one you own (cp -r RUN COPY) and use the copy."
    )


def _check_readable(path: Path) -> None:
    try:
        with open(path, "rb"):
            pass
    except PermissionError as e:
        raise unreadable_error(path, e) from e
    except (FileNotFoundError, IsADirectoryError):  # reported by the caller in its own words
        pass


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except PermissionError as e:
        raise unreadable_error(path, e) from e


def _sha256(path: Path) -> str:
    try:
        return sha256_file(path)
    except PermissionError as e:
        raise unreadable_error(path, e) from e
