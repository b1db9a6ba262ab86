"""The layout's rules (docs/architecture.md), checked on the source so that drift fails a test.

- each layer imports only from the layers below it: plumbing < configuration (config.py) < engine
  (latents, graph, lcc, metrics, probes, train, integrations, data, models, report, extras.py) < app;
- no module imports another module's private (``_name``) objects;
- no function is longer than 80 lines unless a ``# long:`` comment on its first lines says why;
- nothing in the repository points outside it (files that are not here, machine paths).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "latentcc"
MAX_LINES = 80
# folders (and top-level modules) by layer: plumbing < configuration < engine < app
PLUMBING = {"plumbing"}
CONFIGURATION = {"config"}  # the settings: every default
APP = {"app"}


def _modules() -> dict[str, ast.Module]:
    return {
        ".".join(p.relative_to(SRC.parent).with_suffix("").parts): ast.parse(p.read_text())
        for p in SRC.rglob("*.py")
    }


def _part(module: str) -> str:
    """The first folder under latentcc/ ('lcc', 'app', ...), or the module name for top-level files."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _imports(tree: ast.Module) -> list[tuple[str, list[str], int]]:
    """(imported latentcc module, names imported from it, line) of every import, lazy ones included."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("latentcc"):
            out.append((node.module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("latentcc")]
    return out


def _layer(module: str) -> str:
    part = _part(module)
    if part in PLUMBING | CONFIGURATION | APP:
        return "plumbing" if part in PLUMBING else "configuration" if part in CONFIGURATION else "app"
    return "engine"


def test_layers_import_only_downwards():
    rank = {"plumbing": 0, "configuration": 1, "engine": 2, "app": 3}
    bad = []
    for mod, tree in _modules().items():
        if mod in ("latentcc", "latentcc.__init__", "latentcc.__main__"):
            continue  # the package's front door re-exports from every layer
        for target, _, line in _imports(tree):
            if target == "latentcc" or target.startswith("latentcc.__"):
                continue
            if rank[_layer(target)] > rank[_layer(mod)]:
                bad.append(f"{mod}:{line} imports {target} ({_layer(mod)} -> {_layer(target)})")
    assert not bad, "\n".join(bad)


def test_no_module_imports_another_modules_private_names():
    bad = []
    for mod, tree in _modules().items():
        for target, names, line in _imports(tree):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private and target != mod:
                bad.append(f"{mod}:{line} imports {private} from {target}")
    assert not bad, "\n".join(bad)


def test_functions_are_at_most_80_lines_or_say_why():
    bad = []
    for path in SRC.rglob("*.py"):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                head = "\n".join(lines[node.lineno - 1 : node.lineno + 8])
                if n > MAX_LINES and "# long:" not in head:
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not bad, "\n".join(bad)


def test_nothing_points_outside_the_repository():
    # the names are built from pieces, so that this file does not itself contain what it looks for
    pieces = ("ALGORITHMS" + ".md", "KNN_COMMUNITY_BENCH" + ".md", ".." + "/shared", "/" + "work/", "/tmp/" + "brief",
              "OFFLINE" + "_ASSETS")  # fmt: skip
    outside = re.compile("|".join(re.escape(p) for p in pieces))
    files = [ROOT / "README.md", ROOT / "Makefile", *ROOT.glob("docs/*.md"), *ROOT.glob("benchmarks/*"),
             *SRC.rglob("*.py"), *(ROOT / "tests").glob("*.py")]  # fmt: skip
    hits = [
        f"{f.relative_to(ROOT)}:{i}: {line.strip()[:100]}"
        for f in files
        if f.is_file()
        for i, line in enumerate(f.read_text().splitlines(), 1)
        if outside.search(line)
    ]
    assert not hits, "\n".join(hits)
