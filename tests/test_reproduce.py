"""`latentcc reproduce`: every claim runs end to end at the CI size and writes its result and docs section."""

import json

import pytest

from latentcc.app.cli import main
from latentcc.app.reproduce import REPRODUCTIONS, run_reproduction
from latentcc.app.reproduce.base import ClaimResult, Paired, correlation_verdict, update_docs, verdict


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


def _six_claims_doc(doc) -> list[str]:
    """A docs file as docs/reproductions.md has it: a summary table of 6 claims, each with its section."""
    names = sorted(REPRODUCTIONS)
    rows = [f"| [`{n}`](#{n}) | **agree** | {n} result \\| old |" for n in names]
    sections = [
        f"<!-- reproduce:{n} -->\n### `{n}`\n\nold section of {n}\n<!-- /reproduce:{n} -->" for n in names
    ]
    doc.write_text(
        "# Reproductions\n\n| name | verdict | one-line result |\n|---|---|---|\n<!-- summary -->\n"
        + "\n".join(rows) + "\n<!-- /summary -->\n\n### Reading the results\n\nProse kept.\n\n"
        + "\n\n".join(sections) + "\n"
    )  # fmt: skip
    return rows


@pytest.mark.parametrize(
    "store", [None, "{}\n", '{"nc-transfer": {"verdict": "disagree", "result": "x"}}\n', "[tru"]
)
def test_summary_table_keeps_the_rows_of_claims_not_run_here(tmp_path, store):
    """A copy of the docs file elsewhere (no, an empty, a partial or a corrupt sibling summary.json): updating
    one claim replaces its row and section only; the other 5 rows and sections stay as they were."""
    doc = tmp_path / "x" / "repro.md"
    doc.parent.mkdir()
    rows = _six_claims_doc(doc)
    before = doc.read_text()
    if store is not None:
        (doc.parent / "reproductions").mkdir()
        (doc.parent / "reproductions" / "summary.json").write_text(store)
    update_docs(doc, _result("nc-transfer", "disagree"), "reproductions")
    text = doc.read_text()
    summary = text[text.index("<!-- summary -->") : text.index("<!-- /summary -->")].splitlines()[1:]
    new_row = "| [`nc-transfer`](#nc-transfer) | **disagree** | a result \\| with a pipe |"
    assert summary == [new_row if "`nc-transfer`" in r else r for r in rows]
    assert len(summary) == len(REPRODUCTIONS)
    for n in REPRODUCTIONS:  # the other sections byte for byte
        if n != "nc-transfer":
            assert f"<!-- reproduce:{n} -->\n### `{n}`\n\nold section of {n}\n<!-- /reproduce:{n} -->" in text
    assert "old section of nc-transfer" not in text and "Prose kept." in text
    assert (
        text.replace(new_row, rows[sorted(REPRODUCTIONS).index("nc-transfer")]).split("<!-- reproduce:nc")[0]
        == (before.split("<!-- reproduce:nc")[0])
    )
    saved = json.loads((doc.parent / "reproductions" / "summary.json").read_text())
    assert (
        sorted(saved) == sorted(REPRODUCTIONS) and saved["nc-transfer"]["result"] == "a result | with a pipe"
    )
    assert saved["gc-nc"] == {"verdict": "agree", "result": "gc-nc result | old"}


def test_a_new_claim_row_goes_in_name_order_and_unknown_lines_stay(tmp_path):
    doc = tmp_path / "r.md"
    doc.write_text(
        "<!-- summary -->\n| [`a`](#a) | **agree** | x |\n| hand-written note |\n| [`c`](#c) | **agree** | y |\n"
        "<!-- /summary -->\n"
    )
    update_docs(doc, _result("b", "inconclusive"), "reproductions")
    summary = doc.read_text().split("<!-- /summary -->")[0].splitlines()[1:]
    assert summary == [
        "| [`a`](#a) | **agree** | x |",
        "| hand-written note |",
        "| [`b`](#b) | **inconclusive** | a result \\| with a pipe |",
        "| [`c`](#c) | **agree** | y |",
    ]


def test_lcc_variants_judges_each_cell_on_its_confirmation_and_calls_only_tight_nulls_a_null(tmp_path):
    from latentcc.app.reproduce.lcc_variants import DELTA, _result

    def cell(diff, half, confirm=None):
        c = {"diff": diff, "half": half, "n": 5, "stop": "x", "per_seed": [diff] * 5}
        if confirm is not None:
            c["confirm"] = {"diff": confirm[0], "half": confirm[1], "n": 5, "per_seed": [confirm[0]] * 5}
        return c

    tight_null = cell(0.0005, DELTA / 2)
    # an early positive stop that fresh seeds do not confirm is a null, not an improvement
    r = _result({"t a": tight_null, "t b": cell(0.01, 0.004, confirm=(0.001, 0.002))}, ["s"], tuple(range(8)), 5,
                tmp_path)  # fmt: skip
    assert (
        r.verdict == "disagree"
        and "0 of 2 cells improved" in r.result
        and "1 early stops not confirmed" in r.result
    )
    # a confirmed positive is a finding
    r = _result({"t a": tight_null, "t b": cell(0.01, 0.004, confirm=(0.008, 0.003))}, ["s"], tuple(range(8)), 5,
                tmp_path)  # fmt: skip
    assert r.verdict == "agree" and "1 of 2 cells improved" in r.result and "t b" in r.result
    # a negative stop whose confirmation is a null counts as that null; a wide null leaves the answer open
    r = _result({"t a": cell(0.0, 0.02), "t b": cell(-0.01, 0.004, confirm=(-0.001, 0.002))}, ["s"],
                tuple(range(8)), 5, tmp_path)  # fmt: skip
    assert (
        r.verdict == "inconclusive"
        and "0 fall below 0" in r.result
        and "1 with half-width <= 0.3 pp" in r.result
    )
    # every cell below 0 or a tight null: LCC does not help
    r = _result({"t a": tight_null, "t b": cell(-0.01, 0.004, confirm=(-0.009, 0.003))}, ["s"], tuple(range(8)), 5,
                tmp_path)  # fmt: skip
    assert r.verdict == "disagree" and "1 fall below 0 (t b)" in r.result


def test_lcc_variants_refuses_fewer_than_5_seeds_naming_the_fix(tmp_path):
    from latentcc.plumbing.errors import LatentccError

    with pytest.raises(LatentccError, match=r"'seeds'.*--seeds 0,1,2,3,4,5,6,7"):
        run_reproduction("lcc-variants", size="default", seeds=(0, 1, 2), out_dir=tmp_path)


# --- the verdict rules, on hand-made differences with known answers -----------------------------------
# t(0.975, 2) = 4.3027: three pairs [a, b, c] have the half-width 4.3027 * sd / sqrt(3)


@pytest.mark.parametrize(
    ("diffs", "seeds_up", "seeds_up_ci"),
    [
        ([0.02, 0.03, 0.025], "agree", "agree"),  # mean 0.025, half 0.0124: CI above 0, every seed up
        ([0.05], "agree", "agree"),  # one seed up: no CI, its sign decides
        ([0.05, 0.06, -0.001], "inconclusive", "inconclusive"),  # one seed below 0
        ([0.01, 0.03, 0.0], "inconclusive", "inconclusive"),  # a tie is not "up"
        ([0.001, 0.002, 0.09], "inconclusive", "inconclusive"),  # every seed up, CI [-0.10, 0.16] holds 0
        ([-0.02, 0.01, -0.02], "disagree", "inconclusive"),  # mean < 0, CI [-0.05, 0.03] holds 0
        ([-0.02, -0.03, -0.025], "disagree", "disagree"),  # CI below 0
        ([-0.05], "disagree", "inconclusive"),  # one seed: no CI to be below 0
    ],
)
def test_one_comparison_rules(diffs, seeds_up, seeds_up_ci):
    assert verdict(diffs, "seeds_up") == seeds_up
    assert verdict(diffs, "seeds_up_ci") == seeds_up_ci


def test_paired_summary_matches_the_t_interval():
    p = Paired.of([0.02, 0.03, 0.025])
    assert p.mean == pytest.approx(0.025) and p.half == pytest.approx(4.302652729911275 * 0.005 / 3**0.5)
    assert p.above and not p.below
    one = Paired.of([0.1])
    assert one.mean == 0.1 and one.half != one.half and not one.above and not one.below  # NaN half


UP, DOWN, NULL = [0.02, 0.03, 0.025], [-0.02, -0.03, -0.025], [-0.01, 0.0, 0.01]


@pytest.mark.parametrize(
    ("cells", "want"),
    [
        ({"a": UP, "b": UP, "c": NULL}, "agree"),  # 2 of 3 above 0
        ({"a": UP, "b": NULL}, "inconclusive"),  # 1 of 2 is not more than half
        ({"a": DOWN, "b": DOWN, "c": UP}, "disagree"),
        ({"a": UP, "b": DOWN, "c": NULL}, "inconclusive"),
        ({"a": [0.05], "b": [0.06]}, "inconclusive"),  # one seed per cell: never counted
        ({}, "inconclusive"),
    ],
)
def test_majority_rule(cells, want):
    assert verdict(cells, "majority") == want


def test_any_up_rule_counts_tight_nulls_as_evidence_against():
    tight = Paired((0.0,) * 5, 0.0005, 0.0015)  # a null narrower than the 0.3 pp margin
    wide = Paired((0.0,) * 5, 0.0, 0.02)
    assert verdict({"a": tight, "b": UP}, "any_up", margin=0.003) == "agree"  # one improvement suffices
    assert verdict({"a": tight, "b": DOWN}, "any_up", margin=0.003) == "disagree"
    assert verdict({"a": wide, "b": DOWN}, "any_up", margin=0.003) == "inconclusive"
    assert (
        verdict({"a": Paired((), 0.0, 0.003)}, "any_up", margin=0.003) == "disagree"
    )  # half == margin counts
    assert verdict({"a": tight}, "any_up") == "inconclusive"  # margin 0: no null is tight enough


def test_any_near_rule():
    near = Paired((), -0.008, 0.004)  # within 1 point of the baseline
    far = Paired((), -0.05, 0.01)  # CI [-0.06, -0.04]: entirely more than 1 point below
    unsure = Paired((), -0.02, 0.015)  # CI [-0.035, -0.005]
    assert verdict({"a": far, "b": near}, "any_near", margin=0.01) == "agree"
    assert verdict({"a": far, "b": far}, "any_near", margin=0.01) == "disagree"
    assert verdict({"a": far, "b": unsure}, "any_near", margin=0.01) == "inconclusive"
    assert verdict({}, "any_near", margin=0.01) == "inconclusive"


def test_verdict_refuses_bad_rules_and_shapes():
    from latentcc.plumbing.errors import LatentccError

    with pytest.raises(LatentccError, match=r"'rule' parameter of verdict must be one of \['seeds_up'"):
        verdict(UP, "most")
    with pytest.raises(LatentccError, match="'paired_diffs' parameter of verdict must be one comparison"):
        verdict({"a": UP}, "seeds_up")
    with pytest.raises(
        LatentccError, match="'paired_diffs' parameter of verdict must be {cell: differences}"
    ):
        verdict(UP, "majority")
    with pytest.raises(LatentccError, match="'margin'"):
        verdict({"a": UP}, "any_up", margin=-1)


def test_correlation_verdict():
    sig_neg, sig_pos, weak_neg = (-0.9, 0.001, -1), (0.9, 0.001, -1), (-0.3, 0.2, -1)
    assert correlation_verdict({"a": sig_neg, "b": sig_neg}) == "agree"
    assert correlation_verdict({"a": sig_neg, "b": weak_neg}) == "inconclusive"  # not significant
    assert correlation_verdict({"a": sig_neg, "b": sig_pos}) == "disagree"  # one significant the other way
    assert correlation_verdict({"a": sig_neg, "b": sig_pos}, contrary=2) == "inconclusive"
    # a sign read without a test (None): needed to agree, never evidence against
    assert correlation_verdict({"a": sig_neg, "sweep": (-0.5, None, -1)}) == "agree"
    assert correlation_verdict({"a": sig_neg, "sweep": (0.5, None, -1)}) == "inconclusive"
    assert correlation_verdict({"a": (float("nan"), 0.001, -1)}) == "inconclusive"  # NaN never counts
