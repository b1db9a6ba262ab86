"""One case of the reliability table (tests/reliability_cases.py collects them all)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Case:
    id: str
    tried: str
    trigger: Callable[[Path], Any]
    raises: type[BaseException] | None
    match: str
    setup: Callable[[Path], None] | None = None
