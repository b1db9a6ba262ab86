"""Relative links and anchors in README.md and docs/*.md lead somewhere, and docstrings cite docs that exist.

Anchors follow GitHub's heading slugs: lower case, punctuation dropped (letters, digits, spaces, '-' and '_'
kept), spaces to '-', a repeated heading gets '-1', '-2', ...; headings inside fenced code blocks do not count.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    fenced = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        m = re.match(r"#{1,6}\s+(.*)", line)
        if fenced or not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        out.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return out


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)  # code is not a link
    return [a or b for a, b in LINK.findall(text)]


def broken(page: Path) -> list[str]:
    bad = []
    for target in links(page):
        if re.match(r"[a-z]+:", target):  # http(s), mailto: not checked offline
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target} (no heading with anchor #{anchor})")
    return bad


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_and_anchor_resolves(page):
    assert broken(page) == [], f"{page.relative_to(ROOT)}: broken links"


def test_the_checker_finds_a_missing_file_and_a_missing_anchor(tmp_path):
    (tmp_path / "a.md").write_text(
        "# Title: with `code` (x)\n\n## Same\n\n## Same\n\n```\n# not a heading\n```\n"
    )
    page = tmp_path / "b.md"
    page.write_text(
        "[ok](a.md#title-with-code-x) [ok2](a.md#same-1) [bad](a.md#not-a-heading) [gone](c.md) "
        "[web](https://example.org/x#y)\n"
    )
    assert broken(page) == [
        "a.md#not-a-heading (no heading with anchor #not-a-heading)",
        "c.md (no such file)",
    ]


def test_docstrings_and_comments_cite_docs_that_exist():
    cited = set()
    for f in [
        *(ROOT / "src").rglob("*.py"),
        *(ROOT / "tests").glob("*.py"),
        *(ROOT / "benchmarks").glob("*.py"),
    ]:
        cited |= set(re.findall(r"\bdocs/([\w./-]+\.md)", f.read_text(encoding="utf-8")))
    missing = sorted(c for c in cited if not (ROOT / "docs" / c).is_file())
    assert cited and missing == []
