"""``latentcc.profile``: every probe metric for every layer, from one latent pass per split.

The latents of all requested layers are collected in ONE forward pass over each split
(:func:`~latentcc.latents.collect.collect_latents`); neural collapse, clusterability and the probes are then
computed from those arrays. Geometric complexity needs gradients w.r.t. the input, so it runs on a
small subset of training inputs (``gc_samples``) with its own forward/backward passes.

The result is a tidy table (one row per split x layer x metric) plus the run's parameters, the
time each stage took, and a few 2-D views for the report (:mod:`latentcc.probes.report`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from latentcc.config import ProbeConfig
from latentcc.latents.collect import Latents, collect_latents
from latentcc.latents.layers import all_layers, resolve_layers
from latentcc.plumbing.atomic import atomic_write_json, atomic_write_text
from latentcc.plumbing.errors import CheckpointError, LatentccError, param_error
from latentcc.plumbing.progress import Progress

# The metric rows each family writes (names are the columns of profile.csv's `metric`).
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


@dataclass
class LayerView:
    """A 2-D PCA projection of one layer's training latents (a subset), with classes and clusters."""

    layer: str
    xy: np.ndarray  # (n, 2)
    labels: np.ndarray  # (n,) class ids
    clusters: np.ndarray  # (n,) cluster ids from the profile's clustering method, n_clusters = #classes


@dataclass
class Profile:
    """Result of :func:`profile`: a tidy table and everything needed to read it.

    ``rows``: dicts with keys ``split, layer, layer_index, width, metric, value`` (value NaN when a
    metric is undefined at that layer; ``notes`` say why). ``params``: the run's settings and
    provenance. ``timings``: seconds per stage (``latents:<split>`` and one per metric family).
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
    metrics: Sequence[str] | None = None,
    max_samples: int | None = None,
    groups: Any = None,
    view_layers: Sequence[str] | None = None,
    config: ProbeConfig | None = None,
    **overrides: Any,
) -> Profile:
    """Probe every requested layer of ``model`` on ``data``: NC, clusterability, probes and GC.

    Args:
        model: any ``nn.Module``; it is put in eval mode for the call and its mode restored after. Its
            weights are not changed.
        data: a :class:`~latentcc.data.DatasetSplits` (train + test splits are used), a mapping
            ``{"train": ..., "test": ...}`` of datasets or DataLoaders yielding ``(x, y, index)``, or a
            single dataset/loader (train only: the linear and k-NN probes then need a test split and are
            skipped with a note). NC, clusterability and GC use the train split (the paper's
            "downstream training data"); probes train on train and score on test.
        layers: ``"all"`` (see :func:`~latentcc.latents.layers.all_layers`) or names / dotted suffixes /
            ``"re:<regex>"``. Default from ``config`` (empty = all).
        metrics: subset of ``("nc", "clusterability", "linear_probe", "knn_probe", "gc")``.
        max_samples: stratified subset of at most this many samples per split (0/None = all).
        groups: superclass of each class, for "train on superclasses, probe subclasses": a sequence of
            length C (group id or name per class id) or a mapping class name/id -> group. Clusterability
            is then computed within each group and averaged (probing paper).
        view_layers: layers shown as 2-D projections in the report; default: first, best-AMI and last.
        config: a :class:`~latentcc.config.ProbeConfig`; ``**overrides`` replace its fields
            (e.g. ``pool="flatten", dim=512``). All defaults live in ProbeConfig. Settings the run would
            ignore are refused before any work (:func:`check_settings_used`), and so is a ``knn_k`` of at
            least the training samples probed (the vote would span the whole split).

    Returns:
        a :class:`Profile`.
    """
    given = {"layers": layers, "metrics": metrics, "max_samples": max_samples}
    fields = {f.name for f in dataclasses.fields(ProbeConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise LatentccError(
            f"Unknown argument(s) {unknown} for profile; valid settings are {sorted(fields)}."
        )
    if isinstance(layers, str) and layers == "all":
        given["layers"] = ()
    cfg = dataclasses.replace(
        config or ProbeConfig(), **{k: v for k, v in {**given, **overrides}.items() if v is not None}
    )
    if not isinstance(model, nn.Module):
        raise param_error("model", "profile", "a torch.nn.Module", type(model).__name__)
    check_settings_used(cfg, groups=groups is not None)
    from latentcc.app.extras import check_extras

    check_extras("profile", probe=cfg)  # faiss / igraph now, not after minutes of latent passes

    from latentcc.train.loop import resolve_device

    device = resolve_device(cfg.device, func="ProbeConfig")
    splits = _as_splits(data, cfg)
    notes: list[str] = []
    want = list(dict.fromkeys(cfg.metrics))
    if "test" not in splits:
        for m in ("linear_probe", "knn_probe"):
            if m in want:
                want.remove(m)
                notes.append(f"{m} skipped: it needs a held-out split (pass data with a 'test' split).")
    if "knn_probe" in want:  # now when the training split has a length; else after its latent pass
        _check_knn_k(cfg, _length(splits["train"]))

    was_training = model.training
    model.eval()
    lat: dict[str, Latents] = {}
    try:
        names = _choose_layers(model, cfg.layers, splits["train"], device)
        position = {n: i for i, n in enumerate(names)}
        timings: dict[str, float] = {}
        for split, loader in splits.items():
            t0 = time.perf_counter()
            lat[split] = collect_latents(
                model,
                loader,
                names,
                pool=cfg.pool,
                dim=cfg.dim,
                device=device,
                seed=cfg.seed,
                progress=cfg.progress,
            )
            timings[f"latents:{split}"] = time.perf_counter() - t0
        classes = _classes(splits["train"], lat["train"].labels)
        sample_groups = _sample_groups(groups, lat["train"].labels, classes) if groups is not None else None
        widths = {n: int(lat["train"][n].shape[1]) for n in names}
        rows: list[dict[str, Any]] = []

        def add(layer: str, metric: str, value: float, split: str = "train") -> None:
            rows.append(
                {
                    "split": split,
                    "layer": layer,
                    "layer_index": position[layer],
                    "width": widths[layer],
                    "metric": metric,
                    "value": float(value),
                }
            )

        if "knn_probe" in want:
            _check_knn_k(cfg, lat["train"].num_samples)
        jobs = _jobs(want, cfg, lat, sample_groups)
        if "gc" in want:
            gc_x = _gc_inputs(splits["train"], cfg, notes)
            if gc_x is not None:
                jobs.append(("gc", _gc_job(model, gc_x.to(device), cfg)))
        with Progress(
            len(jobs) * len(names), "probes", unit="layer metrics", enabled=cfg.progress, leave=True
        ) as bar:
            for family, job in jobs:
                t0 = time.perf_counter()
                for name in names:
                    bar.set_postfix(f"{family} {name}")
                    try:
                        for metric, value, split in job(name):
                            add(name, metric, value, split)
                    except LatentccError as e:  # undefined at this layer (e.g. constant features): say so
                        for metric in _family_keys(family):
                            add(name, metric, math.nan, "test" if "probe" in family else "train")
                        notes.append(f"{family} at {name}: {e}")
                    bar.update()
                timings[family] = time.perf_counter() - t0
        views = _views(lat["train"], names, rows, view_layers, model, cfg, timings)
    finally:
        model.train(was_training)
        for latents in lat.values():
            for f in latents.files:
                f.unlink(missing_ok=True)
    params = {
        **dataclasses.asdict(cfg),
        "layers": names,
        "metrics": want,
        "groups": sample_groups is not None,
        "samples": {s: int(lt.num_samples) for s, lt in lat.items()},
        "model_class": type(model).__name__,
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    from latentcc import __version__

    params["latentcc"] = __version__
    return Profile(rows, params, names, widths, classes, timings, views, notes)


# ----------------------------------------------------------------------------- settings that would do nothing

# The ProbeConfig fields read by one metric family only (cluster_method and view_points also shape the
# report's views, which are drawn whatever the metrics, so they belong to no family here).
_FAMILY_SETTINGS = {
    "clusterability": ("overcluster",),
    "knn_probe": ("knn_k",),
    "gc": ("gc_estimator", "gc_samples", "gc_draws"),
}


def _flag(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def check_settings_used(cfg: ProbeConfig, *, groups: bool = False, func: str = "profile") -> None:
    """Refuse settings the run would ignore, so that no result silently lacks what was asked for.

    A ProbeConfig field away from its default whose metric family is not in ``cfg.metrics`` (``knn_k``
    without "knn_probe", ``gc_samples`` without "gc", ...), ``groups`` (given: True) without
    "clusterability", ``overcluster`` with Leiden (which takes no cluster count) and ``gc_draws`` with the
    exact GC estimator (which draws nothing). ``profile`` and ``latentcc probe`` call it before any work;
    ``func`` names the caller in the message.
    """
    default = ProbeConfig()
    unused = [
        (f"{f}={getattr(cfg, f)!r} ({_flag(f)})", family)
        for family, names in _FAMILY_SETTINGS.items()
        if family not in cfg.metrics
        for f in names
        if getattr(cfg, f) != getattr(default, f)
    ]
    if groups and "clusterability" not in cfg.metrics:
        unused.append(("groups (--groups)", "clusterability"))
    if unused:
        said = "; ".join(f"{what} is read by {family}" for what, family in unused)
        raise param_error(
            "metrics", func, f"metric families that read the settings given ({said})", list(cfg.metrics),
            "Without their family those settings would change nothing. Fix: add the family to metrics "
            "(--metrics), or leave the settings out.",
        )  # fmt: skip
    if cfg.cluster_method == "leiden" and cfg.overcluster != default.overcluster:
        raise param_error(
            "overcluster", func, f"{default.overcluster} with cluster_method='leiden': overcluster multiplies "
            "the cluster count of ward and kmeans, and Leiden takes no cluster count (its resolution decides "
            "how many clusters come out)", cfg.overcluster,
            "Fix: cluster_method='ward' or 'kmeans' (--cluster-method) to over-cluster, or leave overcluster "
            "at 1 (drop --overcluster).",
        )  # fmt: skip
    if cfg.gc_estimator == "exact" and cfg.gc_draws != default.gc_draws:
        raise param_error(
            "gc_draws", func, f"left at its default ({default.gc_draws}) with gc_estimator='exact': the exact "
            "Jacobian draws no random projections", cfg.gc_draws,
            "Fix: gc_estimator='hutchinson' or 'outputs' (--gc-estimator) for a randomized estimate, or drop "
            "gc_draws (--gc-draws).",
        )  # fmt: skip


# A run's weights fit only the architecture and class count it was trained with: what --model and --data pick.
_RUN_SETTINGS = (("model", "model", "--model"), ("data", "data", "--data"))


def check_checkpoint_settings(
    run: str | Path, run_values: Mapping[str, Any], given: Mapping[str, Any], *, func: str = "latentcc probe"
) -> None:
    """Refuse a typed ``--model`` or ``--data`` that differs from the ones the run at ``run`` was trained with.

    ``run_values`` is the run's config.json ({"model": {"model": ...}, "data": {"data": ...}}), ``given``
    the flags the user typed (``vars(ns)``: config flags are only set when typed). Without this check the
    run's weights would meet a model of another architecture or head size, and the user would read torch's
    list of missing keys instead of the conflict of flags that caused it. Runs without config.json have
    nothing to compare: ``load_weights`` says which weights do not fit.
    """
    for section, name, flag in _RUN_SETTINGS:
        values = run_values.get(section)
        saved = values.get(name) if isinstance(values, Mapping) else None
        if name not in given or saved is None or _same_setting(str(saved), str(given[name])):
            continue
        why = (
            "The run's weights fit only that model's architecture."
            if section == "model"
            else "The run's model has a head for that data's classes, and its weights were fitted to that data."
        )
        raise param_error(
            name, func, f"the {section} the run was trained with when --checkpoint is given ({saved!r}, from "
            f"{Path(run) / 'config.json'})", given[name],
            f"{why} Fix: drop {flag} (the run's {section} is used), pass {flag} {saved}, or drop --checkpoint to "
            f"probe {given[name]!r} without the run's weights.",
        )  # fmt: skip


def load_run_weights(run: str | Path, model: nn.Module, *, model_name: str, data_name: str) -> None:
    """Load the run's best weights into ``model``, or say which --model and --data the model was built from.

    ``load_weights`` knows the file and the module, not the flags: the name the user typed is what they can
    change, and a run without config.json (whose --model/--data nothing could check up front) needs it most.
    """
    from latentcc.train.checkpoint import load_weights

    run = Path(run)
    try:
        load_weights(run / "best.safetensors", model)
    except CheckpointError as e:
        # unreadable or corrupt (load_weights' own words): nothing the flags could change
        if "does not fit this model" not in str(e):
            raise
        unchecked = (
            f"; {run} has no config.json naming the run's own, so pass the --model and --data it was trained with"
            if not (run / "config.json").is_file()
            else ""
        )
        raise CheckpointError(
            f"{e} The model here is {model_name!r} built for {data_name!r}{unchecked}."
        ) from e


def _same_setting(a: str, b: str) -> bool:
    """Same model or data name, or the same local folder spelled two ways (relative, absolute, a link)."""
    if a == b:
        return True
    try:
        return Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def check_knn_k(cfg: ProbeConfig, data: Any, *, func: str = "profile") -> None:
    """Refuse a ``knn_k`` of at least the training samples ``profile(data, config=cfg)`` would probe.

    With k >= N every vote spans the whole training split, so the k-NN probe would only measure the
    share of the majority class. ``profile`` checks it itself; ``latentcc probe`` calls this as soon as the
    data is loaded. Nothing to check without "knn_probe" or a held-out split, or for a dataset of no length.
    """
    if "knn_probe" in cfg.metrics:
        splits = _as_splits(data, cfg)
        if "test" in splits:
            _check_knn_k(cfg, _length(splits["train"]), func)


def _check_knn_k(cfg: ProbeConfig, n_train: int | None, func: str = "profile") -> None:
    if n_train is not None and cfg.knn_k >= n_train:
        raise param_error(
            "knn_k", func, f"an int below the number of training samples probed ({n_train})", cfg.knn_k,
            f"With k >= {n_train} every test sample's vote spans the whole training split, and the k-NN probe "
            "accuracy would only be the share of the majority class. Fix: a smaller knn_k (--knn-k; default "
            f"{ProbeConfig().knn_k}), or more training samples (max_samples / --max-samples; 0 = all).",
        )  # fmt: skip


def _length(loader: DataLoader[Any]) -> int | None:
    """Samples in a loader's dataset, or None when it has no length (an iterable dataset)."""
    try:
        return len(loader.dataset)  # type: ignore[arg-type]
    except TypeError:
        return None


# ----------------------------------------------------------------------------- inputs


def _as_splits(data: Any, cfg: ProbeConfig) -> dict[str, Any]:
    """Named loaders: 'train' and, when available, 'test' (falling back to 'val')."""
    from latentcc.data import DatasetSplits

    if isinstance(data, DatasetSplits):
        raw: dict[str, Any] = {"train": data.train, "test": data.test if len(data.test) else data.val}
    elif isinstance(data, Mapping):
        if "train" not in data:
            raise param_error("data", "profile", "a mapping with a 'train' entry (and 'test')", sorted(data))
        raw = {"train": data["train"]}
        for key in ("test", "val"):
            if key in data and data[key] is not None:
                raw["test"] = data[key]
                break
    else:
        raw = {"train": data}
    return {split: _loader(d, cfg, split) for split, d in raw.items()}


def _loader(d: Any, cfg: ProbeConfig, split: str) -> DataLoader[Any]:
    from latentcc.data import DatasetSplits, IndexedDataset
    from latentcc.data.base import stratified_indices

    if isinstance(d, DatasetSplits):  # e.g. {"train": from_arrays(...)}: a whole set of splits as one split
        raise param_error(
            "data",
            "profile",
            f"one dataset or DataLoader per entry of the mapping, also its '{split}' entry",
            type(d).__name__,
            "Pass the DatasetSplits itself as data, or its .train and .test splits as the entries.",
        )
    if isinstance(d, DataLoader):
        if not cfg.max_samples:
            return d
        if not isinstance(d.dataset, IndexedDataset):
            raise param_error(
                "max_samples",
                "profile",
                "0 when the data is a DataLoader over a plain dataset",
                cfg.max_samples,
                "Pass a latentcc IndexedDataset (latentcc.data.from_arrays) or subset the data yourself.",
            )
        ds = d.dataset.subset(stratified_indices(d.dataset.targets, cfg.max_samples, seed=cfg.seed))
        return DataLoader(ds, batch_size=d.batch_size or cfg.batch_size, collate_fn=d.collate_fn)
    if isinstance(d, IndexedDataset):
        if cfg.max_samples:
            d = d.subset(stratified_indices(d.targets, cfg.max_samples, seed=cfg.seed))
        if len(d) == 0:
            raise param_error("data", "profile", f"a non-empty '{split}' split", "0 samples")
        return DataLoader(d, batch_size=cfg.batch_size)
    if hasattr(d, "__getitem__") and hasattr(d, "__len__"):
        if cfg.max_samples:
            raise param_error(
                "max_samples",
                "profile",
                "0 for a plain torch Dataset",
                cfg.max_samples,
                "Wrap the data with latentcc.data.from_arrays to subsample, or subset it yourself.",
            )
        return DataLoader(d, batch_size=cfg.batch_size)
    raise param_error(
        "data",
        "profile",
        "DatasetSplits, a {'train': ..., 'test': ...} mapping, a Dataset or a DataLoader yielding (x, y, index)",
        type(d).__name__,
    )


def _classes(loader: DataLoader[Any], labels: np.ndarray) -> list[str]:
    names = getattr(loader.dataset, "classes", None)
    if names is not None and len(names) > int(labels.max()):
        return [str(c) for c in names]
    return [str(c) for c in range(int(labels.max()) + 1)]


def _sample_groups(groups: Any, labels: np.ndarray, classes: list[str]) -> np.ndarray:
    """Per-sample group ids from a per-class sequence or a {class name or id: group} mapping."""
    if isinstance(groups, Mapping):
        per_class: list[Any] = []
        for c, name in enumerate(classes):
            if name in groups:
                per_class.append(groups[name])
            elif c in groups or str(c) in groups:
                per_class.append(groups[c] if c in groups else groups[str(c)])
            else:
                raise param_error(
                    "groups",
                    "profile",
                    "a mapping that gives every class a group",
                    f"no entry for class {c} ({name!r})",
                    f"Classes are {classes}.",
                )
    else:
        per_class = list(groups)
        if len(per_class) != len(classes):
            raise param_error(
                "groups",
                "profile",
                f"one group per class ({len(classes)} classes)",
                f"{len(per_class)} entries",
            )
    _, codes = np.unique(np.array([str(g) for g in per_class]), return_inverse=True)
    return codes[labels]


def _choose_layers(
    model: nn.Module, layers: tuple[str, ...], loader: DataLoader[Any], device: torch.device
) -> list[str]:
    if layers:
        return list(resolve_layers(model, list(layers), func="profile"))
    candidates = all_layers(model)
    if not candidates:
        raise param_error("layers", "profile", "layer names (the model has no submodules)", layers)
    return _layers_with_batch_outputs(model, candidates, loader, device)


def _layers_with_batch_outputs(
    model: nn.Module, names: list[str], loader: DataLoader[Any], device: torch.device
) -> list[str]:
    """Keep the layers whose output is a float tensor (batch, ...): one forward on the first batch.

    ``layers="all"`` includes everything; some modules return something else (a position embedding
    of shape (1, T, D), a tuple of non-tensors) and cannot be probed per sample.
    """
    from latentcc.plumbing.batch import input_dtype, read_batches, to_device, unpack_batch

    shapes: dict[str, Any] = {}
    modules = dict(model.named_modules())

    def hook(name: str) -> Callable[..., None]:
        def f(module: nn.Module, args: Any, output: Any) -> None:
            out = output[0] if isinstance(output, (tuple, list)) and output else output
            shapes[name] = (tuple(out.shape), out.dtype) if isinstance(out, torch.Tensor) else None

        return f

    handles = [modules[n].register_forward_hook(hook(n)) for n in names]
    try:
        x, y, _ = unpack_batch(next(iter(read_batches(loader, "probed by profile"))), need_index=True)
        with torch.no_grad():
            model(to_device(x, device, input_dtype(model)))  # as the latent pass does (a float64 model)
    finally:
        for h in handles:
            h.remove()
    b = len(y)
    keep = [
        n
        for n in names
        if shapes.get(n) is not None
        and len(shapes[n][0]) >= 2
        and shapes[n][0][0] == b
        and shapes[n][1].is_floating_point
    ]
    if not keep:
        raise LatentccError(
            "profile found no layer with a (batch, ...) float output; pass layers= explicitly."
        )
    return keep


# ----------------------------------------------------------------------------- metric jobs

Job = Callable[[str], list[tuple[str, float, str]]]


def _family_keys(family: str) -> tuple[str, ...]:
    return {
        "nc": NC_KEYS,
        "clusterability": CLUSTER_KEYS,
        "linear_probe": ("linear_probe_acc",),
        "knn_probe": ("knn_probe_acc",),
        "gc": ("gc", "gc_stderr"),
    }[family]


def _jobs(
    want: list[str], cfg: ProbeConfig, lat: dict[str, Any], groups: np.ndarray | None
) -> list[tuple[str, Job]]:
    from latentcc.metrics import clusterability, knn_probe, linear_probe, neural_collapse

    tr = lat["train"]
    te = lat.get("test")
    jobs: list[tuple[str, Job]] = []
    if "nc" in want:

        def nc(name: str) -> list[tuple[str, float, str]]:
            r = neural_collapse(tr[name], tr.labels)
            return [(k, r[k], "train") for k in NC_KEYS]

        jobs.append(("nc", nc))
    if "clusterability" in want:

        def clu(name: str) -> list[tuple[str, float, str]]:
            r = clusterability(
                tr[name],
                tr.labels,
                method=cfg.cluster_method,
                groups=groups,
                overcluster=cfg.overcluster,
                seed=cfg.seed,
            )
            return [(k, r[k], "train") for k in CLUSTER_KEYS]

        jobs.append(("clusterability", clu))
    if "linear_probe" in want and te is not None:

        def lin(name: str) -> list[tuple[str, float, str]]:
            return [
                (
                    "linear_probe_acc",
                    linear_probe(tr[name], tr.labels, te[name], te.labels, seed=cfg.seed),
                    "test",
                )
            ]

        jobs.append(("linear_probe", lin))
    if "knn_probe" in want and te is not None:

        def knn(name: str) -> list[tuple[str, float, str]]:  # knn_k < N: checked by profile beforehand
            return [
                ("knn_probe_acc", knn_probe(tr[name], tr.labels, te[name], te.labels, k=cfg.knn_k), "test")
            ]

        jobs.append(("knn_probe", knn))
    return jobs


def _gc_inputs(loader: DataLoader[Any], cfg: ProbeConfig, notes: list[str]) -> torch.Tensor | None:
    """``gc_samples`` training inputs (seeded, stratified) as one float tensor, or None (with a note)."""
    from latentcc.data.base import stratified_indices

    ds = loader.dataset
    targets = getattr(ds, "targets", None)
    n = len(ds)  # type: ignore[arg-type]
    pick = (
        stratified_indices(targets, cfg.gc_samples, seed=cfg.seed)
        if targets is not None
        else np.random.default_rng(cfg.seed).permutation(n)[: cfg.gc_samples]
    )
    xs = [ds[int(i)][0] for i in pick]
    if not all(isinstance(x, torch.Tensor) and x.is_floating_point() for x in xs):
        notes.append(
            "gc skipped: geometric complexity is a derivative w.r.t. the input and these inputs are not float "
            "tensors (e.g. text tokens)."
        )
        return None
    return torch.stack(xs)


def _gc_job(model: nn.Module, x: torch.Tensor, cfg: ProbeConfig) -> Job:
    from latentcc.metrics import geometric_complexity, layer_fn

    def gc(name: str) -> list[tuple[str, float, str]]:
        r = geometric_complexity(
            layer_fn(model, name, pool=cfg.pool),
            x,
            estimator=cfg.gc_estimator,
            n_samples=cfg.gc_draws,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
        )
        return [("gc", r.mean, "train"), ("gc_stderr", r.stderr, "train")]

    return gc


# ----------------------------------------------------------------------------- report views


def _views(
    tr: Any,
    names: list[str],
    rows: list[dict[str, Any]],
    view_layers: Sequence[str] | None,
    model: nn.Module,
    cfg: ProbeConfig,
    timings: dict[str, float],
) -> dict[str, LayerView]:
    """2-D PCA of a stratified training subset for a few layers, with a clustering of the same points."""
    from latentcc.data.base import stratified_indices
    from latentcc.metrics import cluster
    from latentcc.report.latent_map import pca_2d

    t0 = time.perf_counter()
    if view_layers:
        chosen = list(resolve_layers(model, list(view_layers), func="profile"))
        missing = [n for n in chosen if n not in names]
        if missing:
            raise param_error("view_layers", "profile", "layers that are also profiled", missing)
    else:
        ami = {r["layer"]: r["value"] for r in rows if r["metric"] == "ami" and math.isfinite(r["value"])}
        best = max(ami, key=lambda n: ami[n]) if ami else names[-1]
        chosen = list(dict.fromkeys([names[0], best, names[-1]]))
    pick = stratified_indices(tr.labels, cfg.view_points, seed=cfg.seed)
    y = tr.labels[pick]
    n_classes = len(np.unique(y))
    views = {}
    for name in chosen:
        z = np.asarray(tr[name][pick], dtype=np.float64)
        try:
            clusters = cluster(z, n_classes, method=cfg.cluster_method, seed=cfg.seed)
        except LatentccError:
            clusters = np.zeros(len(z), dtype=np.int64)
        views[name] = LayerView(name, pca_2d(z), y, clusters)
    timings["views"] = time.perf_counter() - t0
    return views


# ----------------------------------------------------------------------------- summary


def summarize(p: Profile) -> dict[str, Any]:
    """Plain-language facts of a profile: where classes separate, and NC1 vs probe accuracy correlations.

    "Classes separate from layer X on": the first layer whose separation score (linear-probe accuracy,
    else k-NN probe accuracy, else AMI) reaches 90 % of the best layer's gain over chance (1/C for
    accuracies, 0 for AMI; ``chance``); ``stays_above`` says whether every later layer stays there, ``n_layers``
    how many layers have the score. Correlations are over layers with
    finite values (>= 3 needed): Spearman and Pearson of NC1 (train split) vs linear-probe accuracy.
    """
    from scipy import stats

    out: dict[str, Any] = {}
    c = max(len(p.classes), 2)
    for metric, chance in (("linear_probe_acc", 1.0 / c), ("knn_probe_acc", 1.0 / c), ("ami", 0.0)):
        split = "test" if metric.endswith("_acc") else "train"
        s = p.series(metric, split)
        if np.isfinite(s).sum() >= 1:
            best = float(np.nanmax(s))
            thr = chance + 0.9 * (best - chance)
            ok = np.where(np.isfinite(s), s >= thr, False)
            first = int(np.argmax(ok))
            out["separation"] = {
                "metric": metric,
                "layer": p.layers[first],
                "layer_index": first,
                "threshold": thr,
                "stays_above": bool(ok[first:].all()),
                "best_layer": p.layers[int(np.nanargmax(s))],
                "best_value": best,
                "chance": chance,
                "n_layers": int(np.isfinite(s).sum()),  # layers with a value; 1: nothing to compare
            }
            break
    nc1 = p.series("nc1", "train")
    acc = p.series("linear_probe_acc", "test")
    ok = np.isfinite(nc1) & np.isfinite(acc)
    if ok.sum() >= 3 and np.ptp(nc1[ok]) > 0 and np.ptp(acc[ok]) > 0:
        rho, rho_p = stats.spearmanr(nc1[ok], acc[ok])
        r, r_p = stats.pearsonr(nc1[ok], acc[ok])
        out["nc1_vs_linear_probe"] = {
            "n_layers": int(ok.sum()),
            "spearman_rho": float(rho),
            "spearman_p": float(rho_p),
            "pearson_r": float(r),
            "pearson_p": float(r_p),
        }
    return out


def load_groups(path: str | Path) -> dict[str, str]:
    """Read a superclass file: ``{"group": ["class", ...], ...}`` or ``{"class": "group", ...}`` (JSON, no eval).

    Returns ``{class name: group name}``; a class listed under two groups is refused.
    """
    import json

    p = Path(path)
    try:
        raw = json.loads(p.read_text())
    except FileNotFoundError:
        raise LatentccError(
            f"The groups file {p} does not exist; pass an existing JSON file to --groups."
        ) from None
    except json.JSONDecodeError as e:
        raise LatentccError(f"The groups file {p} is not valid JSON ({e}).") from None
    if not isinstance(raw, dict) or not raw:
        raise LatentccError(
            f"The groups file {p} must hold a non-empty JSON object: "
            '{"group": ["class", ...]} or {"class": "group"}.'
        )
    out: dict[str, str] = {}
    for key, value in raw.items():
        members = value if isinstance(value, list) else None
        if members is None:
            if not isinstance(value, (str, int)):
                raise LatentccError(
                    f"The groups file {p}: entry {key!r} must be a group name or a list of classes."
                )
            members, key = [key], str(value)
        for c in members:
            if str(c) in out and out[str(c)] != str(key):
                raise LatentccError(
                    f"The groups file {p} puts class {c!r} in two groups ({out[str(c)]!r}, {key!r})."
                )
            out[str(c)] = str(key)
    return out
