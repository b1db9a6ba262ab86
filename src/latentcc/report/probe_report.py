"""The probe report: per-layer curves, 2-D views, a contingency map and a summary, in one HTML file.

``write_probe_report(profile, out_dir)`` writes ``report.html`` (self-contained: PNGs embedded as
base64), ``profile.csv``, ``profile.json`` and the PNGs under ``figures/``. Every write is atomic.
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from latentcc.atomic import atomic_write_text
from latentcc.probing import Profile, summarize
from latentcc.report.figure import pyplot, save_png

# (title, [(metric, split, label)], log scale) for each curve panel, in reading order.
PANELS: tuple[tuple[str, tuple[tuple[str, str, str], ...], bool], ...] = (
    (
        "Within-class variability (NC1)",
        (("nc1", "train", "NC1"), ("nc1_trace_ratio", "train", "tr ratio")),
        True,
    ),
    ("Class-distance normalised variance (CDNV)", (("cdnv", "train", "CDNV"),), True),
    (
        "Clusterability",
        (("ami", "train", "AMI"), ("purity", "train", "purity"), ("ari", "train", "ARI")),
        False,
    ),
    (
        "Probe accuracy (test)",
        (("linear_probe_acc", "test", "linear"), ("knn_probe_acc", "test", "k-NN")),
        False,
    ),
    ("Geometric complexity (GC)", (("gc", "train", "GC"),), True),
    (
        "Simplex ETF distance (NC2)",
        (("nc2_etf", "train", "ETF dist"), ("nc2_equinorm", "train", "equinorm")),
        False,
    ),
)


def short_names(layers: Sequence[str]) -> list[str]:
    """Layer names without their common dotted prefix (``net.conv_layers.0`` -> ``conv_layers.0``)."""
    parts = [n.split(".") for n in layers]
    common = 0
    while all(len(p) > common + 1 for p in parts) and len({p[common] for p in parts}) == 1:
        common += 1
    return [".".join(p[common:]) for p in parts]


def plot_layer_curves(p: Profile, path: str | Path) -> Path | None:
    """One panel per metric family present, metric vs layer (model order); None if nothing to plot."""
    panels = [
        (title, [(m, s, lab) for m, s, lab in series if np.isfinite(p.series(m, s)).any()], log)
        for title, series, log in PANELS
    ]
    panels = [x for x in panels if x[1]]
    if not panels:
        return None
    plt = pyplot()
    ncol = 2 if len(panels) > 1 else 1
    nrow = math.ceil(len(panels) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(6.4 * ncol, 3.3 * nrow), squeeze=False)
    x = np.arange(len(p.layers))
    labels = short_names(p.layers)
    for ax, (title, series, log) in zip(axes.flat, panels, strict=False):
        values = [p.series(m, s) for m, s, _ in series]
        for (metric, split, label), y in zip(series, values, strict=True):
            if metric == "gc":
                err = p.series("gc_stderr", split)
                ax.errorbar(
                    x,
                    y,
                    yerr=np.where(np.isfinite(err), 2 * err, 0),
                    marker="o",
                    ms=3,
                    capsize=2,
                    label=label,
                )
            else:
                ax.plot(x, y, marker="o", ms=3, label=label)
        if log and all((y[np.isfinite(y)] > 0).all() for y in values):
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    return save_png(fig, path)


def plot_views(p: Profile, path: str | Path) -> Path | None:
    """For each view layer: the 2-D PCA coloured by class (left) and by cluster (right)."""
    if not p.views:
        return None
    plt = pyplot()
    views = list(p.views.values())
    fig, axes = plt.subplots(len(views), 2, figsize=(10.5, 4.0 * len(views)), squeeze=False)
    short = dict(zip(p.layers, short_names(p.layers), strict=True))
    for row, v in zip(axes, views, strict=True):
        for ax, colour, what in ((row[0], v.labels, "class"), (row[1], v.clusters, "cluster")):
            n = int(colour.max()) + 1
            cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
            for c in range(n):
                sel = colour == c
                if sel.any():
                    name = p.classes[c] if what == "class" and c < len(p.classes) else str(c)
                    ax.scatter(v.xy[sel, 0], v.xy[sel, 1], s=4, alpha=0.6, color=cmap(c % cmap.N), label=name)
            ax.set(title=f"{short.get(v.layer, v.layer)}: by {what}", xticks=[], yticks=[])
            if what == "class" and n <= 20:
                ax.legend(fontsize=6, markerscale=2, loc="best", ncol=2)
    return save_png(fig, path)


def plot_contingency(p: Profile, layer: str, path: str | Path) -> Path | None:
    """Class x cluster counts of one view layer, clusters ordered by the class they hold most of."""
    v = p.views.get(layer)
    if v is None:
        return None
    from latentcc.lcc.matching import contingency

    table = contingency(v.labels, v.clusters)
    order = np.lexsort((-table.max(axis=0), table.argmax(axis=0)))
    table = table[:, order]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.2 + 0.42 * table.shape[1], 1.2 + 0.36 * table.shape[0]))
    im = ax.imshow(table, cmap="Blues", aspect="auto")
    ax.set_yticks(
        range(table.shape[0]), [p.classes[c] if c < len(p.classes) else str(c) for c in range(table.shape[0])]
    )
    ax.set_xticks(range(table.shape[1]), [str(c) for c in order], fontsize=7)
    short = dict(zip(p.layers, short_names(p.layers), strict=True)).get(layer, layer)
    ax.set(xlabel="cluster", ylabel="class", title=f"{short}: class x cluster counts")
    if table.size <= 400:
        for (i, j), n in np.ndenumerate(table):
            if n:
                ax.text(
                    j,
                    i,
                    str(n),
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if n > table.max() / 2 else "black",
                )
    fig.colorbar(im, ax=ax, fraction=0.04)
    return save_png(fig, path)


def summary_lines(p: Profile) -> list[str]:
    """The report's short text summary, one sentence per fact."""
    s = summarize(p)
    lines = []
    sep = s.get("separation")
    if sep:
        what = {
            "linear_probe_acc": "linear-probe accuracy",
            "knn_probe_acc": "k-NN probe accuracy",
            "ami": "AMI",
        }[sep["metric"]]
        stays = "" if sep["stays_above"] else " (later layers drop below it again)"
        lines.append(
            f"Classes separate from layer {sep['layer']} on: it is the first layer whose {what} reaches "
            f"{sep['threshold']:.3f} (90 % of the best gain over chance){stays}; the best layer is "
            f"{sep['best_layer']} ({sep['best_value']:.3f})."
        )
    corr = s.get("nc1_vs_linear_probe")
    if corr:
        lines.append(
            f"NC1 on the training data vs linear-probe accuracy across {corr['n_layers']} layers: Spearman rho = "
            f"{corr['spearman_rho']:.2f} (p = {corr['spearman_p']:.2g}), Pearson r = {corr['pearson_r']:.2f} "
            f"(p = {corr['pearson_p']:.2g}). The neural-collapse paper predicts a strong negative relation."
        )
    best_ami = p.series("ami")
    if np.isfinite(best_ami).any():
        i = int(np.nanargmax(best_ami))
        lines.append(
            f"Highest clusterability (AMI {best_ami[i]:.3f}, {p.params.get('cluster_method')}"
            f"{', within groups' if p.params.get('groups') else ''}) at layer {p.layers[i]}."
        )
    gc = p.series("gc")
    if np.isfinite(gc).any():
        lines.append(
            f"Geometric complexity ranges from {np.nanmin(gc):.3g} ({p.layers[int(np.nanargmin(gc))]}) to "
            f"{np.nanmax(gc):.3g} ({p.layers[int(np.nanargmax(gc))]})."
        )
    return lines


def _img(path: Path | None, alt: str) -> str:
    if path is None:
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(alt)}</figcaption></figure>'


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "—" if not math.isfinite(v) else f"{v:.4g}"
    return "" if v is None else str(v)


def write_probe_report(p: Profile, out_dir: str | Path, *, title: str = "latentcc probe report") -> Path:
    """Write report.html, profile.csv, profile.json and figures/*.png into ``out_dir``; return the HTML path."""
    out = Path(out_dir)
    figs = out / "figures"
    os.makedirs(figs, exist_ok=True)
    p.to_csv(out / "profile.csv")
    p.to_json(out / "profile.json")
    curves = plot_layer_curves(p, figs / "layer_curves.png")
    views = plot_views(p, figs / "projections.png")
    cont_layer = _contingency_layer(p)
    cont = plot_contingency(p, cont_layer, figs / "contingency.png") if cont_layer else None

    metrics = [m for m in p.metrics() if m != "gc_stderr"]
    columns = {m: p.series(m, "test" if m.endswith("_acc") else "train") for m in metrics}  # once per metric
    wide = [
        {"#": i, "layer": layer, "width": p.widths[layer], **{m: float(v[i]) for m, v in columns.items()}}
        for i, layer in enumerate(p.layers)
    ]
    params = {k: v for k, v in p.params.items() if k not in ("layers",)}
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
        "th{background:#f3f3f3}td:nth-child(2){text-align:left}img{max-width:100%}figure{margin:1em 0}"
        "figcaption{color:#666;font-size:12px}code{background:#f3f3f3}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<h2>Summary</h2><ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in summary_lines(p)) + "</ul>",
        _img(curves, "Per-layer metrics (model order). GC error bars: 2 standard errors."),
        _img(views, "2-D PCA of training latents: coloured by class (left) and by cluster (right)."),
        _img(cont, f"Class x cluster contingency at {cont_layer}" if cont_layer else ""),
        "<h2>Per-layer values</h2>",
        _table(wide, ["#", "layer", "width", *metrics]),
        "<h2>Run parameters</h2>",
        _table(
            [
                {"parameter": k, "value": _fmt(v) if not isinstance(v, (list, dict)) else str(v)}
                for k, v in params.items()
            ],
            ["parameter", "value"],
        ),
        "<h2>Timings (s)</h2>",
        _table([{"stage": k, "seconds": v} for k, v in p.timings.items()], ["stage", "seconds"]),
    ]
    if p.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in p.notes) + "</ul>")
    parts.append(
        "<p>Definitions: docs/probes.md. Tidy data: <code>profile.csv</code>, <code>profile.json</code>.</p></body></html>"
    )
    return atomic_write_text(out / "report.html", "\n".join(parts))


def _contingency_layer(p: Profile) -> str | None:
    """The view layer with the highest AMI (else the last view layer)."""
    if not p.views:
        return None
    series = p.series("ami")
    ami = {layer: series[p.layers.index(layer)] for layer in p.views}
    finite = {k: v for k, v in ami.items() if np.isfinite(v)}
    return max(finite, key=lambda k: finite[k]) if finite else list(p.views)[-1]
