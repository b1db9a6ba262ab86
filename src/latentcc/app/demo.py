"""`latentcc demo`: baseline fine-tuning vs LCC fine-tuning of a real pretrained model on real data, offline.

Default: the MNIST-trained CNN (digit-recognizer-py weights) fine-tuned on Animal-MNIST, the same
budget and seeds for both methods, LCC on the penultimate layer with LCCConfig's defaults (no tuning
on the test split: every hyper-parameter is a documented default or chosen on validation).
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from latentcc.app.compare import RunSpec, compare
from latentcc.app.finetune import build_model, load_data
from latentcc.config import DataConfig, LCCConfig, ModelConfig, TrainConfig
from latentcc.extras import check_extras
from latentcc.latents.collect import collect_latents
from latentcc.lcc.diagnostics import cc_mc_accuracy
from latentcc.lcc.epoch import cluster_latents
from latentcc.lcc.weight import weight_label
from latentcc.plumbing.atomic import atomic_write_json, atomic_write_text
from latentcc.plumbing.runlock import FolderLock, check_new_output, new_folder
from latentcc.plumbing.seeding import seed_everything
from latentcc.report.curves import plot_compare
from latentcc.report.latent_map import pca_2d, plot_latent_maps
from latentcc.report.stats import conclusion, mean_ci, paired_difference
from latentcc.report.table import format_table
from latentcc.train.checkpoint import load_weights
from latentcc.train.loop import evaluate, resolve_device

METHODS = ("baseline", "lcc")
COLUMNS = (
    "test top-1: accuracy on the test split with each run's best-on-validation weights, mean ± std over seeds; "
    "val top-1: best validation accuracy; CC / MC top-1: test accuracy of the "
    "samples that are correctly clustered / misclustered in the corrected layer (its test latents clustered "
    "with the LCC settings, clusters matched to classes), gap = CC - MC; MC frac: share of misclustered test "
    "samples; s/run: wall time of one run; LCC overhead: the extra wall-clock time of the LCC run over the "
    "baseline run of the same seed, (t_lcc - t_diagnostic - t_baseline) / t_baseline, mean ± std over seeds "
    "(per seed in summary.json); t_diagnostic, the validation CC/MC clustering the demo switches on to report "
    "it, is left out because it measures LCC rather than being part of it."
)


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
    """Run both methods for every seed, print the comparison and write ``out_dir`` (default runs/demo/<time>).

    Writes ``summary.md`` (settings, table, paired difference, conclusion, figures), ``summary.json``
    (the same numbers as strict JSON), ``val_accuracy.png``, ``latent_map.png`` and one run folder per
    method and seed. Returns the content of ``summary.json``.
    """
    t0 = time.perf_counter()
    check_extras("The demo", lcc=lcfg, models=[mcfg.model], data=[dcfg.data])  # before any training
    splits = load_data(dcfg)
    _check_lcc_runs(mcfg, tcfg, lcfg, splits)  # before the folder is made and the baseline runs train
    out = Path(out_dir) if out_dir else new_folder(Path("runs") / "demo", time.strftime("%Y%m%d-%H%M%S"))
    with FolderLock(out, func="run_demo"):  # one process per demo folder, for all of its writes
        check_new_output(
            out, func="run_demo", param="out_dir",
            fix="choose another output folder (--out), a new or empty one, or move the old outputs away first.",
        )  # fmt: skip
        _warm_up(mcfg, tcfg, lcfg, splits)  # so that no timed run pays the process's one-time costs
        return _run_demo(mcfg, dcfg, tcfg, lcfg, splits, seeds=seeds, out=out, map_samples=map_samples, t0=t0)


def _check_lcc_runs(mcfg: ModelConfig, tcfg: TrainConfig, lcfg: LCCConfig, splits: Any) -> None:
    """Every check ``fit`` makes before an LCC run (schedule, layers, batches, labels), made before the first run.

    The baseline runs come first and make none of the LCC checks: a setting only LCC refuses (e.g. warmup
    >= epochs) would otherwise fail after the baseline trained, leaving a half-written demo folder.
    """
    from latentcc.integrations.fit import LCCHook
    from latentcc.train.checks import preflight

    device = resolve_device(tcfg.device, func="TrainConfig")
    with warnings.catch_warnings():  # the runs issue (and record) their own warnings
        warnings.simplefilter("ignore")
        seed_everything(tcfg.seed)
        model = build_model(mcfg, splits).to(device)
        preflight(
            model, splits.train, tcfg, terms=[LCCHook(lcfg)], optimizer=None, scheduler=None,
            device=device, num_classes=splits.num_classes, has_val=len(splits.val) > 0,
        )  # fmt: skip


def _warm_up(mcfg: ModelConfig, tcfg: TrainConfig, lcfg: LCCConfig, splits: Any) -> None:
    """An untimed 2-epoch LCC fit on 256 samples: first-use costs (imports of the clustering and plotting
    libraries, thread pools, allocator) would otherwise land on whichever timed run comes first."""
    import tempfile
    from types import SimpleNamespace

    from latentcc.train import fit

    n = min(max(256, 4 * lcfg.k), len(splits.train))  # room for the k-NN graph of large k too
    small = SimpleNamespace(
        train=splits.train.subset(np.arange(n)), val=splits.val.subset(np.arange(min(64, len(splits.val)))),
        test=splits.test.subset(np.arange(min(64, len(splits.test)))), num_classes=splits.num_classes,
    )  # fmt: skip
    cfg = dataclasses.replace(tcfg, epochs=2, progress=False)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seed_everything(tcfg.seed)
        model = build_model(mcfg, splits)
        fit(model, small, config=cfg, out_dir=Path(tmp) / "run", lcc=dataclasses.replace(lcfg, warmup=1))


def _run_demo(
    mcfg: ModelConfig, dcfg: DataConfig, tcfg: TrainConfig, lcfg: LCCConfig, splits: Any, *, seeds: tuple[int, ...],
    out: Path,
    map_samples: int, t0: float,
) -> dict[str, Any]:  # fmt: skip
    settings = _settings(mcfg, tcfg, lcfg, splits, seeds)
    print(settings)
    # the paired runs: a fixed-size comparison (every seed; the methods take turns at running first)
    plain = RunSpec(model=mcfg, data=dcfg, train=tcfg)
    result = compare(
        plain, dataclasses.replace(plain, lcc=lcfg), out_dir=out / "compare", seeds=list(seeds),
        min_seeds=len(seeds), max_seeds=len(seeds), names=METHODS, runs_dir=out / "runs", loaded={dcfg: splits},
    )  # fmt: skip
    folders = {
        m: out / "runs" / result["sides"][side]["folder"] for m, side in zip(METHODS, "ab", strict=True)
    }
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
    models: dict[str, Any] = {}
    for seed in seeds:
        for method in METHODS:
            run, model = _read_run(folders[method] / f"seed-{seed}", mcfg, tcfg, lcfg, splits)
            runs[method].append({"seed": seed, **run})
            print(f"  seed {seed} {method:8s} test top-1 {run['test_top1']:.4f}  ({run['time_s']:.0f} s)")
            if seed == seeds[0]:
                models[method] = model

    for base, lcc in zip(runs["baseline"], runs["lcc"], strict=True):  # paired wall clock, per seed
        base["lcc_overhead"] = float("nan")
        lcc["lcc_overhead"] = (lcc["time_s"] - lcc["diagnostic_s"] - base["time_s"]) / base["time_s"]
    rows = [_method_row(method, runs[method]) for method in METHODS]
    diff = paired_difference(
        [x["test_top1"] for x in runs["lcc"]], [x["test_top1"] for x in runs["baseline"]]
    )
    verdict = (
        f"LCC - baseline (paired over {diff['n']} seeds): {diff['mean']:+.4f} test top-1, 95% CI "
        f"[{diff['ci95_low']:+.4f}, {diff['ci95_high']:+.4f}]"
    )
    said = conclusion(diff, treated="LCC", baseline="plain fine-tuning", metric="test top-1")
    print("\n" + format_table(_display_rows(rows)) + "\n\n" + verdict + "\n" + said)
    print(f"({COLUMNS})")

    _plot_curves(out, runs)
    _plot_latent_maps(out, models, mcfg, splits, lcfg, seeds[0], map_samples)
    summary = {
        "title": f"latentcc demo: baseline vs LCC fine-tuning of {mcfg.model} on {splits.name}",
        "settings": settings,
        "conclusion": said,
        "rows": rows,
        "difference": {"metric": "test_top1", "treated": "lcc", "baseline": "baseline", **diff},
        "runs": {m: [{k: v for k, v in x.items() if k != "history"} for x in r] for m, r in runs.items()},
        "configs": {"model": dataclasses.asdict(mcfg), "data": dataclasses.asdict(dcfg),
                    "train": dataclasses.asdict(tcfg), "lcc": dataclasses.asdict(lcfg), "seeds": list(seeds)},
        "wall_time_s": time.perf_counter() - t0,
    }  # fmt: skip
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "summary.md", _markdown(summary, verdict, lcfg))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; report: {out / 'summary.md'}")
    return summary


def _read_run(
    folder: Path, mcfg: ModelConfig, tcfg: TrainConfig, lcfg: LCCConfig, splits: Any
) -> tuple[dict[str, Any], Any]:
    """One finished run's numbers (results.json, metrics.json) and its best-on-validation model, with the
    test accuracy of the samples correctly clustered / misclustered in the corrected layer."""
    results = json.loads((folder / "results.json").read_text())
    history = json.loads((folder / "metrics.json").read_text())
    model = build_model(mcfg, splits).to(resolve_device(tcfg.device, func="TrainConfig"))
    load_weights(folder / "best.safetensors", model)
    correct = evaluate(model, splits.test, batch_size=tcfg.eval_batch_size, device=tcfg.device).correct
    gap = cc_mc_accuracy(model, splits.test, correct, lcfg, batch_size=tcfg.eval_batch_size)
    first = next(iter(gap)).split("/")[0] if gap else ""  # the first corrected layer
    nan = float("nan")
    return {
        "test_top1": results["test_top1"], "val_top1": results["best_val_top1"], "best_epoch": results["best_epoch"],
        "cc_top1": gap.get(f"{first}/cc_top1", nan), "mc_top1": gap.get(f"{first}/mc_top1", nan),
        "mc_fraction": gap.get(f"{first}/mc_fraction", nan), "time_s": results["wall_time_s"],
        "diagnostic_s": sum(r.get("lcc/time_diagnostic_s", 0.0) for r in history),
        "val_cc_top1": history[-1].get(f"val_{first}/cc_top1", nan),
        "val_mc_top1": history[-1].get(f"val_{first}/mc_top1", nan), "history": history,
    }, model  # fmt: skip


def _settings(
    mcfg: ModelConfig, tcfg: TrainConfig, lcfg: LCCConfig, splits: Any, seeds: tuple[int, ...]
) -> str:
    """What was run, in one paragraph (printed first, and the top of summary.md)."""
    return (
        f"Model `{mcfg.model}` fine-tuned on `{splits.name}` ({splits.num_classes} classes; train/val/test = "
        f"{len(splits.train)}/{len(splits.val)}/{len(splits.test)} samples), twice per seed with the same budget: "
        f"plain fine-tuning (baseline) and fine-tuning with Latent Cluster Correction (LCC) on "
        f"`{', '.join(lcfg.layers)}`. Seeds {', '.join(map(str, seeds))} ({len(seeds)} seeds); {tcfg.epochs} epochs, "
        f"batch size {tcfg.batch_size}, {tcfg.optimizer} lr {tcfg.lr:g}, {tcfg.scheduler} schedule. LCC: weight "
        f"{weight_label(lcfg)}, k {lcfg.k}, warmup {lcfg.warmup} epoch(s), refresh every {lcfg.interval} epoch(s), "
        f"{lcfg.community} communities."
    )


def _method_row(method: str, r: list[dict[str, Any]]) -> dict[str, Any]:
    """One method's numbers over seeds (numbers only: summary.json stays machine-readable)."""
    acc = [x["test_top1"] for x in r]
    mean, half = mean_ci(acc)
    cc, mc = (float(np.nanmean([x[k] for x in r])) for k in ("cc_top1", "mc_top1"))
    return {
        "method": method,
        "seeds": len(r),
        "test_top1_mean": mean,
        "test_top1_std": float(np.std(acc, ddof=1)) if len(acc) > 1 else float("nan"),
        "test_top1_ci95_half": half,
        "val_top1_mean": float(np.mean([x["val_top1"] for x in r])),
        "cc_top1": cc,
        "mc_top1": mc,
        "cc_mc_gap": cc - mc,
        "mc_fraction": float(np.nanmean([x["mc_fraction"] for x in r])),
        "time_per_run_s": float(np.mean([x["time_s"] for x in r])),
        "lcc_overhead": float(np.mean([x["lcc_overhead"] for x in r])) if method == "lcc" else float("nan"),
        "lcc_overhead_std": float(np.std([x["lcc_overhead"] for x in r], ddof=1))
        if method == "lcc" and len(r) > 1
        else float("nan"),
        "diagnostic_s": float(np.mean([x["diagnostic_s"] for x in r])),
        "val_cc_top1": _finite_mean([x["val_cc_top1"] for x in r]),
        "val_mc_top1": _finite_mean([x["val_mc_top1"] for x in r]),
    }


def _finite_mean(values: list[float]) -> float:
    """The mean of the finite values (NaN, without numpy's empty-slice warning, when there are none)."""
    a = np.asarray(values, dtype=float)
    return float(a[np.isfinite(a)].mean()) if np.isfinite(a).any() else float("nan")


def _display_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The printed / Markdown table: the numeric rows formatted for reading."""
    return [
        {
            "method": r["method"],
            "seeds": r["seeds"],
            "test top-1 (mean ± std)": f"{r['test_top1_mean']:.4f}"
            + (f" ± {r['test_top1_std']:.4f}" if np.isfinite(r["test_top1_std"]) else " (1 seed)"),
            "val top-1": round(r["val_top1_mean"], 4),
            "CC top-1": round(r["cc_top1"], 4),
            "MC top-1": round(r["mc_top1"], 4),
            "CC-MC gap": round(r["cc_mc_gap"], 4),
            "MC frac": round(r["mc_fraction"], 3),
            "s/run": f"{r['time_per_run_s']:.1f}",
            "LCC overhead": (
                f"{r['lcc_overhead']:+.1%}"
                + (f" ± {r['lcc_overhead_std']:.1%}" if np.isfinite(r["lcc_overhead_std"]) else "")
                if np.isfinite(r["lcc_overhead"])
                else "-"
            ),
        }
        for r in rows
    ]


def _markdown(summary: dict[str, Any], verdict: str, lcfg: LCCConfig) -> str:
    return "\n".join([
        f"# {summary['title']}",
        "",
        "## What was run",
        "",
        summary["settings"],
        "",
        "## Result",
        "",
        f"**{summary['conclusion']}**",
        "",
        f"{verdict} (Student t interval over the per-seed differences; per-seed values in `summary.json`).",
        "",
        format_table(_display_rows(summary["rows"]), markdown=True),
        "",
        f"Columns: {COLUMNS}",
        "",
        _diagnostic_line(summary["rows"], lcfg),
        "",
        "## Figures",
        "",
        "![validation accuracy](val_accuracy.png)",
        "",
        "Validation top-1 after each epoch, mean over seeds; the shaded band spans the seeds' minimum to maximum.",
        "",
        "![latent map](latent_map.png)",
        "",
        f"Latents of `{lcfg.layers[0]}` (PCA to 2-D) on training samples, coloured by class; x = misclustered. "
        "Left to right: the pretrained model, the baseline and the LCC model of the first seed.",
        "",
        "Run folders (config, metrics per epoch, best weights, training curves): `runs/<hash>/seed-<s>/`, one "
        "`<hash>` per method (`runs/<hash>/side.json` names its settings); the paired comparison: `compare/`.",
        "",
    ])  # fmt: skip


def _diagnostic_line(rows: list[dict[str, Any]], lcfg: LCCConfig) -> str:
    """What the validation CC/MC diagnostic of the LCC runs said, and what it cost (outside the overhead)."""
    r = next(x for x in rows if x["method"] == "lcc")
    if not lcfg.diagnostic:
        return "Validation CC/MC diagnostic: off (LCCConfig.diagnostic)."
    return (
        f"Validation CC/MC diagnostic of the LCC runs (`LCCConfig.diagnostic`; per epoch in each run's metrics.csv as "
        f"`val_<layer>/cc_top1`, `mc_top1`): at the last epoch CC top-1 {r['val_cc_top1']:.4f}, MC top-1 "
        f"{r['val_mc_top1']:.4f}; it took {r['diagnostic_s']:.2f} s per run, not counted in the LCC overhead."
    )


def _plot_curves(out: Path, runs: dict[str, list[dict[str, Any]]]) -> None:
    """Validation top-1 per epoch of each method: mean over seeds, with the seeds' min-max as a band."""
    curves = {}
    for method, r in runs.items():
        epochs = [row["epoch"] for row in r[0]["history"]]
        per_epoch = [[x["history"][i]["val_top1"] for x in r] for i in range(len(epochs))]
        curves[{"baseline": "baseline (plain fine-tuning)", "lcc": "LCC"}[method]] = [
            {"epoch": e, "val_top1": float(np.mean(v)), "val_top1_min": min(v), "val_top1_max": max(v)}
            for e, v in zip(epochs, per_epoch, strict=True)
        ]
    plot_compare(
        curves, out / "val_accuracy.png", ylabel="validation top-1",
        title=f"validation top-1, mean over {len(runs[METHODS[0]])} seed(s)",
    )  # fmt: skip


def _plot_latent_maps(out: Path, models: dict[str, Any], mcfg: ModelConfig, splits: Any, lcfg: LCCConfig,
                      seed: int, map_samples: int) -> None:  # fmt: skip
    """The corrected layer's latents (PCA) on training samples: pretrained vs each method's model."""
    seed_everything(seed)
    pretrained = build_model(mcfg, splits)
    subset = splits.train.subset(np.arange(min(map_samples, len(splits.train))))
    panels = []
    for title, model in (("pretrained (before)", pretrained), ("baseline fine-tuned", models["baseline"]),
                         ("LCC fine-tuned", models["lcc"])):  # fmt: skip
        layer = lcfg.layers[0]
        lat = collect_latents(model, DataLoader(subset, batch_size=256), layer, pool=lcfg.pool)
        name = next(iter(lat.arrays))
        cc = cluster_latents(lat[name], lat.labels, lcfg, name=name).cc
        panels.append((title, pca_2d(lat[name]), lat.labels, ~cc))
    plot_latent_maps(panels, out / "latent_map.png", classes=splits.classes,
                     title=f"{lcfg.layers[0]} on {len(subset)} training samples (PCA; x = misclustered)")  # fmt: skip
