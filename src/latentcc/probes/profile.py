"""``latentcc.profile``: every probe metric for every layer, from one latent pass per split.

The latents of all requested layers are collected in ONE forward pass over each split
(:func:`~latentcc.latents.collect.collect_latents`); the metric families of the registry
(:mod:`latentcc.probes.registry`) are then computed from those arrays. Geometric complexity needs
gradients w.r.t. the input, so it runs on a small subset of training inputs (``gc_examples``) with its
own forward/backward passes.

The result is a tidy table (one row per split x layer x metric) plus the run's parameters, the time each
stage took, and a few 2-D views for the report (:mod:`latentcc.probes.report`). The other jobs of a
profile live beside this module: the data (:mod:`~latentcc.probes.inputs`), the layers
(:mod:`~latentcc.probes.select`), the settings checks (:mod:`~latentcc.probes.checks`), the views
(:mod:`~latentcc.probes.views`) and the summary (:mod:`~latentcc.probes.summary`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from latentcc.config import ProbeConfig
from latentcc.latents.collect import Latents, collect_latents
from latentcc.latents.layers import model_mode
from latentcc.plumbing.atomic import atomic_write_json, atomic_write_text
from latentcc.plumbing.errors import LatentccError, param_error
from latentcc.plumbing.progress import Progress
from latentcc.probes.checks import check_knn_k_below, check_settings_used
from latentcc.probes.inputs import as_splits, class_names, sample_groups, split_length
from latentcc.probes.registry import Family, ProbeInputs, select_families
from latentcc.probes.select import choose_layers
from latentcc.probes.summary import summarize
from latentcc.probes.views import LayerView, default_view_layers, layer_views, requested_view_layers

__all__ = ["LayerView", "Profile", "profile"]


@dataclass
class Profile:
    """Result of :func:`profile`: a tidy table and everything needed to read it.

    ``rows``: dicts with keys ``split, layer, layer_index, width, metric, value`` (value NaN when a
    metric is undefined at that layer; ``notes`` say why). ``params``: the run's settings and
    provenance. ``timings``: seconds per stage (``latents:<split>``, one per metric family, ``views``).
    """

    rows: list[dict[str, Any]]
    params: dict[str, Any]
    layers: list[str]
    widths: dict[str, int]
    classes: list[str]
    timings: dict[str, float] = field(default_factory=dict)
    views: dict[str, LayerView] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def value(self, layer: str, metric: str, split: str = "train") -> float:
        """The value of ``metric`` at ``layer`` (full name) on ``split``; KeyError if it was not computed."""
        for r in self.rows:
            if r["layer"] == layer and r["metric"] == metric and r["split"] == split:
                return float(r["value"])
        raise KeyError(f"no row for layer={layer!r}, metric={metric!r}, split={split!r}")

    def series(self, metric: str, split: str = "train") -> np.ndarray:
        """``metric`` per layer in model order (NaN where missing), aligned with ``self.layers``."""
        got = {r["layer"]: r["value"] for r in self.rows if r["metric"] == metric and r["split"] == split}
        return np.array([float(got.get(layer, math.nan)) for layer in self.layers])

    def metrics(self) -> list[str]:
        """The metric names present, in first-seen order."""
        return list(dict.fromkeys(r["metric"] for r in self.rows))

    def split_of(self, metric: str) -> str:
        """The split ``metric``'s rows are on ("test" for the probes' accuracies); "train" when absent."""
        return next((r["split"] for r in self.rows if r["metric"] == metric), "train")

    def to_csv(self, path: str | Path | None = None) -> str:
        """The tidy table as CSV (columns: split, layer, layer_index, width, metric, value); written atomically."""
        buf = io.StringIO()
        cols = ["split", "layer", "layer_index", "width", "metric", "value"]
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow({c: r[c] for c in cols})
        text = buf.getvalue()
        if path is not None:
            atomic_write_text(path, text)
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: params, layers, widths, classes, timings, notes, summary and rows (NaN -> null)."""
        return {
            "params": self.params,
            "layers": self.layers,
            "widths": self.widths,
            "classes": self.classes,
            "timings": self.timings,
            "notes": self.notes,
            "summary": summarize(self),
            "rows": [{**r, "value": _json_float(r["value"])} for r in self.rows],
        }

    def to_json(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_dict())

    def to_pandas(self) -> Any:
        """The tidy table as a pandas DataFrame (needs pandas)."""
        from latentcc.plumbing.errors import require

        pd = require("pandas", "dev", purpose="Profile.to_pandas", pip_name="pandas")
        return pd.DataFrame(self.rows)


def _json_float(v: float) -> float | None:
    return None if not math.isfinite(v) else float(v)


def profile(
    model: nn.Module,
    data: Any,
    *,
    layers: str | Sequence[str] | None = None,
    metrics: str | Sequence[str] | None = None,
    max_samples_per_split: int | None = None,
    groups: Any = None,
    view_layers: Sequence[str] | None = None,
    config: ProbeConfig | None = None,
    **overrides: Any,
) -> Profile:
    """Probe every requested layer of ``model`` on ``data`` with the metric families of the registry.

    Args:
        model: any ``nn.Module``; every module is in eval mode for the call and gets its own mode back
            after. Its weights are not changed.
        data: a :class:`~latentcc.data.DatasetSplits` (train + test splits are used), a mapping
            ``{"train": ..., "test": ...}`` of datasets or DataLoaders yielding ``(x, y, index)``, or a
            single dataset/loader (train only: the families scored on a held-out split, the linear and
            k-NN probes, are then skipped with a note). NC, clusterability and GC use the train split (the
            paper's "downstream training data"); probes train on train and score on test.
        layers: ``"all"`` (see :func:`~latentcc.latents.layers.all_layers`; layers without a per-sample
            float output are dropped) or names / dotted suffixes / ``"re:<regex>"``; never empty.
        metrics: ``"all"`` or names of metric families (:data:`~latentcc.probes.registry.FAMILIES`:
            ``"nc", "clusterability", "linear_probe", "knn_probe", "gc"``).
        max_samples_per_split: stratified subset of at most this many samples per split (0 = all).
        groups: superclass of each class, for "train on superclasses, probe subclasses": a sequence of
            length C (group id or name per class id) or a mapping class name/id -> group. Clusterability
            is then computed within each group and averaged (probing paper).
        view_layers: layers shown as 2-D projections in the report; default: first, best-AMI and last.
        config: a :class:`~latentcc.config.ProbeConfig`; ``layers``, ``metrics``, ``max_samples_per_split``
            and ``**overrides`` (e.g. ``pool="flatten", dim=512``) replace its fields; None keeps them. All
            defaults live in ProbeConfig. Unknown families and settings the run would ignore are refused
            before any work (:func:`~latentcc.probes.checks.check_settings_used`), and so is a ``knn_k`` of
            at least the training samples probed (the vote would span the whole split).

    Returns:
        a :class:`Profile`.
    """
    given = {"layers": layers, "metrics": metrics, "max_samples_per_split": max_samples_per_split}
    cfg = _config(config, {**given, **overrides})
    if not isinstance(model, nn.Module):
        raise param_error("model", "profile", "a torch.nn.Module", type(model).__name__)
    check_settings_used(cfg, groups=groups is not None)
    from latentcc.extras import check_extras
    from latentcc.train.loop import resolve_device

    check_extras("profile", probe=cfg)  # faiss / igraph now, not after minutes of latent passes
    device = resolve_device(cfg.device, func="ProbeConfig")
    splits = as_splits(data, cfg)
    families, notes = _runnable(select_families(cfg.metrics, "profile"), splits)
    knn = any(f.name == "knn_probe" for f in families)
    if knn:  # now when the training split has a length; else after its latent pass
        check_knn_k_below(cfg, split_length(splits["train"]))
    lat: dict[str, Latents] = {}
    timings: dict[str, float] = {}
    try:
        with model_mode(model, training=False):
            names = choose_layers(model, cfg.layers, splits["train"], device)
            wanted_views = requested_view_layers(model, names, view_layers)
            for split, loader in splits.items():
                lat[split] = _timed(timings, f"latents:{split}", _latents, model, loader, names, cfg, device)
            if knn:
                check_knn_k_below(cfg, lat["train"].num_samples)
            classes = class_names(splits["train"], lat["train"].labels)
            per_sample = None if groups is None else sample_groups(groups, lat["train"].labels, classes)
            inp = ProbeInputs(cfg, lat, per_sample, model, splits["train"], device, notes)
            widths = {n: int(lat["train"][n].shape[1]) for n in names}
            rows = _run_families(families, inp, names, widths, timings)
            chosen = wanted_views or default_view_layers(names, rows)
            views = _timed(timings, "views", layer_views, lat["train"], chosen, cfg)
    finally:
        for latents in lat.values():
            for f in latents.files:
                f.unlink(missing_ok=True)
    params = _params(cfg, model, names, families, per_sample is not None, lat, device)
    return Profile(rows, params, names, widths, classes, timings, views, notes)


def _config(config: ProbeConfig | None, values: dict[str, Any]) -> ProbeConfig:
    """``config`` (default: ProbeConfig()) with the given values (None: unchanged); unknown names refused."""
    fields = {f.name for f in dataclasses.fields(ProbeConfig)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise LatentccError(
            f"Unknown argument(s) {unknown} for profile; valid settings are {sorted(fields)}."
        )
    return dataclasses.replace(config or ProbeConfig(), **{k: v for k, v in values.items() if v is not None})


def _runnable(families: list[Family], splits: dict[str, Any]) -> tuple[list[Family], list[str]]:
    """The families these splits can feed, and a note for each one skipped (scored on a missing split)."""
    notes = [
        f"{f.name} skipped: it needs a held-out split (pass data with a 'test' split)."
        for f in families
        if f.split not in splits
    ]
    return [f for f in families if f.split in splits], notes


def _timed(timings: dict[str, float], stage: str, fn: Any, *args: Any) -> Any:
    t0 = time.perf_counter()
    out = fn(*args)
    timings[stage] = time.perf_counter() - t0
    return out


def _latents(
    model: nn.Module, loader: DataLoader[Any], names: list[str], cfg: ProbeConfig, device: torch.device
) -> Latents:
    return collect_latents(
        model, loader, names, pool=cfg.pool, dim=cfg.dim, device=device, seed=cfg.seed, progress=cfg.progress
    )


def _run_families(
    families: list[Family],
    inp: ProbeInputs,
    names: list[str],
    widths: dict[str, int],
    timings: dict[str, float],
) -> list[dict[str, Any]]:
    """The rows of every family at every layer, in registry order; a family undefined at a layer (its job
    raised a LatentccError) gets NaN rows there and a note naming the layer."""
    position = {n: i for i, n in enumerate(names)}
    rows: list[dict[str, Any]] = []

    def add(layer: str, fam: Family, values: dict[str, float]) -> None:
        for key in fam.keys:
            rows.append({"split": fam.split, "layer": layer, "layer_index": position[layer],
                         "width": widths[layer], "metric": key, "value": float(values[key])})  # fmt: skip

    jobs = [(fam, job) for fam in families if (job := fam.job(inp)) is not None]
    with Progress(len(jobs) * len(names), "probes", unit="layer metrics", enabled=inp.cfg.progress,
                  leave=True) as bar:  # fmt: skip
        for fam, job in jobs:
            t0 = time.perf_counter()
            for name in names:
                bar.set_postfix(f"{fam.name} {name}")
                try:
                    values = dict(job(name))
                except LatentccError as e:  # undefined at this layer (e.g. constant features): say so
                    values = dict.fromkeys(fam.keys, math.nan)
                    inp.notes.append(f"{fam.name} at {name}: {e}")
                if set(values) != set(fam.keys):  # the registry entry and its job disagree: a bug, not data
                    raise TypeError(
                        f"family {fam.name!r} returned keys {sorted(values)}, declared {list(fam.keys)}"
                    )
                add(name, fam, values)
                bar.update()
            timings[fam.name] = time.perf_counter() - t0
    return rows


def _params(
    cfg: ProbeConfig,
    model: nn.Module,
    names: list[str],
    families: list[Family],
    grouped: bool,
    lat: dict[str, Latents],
    device: torch.device,
) -> dict[str, Any]:
    """Every setting of the run (layers and metrics as resolved), sample counts and provenance."""
    from latentcc import __version__

    return {
        **dataclasses.asdict(cfg),
        "layers": names,
        "metrics": [f.name for f in families],
        "groups": grouped,
        "samples": {s: int(lt.num_samples) for s, lt in lat.items()},
        "model_class": type(model).__name__,
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "latentcc": __version__,
    }
