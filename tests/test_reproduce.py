"""`latentcc reproduce`: every claim runs end to end at the CI size and writes its result and docs section."""

import json

import pytest

from latentcc.cli import main
from latentcc.reproduce import REPRODUCTIONS, run_reproduction
from latentcc.reproduce.base import ClaimResult, update_docs


@pytest.mark.parametrize("name", list(REPRODUCTIONS))
def test_each_reproduction_runs_at_ci_size(name, tmp_path):
    r = run_reproduction(name, size="ci", seeds=(0, 1), out_dir=tmp_path)
    assert r.verdict in ("agree", "disagree", "inconclusive")
    assert r.claim and r.setting and r.result and r.table
    assert r.seeds == (0, 1) and r.size == "ci" and r.wall_time_s > 0
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["name"] == name and saved["verdict"] == r.verdict
    for f in r.figures:
        assert (tmp_path / f).stat().st_size > 3000
    assert f"### `{name}`" in (tmp_path / "result.md").read_text()


def _result(name: str, verdict: str) -> ClaimResult:
    return ClaimResult(name, "a claim", "a setting", "a result | with a pipe", verdict, [{"a": 1}])  # type: ignore[arg-type]


def test_update_docs_replaces_only_its_own_section(tmp_path):
    doc = tmp_path / "reproductions.md"
    doc.write_text(
        "# Reproductions\n\nIntro kept.\n\n| name | verdict | result |\n|---|---|---|\n<!-- summary -->\n"
    )
    update_docs(doc, _result("one", "agree"), "reproductions")
    update_docs(doc, _result("two", "disagree"), "reproductions")
    update_docs(doc, _result("one", "inconclusive"), "reproductions")
    text = doc.read_text()
    assert text.startswith("# Reproductions\n\nIntro kept.")
    assert text.count("<!-- reproduce:one -->") == 1 and text.count("<!-- reproduce:two -->") == 1
    assert "**inconclusive**" in text and "**agree**" not in text and "**disagree**" in text
    assert "a result \\| with a pipe" in text  # table cells escaped
    assert text.index("reproduce:one") < text.index("reproduce:two")  # replaced in place
    summary = text[text.index("<!-- summary -->") : text.index("<!-- /summary -->")]
    assert "| [`one`](#one) | **inconclusive** |" in summary and "| [`two`](#two) | **disagree** |" in summary
    assert (
        json.loads((tmp_path / "reproductions" / "summary.json").read_text())["one"]["verdict"]
        == "inconclusive"
    )


def test_cli_reproduce_writes_docs_section(tmp_path, capsys):
    doc = tmp_path / "docs" / "reproductions.md"
    doc.parent.mkdir()
    argv = ["reproduce", "lcc-cc-vs-mc", "--size", "ci", "--seeds", "0,1", "--out", str(tmp_path / "o")]
    assert main([*argv, "--docs", str(doc)]) == 0
    assert "lcc-cc-vs-mc:" in capsys.readouterr().out
    assert "<!-- reproduce:lcc-cc-vs-mc -->" in doc.read_text()
    assert main(["reproduce", "list"]) == 0
    assert set(REPRODUCTIONS) <= set(capsys.readouterr().out.split())
    assert main(["reproduce", "nope"]) == 2
