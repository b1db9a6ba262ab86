"""``lcc-gain``: LCC vs baseline fine-tuning at the paper's grid w in {1e-4, 1e-2} x k in {5, 50},
on the embedded image default (MNIST CNN -> Animal-MNIST) and the text default (MiniLM -> Rotten
Tomatoes). Same seeds and budget for every cell; test accuracy on each run's best-on-val weights;
paired differences against the baseline of the same seed, with 95 % confidence intervals. Each cell is
a fixed-size :func:`latentcc.app.compare.compare` (all seeds) with the runs cached: the same command again
continues an interrupted run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from latentcc.app.compare import RunSpec
from latentcc.app.finetune import load_data
from latentcc.app.reproduce.base import ClaimResult, Paired, fmt_ci, paired_grid, verdict
from latentcc.config import DataConfig, LCCConfig, ModelConfig, TrainConfig
from latentcc.models import default_layers
from latentcc.report.figure import pyplot, save_png

GRID = ((1e-4, 5), (1e-4, 50), (1e-2, 5), (1e-2, 50))
SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "default": {
        "image": {
            "model": "mnist-cnn",
            "data": DataConfig(data="animal-mnist"),
            "train": TrainConfig(epochs=3),
        },
        "text": {
            "model": "minilm",
            "data": DataConfig(data="rotten-tomatoes", max_samples=800),
            "train": TrainConfig(epochs=2, batch_size=16, lr=5e-5),
        },
    },
    "ci": {
        "image": {
            "model": "mnist-cnn",
            "data": DataConfig(data="animal-mnist", max_samples=1000),
            "train": TrainConfig(epochs=3),
        },
    },
}


def run(size: str, seeds: tuple[int, ...], out: Path) -> ClaimResult:
    rows: list[dict[str, Any]] = []
    cells: dict[str, dict[str, Any]] = {}
    settings = []
    for domain, s in SETTINGS[size].items():
        dcfg, mcfg = s["data"], ModelConfig(model=s["model"])
        tcfg = dataclasses.replace(s["train"], progress=False, tensorboard=False)
        layer = default_layers(s["model"])[-1]
        base = RunSpec(model=mcfg, data=dcfg, train=tcfg)
        # the paper's algorithm: the latents of an eval pass at each refresh
        paper = LCCConfig(layers=(layer,), latent_source="eval_pass")
        grid = {f"w={w:g}, k={k}": dataclasses.replace(base, lcc=dataclasses.replace(paper, weight=w, k=k))
                for w, k in GRID}  # fmt: skip
        loaded: dict[DataConfig, Any] = {}
        acc = paired_grid(base, grid, seeds, out / domain, loaded)  # cached: the same command again continues
        splits = loaded[dcfg] if dcfg in loaded else load_data(dcfg)
        settings.append(
            f"{domain}: {s['model']} on {dcfg.data} ({len(splits.train)} train, {tcfg.epochs} epochs, lr {tcfg.lr}), "
            f"LCC on `{layer}`"
        )
        for key, values in acc.items():
            diffs = [a - b for a, b in zip(values, acc["baseline"], strict=True)]
            p = Paired.of(diffs) if key != "baseline" else Paired((), float("nan"), float("nan"))
            cells[f"{domain} {key}"] = {"diff": p.mean, "half": p.half, "acc": values}
            rows.append(
                {
                    "domain": domain,
                    "setting": key,
                    "test_top1": fmt_ci(values),
                    "minus baseline (paired)": "—" if key == "baseline" else fmt_ci(diffs),
                }
            )
    lcc_cells = {k: v for k, v in cells.items() if not k.endswith("baseline")}
    summaries = {k: Paired((), v["diff"], v["half"]) for k, v in lcc_cells.items()}
    better = sum(p.above for p in summaries.values())
    worse = sum(p.below for p in summaries.values())
    plot_cells(out / "lcc_gain.png", cells)
    return ClaimResult(
        name="lcc-gain",
        claim="Adding the LCC loss (CE + w * LCC) to fine-tuning improves test accuracy over plain fine-tuning, "
        "at the paper's grid w in {1e-4, 1e-2} x k in {5, 50} (LCC paper).",
        setting="; ".join(settings) + f"; {len(seeds)} seeds per cell, paired with the same-seed baseline.",
        result=f"{better} of {len(lcc_cells)} grid cells beat the baseline with a 95 % CI above 0, {worse} fall below "
        f"it; largest mean gain {max(v['diff'] for v in lcc_cells.values()):+.4f}, smallest "
        f"{min(v['diff'] for v in lcc_cells.values()):+.4f} test top-1.",
        verdict=verdict(summaries, "majority"),
        table=rows,
        numbers=cells,
        figures=["lcc_gain.png"],
    )


def plot_cells(path: Path, cells: dict[str, dict[str, Any]]) -> None:
    """Each LCC cell's paired difference from the baseline (mean and 95 % CI), one row per cell."""
    items = [(k, v) for k, v in cells.items() if not k.endswith("baseline")]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(items)))
    y = np.arange(len(items))
    ax.errorbar([v["diff"] for _, v in items], y, xerr=[v["half"] for _, v in items], fmt="o", capsize=3)
    ax.axvline(0, color="grey", lw=1)
    ax.set_yticks(y, [k for k, _ in items], fontsize=8)
    ax.set(
        xlabel="LCC - baseline, test top-1 (mean, 95 % CI over seeds)", title="LCC gain at the paper's grid"
    )
    ax.grid(alpha=0.3)
    save_png(fig, path)
