"""What every reproduction returns and how it is written: one claim, our setting, our numbers, a verdict."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from latentcc.plumbing.atomic import atomic_write_json, atomic_write_text
from latentcc.plumbing.errors import param_error
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
    ``<!-- /summary -->`` when the document has those markers. The document's own table is the record
    of the other claims: only ``result``'s row is replaced (or inserted in name order); every other line
    between the markers stays as it is, whatever ran where. ``<figure_dir>/summary.json`` next to the
    document gets the same rows, machine-readable (its rows of claims the table does not show are kept).
    """
    text = doc.read_text() if doc.is_file() else "# Reproductions\n"
    start, end = f"<!-- reproduce:{result.name} -->", f"<!-- /reproduce:{result.name} -->"
    text = _replace_block(text, start, end, result.markdown(figure_dir), append=True)
    if _SUMMARY[0] in text:
        lines = _summary_lines(text)
        lines = _with_row(lines, result.name, _summary_row(result.name, result.verdict, result.result))
        text = _replace_block(text, *_SUMMARY, "\n".join(lines), append=False)
        store = doc.parent / figure_dir / "summary.json"
        rows = {**_read_store(store), **_parse_rows(lines)}
        atomic_write_json(store, rows)
    atomic_write_text(doc, text)


_SUMMARY = ("<!-- summary -->", "<!-- /summary -->")
# a summary row as _summary_row writes it: | [`name`](#name) | **verdict** | result (pipes escaped) |
_ROW = re.compile(r"^\| \[`(?P<name>[^`]+)`\]\(#[^)]*\) \| \*\*(?P<verdict>[^*]+)\*\* \| (?P<result>.*) \|$")


def _summary_row(name: str, verdict: str, result: str) -> str:
    return f"| [`{name}`](#{name}) | **{verdict}** | {_cell(result)} |"


def _summary_lines(text: str) -> list[str]:
    """The lines between the summary markers (none for a fresh document with the opening marker alone)."""
    begin, finish = _SUMMARY
    i = text.index(begin) + len(begin)
    j = text.find(finish, i)
    if j < 0:
        return []
    return [line for line in text[i:j].strip("\n").split("\n") if line.strip()]


def _with_row(lines: list[str], name: str, row: str) -> list[str]:
    """``lines`` with claim ``name``'s row replaced by ``row``, or ``row`` inserted in name order."""
    names = [m["name"] if (m := _ROW.match(line)) else None for line in lines]
    if name in names:
        return [row if n == name else line for n, line in zip(names, lines, strict=True)]
    rows_at = [i for i, n in enumerate(names) if n is not None]
    after = [i for i in rows_at if str(names[i]) > name]
    at = after[0] if after else (rows_at[-1] + 1 if rows_at else len(lines))
    return [*lines[:at], row, *lines[at:]]


def _parse_rows(lines: list[str]) -> dict[str, dict[str, str]]:
    return {
        m["name"]: {"verdict": m["verdict"], "result": m["result"].replace("\\|", "|")}
        for line in lines
        if (m := _ROW.match(line))
    }


def _read_store(store: Path) -> dict[str, Any]:
    """``summary.json``'s rows, or {} when it is absent or not a JSON object (it is rewritten from the table)."""
    try:
        rows = json.loads(store.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return rows if isinstance(rows, dict) else {}


def _replace_block(text: str, start: str, end: str, body: str, *, append: bool) -> str:
    block = f"{start}\n{body}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text)
    if start in text:  # an opening marker alone (a fresh document): the block goes there
        return text.replace(start, block, 1)
    return text.rstrip("\n") + "\n\n" + block + "\n" if append else text


@dataclass(frozen=True)
class Paired:
    """One paired comparison: the per-seed differences (treated - baseline), their mean and the half-width
    of the mean's 95 % t interval (NaN with one pair). ``Paired.of(diffs)`` computes both; a comparison
    summarised elsewhere (latentcc.app.compare) passes its own ``mean`` and ``half``."""

    diffs: tuple[float, ...]
    mean: float
    half: float

    @classmethod
    def of(cls, diffs: Sequence[float]) -> Paired:
        m, h = mean_half(list(diffs))
        return cls(tuple(float(d) for d in diffs), m, h)

    @property
    def above(self) -> bool:
        """The 95 % CI lies above 0 (never with one pair: NaN compares False)."""
        return self.mean - self.half > 0

    @property
    def below(self) -> bool:
        """The 95 % CI lies below 0 (never with one pair)."""
        return self.mean + self.half < 0


# The verdict rules the reproductions use, by name: what makes a claim "agree", "disagree" (else "inconclusive").
RULES: dict[str, str] = {
    "seeds_up": "one comparison; agree: every seed's difference > 0 and the CI above 0 (one seed: its "
    "difference > 0); disagree: the mean < 0",
    "seeds_up_ci": "one comparison; agree: as seeds_up; disagree: the CI below 0 (needs 2 or more seeds)",
    "majority": "cells; agree: more than half of the cells have their CI above 0; disagree: more than half "
    "below 0",
    "any_up": "cells; agree: some cell's CI above 0; disagree: every cell's CI below 0 or a null with "
    "half-width <= margin (one that rules out effects >= margin)",
    "any_near": "cells; agree: some cell's mean >= -margin (within margin of the baseline); disagree: every "
    "cell's CI below -margin (and at least one cell)",
}
_ONE = ("seeds_up", "seeds_up_ci")


def verdict(
    paired_diffs: Sequence[float] | Mapping[str, Sequence[float] | Paired], rule: str, *, margin: float = 0.0
) -> Verdict:
    """The verdict on paired differences (treated - baseline, per seed) under the named ``rule`` (see RULES).

    ``paired_diffs``: one comparison's differences (rules ``seeds_up``, ``seeds_up_ci``), or ``{cell:
    differences or Paired}`` for the rules over cells (``majority``, ``any_up``, ``any_near``). ``margin``
    (>= 0, in the differences' unit) is read by ``any_up`` and ``any_near`` only. No cells: "inconclusive".
    """
    func = "verdict"
    if rule not in RULES:
        raise param_error("rule", func, f"one of {list(RULES)}", rule)
    if not (isinstance(margin, int | float) and math.isfinite(margin) and margin >= 0):
        raise param_error("margin", func, "a finite float >= 0", margin)
    if rule in _ONE:
        if isinstance(paired_diffs, Mapping) or len(paired_diffs) == 0:
            raise param_error(
                "paired_diffs", func, f"one comparison's differences for rule {rule!r}", paired_diffs
            )
        return _one_comparison(Paired.of(paired_diffs), rule)
    if not isinstance(paired_diffs, Mapping):
        raise param_error("paired_diffs", func, f"{{cell: differences}} for rule {rule!r}", paired_diffs)
    cells = [c if isinstance(c, Paired) else Paired.of(c) for c in paired_diffs.values()]
    if not cells:
        return "inconclusive"
    return _over_cells(cells, rule, margin)


def _one_comparison(p: Paired, rule: str) -> Verdict:
    if all(d > 0 for d in p.diffs) and (len(p.diffs) == 1 or p.above):
        return "agree"
    down = p.mean < 0 if rule == "seeds_up" else len(p.diffs) > 1 and p.below
    return "disagree" if down else "inconclusive"


def _over_cells(cells: list[Paired], rule: str, margin: float) -> Verdict:
    n = len(cells)
    if rule == "majority":
        up, down = sum(c.above for c in cells), sum(c.below for c in cells)
        return "agree" if up > n / 2 else "disagree" if down > n / 2 else "inconclusive"
    if rule == "any_up":
        if any(c.above for c in cells):
            return "agree"
        # a null whose CI is that narrow rules out effects of margin or more; 1e-12: half == margin counts
        tight = sum(not c.above and not c.below and c.half <= margin + 1e-12 for c in cells)
        return "disagree" if sum(c.below for c in cells) + tight == n else "inconclusive"
    # any_near
    if any(c.mean >= -margin for c in cells):
        return "agree"
    return "disagree" if all(c.mean + c.half < -margin for c in cells) else "inconclusive"


def correlation_verdict(
    tests: Mapping[str, tuple[float, float | None, int]], *, alpha: float = 0.05, contrary: int = 1
) -> Verdict:
    """The verdict on correlation tests ``{name: (statistic, p-value or None, expected sign +1/-1)}``.

    agree: every statistic has its expected sign, and is significant (p < ``alpha``) where it has a p-value
    (None: a sign that is read but not tested, e.g. the direction of a 3-point sweep); disagree: at least
    ``contrary`` tests with a p-value are significant with the opposite sign; else inconclusive. A NaN
    statistic or p-value never counts.
    """
    func = "correlation_verdict"
    if not tests:
        raise param_error("tests", func, "at least one (statistic, p-value, expected sign)", tests)
    if any(sign not in (1, -1) for _, _, sign in tests.values()):
        raise param_error("tests", func, "expected signs of +1 or -1", tests)
    agree = all(s * sign > 0 and (p is None or p < alpha) for s, p, sign in tests.values())
    against = sum(p is not None and s * sign < 0 and p < alpha for s, p, sign in tests.values())
    return "agree" if agree else "disagree" if against >= contrary else "inconclusive"


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


def paired_grid(
    base: Any, cells: dict[str, Any], seeds: Sequence[int], out: Path, loaded: dict[Any, Any] | None = None
) -> dict[str, list[float]]:
    """Test top-1 per seed of the baseline ``base`` and of every cell (``RunSpec``s), keyed "baseline" and
    the cells' keys: each cell a fixed-size :func:`latentcc.app.compare.compare` against ``base`` on ``seeds``.

    Runs are cached in ``out/runs`` (the baseline's shared by every cell), each cell's comparison report
    in ``out/<cell folder>``; the same call again trains only what is missing (an interrupted run
    resumes from its checkpoint). ``loaded``: as :func:`latentcc.app.compare.compare`'s (each dataset loaded
    once for every cell, and kept for the caller).
    """
    from latentcc.app.compare import compare

    loaded = {} if loaded is None else loaded
    acc: dict[str, list[float]] = {}
    for key, spec in cells.items():
        r = compare(
            base, spec, out_dir=out / cell_folder(key), seeds=list(seeds), min_seeds=len(seeds),
            max_seeds=len(seeds), names=("baseline", key), runs_dir=out / "runs", loaded=loaded,
        )  # fmt: skip
        acc.setdefault("baseline", [row["a"] for row in r["rows"]])
        acc[key] = [row["b"] for row in r["rows"]]
    return acc


def cell_folder(key: str) -> str:
    """A grid cell's folder name: ``"w=0.0001, k=5"`` -> ``"w0.0001_k5"``."""
    return key.replace(", ", "_").replace("=", "")
