"""``clusterability-hierarchy``: train on superclasses, probe subclasses (probing-clustering paper).

Animal-MNIST's 10 classes are paired into 5 superclasses two ways: *natural* pairs of similar
animals, and *shuffled* pairs (a per-seed random pairing sharing no pair with the natural one). The
MNIST-pretrained CNN is fine-tuned on the 5 superclass labels; then, on the test split, each layer's
latents are clustered within each superclass (Ward, 2 clusters) and scored against the subclasses
(AMI, purity), as in the paper. Paper: shuffled superclasses cluster much better.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from latentcc.app.finetune import build_model, load_data
from latentcc.app.reproduce.base import ClaimResult, fmt_ci, verdict
from latentcc.config import DataConfig, ModelConfig, ProbeConfig, TrainConfig
from latentcc.plumbing.seeding import seed_everything
from latentcc.probes.profile import profile
from latentcc.probes.report import short_names
from latentcc.report.figure import pyplot, save_png
from latentcc.train import fit

NATURAL = (("horse", "zebra"), ("cow", "sheep"), ("cat", "dog"), ("bear", "elephant"), ("bird", "giraffe"))
LAYERS = ("conv_layers.2", "conv_layers.5", "conv_layers.8", "fc_layers.0", "fc_layers.1")
SIZE: dict[str, dict[str, Any]] = {
    "default": {"data": DataConfig(data="animal-mnist"), "train": TrainConfig(epochs=3)},
    "ci": {"data": DataConfig(data="animal-mnist", max_samples=1500), "train": TrainConfig(epochs=1)},
}


def shuffled_pairs(classes: list[str], seed: int) -> tuple[tuple[str, str], ...]:
    """A seeded random pairing of the classes that shares no pair with NATURAL."""
    natural = {frozenset(p) for p in NATURAL}
    rng = np.random.default_rng(seed)
    while True:
        perm = [classes[i] for i in rng.permutation(len(classes))]
        pairs = tuple((perm[i], perm[i + 1]) for i in range(0, len(perm), 2))
        if not any(frozenset(p) in natural for p in pairs):
            return pairs


def _class_map(classes: list[str], pairs: tuple[tuple[str, str], ...]) -> np.ndarray:
    where = {c: g for g, pair in enumerate(pairs) for c in pair}
    return np.array([where[c] for c in classes])


def run(size: str, seeds: tuple[int, ...], out: Path) -> ClaimResult:
    dcfg: DataConfig = SIZE[size]["data"]  # type: ignore[assignment]
    tcfg = dataclasses.replace(SIZE[size]["train"], progress=False, tensorboard=False)  # type: ignore[type-var]
    splits = load_data(dcfg)
    classes = splits.classes
    probe_cfg = ProbeConfig(layers=LAYERS, metrics=("clusterability",), progress=False, overcluster=1)
    per: dict[str, list[np.ndarray]] = {"natural": [], "shuffled": []}
    pur: dict[str, list[np.ndarray]] = {"natural": [], "shuffled": []}
    rows = []
    layer_names: list[str] = []
    for seed in seeds:
        for kind, pairs in (("natural", NATURAL), ("shuffled", shuffled_pairs(classes, seed))):
            cmap = _class_map(classes, pairs)
            sup = splits.relabel(cmap, ["+".join(p) for p in pairs], name=f"{splits.name}-{kind}")
            seed_everything(seed)
            model = build_model(ModelConfig(model="mnist-cnn"), sup)
            res = fit(
                model, sup, config=dataclasses.replace(tcfg, seed=seed), out_dir=out / f"{kind}-seed-{seed}"
            )
            groups = [int(g) for g in cmap]  # superclass of each subclass
            prof = profile(model, splits.test, groups=groups, config=probe_cfg)
            layer_names = prof.layers
            per[kind].append(prof.series("ami"))
            pur[kind].append(prof.series("purity"))
            rows.append(
                {
                    "seed": seed,
                    "superclasses": kind,
                    "pairs": " ".join("+".join(p) for p in pairs),
                    "super_test_top1": round(res.test.top1, 4) if res.test else float("nan"),
                    **{
                        f"AMI {n}": round(float(v), 3)
                        for n, v in zip(short_names(prof.layers), prof.series("ami"), strict=True)
                    },
                }
            )
    nat, shu = np.array(per["natural"]), np.array(per["shuffled"])
    diff_last = list(shu[:, -1] - nat[:, -1])
    diff_mean_layers = list((shu - nat).mean(axis=1))
    _plot(out / "ami_per_layer.png", layer_names, per, pur)
    return ClaimResult(
        name="clusterability-hierarchy",
        claim="Superclasses made of unrelated (shuffled) subclasses yield much better subclass clusterability "
        "than natural hierarchies (probing-clustering paper, BREEDS).",
        setting=f"mnist-cnn fine-tuned on 5 Animal-MNIST superclasses ({len(splits.train)} train images, "
        f"{tcfg.epochs} epochs): natural pairs {', '.join('+'.join(p) for p in NATURAL)} vs a per-seed random "
        f"pairing; subclass AMI/purity of Ward clusters within each superclass on the {len(splits.test)} test "
        f"images, {len(LAYERS)} layers; {len(seeds)} seeds.",
        result=f"Subclass AMI at the penultimate layer: shuffled {fmt_ci(list(shu[:, -1]), 3)} vs natural "
        f"{fmt_ci(list(nat[:, -1]), 3)}; paired shuffled - natural {fmt_ci(diff_last, 3)}; averaged over the "
        f"{len(LAYERS)} layers {fmt_ci(diff_mean_layers, 3)}.",
        verdict=verdict(diff_last, "seeds_up_ci"),
        table=rows,
        numbers={
            "layers": layer_names,
            "ami_natural": nat,
            "ami_shuffled": shu,
            "purity_natural": np.array(pur["natural"]),
            "purity_shuffled": np.array(pur["shuffled"]),
        },
        figures=["ami_per_layer.png"],
    )


def _plot(
    path: Path, layers: list[str], ami: dict[str, list[np.ndarray]], pur: dict[str, list[np.ndarray]]
) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    x = np.arange(len(layers))
    for ax, (title, data) in zip(axes, (("subclass AMI", ami), ("subclass purity", pur)), strict=True):
        for kind, colour in (("natural", "tab:blue"), ("shuffled", "tab:orange")):
            a = np.array(data[kind])
            ax.plot(x, a.mean(0), marker="o", color=colour, label=f"{kind} superclasses")
            if len(a) > 1:
                ax.fill_between(x, a.min(0), a.max(0), color=colour, alpha=0.2)
        ax.set_xticks(x, short_names(layers), rotation=30, ha="right", fontsize=8)
        ax.set(title=f"{title} within superclasses (mean, min-max over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_png(fig, path)
