"""Error types and the one message shape every check uses.

Errors name the parameter, the value and the fix, in the style of scikit-learn:
"The 'k' parameter of knn_graph must be an int >= 1. Got 0 instead."
"""

from __future__ import annotations

import importlib
import os
import shlex
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any


class LatentccError(ValueError):
    """Bad input to a latentcc function: the message names the parameter and the fix."""


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message says which extra to install."""


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, corrupt or from another model."""


class WriteError(OSError):
    """A file could not be written (disk full, permissions, ...); the previous version is left intact.

    An ``OSError`` (code catching those keeps working) whose message names the file, the cause and the fix.
    """


def param_error(param: str, func: str, requirement: str, got: Any, fix: str | None = None) -> LatentccError:
    """Build the standard error: "The 'k' parameter of knn_graph must be ... Got ... instead. Fix: ..."."""
    msg = f"The '{param}' parameter of {func} must be {requirement}. Got {got!r} instead."
    if fix:
        msg += f" {fix}"
    return LatentccError(msg)


def _checkout_root() -> Path | None:
    """The latentcc repository this package runs from (an editable install), or None (a wheel, a copy)."""
    root = Path(__file__).resolve().parents[3]  # src/latentcc/plumbing/errors.py -> the checkout
    try:
        return root if 'name = "latentcc"' in (root / "pyproject.toml").read_text() else None
    except OSError:
        return None


def install_command(extras: Iterable[str]) -> str:
    """A command that installs latentcc's ``extras`` into the running Python, as one would type it.

    latentcc is not on a package registry, so pip cannot fetch it (or its extras) by name: the extras are
    installed from the checkout (an editable install, which is how ``make install`` installs latentcc).
    """
    spec = ",".join(sorted(set(extras)))
    root = _checkout_root()
    if root is None:
        return f"python -m pip install -e '.[{spec}]' (run it in the root of the latentcc repository)"
    python, folder = _from_cwd(Path(sys.executable)), _from_cwd(root)  # the environment running now
    return f"{shlex.quote(python)} -m pip install -e {shlex.quote(f'{folder}[{spec}]')}"


def _from_cwd(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (shorter to read), else absolute.

    Not resolved: a virtualenv's ``bin/python`` is a symlink whose target is another environment.
    """
    path = Path(os.path.abspath(path))  # "bin/../x" collapsed, symlinks kept
    try:
        rel = path.relative_to(Path.cwd())
    except ValueError:
        return str(path)
    return "." if rel == Path() else str(rel) if len(rel.parts) > 1 else f"./{rel}"


def require(module: str, extra: str, *, purpose: str = "", pip_name: str | None = None) -> ModuleType:
    """Import an optional dependency lazily, or raise MissingExtraError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:  # pragma: no branch - the message is what matters
        what = f" for {purpose}" if purpose else ""
        alone = f" (or only this package: pip install {pip_name})" if pip_name else ""
        raise MissingExtraError(
            f"The optional dependency '{module}' is needed{what} but is not installed; it comes with "
            f"latentcc's '{extra}' extra (latentcc[{extra}]). Install it: {install_command([extra])}{alone}."
        ) from e
