"""Every case of the reliability table (tests/reliability_cases.py): the right exception, a message that
names the parameter and the fix, and the files a case starts from left intact byte for byte."""

import re
from pathlib import Path

import pytest

from reliability_cases import CASES, Case

DOCS = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case: Case, tmp_path):
    if case.setup is not None:
        case.setup(tmp_path)
    before = _files(tmp_path)
    if case.raises is None:  # must work; the trigger says what happened
        assert re.search(case.match, str(case.trigger(tmp_path)), re.S)
        return
    with pytest.raises(case.raises) as info:
        case.trigger(tmp_path)
    assert type(info.value) is case.raises  # the exact type, not a look-alike raised from deep inside
    assert re.search(case.match, str(info.value), re.S), str(info.value)
    assert _files(tmp_path) == before  # nothing rewritten, nothing half-written, no temp file left


def test_table_is_large_and_documented():
    ids = [c.id for c in CASES]
    assert len(ids) >= 30 and len(set(ids)) == len(ids)
    docs = DOCS.read_text()
    missing = [i for i in ids if f"| `{i}` |" not in docs]
    assert not missing, (
        f"regenerate the table: PYTHONPATH=src python tests/reliability_cases.py --markdown ({missing})"
    )
