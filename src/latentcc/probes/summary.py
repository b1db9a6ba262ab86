"""The plain-language summary of a profile: facts as data (:func:`summarize`) and as sentences (:func:`summary_lines`).

Two kinds of facts: those that compare families (where classes separate, NC1 vs linear-probe accuracy) are
written here, on the metric keys they read; each family's own sentences come from its registry entry
(``Family.summary``: :func:`range_lines` unless the family says otherwise), so a new family is summarised
without an edit here. Definitions: docs/probes.md, The report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from latentcc.probes.profile import Profile
    from latentcc.probes.registry import Family

# Scores read for "classes separate from layer X on", the first present wins: (key, chance level, words).
# Chance is 1/C for accuracies and 0 for AMI.
SEPARATION_SCORES = (
    ("linear_probe_acc", "classes", "linear-probe accuracy"),
    ("knn_probe_acc", "classes", "k-NN probe accuracy"),
    ("ami", "zero", "AMI"),
)
NC2_KEYS = ("nc2_equinorm", "nc2_equiangular", "nc2_maxangle", "nc2_etf")
NC2_TWO_CLASSES = (
    "With 2 classes NC2 is flat by construction: the two centred class means always point in opposite "
    "directions and their length ratio is the class-size ratio, so the NC2 values depend on the class "
    "counts only, not on the features."
)


def summarize(p: Profile) -> dict[str, Any]:
    """Plain-language facts of a profile: where classes separate, and NC1 vs probe accuracy correlations.

    "Classes separate from layer X on": the first layer whose separation score (linear-probe accuracy,
    else k-NN probe accuracy, else AMI) reaches 90 % of the best layer's gain over chance (1/C for
    accuracies, 0 for AMI; ``chance``); ``stays_above`` says whether every later layer stays there, ``n_layers``
    how many layers have the score. Correlations are over layers with
    finite values (>= 3 needed): Spearman and Pearson of NC1 (train split) vs linear-probe accuracy.
    """
    out: dict[str, Any] = {}
    separation = _separation(p)
    if separation is not None:
        out["separation"] = separation
    correlation = _nc1_vs_linear_probe(p)
    if correlation is not None:
        out["nc1_vs_linear_probe"] = correlation
    return out


def _separation(p: Profile) -> dict[str, Any] | None:
    c = max(len(p.classes), 2)
    for metric, level, _ in SEPARATION_SCORES:
        chance = 1.0 / c if level == "classes" else 0.0
        s = p.series(metric, p.split_of(metric))
        if np.isfinite(s).sum() >= 1:
            best = float(np.nanmax(s))
            thr = chance + 0.9 * (best - chance)
            ok = np.where(np.isfinite(s), s >= thr, False)
            first = int(np.argmax(ok))
            return {
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
    return None


def _nc1_vs_linear_probe(p: Profile) -> dict[str, Any] | None:
    from scipy import stats

    nc1 = p.series("nc1", "train")
    acc = p.series("linear_probe_acc", "test")
    ok = np.isfinite(nc1) & np.isfinite(acc)
    if ok.sum() < 3 or np.ptp(nc1[ok]) <= 0 or np.ptp(acc[ok]) <= 0:
        return None
    rho, rho_p = stats.spearmanr(nc1[ok], acc[ok])
    r, r_p = stats.pearsonr(nc1[ok], acc[ok])
    return {
        "n_layers": int(ok.sum()),
        "spearman_rho": float(rho),
        "spearman_p": float(rho_p),
        "pearson_r": float(r),
        "pearson_p": float(r_p),
    }


def summary_lines(p: Profile) -> list[str]:
    """The report's short text summary, one sentence per fact; one-layer facts are stated once, not as ranges.

    The cross-family facts, then each family's own sentences (registry order), then caveats.
    """
    # the registry imports this module's sentence builders for its entries: looked up when called
    from latentcc.probes.registry import FAMILIES

    s = summarize(p)
    lines = []
    if "separation" in s:
        lines.append(_separation_line(s["separation"]))
    corr = s.get("nc1_vs_linear_probe")
    if corr:
        lines.append(
            f"NC1 on the training data vs linear-probe accuracy across {corr['n_layers']} layers: Spearman rho = "
            f"{corr['spearman_rho']:.2f} (p = {corr['spearman_p']:.2g}), Pearson r = {corr['pearson_r']:.2f} "
            f"(p = {corr['pearson_p']:.2g}). The neural-collapse paper predicts a strong negative relation."
        )
    present = set(p.metrics())
    for fam in FAMILIES.values():
        if present & set(fam.keys):
            lines += fam.summary(p, fam)
    if len(p.classes) == 2 and any(np.isfinite(p.series(m)).any() for m in NC2_KEYS):
        lines.append(NC2_TWO_CLASSES)
    return lines


def _separation_line(sep: dict[str, Any]) -> str:
    what = {key: words for key, _, words in SEPARATION_SCORES}[sep["metric"]]
    best, chance = sep["best_value"], sep["chance"]
    if sep["n_layers"] == 1:
        return f"The {what} at layer {sep['best_layer']} is {best:.3f} (chance: {chance:.3f})."
    if best <= chance:
        return (
            f"No layer separates the classes: the best {what} ({best:.3f}, at {sep['best_layer']}) is at or "
            f"below chance ({chance:.3f})."
        )
    stays = "" if sep["stays_above"] else " (later layers drop below it again)"
    best_part = (
        f"it is also the best layer ({best:.3f})"
        if sep["best_layer"] == sep["layer"]
        else f"the best layer is {sep['best_layer']} ({best:.3f})"
    )
    return (
        f"Classes separate from layer {sep['layer']} on: it is the first layer whose {what} reaches "
        f"{sep['threshold']:.3f} (90 % of the best gain over chance){stays}; {best_part}."
    )


# ----------------------------------------------------------------------------- families' own sentences


def range_lines(p: Profile, fam: Family) -> list[str]:
    """The default sentence of a family: its first key's value (one layer) or range over layers."""
    key = fam.keys[0]
    v = p.series(key, fam.split)
    ok = np.flatnonzero(np.isfinite(v))
    if ok.size == 1:
        return [f"{fam.label} at layer {p.layers[ok[0]]}: {v[ok[0]]:.3g}."]
    if ok.size == 0:
        return []
    lo, hi = int(np.nanargmin(v)), int(np.nanargmax(v))
    if f"{v[lo]:.3g}" == f"{v[hi]:.3g}":  # equal as printed: a range would repeat one number
        return [f"{fam.label} is {v[hi]:.3g} at each of the {ok.size} layers."]
    return [f"{fam.label} ranges from {v[lo]:.3g} ({p.layers[lo]}) to {v[hi]:.3g} ({p.layers[hi]})."]


def clusterability_lines(p: Profile, fam: Family) -> list[str]:
    """The layer of highest AMI, with the clustering algorithm (and "within groups" when grouped)."""
    ami = p.series("ami", fam.split)
    ok = np.flatnonzero(np.isfinite(ami))
    if not ok.size:
        return []
    i = int(np.nanargmax(ami))
    how = f"{p.params.get('clustering')}{', within groups' if p.params.get('groups') else ''}"
    if ok.size == 1:
        return [f"Clusterability at layer {p.layers[i]}: AMI {ami[i]:.3f} ({how})."]
    return [f"Highest clusterability (AMI {ami[i]:.3f}, {how}) at layer {p.layers[i]}."]


def no_lines(p: Profile, fam: Family) -> list[str]:
    """For a family whose values the cross-family facts already state."""
    return []
