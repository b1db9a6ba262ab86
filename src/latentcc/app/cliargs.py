"""Command-line flags generated from the config dataclasses (names, types, defaults, help).

One source of truth: a field ``max_samples: int = 0`` with help text becomes ``--max-samples``
with that default and help, and ``--config run.json`` may set any field by its name.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from latentcc.config import config_from_dict
from latentcc.plumbing.errors import LatentccError

C = TypeVar("C")


def add_config_args(
    parser: argparse.ArgumentParser,
    cls: type[Any],
    *,
    title: str | None = None,
    defaults: dict[str, Any] | None = None,
    prefix: str = "",
    exclude: tuple[str, ...] = (),
) -> None:
    """Add one ``--flag`` per field of ``cls``; ``defaults`` overrides shown defaults (e.g. for the demo).

    ``prefix`` (e.g. "lcc") namespaces the flags (``--lcc-k``) and their destinations (``lcc_k``) so
    two configs may share field names. ``exclude`` names fields that get no flag here.
    """
    group = parser.add_argument_group(title or cls.__name__)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        default = (defaults or {}).get(f.name, f.default)
        dest = f"{prefix}_{f.name}" if prefix else f.name
        flag = "--" + dest.replace("_", "-")
        help_ = f"{f.metadata.get('help', '')} (default: {default})"
        tp = hints[f.name]
        # argparse.SUPPRESS as default: only flags the user typed are set, so --config values are not masked
        if tp is bool:
            group.add_argument(
                flag,
                dest=dest,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_,
            )
        elif (pair := _number_or_words(tp)) is not None:  # e.g. float | Literal["auto"]: a number or a word
            number, words = pair
            group.add_argument(
                flag,
                dest=dest,
                type=_number_or(number, words, flag),
                default=argparse.SUPPRESS,
                help=help_,
                metavar=f"{f.name.upper()}|{'|'.join(words)}",
            )
        elif typing.get_origin(tp) is typing.Literal:
            choices = typing.get_args(tp)
            group.add_argument(flag, dest=dest, choices=choices, default=argparse.SUPPRESS, help=help_)
        elif _optional_of(tp) is not None:
            group.add_argument(
                flag,
                dest=dest,
                type=_none_or(_optional_of(tp)),
                default=argparse.SUPPRESS,
                help=help_,
                metavar=f"{f.name.upper()}|none",
            )
        elif typing.get_origin(tp) is tuple:  # tuple[str, ...]: comma-separated
            group.add_argument(
                flag, dest=dest, type=_csv, default=argparse.SUPPRESS, help=help_, metavar="A,B,..."
            )
        else:
            group.add_argument(
                flag, dest=dest, type=tp, default=argparse.SUPPRESS, help=help_, metavar=f.name.upper()
            )


def _optional_of(tp: Any) -> Any:
    """``X`` for ``X | None``, else None."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        return next(a for a in args if a is not type(None))
    return None


def _number_or_words(tp: Any) -> tuple[type, tuple[str, ...]] | None:
    """``(float, ("auto",))`` for ``float | Literal["auto"]`` (int likewise), else None."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) not in (typing.Union, types.UnionType) or len(args) != 2:
        return None
    numbers = [a for a in args if a in (int, float)]
    literals = [a for a in args if typing.get_origin(a) is typing.Literal]
    if len(numbers) != 1 or len(literals) != 1:
        return None
    return numbers[0], tuple(str(w) for w in typing.get_args(literals[0]))


def _number_or(number: type, words: tuple[str, ...], flag: str) -> Any:
    def parse(text: str) -> Any:
        if text in words:
            return text
        try:
            return number(text)
        except ValueError:
            kind = "a number" if number is float else "an integer"
            choices = " or ".join(repr(w) for w in words)
            raise argparse.ArgumentTypeError(
                f"{flag} takes {kind} or {choices}; got {text!r}. Example: {flag} 0.01 or {flag} {words[0]}."
            ) from None

    parse.__name__ = number.__name__
    return parse


def _none_or(tp: Any) -> Any:
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else tp(text)

    parse.__name__ = getattr(tp, "__name__", "value")  # argparse names the type in its error messages
    return parse


def _csv(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def config_from_args(
    cls: type[C],
    ns: argparse.Namespace,
    *,
    section: str | None = None,
    file_values: dict[str, Any] | None = None,
    defaults: dict[str, Any] | None = None,
    prefix: str = "",
    exclude: tuple[str, ...] = (),
) -> C:
    """Build ``cls`` from (in rising priority) field defaults, ``defaults``, the --config file section, typed flags.

    Flags named in ``exclude`` are not read (another config owns a flag of the same name).
    """
    names = {f.name for f in dataclasses.fields(cls)} - set(exclude)  # type: ignore[arg-type]
    values: dict[str, Any] = dict(defaults or {})
    values |= (file_values or {}).get(section or cls.__name__, {})
    cut = len(prefix) + 1 if prefix else 0
    given = {k[cut:]: v for k, v in vars(ns).items() if not prefix or k.startswith(prefix + "_")}
    values |= {k: v for k, v in given.items() if k in names}
    return config_from_dict(cls, values)


def read_config_file(path: str | Path | None, sections: tuple[str, ...]) -> dict[str, Any]:
    """Parse a JSON config ({"train": {...}, "data": {...}, "model": {...}}) without eval; refuse unknown sections."""
    if path is None:
        return {}
    p = Path(path)
    try:
        values = json.loads(p.read_text())
    except FileNotFoundError as e:
        raise LatentccError(
            f"The config file {p} does not exist; pass an existing JSON file to --config."
        ) from e
    except json.JSONDecodeError as e:
        raise LatentccError(f"The config file {p} is not valid JSON ({e}); fix it or drop --config.") from e
    if not isinstance(values, dict):
        raise LatentccError(f"The config file {p} must hold a JSON object with sections {list(sections)}.")
    unknown = sorted(set(values) - set(sections) - {"provenance", "dataset", "warnings"})  # run folders only
    if unknown:
        raise LatentccError(f"Unknown section(s) {unknown} in {p}; valid sections are {list(sections)}.")
    return values
