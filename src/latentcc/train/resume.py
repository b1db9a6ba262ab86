"""Resuming a run folder: the checks that make a resume continue the same run, or refuse and say why.

``fit(..., resume=True)`` (and ``latentcc finetune --resume``, which calls it) is refused, before
anything in the folder changes, when

* a file or folder the resume reads or writes is not accessible to this process (another user's run);
* ``config.json`` is missing or unreadable: it records what the run started with, and without it
  nothing can be checked;
* a setting that changes the computation differs (epochs, lr, LCC, the model's and data's names...);
  the settings in :data:`RESUME_FREE` may differ;
* the model or the data differ from the fingerprints recorded at the run's start
  (:mod:`latentcc.train.fingerprint`): another architecture, other starting weights, other samples;
* the caller's ``loss_fn``, ``penalty``, ``optimizer`` or ``scheduler`` differ from those the run started
  with (another function, other code or captured values, another class or hyper-parameters), or one is
  added or dropped;
* ``config.json`` is not the record latentcc wrote (a settings section that is not an object, a
  fingerprint of another shape): it is corrupt, and the message says which part.

A resumed run keeps ``config.json``'s first record (settings, fingerprint, provenance) and appends one
``resumes`` entry per resume: its provenance and the free settings it changed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

from latentcc.config import LEGACY_VALUES, RENAMED_KEYS
from latentcc.plumbing.atomic import describe_owner
from latentcc.plumbing.errors import CheckpointError
from latentcc.train.checkpoint import unreadable_error
from latentcc.train.fingerprint import fingerprint_changes, training_changes

# Sections of config.json that fit writes as JSON objects (TrainConfig, LCCConfig), and those latentcc
# finetune adds (ModelConfig, DataConfig, MethodConfig) and reads back as flags on --resume
_FIT_SECTIONS = ("train", "lcc")
_CLI_SECTIONS = (*_FIT_SECTIONS, "data", "model", "method")
# Settings that may differ between a run and its resumption: they do not change what is computed.
RESUME_FREE = {"train": {"progress", "tensorboard", "device", "num_workers", "keep_checkpoints"}}
# Sections of config.json that are records, not settings: compared by their own rules or not at all.
_RECORDS = {"provenance", "dataset", "fingerprint", "resumes", "warnings"}  # warnings: derived
_FIX_ACCESS = (
    "Resume it as the user who owns it, or copy the run to a folder you own (cp -r RUN COPY) and resume the "
    "copy (--out COPY --resume)."
)


def check_resume_access(run_dir: Path) -> None:
    """Refuse now, naming the path, a resume that would fail on permissions later (another user's run).

    The run folder and ``checkpoints/`` (and its checkpoint folders, which pruning deletes) must be
    writable; ``config.json``, ``best.safetensors`` and the checkpoints' files readable.
    """
    rwx, r = os.R_OK | os.W_OK | os.X_OK, os.R_OK
    try:
        _need(run_dir, rwx, run_dir)
        ckpt = run_dir / "checkpoints"
        _need(ckpt, rwx, run_dir)
        for f in (run_dir / "config.json", run_dir / "best.safetensors"):
            _need(f, r, run_dir)
        if ckpt.is_dir():
            for p in sorted(ckpt.iterdir()):
                _need(p, rwx if p.is_dir() else r, run_dir)
                if p.is_dir() and not p.name.startswith("."):
                    for f in sorted(p.iterdir()):
                        _need(f, r, run_dir)
    except PermissionError as e:  # os.access said yes, the filesystem said no (ACLs, root-squashed NFS...)
        path = Path(e.filename) if e.filename else run_dir
        raise CheckpointError(
            f"Cannot resume {run_dir}: {path} cannot be accessed ({e.strerror}; {describe_owner(path)}). "
            + _FIX_ACCESS
        ) from e


def _need(path: Path, mode: int, run_dir: Path) -> None:
    if not path.exists():
        return
    effective = os.access in os.supports_effective_ids  # the uid that opens files, e.g. under sudo -u
    if not os.access(path, mode, effective_ids=effective):
        verb = "read" if mode == os.R_OK else "read and written"
        raise CheckpointError(
            f"Cannot resume {run_dir}: {path} cannot be {verb} by this process ({describe_owner(path)}). "
            + _FIX_ACCESS
        )


def read_run_config(path: Path, *, sections: Iterable[str] = _FIT_SECTIONS) -> dict[str, Any]:
    """``config.json`` of the run being resumed, or a CheckpointError naming the file and the fix.

    ``sections`` must be JSON objects when present: fit's own, and the CLI's when it reads its flags back
    (a Python caller's ``extra_config`` may hold anything under other names).
    """
    run_dir = path.parent
    fix = "Restore it from a copy of the run, or start a new run in another folder (without --resume)."
    if not path.exists():
        raise CheckpointError(
            f"Cannot resume {run_dir}: {path} is missing. It records the settings, model and data the run "
            f"started with; without it the resume cannot be checked to continue the same run. {fix}"
        )
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except PermissionError as e:
        raise unreadable_error(path, e) from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(
            f"Cannot resume {run_dir}: {path} is corrupt ({type(e).__name__}: {e}); the resume cannot be checked "
            f"to continue the same run. {fix}"
        ) from e
    if not isinstance(saved, dict):
        raise CheckpointError(
            f"Cannot resume {run_dir}: {path} is corrupt (a JSON {type(saved).__name__}, not the run's record "
            f"of settings); the resume cannot be checked to continue the same run. {fix}"
        )
    for section in sorted(sections):  # refused here as corrupt, not as a raw error where they are read
        if section in saved and not isinstance(saved[section], dict):
            _corrupt(path, _not_a_section(section, saved[section]))
    return saved


def find_run_config(out: Path) -> Path | None:
    """The config.json a ``--resume`` of ``out`` reads its settings from (``out`` or its first seed-*/), if any.

    A corrupt one is refused here as the run's record (not as a bad ``--config`` file).
    """
    try:
        saved = [out / "config.json", *sorted(out.glob("seed-*/config.json"))]
        found = next((p for p in saved if p.is_file()), None)
    except PermissionError as e:
        path = Path(e.filename) if e.filename else out
        raise CheckpointError(
            f"Cannot resume {out}: {path} cannot be read ({e.strerror}; {describe_owner(path)}). "
            + _FIX_ACCESS
        ) from e
    if found is not None:
        read_run_config(found, sections=_CLI_SECTIONS)  # the CLI reads its flags back from these
    return found


def check_same_run(
    saved_path: Path, saved: dict[str, Any], run_config: dict[str, Any], fingerprint: dict[str, Any] | None
) -> None:
    """Refuse to resume with settings that change the computation, or with another model, data or loss."""
    now = json.loads(json.dumps(run_config, default=str))  # tuples -> lists, as stored
    saved = {s: {RENAMED_KEYS.get(s, {}).get(k, k): v for k, v in x.items()} if isinstance(x, dict) else x
             for s, x in saved.items()}  # fmt: skip  # a record written before a rename: today's names
    diffs = []
    for section in sorted((set(saved) | set(now)) - _RECORDS):
        a, b = saved.get(section), now.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            free = RESUME_FREE.get(section, set())
            # a setting added to latentcc after the run started is absent from its record: the run did what
            # latentcc did then (LEGACY_VALUES where that differs from today's default, else the default)
            before = {**_defaults(section), **LEGACY_VALUES.get(section, {})}
            a = {**{k: v for k, v in before.items() if k in b}, **a}
            diffs += [f"{section}.{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
                      if k not in free and a.get(k) != b.get(k)]  # fmt: skip
        elif a is not None and b is not None and isinstance(b, dict) and section in _FIT_SECTIONS:
            # latentcc writes these sections as objects: anything else was not written by latentcc
            _corrupt(saved_path, _not_a_section(section, a))
        elif a != b:
            diffs.append(f"{section}: {_state(a)} in the run, {_state(b)} now")
    if diffs:
        raise CheckpointError(
            f"Cannot resume {saved_path.parent} with different settings ({'; '.join(diffs)}). Resume with the run's "
            f"own settings (the CLI reads them from {saved_path.name} when --resume is given without flags), or start "
            "a new run in another folder."
        )
    if fingerprint is None:
        return
    recorded = saved.get("fingerprint")
    if recorded is None:
        _unchecked(saved_path, "the run's model and data")
        return
    if not isinstance(recorded, dict):
        _corrupt(saved_path, f"its 'fingerprint' is a {_kind(recorded)}, not the record latentcc writes")
    try:
        changes = fingerprint_changes(recorded, fingerprint)
        training = recorded.get("training")
        steps = (
            training_changes(training, fingerprint.get("training") or {})
            if isinstance(training, dict)
            else []
        )
    except (AttributeError, TypeError, KeyError, IndexError, ValueError) as e:  # edited by hand
        _corrupt(
            saved_path, f"its 'fingerprint' does not have the shape latentcc writes ({type(e).__name__}: {e})"
        )
    if changes:
        raise CheckpointError(
            f"Cannot resume {saved_path.parent} with a different model or data: {'; '.join(changes)}. To continue it, use the same "
            "--model and --data (and --method) as the run that wrote it; from Python, pass the model as built for "
            "the run (before training) and the same data. Or start a new run in another folder."
        )
    if training is None:
        _unchecked(saved_path, "the run's loss_fn, penalty, optimizer and scheduler")
    elif not isinstance(training, dict):
        _corrupt(
            saved_path, f"its 'fingerprint.training' is a {_kind(training)}, not the record latentcc writes"
        )
    if steps:
        raise CheckpointError(
            f"Cannot resume {saved_path.parent} with a different loss or optimizer: {'; '.join(steps)}. A resumed "
            "run must compute what the run computed: pass fit the same loss_fn, penalty, optimizer and scheduler "
            "(built the same way, fresh) as the run that wrote it, or start a new run in another folder."
        )


def _not_a_section(section: str, value: Any) -> str:
    return f"its '{section}' is a {_kind(value)} in the run's record, where latentcc writes a section of settings"


def _kind(v: Any) -> str:
    return {dict: "section", list: "list", str: "str", bool: "bool", int: "number", float: "number"}.get(
        type(v), type(v).__name__
    )


def _state(v: Any) -> str:
    if v is None:
        return "absent"
    if isinstance(v, dict):
        return "a section"
    text = repr(v)
    return text if len(text) <= 60 else f"a {_kind(v)}"


def _corrupt(path: Path, what: str) -> NoReturn:
    raise CheckpointError(
        f"Cannot resume {path.parent}: {path} is corrupt ({what}); the resume cannot be checked to continue the "
        "same run. Restore it from a copy of the run, or start a new run in another folder (without --resume)."
    )


def _unchecked(path: Path, what: str) -> None:
    warnings.warn(
        f"{path} records no fingerprint of {what} (it was written by an older latentcc): the resume cannot "
        "check that they are the same.",
        RuntimeWarning,
        stacklevel=4,
    )


def with_legacy_values(saved: dict[str, Any]) -> dict[str, Any]:
    """A run's config.json record with renamed keys under their new names (:data:`~latentcc.config.RENAMED_KEYS`)
    and :data:`~latentcc.config.LEGACY_VALUES` filled in where a key is absent."""
    out = {}
    for section, v in saved.items():
        if isinstance(v, dict):
            renamed = RENAMED_KEYS.get(section, {})
            v = {renamed.get(k, k): x for k, x in v.items()}
            if section in LEGACY_VALUES:
                v = {**LEGACY_VALUES[section], **v}
        out[section] = v
    return out


def _defaults(section: str) -> dict[str, Any]:
    """The defaults of the config stored under ``section`` of config.json, as stored ({} if none)."""
    from latentcc.config import DataConfig, LCCConfig, MethodConfig, ModelConfig, TrainConfig, config_to_dict

    configs: dict[str, Any] = {
        "train": TrainConfig, "lcc": LCCConfig, "data": DataConfig, "model": ModelConfig, "method": MethodConfig,
    }  # fmt: skip
    if section not in configs:
        return {}
    try:
        default = configs[section]()
    except Exception:  # a config whose defaults are not constructible alone (LCCConfig needs layers)
        fields = dataclasses.fields(configs[section])
        return {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}
    return dict(json.loads(json.dumps(config_to_dict(default), default=str)))


def config_digest(record: dict[str, Any]) -> dict[str, str]:
    """sha256 of config.json's first record (``resumes`` left out: a resume appends there), as stored.

    ``{"": whole record, section: that section}``, over canonical JSON (sorted keys, no spaces) of the
    record as it reads back from config.json, so the digest of the record fit writes equals the digest
    of the file read back. The per-section digests let a refusal name what was edited.
    """
    import hashlib

    from latentcc.plumbing.atomic import strict_json

    stored = json.loads(json.dumps(strict_json(record), allow_nan=False, default=str))  # as written
    first = {k: v for k, v in stored.items() if k != "resumes"}

    def sha(obj: Any) -> str:
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
        return hashlib.sha256(text.encode()).hexdigest()

    return {"": sha(first), **{k: sha(v) for k, v in first.items()}}


def check_config_unedited(saved_path: Path, saved: dict[str, Any], recorded: Any) -> dict[str, str] | None:
    """Refuse a resume of a run whose config.json was edited after it started; return the digest to keep.

    ``recorded``: the digest the latest checkpoint holds (:func:`config_digest` at the run's start).
    ``check_same_run`` compares the settings of the resume with config.json, and the CLI reads its
    settings back from config.json: an edited file (lcc.weight 0.01 -> 10, epochs 6 -> 8, a deleted
    fingerprint) would pass both and silently continue another computation. A checkpoint written
    before latentcc recorded the digest is resumed with a warning (and the digest of the file as it is
    now is recorded from then on).
    """
    now = config_digest(saved)
    if recorded is None:
        warnings.warn(
            f"The checkpoint of {saved_path.parent} records no checksum of {saved_path.name} (it was written by an "
            f"older latentcc): the resume cannot check that {saved_path.name} was not edited after the run started.",
            RuntimeWarning,
            stacklevel=4,  # past fit and its folder-lock wrapper, to the caller,
        )
        return now
    if not isinstance(recorded, dict) or not isinstance(recorded.get(""), str):
        raise CheckpointError(
            f"Cannot resume {saved_path.parent}: its latest checkpoint's record of {saved_path.name}'s checksum is "
            "not the one latentcc writes. Restore the run from a copy, or start a new run in another folder."
        )
    if recorded[""] == now[""]:
        return {k: v for k, v in recorded.items() if isinstance(v, str)}
    sections = sorted(k for k in set(recorded) | set(now) if k and recorded.get(k) != now.get(k))
    which = f" (changed: {', '.join(sections)})" if sections else ""
    raise CheckpointError(
        f"Cannot resume {saved_path.parent}: {saved_path} was edited after the run started{which}. It no longer "
        "matches the checksum its checkpoints recorded, so the resume would continue a different computation "
        "than the epochs already trained (and record settings the run did not use). Fix: restore "
        f"{saved_path.name} as the run wrote it (settings that may differ on resume, e.g. --device or "
        "--num-workers, are given as flags, not by editing the file), or start a new run in another folder."
    )


def resume_record(
    saved: dict[str, Any], run_config: dict[str, Any], provenance: dict[str, Any]
) -> dict[str, Any]:
    """``saved`` (the run's first record, kept) plus this resume: its provenance and the free settings it changed."""
    now = json.loads(json.dumps(run_config, default=str))
    changed = {
        f"{section}.{k}": now.get(section, {}).get(k)
        for section, keys in RESUME_FREE.items()
        for k in sorted(keys)
        if (saved.get(section) or {}).get(k) != now.get(section, {}).get(k)
    }
    before = saved.get("resumes")
    return {
        **saved,
        "resumes": [*(before if isinstance(before, list) else []), {**provenance, "changed": changed}],
    }
