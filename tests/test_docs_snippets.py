"""Every ```python block of README.md and docs/*.md runs as written, each on its own, in a fresh folder.

A block that cannot run here (it needs several GPUs, the internet, a package latentcc does not depend
on) opts out with a comment ``# not run: <reason>`` inside it; it must still compile and use no
undefined name, and it must be listed in NOT_RUN below, so an opt-out is always a deliberate choice.
Every `latentcc <command> --flag` the docs mention must exist in the command line as it is now.
"""

from __future__ import annotations

import ast
import builtins
import re
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)
OPT_OUT = re.compile(r"#\s*not run:\s*(\S.*)")
# (file, reason) of every block that opts out; a new opt-out must be added here.
NOT_RUN = {
    ("docs/distributed.md", "needs torchrun and several GPUs (nccl)"),
    ("docs/distributed.md", "needs several GPUs"),
    ("docs/distributed.md", "needs ray, which latentcc does not depend on"),
    ("docs/integrations.md", "downloads bert-base-uncased and ag_news from the Hugging Face Hub"),
}


def _blocks() -> list[tuple[str, int, str]]:
    out = []
    for doc in DOCS:
        text = doc.read_text()
        for m in FENCE.finditer(text):
            line = text[: m.start()].count("\n") + 2  # first line of code
            out.append((str(doc.relative_to(ROOT)), line, m.group(1)))
    return out


BLOCKS = _blocks()


def _undefined_names(code: str) -> set[str]:
    """Names read but never bound anywhere in ``code`` (scope-blind, so it can only miss, never invent)."""
    tree = ast.parse(code)
    bound, read = set(dir(builtins)), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return read - bound


@pytest.fixture(scope="module")
def warm_imports() -> None:
    """Import what every snippet shares once, so a snippet's time is its own work, not the first import."""
    import sklearn.linear_model  # noqa: F401
    import torch

    import latentcc.train  # noqa: F401

    torch.optim.AdamW([torch.zeros(1, requires_grad=True)])  # the first optimizer imports torch._dynamo


@pytest.mark.parametrize("doc, line, code", BLOCKS, ids=[f"{d}:{n}" for d, n, _ in BLOCKS])
def test_snippet_runs_as_written(doc, line, code, tmp_path, monkeypatch, warm_imports):
    compiled = compile(code, f"{doc}:{line}", "exec")  # a syntax error names the file and line
    undefined = _undefined_names(code)
    assert not undefined, f"{doc}:{line} uses names it never defines or imports: {sorted(undefined)}"
    reason = OPT_OUT.search(code)
    if reason:
        assert (doc, reason.group(1).strip()) in NOT_RUN, f"{doc}:{line}: an opt-out not listed in NOT_RUN"
        pytest.skip(f"not run: {reason.group(1).strip()}")
    monkeypatch.chdir(tmp_path)  # files the snippet writes (runs/, profile.csv) land in a fresh folder
    monkeypatch.setattr(sys, "argv", ["snippet"])
    t0 = time.perf_counter()
    exec(compiled, {"__name__": "__main__"})
    took = time.perf_counter() - t0
    # seconds each on a quiet machine; the (generous, load-tolerant) bound catches a snippet that trains on a
    # full dataset, which takes minutes
    assert took < 90, (
        f"{doc}:{line} took {took:.1f} s; docs snippets must stay quick (small data, few epochs)"
    )


def test_opt_outs_are_listed_and_each_listed_one_exists():
    found = {(d, OPT_OUT.search(c).group(1).strip()) for d, _, c in BLOCKS if OPT_OUT.search(c)}
    print("\n".join(f"not run: {d}: {r}" for d, r in sorted(found)))
    assert found == NOT_RUN
    assert len(BLOCKS) - len(found) >= 6  # most blocks run


def _cli_mentions() -> list[tuple[str, str, list[str]]]:
    """(file, subcommand, --flags) of every `latentcc <command> ...` in code spans and bash blocks."""
    found = []
    for doc in DOCS:
        text = re.sub(r"\\\n\s*", " ", doc.read_text())  # join shell line continuations
        spans = re.findall(r"`([^`\n]+)`", text) + re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M)
        for span in spans:
            for m in re.finditer(r"\blatentcc ([a-z][a-z-]*)([^\n`|;)#]*)", span):
                flags = [f.split("=")[0] for f in re.findall(r"(?<![\w-])--[a-z][\w-]*", m.group(2))]
                found.append((str(doc.relative_to(ROOT)), m.group(1), flags))
    return found


def test_cli_commands_in_the_docs_exist_with_their_flags():
    from latentcc.app.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    mentions = _cli_mentions()
    assert len(mentions) >= 20
    bad = []
    for doc, command, flags in mentions:
        if command not in commands:
            bad.append(f"{doc}: latentcc {command} (no such command)")
            continue
        known = set(commands[command]._option_string_actions)
        bad += [f"{doc}: latentcc {command} {f}" for f in flags if f not in known]
    assert not bad, bad
