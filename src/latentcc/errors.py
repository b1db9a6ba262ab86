"""Error types and the one message shape every check uses.

Errors name the parameter, the value and the fix, in the style of scikit-learn:
"The 'k' parameter of knn_graph must be an int >= 1. Got 0 instead."
"""

from __future__ import annotations

import importlib
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


def check_int(
    value: Any, param: str, func: str, lo: int, hi: int | None = None, fix: str | None = None
) -> int:
    """``value`` as an int in ``[lo, hi]`` (numpy ints accepted, bools refused), else the standard error."""
    import numpy as np

    ok = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if not ok or value < lo or (hi is not None and value > hi):
        req = f"an int >= {lo}" if hi is None else f"an int with {lo} <= {param} <= {hi}"
        raise param_error(param, func, req, value, fix)
    return int(value)


def require(module: str, extra: str, *, purpose: str = "", pip_name: str | None = None) -> ModuleType:
    """Import an optional dependency lazily, or raise MissingExtraError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:  # pragma: no branch - the message is what matters
        what = f" for {purpose}" if purpose else ""
        hint = f"pip install 'latentcc[{extra}]'"
        if pip_name:
            hint += f" (or: pip install {pip_name})"
        raise MissingExtraError(
            f"The optional dependency '{module}' is needed{what} but is not installed: {hint}."
        ) from e
