"""`latentcc demo`: baseline fine-tuning vs LCC fine-tuning of a real pretrained model on real data, offline.

Default: the MNIST-trained CNN (digit-recognizer-py weights) fine-tuned on Animal-MNIST, the same
budget and seeds for both methods, LCC on the penultimate layer with LCCConfig's defaults (no tuning
on the test split: every hyper-parameter is a documented default or chosen on validation).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from latentcc.atomic import atomic_write_json, atomic_write_text
from latentcc.config import DataConfig, LCCConfig, ModelConfig, TrainConfig
from latentcc.correction import cc_mc_accuracy
from latentcc.finetune import build_model, finetune, load_data
from latentcc.latents import collect_latents
from latentcc.lcc.epoch import cluster_latents
from latentcc.report.curves import plot_compare
from latentcc.report.latent_map import pca_2d, plot_latent_maps
from latentcc.report.stats import mean_ci
from latentcc.report.table import format_table
from latentcc.seeding import seed_everything

METHODS = ("baseline", "lcc")


def run_demo(
    mcfg: ModelConfig,
    dcfg: DataConfig,
    tcfg: TrainConfig,
    lcfg: LCCConfig,
    *,
    seeds: tuple[int, ...] = (0, 1, 2),
    out_dir: str | Path | None = None,
    map_samples: int = 2000,
) -> dict[str, Any]:
    """Run both methods for every seed, print the comparison and write ``out_dir`` (default runs/demo/<time>)."""
    t0 = time.perf_counter()
    out = Path(out_dir) if out_dir else Path("runs") / "demo" / time.strftime("%Y%m%d-%H%M%S")
    splits = load_data(dcfg)
    print(
        f"data: {splits.name}  classes={splits.num_classes}  train/val/test = "
        f"{len(splits.train)}/{len(splits.val)}/{len(splits.test)}  model: {mcfg.model}  seeds: {list(seeds)}\n"
        f"LCC: layers={list(lcfg.layers)} weight={lcfg.weight} k={lcfg.k} warmup={lcfg.warmup} "
        f"interval={lcfg.interval} method={lcfg.method}"
    )
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
    models: dict[str, Any] = {}
    for seed in seeds:
        t = dataclasses.replace(tcfg, seed=seed)
        for method in METHODS:
            res = finetune(
                mcfg, dcfg, t, out_dir=out / method / f"seed-{seed}", splits=splits,
                lcc=lcfg if method == "lcc" else None,
            )  # fmt: skip
            assert res.test is not None and res.model is not None
            gap = cc_mc_accuracy(res.model, splits.test, res.test.correct, lcfg, batch_size=t.eval_batch_size)
            first = next(iter(gap)).split("/")[0] if gap else ""  # the first corrected layer
            overheads = [r["lcc_overhead"] for r in res.history if "lcc_overhead" in r]
            runs[method].append({
                "seed": seed, "test_top1": res.test.top1, "val_top1": res.best_val_top1, "best_epoch": res.best_epoch,
                "cc_top1": gap.get(f"{first}/cc_top1", float("nan")), "mc_top1": gap.get(f"{first}/mc_top1", float("nan")),
                "mc_fraction": gap.get(f"{first}/mc_fraction", float("nan")), "time_s": res.wall_time_s,
                "lcc_overhead": float(np.mean(overheads)) if overheads else float("nan"), "history": res.history,
            })  # fmt: skip
            print(f"  seed {seed} {method:8s} test top-1 {res.test.top1:.4f}  ({res.wall_time_s:.0f} s)")
            if seed == seeds[0]:
                models[method] = res.model

    rows = []
    for method in METHODS:
        r = runs[method]
        acc = [x["test_top1"] for x in r]
        std = float(np.std(acc, ddof=1)) if len(acc) > 1 else float("nan")
        cc, mc = np.nanmean([x["cc_top1"] for x in r]), np.nanmean([x["mc_top1"] for x in r])
        rows.append({
            "method": method, "seeds": len(r), "test_top1": f"{np.mean(acc):.4f} ± {std:.4f}",
            "val_top1": round(float(np.mean([x["val_top1"] for x in r])), 4), "CC_top1": round(float(cc), 4),
            "MC_top1": round(float(mc), 4), "CC-MC gap": round(float(cc - mc), 4),
            "MC_frac": round(float(np.nanmean([x["mc_fraction"] for x in r])), 3),
            "time/run_s": f"{np.mean([x['time_s'] for x in r]):.1f}",
            "LCC_overhead": "-" if method == "baseline" else f"{np.nanmean([x['lcc_overhead'] for x in r]):.1%}",
        })  # fmt: skip
    diffs = [a["test_top1"] - b["test_top1"] for a, b in zip(runs["lcc"], runs["baseline"], strict=True)]
    d_mean, d_half = mean_ci(diffs)
    table = format_table(rows)
    verdict = (
        f"LCC - baseline (paired over {len(diffs)} seeds): {d_mean:+.4f} test top-1, 95% CI "
        f"[{d_mean - d_half:+.4f}, {d_mean + d_half:+.4f}]"
    )
    print("\n" + table + "\n\n" + verdict)
    print("(mean ± std over seeds; test accuracy on each run's best-on-val weights; CC/MC = accuracy of test samples"
          " that are correctly clustered / misclustered in the corrected layer)")  # fmt: skip

    _plots(out, runs, models, mcfg, splits, lcfg, seeds[0], map_samples)
    summary = {"rows": rows, "difference": {"mean": d_mean, "ci95_half": d_half, "per_seed": diffs},
               "runs": {m: [{k: v for k, v in x.items() if k != "history"} for x in r] for m, r in runs.items()},
               "configs": {"model": dataclasses.asdict(mcfg), "data": dataclasses.asdict(dcfg),
                           "train": dataclasses.asdict(tcfg), "lcc": dataclasses.asdict(lcfg), "seeds": list(seeds)},
               "wall_time_s": time.perf_counter() - t0}  # fmt: skip
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(
        out / "summary.md",
        format_table(rows, markdown=True) + f"\n\n{verdict}\n\n![validation accuracy](val_accuracy.png)\n\n"
        "![latent map](latent_map.png)\n",
    )
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; report: {out / 'summary.md'}")
    return summary


def _plots(out: Path, runs: dict[str, list[dict[str, Any]]], models: dict[str, Any], mcfg: ModelConfig,
           splits: Any, lcfg: LCCConfig, seed: int, map_samples: int) -> None:  # fmt: skip
    """Validation curves (mean over seeds) and the corrected layer's latent map: pretrained vs each method."""
    curves = {}
    for method, r in runs.items():
        epochs = [row["epoch"] for row in r[0]["history"]]
        curves[method] = [
            {"epoch": e, "val_top1": float(np.mean([x["history"][i]["val_top1"] for x in r]))}
            for i, e in enumerate(epochs)
        ]
    plot_compare(curves, out / "val_accuracy.png", title="validation top-1 (mean over seeds)")
    seed_everything(seed)
    pretrained = build_model(mcfg, splits)
    subset = splits.train.subset(np.arange(min(map_samples, len(splits.train))))
    panels = []
    for title, model in (("pretrained (before)", pretrained), ("baseline fine-tuned", models["baseline"]),
                         ("LCC fine-tuned", models["lcc"])):  # fmt: skip
        layer = lcfg.layers[0]
        lat = collect_latents(model, DataLoader(subset, batch_size=256), layer, pool=lcfg.pool)
        name = next(iter(lat.arrays))
        cc = cluster_latents(lat[name], lat.labels, lcfg, name=name)[3]
        panels.append((title, pca_2d(lat[name]), lat.labels, ~cc))
    plot_latent_maps(panels, out / "latent_map.png", classes=splits.classes,
                     title=f"{lcfg.layers[0]} on {len(subset)} training samples (PCA; x = misclustered)")  # fmt: skip
