"""The probe report: per-layer curves, 2-D views, a contingency map and a summary, in one HTML file.

``write_probe_report(profile, out_dir)`` writes ``report.html`` (self-contained: PNGs embedded as
base64), ``profile.csv``, ``profile.json`` and the PNGs under ``figures/``. Every write is atomic.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from latentcc.plumbing.atomic import atomic_write_text
from latentcc.probes.profile import Profile
from latentcc.probes.registry import Panel, error_keys, panels
from latentcc.probes.summary import summary_lines
from latentcc.report.figure import palette, pyplot, save_png


def short_names(layers: Sequence[str]) -> list[str]:
    """Short labels for figures: each name's shortest dotted suffix that names a layer, not an index.

    A suffix qualifies when it is unique among ``layers``, does not start with a number, and reaches
    back to the innermost numbered block with its container's name. So ``net.fc_layers.0`` is
    ``fc_layers.0`` (never ``0``, also when it is the only layer), ``hf.bert.encoder.layer.3.output``
    is ``layer.3.output``, and ``net.conv_layers.2`` beside ``net.fc_layers.1`` keeps both container
    names. A name with nothing shorter (``0`` in a plain ``nn.Sequential``) stays whole.
    """
    parts = [n.split(".") for n in layers]
    out = []
    for i, p in enumerate(parts):
        numbered = [j for j, c in enumerate(p) if c.isdigit()]
        k = len(p) - max(numbered[-1] - 1, 0) if numbered else 1  # keep "<container>.<index>..."
        while k < len(p) and (
            p[-k].isdigit() or any(q[-k:] == p[-k:] for j, q in enumerate(parts) if j != i and len(q) >= k)
        ):
            k += 1
        out.append(".".join(p[-k:]))
    return out


# Values this close (or this close to 0) are rounding noise of dimensionless metrics: drawn as equal.
_NOISE = 1e-12

# Up to this many layers the curves are drawn as separate markers with their values written beside them:
# a line through one or two points reads as a trend that is not there.
FEW_LAYERS = 2


def plot_layer_curves(p: Profile, path: str | Path) -> Path | None:
    """One panel per registry panel with values, metric vs layer (model order); None if nothing to plot.

    The panels come from the metric families' registry entries (:func:`~latentcc.probes.registry.panels`).
    The x axis is categorical (one tick per layer, labelled by :func:`short_names`). With at most
    ``FEW_LAYERS`` layers each series is a set of markers, side by side, with its values printed.
    """
    shown = [
        dataclasses.replace(
            panel, series=tuple(s for s in panel.series if np.isfinite(_values(p, s.key)).any())
        )
        for panel in panels()
    ]
    shown = [panel for panel in shown if panel.series]
    if not shown:
        return None
    plt = pyplot()
    ncol = 2 if len(shown) > 1 else 1
    nrow = math.ceil(len(shown) / ncol)
    few = len(p.layers) <= FEW_LAYERS
    fig, axes = plt.subplots(nrow, ncol, figsize=((4.2 if few else 6.4) * ncol, 3.3 * nrow), squeeze=False)
    for ax, panel in zip(axes.flat, shown, strict=False):
        _draw_panel(ax, p, panel, few)
    for ax in list(axes.flat)[len(shown) :]:
        ax.axis("off")
    return save_png(fig, path)


def _values(p: Profile, key: str) -> np.ndarray:
    return p.series(key, p.split_of(key))


def _draw_panel(ax: Any, p: Profile, panel: Panel, few: bool) -> None:
    """One panel: its series vs layer, error bars where a series has a standard error, a two-class note."""
    n = len(p.layers)
    x = np.arange(n, dtype=float)
    values = [_values(p, s.key) for s in panel.series]
    errbars = any(s.err for s in panel.series)  # matplotlib's own limits include the bars
    for j, (s, y) in enumerate(zip(panel.series, values, strict=True)):
        # few layers: series side by side around each tick, markers only
        xs = x + (j - (len(panel.series) - 1) / 2) * 0.12 if few else x
        style: dict[str, Any] = {"marker": "o", "ms": 7 if few else 3, "label": s.label}
        if few:
            style["linestyle"] = "none"
        if s.err:
            err = _values(p, s.err)
            ax.errorbar(xs, y, yerr=np.where(np.isfinite(err), 2 * err, 0), capsize=2, **style)
        else:
            ax.plot(xs, y, **style)
        if few:
            for xi, yi in zip(xs, y, strict=True):
                if np.isfinite(yi):
                    text = "0" if abs(yi) < _NOISE else f"{yi:.3g}"
                    ax.annotate(text, (xi, yi), textcoords="offset points", xytext=(6, 0), va="center",
                                fontsize=7)  # fmt: skip
    finite = np.concatenate([y[np.isfinite(y)] for y in values])
    # log only where it helps: positive values spanning a decade (else its ticks read "2.1 x 10^0")
    if panel.log and finite.size and finite.min() > 0 and finite.max() >= 10 * finite.min():
        ax.set_yscale("log")
    elif finite.size and np.ptp(finite) <= _NOISE * max(1.0, float(np.abs(finite).max())) and not errbars:
        # one value, or equal values up to rounding: a fixed window, not an axis zoomed onto 1e-16 noise
        c = 0.0 if abs(float(finite.mean())) < _NOISE else float(finite.mean())
        ax.set_ylim(c - max(0.05 * abs(c), 0.05), c + max(0.05 * abs(c), 0.05))
    title, note = (
        panel.title,
        None,
    )  # the note rides in the legend's title: matplotlib places it clear of the data
    if len(p.classes) == 2 and panel.two_class_note:
        title, note = title + ": flat with 2 classes", panel.two_class_note
    ax.set_title(title, fontsize=10)
    ax.set_xlim(-0.5 if not few else -0.6, n - 0.5 if not few else n - 0.4)
    labels = short_names(p.layers)
    rotate = max((len(t) for t in labels), default=0) * n > 60  # long or many labels: slant them
    ax.set_xticks(x, labels, rotation=60 if rotate else 0, ha="right" if rotate else "center", fontsize=7)
    ax.grid(alpha=0.3)
    if len(panel.series) > 1 or note:
        ax.legend(fontsize=7, title=note, title_fontsize=7)


def plot_views(p: Profile, path: str | Path) -> Path | None:
    """For each view layer: the 2-D PCA coloured by class (left) and by cluster (right).

    Clusters get their own palette: their ids are arbitrary, and class colours on the cluster map would
    suggest a cluster-class correspondence (the contingency map shows the real one).
    """
    if not p.views:
        return None
    plt = pyplot()
    views = list(p.views.values())
    fig, axes = plt.subplots(len(views), 2, figsize=(10.5, 4.0 * len(views)), squeeze=False)
    short = dict(zip(p.layers, short_names(p.layers), strict=True))
    for row, v in zip(axes, views, strict=True):
        for ax, colour, what in ((row[0], v.labels, "class"), (row[1], v.clusters, "cluster")):
            n = int(colour.max()) + 1
            colours = palette(max(n, len(p.classes)) if what == "class" else n, what)
            for c in range(n):
                sel = colour == c
                if sel.any():
                    name = p.classes[c] if what == "class" and c < len(p.classes) else str(c)
                    ax.scatter(v.xy[sel, 0], v.xy[sel, 1], s=4, alpha=0.6, color=colours[c], label=name)
            kind = (
                "class"
                if what == "class"
                else f"{p.params.get('clustering', 'cluster')} cluster (ids arbitrary)"
            )
            ax.set(title=f"{short.get(v.layer, v.layer)}: by {kind}", xticks=[], yticks=[])
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
    ax.set(xlabel="cluster (arbitrary id)", ylabel="class", title=f"{short}: class x cluster counts")
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


def _img(path: Path | None, alt: str) -> str:
    if path is None:
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(alt)}</figcaption></figure>'


def _table(rows: list[dict[str, Any]], cols: list[str], *, css: str = "wide") -> str:
    """An HTML table inside a box that scrolls sideways: a wide table never overflows the page.

    ``css``: "wide" keeps each cell on one line (numbers, layer names), "wrap" breaks long values.
    """
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows
    )
    return f"<div class='scroll'><table class='{css}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


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

    metrics = [m for m in p.metrics() if m not in error_keys()]  # standard errors: bars, not columns
    columns = {m: _values(p, m) for m in metrics}  # once per metric
    wide = [
        {"#": i, "layer": layer, "width": p.widths[layer], **{m: float(v[i]) for m, v in columns.items()}}
        for i, layer in enumerate(p.layers)
    ]
    params = {k: v for k, v in p.params.items() if k not in ("layers",)}
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        ".scroll{max-width:100%;overflow-x:auto}"  # wide tables scroll inside the page, never past it
        "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
        "table.wide td{white-space:nowrap}table.wrap td{overflow-wrap:anywhere}"
        "th{background:#f3f3f3}td:nth-child(2){text-align:left}img{max-width:100%}figure{margin:1em 0}"
        "figcaption{color:#666;font-size:12px}code{background:#f3f3f3}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<h2>Summary</h2><ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in summary_lines(p)) + "</ul>",
        _img(curves, "Per-layer metrics (model order). GC error bars: 2 standard errors."),
        _img(
            views,
            "2-D PCA of training latents: coloured by class (left) and by cluster (right). Cluster ids and their "
            "colours are arbitrary: a cluster matches no class by its colour (the contingency map shows which "
            "classes each cluster holds).",
        ),
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
            css="wrap",
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
