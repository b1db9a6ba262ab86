"""What every reproduction returns and how it is written: one claim, our setting, our numbers, a verdict."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from latentcc.atomic import atomic_write_json, atomic_write_text
from latentcc.report.table import format_table

Verdict = Literal["agree", "disagree", "inconclusive"]
SIZES = ("ci", "default")


@dataclass
class ClaimResult:
    """One re-tested claim. ``table`` rows are what the docs show; ``numbers`` are machine-readable."""

    name: str
    claim: str  # the paper's statement, quoted or closely paraphrased
    setting: str  # our data, model, budget and seeds
    result: str  # what came out, with the numbers
    verdict: Verdict
    table: list[dict[str, Any]]
    numbers: dict[str, Any] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)  # PNG file names inside the output folder
    size: str = "default"
    seeds: tuple[int, ...] = ()
    wall_time_s: float = math.nan

    def markdown(self, figure_dir: str | None = None) -> str:
        """The docs section: a claim/setting/result/verdict table, the detail table and the figures."""
        lines = [
            f"### `{self.name}`",
            "",
            "| paper's statement | our setting | our result | verdict |",
            "|---|---|---|---|",
            f"| {_cell(self.claim)} | {_cell(self.setting)} | {_cell(self.result)} | **{self.verdict}** |",
            "",
            format_table(self.table, markdown=True),
            "",
        ]
        for f in self.figures:
            path = f"{figure_dir}/{f}" if figure_dir else f
            lines += [f"![{self.name}: {f}]({path})", ""]
        seeds = ",".join(map(str, self.seeds))
        lines.append(
            f"Reproduce: `latentcc reproduce {self.name} --seeds {seeds}` "
            f"(size `{self.size}`, {self.wall_time_s / 60:.1f} min on this machine)."
        )
        return "\n".join(lines)

    def write(self, out: Path) -> None:
        atomic_write_json(out / "result.json", _jsonable(dataclasses.asdict(self)))
        atomic_write_text(out / "result.md", self.markdown() + "\n")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    return obj


def update_docs(doc: Path, result: ClaimResult, figure_dir: str) -> None:
    """Replace (or append) ``result``'s section of ``doc`` between its markers; the rest is kept.

    A summary table (one row per claim: verdict and result) is kept between ``<!-- summary -->`` and
    ``<!-- /summary -->`` when the document has those markers; its rows live in
    ``<figure_dir>/summary.json`` next to the document so each run updates only its own row.
    """
    text = doc.read_text() if doc.is_file() else "# Reproductions\n"
    start, end = f"<!-- reproduce:{result.name} -->", f"<!-- /reproduce:{result.name} -->"
    text = _replace_block(text, start, end, result.markdown(figure_dir), append=True)
    if "<!-- summary -->" in text:
        store = doc.parent / figure_dir / "summary.json"
        rows = json.loads(store.read_text()) if store.is_file() else {}
        rows[result.name] = {"verdict": result.verdict, "result": result.result}
        atomic_write_json(store, rows)
        table = "\n".join(
            f"| [`{n}`](#{n}) | **{r['verdict']}** | {_cell(r['result'])} |" for n, r in sorted(rows.items())
        )
        text = _replace_block(text, "<!-- summary -->", "<!-- /summary -->", table, append=False)
    atomic_write_text(doc, text)


def _replace_block(text: str, start: str, end: str, body: str, *, append: bool) -> str:
    block = f"{start}\n{body}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text)
    if start in text:  # an opening marker alone (a fresh document): the block goes there
        return text.replace(start, block, 1)
    return text.rstrip("\n") + "\n\n" + block + "\n" if append else text


def mean_half(values: list[float]) -> tuple[float, float]:
    """(mean, 95 % CI half-width) of per-seed values; the half-width is NaN for a single value."""
    from latentcc.report.stats import mean_ci

    return mean_ci(values) if len(values) > 1 else (float(values[0]), float("nan"))


def fmt_ci(values: list[float], digits: int = 4) -> str:
    """``mean ± 95 % CI half-width (n)`` of per-seed values."""
    from latentcc.report.stats import mean_ci

    if len(values) == 1:
        return f"{values[0]:.{digits}f} (n=1)"
    m, h = mean_ci(values)
    return f"{m:.{digits}f} ± {h:.{digits}f} (n={len(values)})"
