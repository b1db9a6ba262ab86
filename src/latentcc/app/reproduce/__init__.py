"""``latentcc reproduce NAME``: each paper's claims re-tested offline on the embedded data and models.

Every reproduction is a function ``run(size, seeds, out) -> ClaimResult`` in its own module; sizes
are ``"default"`` (>= 3 seeds, <= 20 min on 2 CPU cores) and ``"ci"`` (a smaller run of the same
code, for the test suite). Results are written to ``out`` and, with ``update_docs``, into
docs/reproductions.md (one section per claim, between markers). Nothing is tuned on test splits.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from latentcc.app.reproduce.base import SIZES, ClaimResult, update_docs
from latentcc.config import LCCConfig
from latentcc.extras import Need, lcc_needs, model_needs
from latentcc.plumbing.atomic import atomic_write_json
from latentcc.plumbing.errors import param_error
from latentcc.plumbing.runlock import (
    FolderLock,
    check_new_output,
    describe_outputs,
    folder_outputs,
    new_folder,
)

# name -> (module, one-line description); modules are imported only when run
REPRODUCTIONS: dict[str, tuple[str, str]] = {
    "lcc-cc-vs-mc": ("cc_vs_mc", "LCC paper: correctly clustered samples are classified more accurately"),
    "lcc-gain": ("lcc_gain", "LCC paper: LCC beats plain fine-tuning at w in {1e-4, 1e-2} x k in {5, 50}"),
    "lcc-variants": (
        "lcc_variants",
        "does any LCC loss variant (paper, scale-free, orthogonal, all samples) beat plain fine-tuning",
    ),
    "lcc-paper": (
        "lcc_paper",
        "LCC paper, its own setting: ImageNet ResNet-18 -> CIFAR-100 from the HF hub, 6-cell grid, 5 seeds "
        "(internet + GPU; --data/--model: local folders)",
    ),
    "scl-ft": (
        "scl_ft",
        "NC paper: SCL-FT near full FT with >= 90 % fewer trainable parameters, scarce data",
    ),
    "nc-transfer": ("nc_transfer", "NC paper: lower downstream NC1 -> higher linear-probe accuracy"),
    "gc-nc": ("gc_nc", "GC paper: lower GC -> lower source/target CDNV -> higher 5-shot accuracy"),
    "clusterability-hierarchy": (
        "hierarchy",
        "probing paper: shuffled superclasses cluster better than natural ones",
    ),
}
DEFAULT_SEEDS = (0, 1, 2)  # a module's own DEFAULT_SEEDS wins (lcc-paper: the paper's 5)
# Run only when named: they download from the Hugging Face hub and need hours on a GPU.
NOT_IN_ALL = ("lcc-paper",)
# Reproductions whose ``run`` takes local folders in place of their hub ids (``--data`` / ``--model``).
TAKES_FOLDERS = ("lcc-paper",)
# Reproductions whose runs are cached by latentcc.app.compare: the same command again with the same --out
# continues an interrupted run (finished runs reused, a half-finished one resumed from its checkpoint).
RESUMABLE = ("lcc-gain", "lcc-variants", "lcc-paper")
MARKER = "reproduction.json"  # written first: which reproduction (and size) a folder belongs to


def run_reproduction(
    name: str,
    *,
    size: str = "default",
    seeds: Sequence[int] | None = None,
    out_dir: str | Path | None = None,
    docs: str | Path | None = None,
    data: str | None = None,
    model: str | None = None,
) -> ClaimResult:
    """Run reproduction ``name``; write its result (and figures) to ``out_dir``; update ``docs`` if given.

    ``data`` / ``model``: local folders replacing the hub dataset / model (reproductions in TAKES_FOLDERS).
    """
    if name not in REPRODUCTIONS:
        raise param_error("name", "run_reproduction", f"one of {sorted(REPRODUCTIONS)}", name)
    if size not in SIZES:
        raise param_error("size", "run_reproduction", f"one of {list(SIZES)}", size)
    folders = {k: v for k, v in (("data", data), ("model", model)) if v is not None}
    if folders and name not in TAKES_FOLDERS:
        key = next(iter(folders))
        raise param_error(
            key, "run_reproduction", f"None for '{name}' (only {list(TAKES_FOLDERS)} take --data/--model)",
            folders[key], f"'{name}' runs on its embedded data and models. Fix: drop --{key}.",
        )  # fmt: skip
    out = (
        Path(out_dir)
        if out_dir
        else new_folder(Path("runs") / "reproduce" / name, time.strftime("%Y%m%d-%H%M%S"))
    )
    module = importlib.import_module(f"latentcc.app.reproduce.{REPRODUCTIONS[name][0]}")
    seeds = tuple(seeds) if seeds else tuple(getattr(module, "DEFAULT_SEEDS", DEFAULT_SEEDS))
    if docs is not None:  # at the door too: a refused docs folder would otherwise waste the whole run
        _check_docs_folder(Path(docs), out)
    with FolderLock(out, func="run_reproduction"):  # one process per output folder, for all of its writes
        if not _continues(out, name, size):
            check_new_output(
                out, func="run_reproduction", param="out_dir",
                fix="choose another output folder (--out), a new or empty one, or move the old outputs away first"
                + (f" ('{name}' continues in a folder it wrote itself at the same --size)." if name in RESUMABLE else "."),
            )  # fmt: skip
        atomic_write_json(out / MARKER, {"name": name, "size": size})
        t0 = time.perf_counter()
        result: ClaimResult = module.run(size, seeds, out, **folders)
        result.size, result.seeds, result.wall_time_s = size, seeds, time.perf_counter() - t0
        result.write(out)
        if docs is not None:
            _update_docs(Path(docs), name, result, out)
    return result


def _continues(out: Path, name: str, size: str) -> bool:
    """Whether ``out`` is a folder of an earlier call of this cached reproduction at this size."""
    if name not in RESUMABLE or not (out / MARKER).is_file():
        return False
    try:
        marker = json.loads((out / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return bool(marker == {"name": name, "size": size})


def _update_docs(doc: Path, name: str, result: ClaimResult, out: Path) -> None:
    """Copy the figures next to ``doc`` and replace the claim's section in it."""
    fig_dir = doc.parent / "reproductions"
    # the docs file is read, edited and rewritten: one reproduction at a time (others wait their turn)
    with FolderLock(doc.parent, func="run_reproduction", param="docs", wait_s=120):
        _check_docs_folder(doc, out)  # again under its lock: a run may have started there since
        fig_dir.mkdir(parents=True, exist_ok=True)
        for f in result.figures:
            shutil.copyfile(out / f, fig_dir / f"{name}-{f}")
        result.figures = [f"{name}-{f}" for f in result.figures]
        update_docs(doc, result, "reproductions")


def _check_docs_folder(doc: Path, out: Path) -> None:
    """Refuse a docs file inside another command's output folder (a run, a probe report...).

    The docs update writes the file and ``reproductions/`` beside it: inside a run folder they would mix
    with the run's files (and a run that later starts there would be refused because of them). The
    reproduction's own output folder is fine.
    """
    folder = doc.parent
    if folder.is_dir() and out.is_dir() and os.path.samefile(folder, out):
        return
    found = folder_outputs(folder)
    if found:
        raise param_error(
            "docs", "run_reproduction", "a Markdown file in a docs folder, not in a folder of latentcc outputs",
            str(doc),
            f"{folder} holds {describe_outputs(found)}; the docs update would write {doc.name} and reproductions/ "
            "among them, so nothing was written. Fix: give --docs a file in a docs folder (e.g. "
            "docs/reproductions.md).",
        )  # fmt: skip


def _lcc_gain_needs(size: str) -> list[Need]:
    from latentcc.app.reproduce.lcc_gain import SETTINGS

    models = [s["model"] for s in SETTINGS.get(size, {}).values()]
    return lcc_needs(LCCConfig()) + [n for m in models for n in model_needs(m)]


def _lcc_paper_needs(size: str) -> list[Need]:
    # the hub dataset and model, or their saved-folder stand-ins ("ci" writes a fake in those formats)
    what = "the LCC paper's CIFAR-100 / ResNet-18 setting"
    return lcc_needs(LCCConfig()) + [Need(m, "hf", what) for m in ("datasets", "transformers")]


# What each reproduction runs that needs an optional package, by size ("default" / "ci");
# tests check that every reproduction is listed here.
REPRODUCTION_NEEDS: dict[str, Callable[[str], list[Need]]] = {
    "lcc-cc-vs-mc": lambda size: lcc_needs(LCCConfig()),  # clusters with LCCConfig's defaults
    "lcc-gain": _lcc_gain_needs,
    "lcc-paper": _lcc_paper_needs,
    "lcc-variants": lambda size: lcc_needs(LCCConfig()) + model_needs("mnist-cnn"),
    "scl-ft": lambda size: [],
    "nc-transfer": lambda size: [],  # NC1 and the linear probe: core dependencies only
    "gc-nc": lambda size: [],
    "clusterability-hierarchy": lambda size: [],  # Ward clustering (scipy)
}


def reproduction_needs(names: Iterable[str], size: str) -> list[Need]:
    """The optional packages the reproductions ``names`` need at ``size`` (for ``check_extras(needs=)``)."""
    return [
        n for r in names for n in REPRODUCTION_NEEDS.get(r, lambda size: [])(size)
    ]  # unknown: refused by the caller


__all__ = [
    "DEFAULT_SEEDS", "NOT_IN_ALL", "REPRODUCTIONS", "REPRODUCTION_NEEDS", "TAKES_FOLDERS", "ClaimResult",
    "reproduction_needs", "run_reproduction",
]  # fmt: skip
