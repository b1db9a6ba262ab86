"""The `latentcc probe` command's own inputs: a superclass file (--groups) and a run folder (--checkpoint).

CLI-only: the library's :func:`latentcc.profile` takes groups as a Python mapping and a model as built.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from latentcc.plumbing.errors import CheckpointError, LatentccError, param_error


def load_groups(path: str | Path) -> dict[str, str]:
    """Read a superclass file: ``{"group": ["class", ...], ...}`` or ``{"class": "group", ...}`` (JSON, no eval).

    Returns ``{class name: group name}``; a class listed under two groups is refused.
    """
    p = Path(path)
    try:
        raw = json.loads(p.read_text())
    except FileNotFoundError:
        raise LatentccError(
            f"The groups file {p} does not exist; pass an existing JSON file to --groups."
        ) from None
    except json.JSONDecodeError as e:
        raise LatentccError(f"The groups file {p} is not valid JSON ({e}).") from None
    if not isinstance(raw, dict) or not raw:
        raise LatentccError(
            f"The groups file {p} must hold a non-empty JSON object: "
            '{"group": ["class", ...]} or {"class": "group"}.'
        )
    out: dict[str, str] = {}
    for key, value in raw.items():
        members = value if isinstance(value, list) else None
        if members is None:
            if not isinstance(value, (str, int)):
                raise LatentccError(
                    f"The groups file {p}: entry {key!r} must be a group name or a list of classes."
                )
            members, key = [key], str(value)
        for c in members:
            if str(c) in out and out[str(c)] != str(key):
                raise LatentccError(
                    f"The groups file {p} puts class {c!r} in two groups ({out[str(c)]!r}, {key!r})."
                )
            out[str(c)] = str(key)
    return out


# A run's weights fit only the architecture and class count it was trained with: what --model and --data pick.
_RUN_SETTINGS = (("model", "model", "--model"), ("data", "data", "--data"))


def check_checkpoint_settings(
    run: str | Path, run_values: Mapping[str, Any], given: Mapping[str, Any], *, func: str = "latentcc probe"
) -> None:
    """Refuse a typed ``--model`` or ``--data`` that differs from the ones the run at ``run`` was trained with.

    ``run_values`` is the run's config.json ({"model": {"model": ...}, "data": {"data": ...}}), ``given``
    the flags the user typed (``vars(ns)``: config flags are only set when typed). Without this check the
    run's weights would meet a model of another architecture or head size, and the user would read torch's
    list of missing keys instead of the conflict of flags that caused it. Runs without config.json have
    nothing to compare: ``load_weights`` says which weights do not fit.
    """
    for section, name, flag in _RUN_SETTINGS:
        values = run_values.get(section)
        saved = values.get(name) if isinstance(values, Mapping) else None
        if name not in given or saved is None or _same_setting(str(saved), str(given[name])):
            continue
        why = (
            "The run's weights fit only that model's architecture."
            if section == "model"
            else "The run's model has a head for that data's classes, and its weights were fitted to that data."
        )
        raise param_error(
            name, func, f"the {section} the run was trained with when --checkpoint is given ({saved!r}, from "
            f"{Path(run) / 'config.json'})", given[name],
            f"{why} Fix: drop {flag} (the run's {section} is used), pass {flag} {saved}, or drop --checkpoint to "
            f"probe {given[name]!r} without the run's weights.",
        )  # fmt: skip


# The data settings that decide which samples each split holds: with --checkpoint they must be the run's, or the
# probe's validation / test splits would hold samples the run trained on.
_SPLIT_SETTINGS = (
    ("max_samples", "--max-samples"), ("split_seed", "--split-seed"), ("val_fraction", "--val-fraction"),
    ("test_fraction", "--test-fraction"),
)  # fmt: skip


def check_checkpoint_split(
    run: str | Path, run_values: Mapping[str, Any], given: Mapping[str, Any], *, func: str = "latentcc probe"
) -> None:
    """Refuse a typed split setting (subset size, split seed, fractions) that differs from the run's."""
    data = run_values.get("data")
    if not isinstance(data, Mapping):
        return  # a run without config.json: nothing to compare
    for name, flag in _SPLIT_SETTINGS:
        saved = data.get(name)
        if name not in given or saved is None or float(saved) == float(given[name]):
            continue
        raise param_error(
            name, func, f"the run's own value when --checkpoint is given ({saved!r}, from {Path(run) / 'config.json'})",
            given[name],
            "Another subset or split would put samples the run trained on into the probed validation and test "
            f"splits. Fix: drop {flag} (the run's value is used), or drop --checkpoint to probe the model as built.",
        )  # fmt: skip


def load_run_weights(run: str | Path, model: nn.Module, *, model_name: str, data_name: str) -> None:
    """Load the run's best weights into ``model``, or say which --model and --data the model was built from.

    ``load_weights`` knows the file and the module, not the flags: the name the user typed is what they can
    change, and a run without config.json (whose --model/--data nothing could check up front) needs it most.
    """
    from latentcc.train.checkpoint import load_weights

    run = Path(run)
    try:
        load_weights(run / "best.safetensors", model)
    except CheckpointError as e:
        # unreadable or corrupt (load_weights' own words): nothing the flags could change
        if "does not fit this model" not in str(e):
            raise
        unchecked = (
            f"; {run} has no config.json naming the run's own, so pass the --model and --data it was trained with"
            if not (run / "config.json").is_file()
            else ""
        )
        raise CheckpointError(
            f"{e} The model here is {model_name!r} built for {data_name!r}{unchecked}."
        ) from e


def _same_setting(a: str, b: str) -> bool:
    """Same model or data name, or the same local folder spelled two ways (relative, absolute, a link)."""
    if a == b:
        return True
    try:
        return Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False
