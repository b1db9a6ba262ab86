"""``nc-transfer``: more neural collapse of a frozen model's features on the DOWNSTREAM training data
(lower NC1) goes with higher linear-probe transfer accuracy (neural-collapse transfer paper).

Two views, as in the paper: (A) across the layers of one pretrained model (the embedded MNIST CNN,
Animal-MNIST downstream); (B) across several source models pre-trained here on MNIST-5k with
different regularisation (weight decay, label smoothing, learning rate, epochs), each probed at its
penultimate layer on Animal-MNIST. Correlations: Spearman and Pearson of NC1 vs probe accuracy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats
from torch import nn

from latentcc.app.finetune import build_model, load_data
from latentcc.app.reproduce.base import ClaimResult, correlation_verdict
from latentcc.config import DataConfig, ModelConfig, ProbeConfig, TrainConfig
from latentcc.plumbing.seeding import seed_everything
from latentcc.probes.profile import profile
from latentcc.probes.summary import summarize
from latentcc.report.figure import pyplot, save_png
from latentcc.train import fit

PENULTIMATE = "net.fc_layers.1"
# source pre-training recipes on MNIST-5k: (name, TrainConfig overrides, label smoothing)
RECIPES: tuple[tuple[str, dict[str, float], float], ...] = (
    ("1 epoch", {"epochs": 1}, 0.0),
    ("plain", {}, 0.0),
    ("wd 0.1", {"weight_decay": 0.1}, 0.0),
    ("label smoothing 0.2", {}, 0.2),
    ("lr 3e-3", {"lr": 3e-3}, 0.0),
    ("lr 3e-4", {"lr": 3e-4}, 0.0),
)
SIZE: dict[str, dict[str, Any]] = {
    "default": {
        "down": DataConfig(data="animal-mnist", max_samples=5000),
        "src_epochs": 4,
        "recipes": RECIPES,
    },
    "ci": {
        "down": DataConfig(data="animal-mnist", max_samples=1000),
        "src_epochs": 1,
        "recipes": RECIPES[:3],
    },
}


def run(size: str, seeds: tuple[int, ...], out: Path) -> ClaimResult:
    conf = SIZE[size]
    down = load_data(conf["down"])  # type: ignore[arg-type]
    source = load_data(DataConfig(data="mnist5k", max_samples=0 if size == "default" else 1000))
    pcfg = ProbeConfig(metrics=("nc", "linear_probe"), progress=False)

    # (A) layers of the embedded pretrained model
    seed_everything(0)
    pre = build_model(ModelConfig(model="mnist-cnn"), down)
    prof = profile(pre, down, config=pcfg)
    a = summarize(prof).get("nc1_vs_linear_probe", {})
    layer_rows = [
        {"layer": n, "nc1": round(float(v), 3), "linear_probe_acc": round(float(acc), 4)}
        for n, v, acc in zip(
            prof.layers, prof.series("nc1"), prof.series("linear_probe_acc", "test"), strict=True
        )
    ]

    # (B) source models pre-trained here with different recipes, probed at the penultimate layer
    rows = []
    for name, over, smoothing in conf["recipes"]:  # type: ignore[attr-defined]
        for seed in seeds:
            tcfg = TrainConfig(
                epochs=int(over.get("epochs", conf["src_epochs"])),  # type: ignore[call-overload]
                lr=float(over.get("lr", 1e-3)),
                weight_decay=float(over.get("weight_decay", 1e-4)),
                seed=seed,
                progress=False,
                tensorboard=False,
            )
            seed_everything(seed)
            src = build_model(ModelConfig(model="mnist-cnn", pretrained=False), source)
            fit(src, source, config=tcfg, loss_fn=nn.CrossEntropyLoss(label_smoothing=smoothing))
            p = profile(src, down, layers=[PENULTIMATE], config=pcfg)
            rows.append(
                {
                    "source recipe": name,
                    "seed": seed,
                    "downstream NC1": round(p.value(PENULTIMATE, "nc1"), 3),
                    "downstream CDNV": round(p.value(PENULTIMATE, "cdnv"), 3),
                    "linear_probe_acc": round(p.value(PENULTIMATE, "linear_probe_acc", "test"), 4),
                }
            )
    nc1 = np.array([r["downstream NC1"] for r in rows])
    acc = np.array([r["linear_probe_acc"] for r in rows])
    rho, rho_p = stats.spearmanr(nc1, acc)
    r, r_p = stats.pearsonr(nc1, acc)
    a_rho, a_p = a.get("spearman_rho", float("nan")), a.get("spearman_p", float("nan"))
    # agree: both relations significantly negative; disagree: either significantly positive
    tests = {
        "across layers": (float(a_rho), float(a_p), -1),
        "across source recipes": (float(rho), float(rho_p), -1),
    }
    _plot(out / "nc1_vs_accuracy.png", layer_rows, rows)
    return ClaimResult(
        name="nc-transfer",
        claim="The more a pretrained model's features collapse on the downstream training data (lower NC1), the "
        "higher its linear-probe transfer accuracy: strong negative, near-linear relation across layers and "
        "across source models (neural-collapse transfer paper).",
        setting=f"Downstream: Animal-MNIST ({len(down.train)} train / {len(down.test)} test). (A) the "
        f"{len(prof.layers)} layers of the MNIST-pretrained CNN (avg-pooled). (B) {len(conf['recipes'])} source "  # type: ignore[arg-type]
        f"recipes x {len(seeds)} seeds: the same CNN trained from scratch on MNIST-5k, probed at `{PENULTIMATE}`.",
        result=f"(A) across layers: Spearman rho = {a_rho:.2f} (p = {a_p:.2g}), Pearson r = "
        f"{a.get('pearson_r', float('nan')):.2f}. (B) across {len(rows)} source models: Spearman rho = {rho:.2f} "
        f"(p = {rho_p:.2g}), Pearson r = {r:.2f} (p = {r_p:.2g}).",
        verdict=correlation_verdict(tests),
        table=rows,
        numbers={
            "layers": layer_rows,
            "across_layers": a,
            "across_models": {"spearman_rho": rho, "spearman_p": rho_p, "pearson_r": r, "pearson_p": r_p},
        },
        figures=["nc1_vs_accuracy.png"],
    )


def _plot(path: Path, layer_rows: list[dict], rows: list[dict]) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    ax = axes[0]
    x = np.array([r["nc1"] for r in layer_rows])
    y = np.array([r["linear_probe_acc"] for r in layer_rows])
    ax.scatter(x, y)
    for r in layer_rows:
        ax.annotate(r["layer"].split(".", 1)[-1], (r["nc1"], r["linear_probe_acc"]), fontsize=6)
    ax.set(
        xscale="log",
        xlabel="downstream NC1 (log)",
        ylabel="linear-probe accuracy",
        title="(A) layers of one model",
    )
    ax = axes[1]
    for name in dict.fromkeys(r["source recipe"] for r in rows):
        sel = [r for r in rows if r["source recipe"] == name]
        ax.scatter([r["downstream NC1"] for r in sel], [r["linear_probe_acc"] for r in sel], label=name)
    ax.set(
        xlabel="downstream NC1 at the penultimate layer",
        ylabel="linear-probe accuracy",
        title="(B) source models",
    )
    ax.legend(fontsize=7)
    for a in axes:
        a.grid(alpha=0.3)
    save_png(fig, path)
