"""The probe metric families: one entry each, the only place a family is named.

A family (``"nc"``, ``"clusterability"``, ...) is what ``ProbeConfig.metrics`` / ``--metrics`` selects. Its
:class:`Family` entry says everything the rest of the probes need, so that adding a metric is one entry
here (as torchmetrics has one class per metric):

- ``keys``: the metric rows it writes (the ``metric`` column of profile.csv), on the split ``split``
  ("train"; or "test": fitted on the training split and scored on the held-out one, skipped with a note
  when the data has none);
- ``job``: given the :class:`ProbeInputs` of a profile, a function ``layer -> {key: value}`` (or None, with
  a note, when the family cannot run on these inputs);
- ``panels``: the report's curve panels that draw its keys; ``summary``: its sentences in the summary;
- ``settings``: the ProbeConfig fields only it reads (a changed one without the family is refused);
- ``label`` / ``description``: a short name for sentences and a one-line description for ``--help``.

:func:`select_families` turns ``ProbeConfig.metrics`` (``"all"`` or names) into entries: ``profile`` and
``latentcc probe`` validate the names there, at their door. The metric functions themselves live in
:mod:`latentcc.metrics` (definitions in docs/probes.md); the jobs import them when they run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from latentcc.plumbing.errors import LatentccError, param_error
from latentcc.probes.inputs import gc_inputs
from latentcc.probes.summary import clusterability_lines, no_lines, range_lines

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    from latentcc.config import ProbeConfig
    from latentcc.latents.collect import Latents
    from latentcc.probes.profile import Profile

# One layer's values of a family, by key; raising LatentccError means "undefined at this layer" (NaN + note).
Job = Callable[[str], Mapping[str, float]]


@dataclass(frozen=True)
class Series:
    """One curve of a panel: ``key`` drawn with legend ``label``; ``err``: the key of its standard error,
    drawn as 2-standard-error bars."""

    key: str
    label: str
    err: str | None = None


@dataclass(frozen=True)
class Panel:
    """One panel of the report's per-layer curves. Panels of several families with the same ``title`` are
    drawn as one (the linear and k-NN probe accuracies share "Probe accuracy (test)").

    ``log``: a log axis is allowed (used only where the values are positive and span a decade).
    ``two_class_note``: the panel is flat by construction with 2 classes; this text then rides in its legend.
    """

    title: str
    series: tuple[Series, ...]
    log: bool = False
    two_class_note: str | None = None


@dataclass
class ProbeInputs:
    """What a family's job may read: the latents of each split (``"train"``, and ``"test"`` when the data
    has a held-out split), per-sample superclass ids (``groups``) and, for measurements that cannot come
    from stored latents (GC), the model, the training loader and the device. ``notes`` collects the
    reasons a family was skipped."""

    cfg: ProbeConfig
    latents: dict[str, Latents]
    groups: np.ndarray | None
    model: nn.Module
    train_loader: DataLoader[Any]
    device: torch.device
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Family:
    """One metric family; see the module docstring for what each field is read by."""

    name: str
    label: str
    description: str
    keys: tuple[str, ...]
    split: Literal["train", "test"]
    job: Callable[[ProbeInputs], Job | None]
    panels: tuple[Panel, ...] = ()
    settings: tuple[str, ...] = ()
    summary: Callable[[Profile, Family], list[str]] = range_lines


# ----------------------------------------------------------------------------- the built-in families' jobs

NC_KEYS = (
    "nc1",
    "nc1_papyan",
    "nc1_trace_ratio",
    "cdnv",
    "nc2_equinorm",
    "nc2_equiangular",
    "nc2_maxangle",
    "nc2_etf",
)
CLUSTER_KEYS = ("ami", "ari", "nmi", "purity")

# Two centred class means always point in opposite directions (n_1 m_1 + n_2 m_2 = 0) with length ratio
# n_2 / n_1: with 2 classes every NC2 value is a function of the class counts, not of the features.
NC2_NOTE = "2 classes: NC2 depends only on the\nclass counts (centred means are opposite)"


def _nc_job(inp: ProbeInputs) -> Job:
    from latentcc.metrics import neural_collapse

    tr = inp.latents["train"]

    def nc(layer: str) -> Mapping[str, float]:
        r = neural_collapse(tr[layer], tr.labels)
        return {k: r[k] for k in NC_KEYS}

    return nc


def _clusterability_job(inp: ProbeInputs) -> Job:
    from latentcc.metrics import clusterability

    tr, cfg = inp.latents["train"], inp.cfg

    def clu(layer: str) -> Mapping[str, float]:
        r = clusterability(
            tr[layer], tr.labels, clustering=cfg.clustering, groups=inp.groups, overcluster=cfg.overcluster,
            seed=cfg.seed,
        )  # fmt: skip
        return {k: r[k] for k in CLUSTER_KEYS}

    return clu


def _linear_probe_job(inp: ProbeInputs) -> Job:
    from latentcc.metrics import linear_probe

    tr, te = inp.latents["train"], inp.latents["test"]

    def lin(layer: str) -> Mapping[str, float]:
        return {
            "linear_probe_acc": linear_probe(tr[layer], tr.labels, te[layer], te.labels, seed=inp.cfg.seed)
        }

    return lin


def _knn_probe_job(inp: ProbeInputs) -> Job:
    from latentcc.metrics import knn_probe

    tr, te = inp.latents["train"], inp.latents["test"]

    def knn(layer: str) -> Mapping[str, float]:  # knn_k < N: checked at profile's door
        return {"knn_probe_acc": knn_probe(tr[layer], tr.labels, te[layer], te.labels, k=inp.cfg.knn_k)}

    return knn


def _gc_job(inp: ProbeInputs) -> Job | None:
    from latentcc.metrics import geometric_complexity, layer_fn

    x = gc_inputs(inp.train_loader, inp.cfg, inp.notes)
    if x is None:  # not float inputs: no input derivative (the note says so)
        return None
    x, cfg, model = x.to(inp.device), inp.cfg, inp.model

    def gc(layer: str) -> Mapping[str, float]:
        r = geometric_complexity(
            layer_fn(model, layer, pool=cfg.pool), x, estimator=cfg.gc_estimator,
            n_projections=cfg.gc_projections, batch_size=cfg.batch_size, seed=cfg.seed,
        )  # fmt: skip
        return {"gc": r.mean, "gc_stderr": r.stderr}

    return gc


# ----------------------------------------------------------------------------- the registry

FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add ``family`` to :data:`FAMILIES` (its name and keys must be new); returns it."""
    if family.name in FAMILIES or family.name == "all":  # "all" selects every family
        raise LatentccError(f"The probe metric family name {family.name!r} is taken; pick another name.")
    taken = {k: f.name for f in FAMILIES.values() for k in f.keys}
    clash = [k for k in family.keys if k in taken]
    if clash:
        raise LatentccError(
            f"Probe metric keys {clash} of family {family.name!r} are written by {taken[clash[0]]!r}."
        )
    FAMILIES[family.name] = family
    return family


register(Family(
    "nc", "Neural collapse", "neural collapse NC1/NC2 and CDNV of the training latents", NC_KEYS, "train",
    _nc_job,
    panels=(
        Panel("Within-class variability (NC1)", (Series("nc1", "NC1"), Series("nc1_trace_ratio", "tr ratio")), log=True),
        Panel("Class-distance normalised variance (CDNV)", (Series("cdnv", "CDNV"),), log=True),
        Panel("Simplex ETF distance (NC2)", (Series("nc2_etf", "ETF dist"), Series("nc2_equinorm", "equinorm")),
              two_class_note=NC2_NOTE),
    ),
    summary=no_lines,  # NC1 enters the summary through its correlation with the linear probe
))  # fmt: skip
register(Family(
    "clusterability", "Clusterability", "AMI, ARI, NMI and purity of a clustering of the training latents",
    CLUSTER_KEYS, "train", _clusterability_job,
    panels=(Panel("Clusterability", (Series("ami", "AMI"), Series("purity", "purity"), Series("ari", "ARI"))),),
    settings=("overcluster",), summary=clusterability_lines,
))  # fmt: skip
register(Family(
    "linear_probe", "Linear-probe accuracy", "test accuracy of a logistic regression on the latents",
    ("linear_probe_acc",), "test", _linear_probe_job,
    panels=(Panel("Probe accuracy (test)", (Series("linear_probe_acc", "linear"),)),),
    summary=no_lines,  # the separation fact of the summary reads it
))  # fmt: skip
register(Family(
    "knn_probe", "k-NN probe accuracy", "test accuracy of a k-nearest-neighbour vote among training latents",
    ("knn_probe_acc",), "test", _knn_probe_job,
    panels=(Panel("Probe accuracy (test)", (Series("knn_probe_acc", "k-NN"),)),),
    settings=("knn_k",), summary=no_lines,  # the separation fact of the summary reads it
))  # fmt: skip
register(Family(
    "gc", "Geometric complexity", "geometric complexity: mean squared norm of the input Jacobian",
    ("gc", "gc_stderr"), "train", _gc_job,
    panels=(Panel("Geometric complexity (GC)", (Series("gc", "GC", err="gc_stderr"),), log=True),),
    settings=("gc_estimator", "gc_examples", "gc_projections"),
))  # fmt: skip


# ----------------------------------------------------------------------------- lookups


def select_families(metrics: Sequence[str], func: str) -> list[Family]:
    """The entries ``metrics`` names (``ProbeConfig.metrics``), in registry order; ``"all"``: every family.

    Unknown names are refused with the list of families; ``func`` names the caller in the message.
    """
    if tuple(metrics) == ("all",):
        return list(FAMILIES.values())
    unknown = [m for m in metrics if m not in FAMILIES]
    if unknown:
        raise param_error(
            "metrics", func, f"'all' or names of metric families, any of {list(FAMILIES)}", unknown[0],
            "See `latentcc probe --help` for what each family measures.",
        )  # fmt: skip
    return [f for name, f in FAMILIES.items() if name in metrics]


def panels() -> list[Panel]:
    """The report's curve panels in registry order; panels of one title merged into one."""
    merged: dict[str, Panel] = {}
    for fam in FAMILIES.values():
        for p in fam.panels:
            old = merged.get(p.title)
            merged[p.title] = p if old is None else Panel(
                p.title, old.series + p.series, old.log and p.log, old.two_class_note or p.two_class_note
            )  # fmt: skip
    return list(merged.values())


def error_keys() -> set[str]:
    """Keys that are standard errors of another key (drawn as error bars, not as columns of their own)."""
    return {s.err for p in panels() for s in p.series if s.err}
