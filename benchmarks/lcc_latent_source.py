"""LCC's latent source, paired over seeds on the demo task: ``train_pass`` vs ``eval_pass`` (and the baseline).

Per seed, four runs of the demo's settings (`latentcc demo`: mnist-cnn fine-tuned on Animal-MNIST), one after
the other in this process after one untimed warm-up run, the order of the first three rotating with the seed,
so their wall clocks are comparable:

- ``baseline``: plain fine-tuning;
- ``eval_pass``: LCC, latents collected by an eval-mode pass over the training set at each refresh (the paper);
- ``train_pass``: LCC, latents the training steps captured since the last refresh (no extra pass);
- ``probe``: the ``train_pass`` run again, with a callback that, just before each refresh, also collects the
  eval-pass latents of the same model and clusters both: AMI of the two partitions against each other, and
  the misclustered fraction of each. It trains exactly like ``train_pass`` (the script checks its test top-1).

Prints the paired test top-1 difference ``train_pass - eval_pass`` with its 95 % t interval, each LCC run's
wall clock relative to the baseline of its seed ((t_lcc - t_base) / t_base), and the partition agreement.

    python benchmarks/lcc_latent_source.py --seeds 0,1,2,3,4 --markdown
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import adjusted_mutual_info_score
from torch.utils.data import DataLoader

from latentcc.app.finetune import load_data, prepare_model
from latentcc.app.presets import DEMO_DEFAULTS
from latentcc.config import DataConfig, LCCConfig, ModelConfig, TrainConfig
from latentcc.integrations.fit import LCCHook
from latentcc.latents.collect import collect_latents
from latentcc.lcc.epoch import cluster_latents
from latentcc.plumbing.seeding import seed_everything
from latentcc.report.stats import mean_ci, paired_difference
from latentcc.train import fit

RUNS = ("baseline", "eval_pass", "train_pass", "probe")


class PartitionProbe:
    """Before each refresh of a train-pass run: cluster the buffer's latents and the eval-pass latents, compare."""

    def __init__(self, hook: LCCHook) -> None:
        self.hook, self.rows = hook, []

    def on_epoch_start(self, ctx: Any) -> None:
        lcc = self.hook.lcc
        if lcc.buffer is None or not lcc.should_refresh(ctx.epoch) or not int(lcc.buffer.count.gt(0).sum()):
            return
        names = lcc.layer_names(ctx.model)
        c = lcc.config

        def eval_rows(rows: np.ndarray) -> Any:
            return collect_latents(ctx.model, DataLoader(ctx.data.train, batch_size=256, sampler=rows.tolist()),
                                   names, indices=rows, pool=c.pool, dim=c.dim)  # fmt: skip

        train, _ = lcc.buffer.assemble(eval_rows, names)  # the refresh that follows gets the same rows
        full = collect_latents(
            ctx.model, DataLoader(ctx.data.train, batch_size=256), names, pool=c.pool, dim=c.dim
        )
        for name in names:
            on_train = cluster_latents(train[name], train.labels, c, name=name)
            on_full = cluster_latents(full[name], full.labels, c, name=name)
            ct, cc_t, ce, cc_e = on_train.clusters, on_train.cc, on_full.clusters, on_full.cc
            self.rows.append({
                "epoch": ctx.epoch + 1, "layer": name, "ami": float(adjusted_mutual_info_score(ce, ct)),
                "mc_train_pass": float(1 - cc_t.mean()), "mc_eval_pass": float(1 - cc_e.mean()),
                "rows_from_training": int(lcc.buffer.count.gt(0).sum()),
            })  # fmt: skip


def one_run(kind: str, seed: int, a: argparse.Namespace, splits: Any, out: Path) -> dict[str, Any]:
    mcfg = ModelConfig(**DEMO_DEFAULTS["model"])
    tcfg = TrainConfig(**{**DEMO_DEFAULTS["train"], "epochs": a.epochs, "seed": seed, "progress": False,
                          "tensorboard": False})  # fmt: skip
    lcfg = dataclasses.replace(LCCConfig(**DEMO_DEFAULTS["lcc"]), diagnostic=False)  # time LCC alone
    seed_everything(seed)
    setup = prepare_model(mcfg, splits)
    callbacks: list[Any] = []
    lcc: Any = None
    probe = None
    if kind != "baseline":
        hook = LCCHook(
            dataclasses.replace(lcfg, latent_source="eval_pass" if kind == "eval_pass" else "train_pass")
        )
        if kind == "probe":
            probe = PartitionProbe(hook)
            callbacks = [probe, hook]  # the probe looks at the buffer before the hook's refresh consumes it
        else:
            lcc = hook.lcc
    t = time.perf_counter()
    res = fit(
        setup.model, splits, config=tcfg, out_dir=out / kind / f"seed-{seed}", lcc=lcc, callbacks=callbacks
    )
    wall = time.perf_counter() - t
    assert res.test is not None
    mc = [v for r in res.history for k, v in r.items() if k.endswith("/mc_fraction") and k.startswith("lcc/")]
    refresh = sum(r.get("lcc/time_refresh_s", 0.0) for r in res.history)
    return {"kind": kind, "seed": seed, "test_top1": res.test.top1, "wall_s": wall, "refresh_s": refresh,
            "mc_fraction": float(np.mean(mc)) if mc else float("nan"), "probe": probe.rows if probe else None}  # fmt: skip


def step_cost(
    n: int = 50_000, d: int = 512, c: int = 100, batch: int = 256, reps: int = 200, label_noise: float = 0.1
) -> dict[str, float]:
    """Median ms per training step of ``LatentClusterCorrection.loss`` (forward + backward) at batch x d, with
    targets of an N-sample mixture: ``eval_pass`` (the loss alone) vs ``train_pass`` (the loss + the buffer copy),
    then each ``LCCConfig.loss`` variant (``loss_<variant>``, the loss alone, on one partition's targets for that
    variant; timed round-robin, step by step, so the variants share the machine's state). One thread, as a
    256-row step does not gain from a second one.

    ``label_noise``: the fraction of samples given a random class. The mixture's clusters are clean, so without
    it no sample is misclustered, there are no targets and every step takes the loss's no-target shortcut; the
    cost of a step does not depend on how many of its rows have a target, only on there being some.
    ``targets_<variant>`` in the result counts them."""
    import torch

    from latentcc.config import LCC_LOSSES
    from latentcc.lcc.buffer import LatentBuffer
    from latentcc.lcc.correction import LatentClusterCorrection
    from latentcc.lcc.epoch import epoch_start
    from latentcc.lcc.targets import lcc_targets

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    y = rng.integers(0, c, n)
    x = ((rng.standard_normal((c, d)) * 0.3)[y] + rng.standard_normal((n, d)) / np.sqrt(d)).astype(np.float32)
    y = np.where(rng.random(n) < label_noise, rng.integers(0, c, n), y)
    es = epoch_start(x, y, LCCConfig(layers=("z",), k=10, graph_dim=32), name="z")
    targets = es.targets
    out = {}
    for source in ("eval_pass", "train_pass"):
        lcc = LatentClusterCorrection(LCCConfig(layers=("z",), latent_source=source))  # type: ignore[arg-type]
        lcc.targets["z"] = targets
        if source == "train_pass":
            lcc.buffer = LatentBuffer(n, "cpu")
        batches = [rng.choice(n, batch, replace=False) for _ in range(16)]
        zs = [torch.from_numpy(x[i]).requires_grad_(True) for i in batches]
        ids = [torch.from_numpy(i) for i in batches]
        ys = [torch.from_numpy(y[i]) for i in batches]
        times = []
        for r in range(reps + 5):
            i = r % len(batches)
            zs[i].grad = None
            t = time.perf_counter()
            lcc.loss({"z": zs[i]}, ids[i], ys[i]).backward()
            if r >= 5:
                times.append(time.perf_counter() - t)
        out[source] = 1e3 * float(np.median(times))
    # the loss variants: same partition, each variant's own targets (k_target = k = 10, tangent_dim 2)
    variants = {}
    for v in LCC_LOSSES:
        lcc = LatentClusterCorrection(LCCConfig(layers=("z",), latent_source="eval_pass", loss=v))  # type: ignore[arg-type]
        lcc.targets["z"] = lcc_targets(x, y, es.clusters, k_target=10, owners=es.owners, loss=v)
        out[f"targets_{v}"] = float(lcc.targets["z"].num_with_target)
        variants[v] = lcc
    batches = [rng.choice(n, batch, replace=False) for _ in range(16)]
    zs = [torch.from_numpy(x[i]).requires_grad_(True) for i in batches]
    ids = [torch.from_numpy(i) for i in batches]
    vtimes: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(reps + 5):
        i = r % len(batches)
        for v, lcc in variants.items():
            zs[i].grad = None
            t = time.perf_counter()
            lcc.loss({"z": zs[i]}, ids[i]).backward()
            if r >= 5:
                vtimes[v].append(time.perf_counter() - t)
    for v, ts in vtimes.items():
        out[f"loss_{v}"] = 1e3 * float(np.median(ts))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--step", action="store_true", help="only the per-step cost (loss + buffer copy), batch 256 x 512"
    )
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--epochs", type=int, default=DEMO_DEFAULTS["train"]["epochs"])
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--out", default="benchmarks/results/lcc_latent_source.json")
    a = p.parse_args(argv)
    if a.step:
        ms = step_cost()
        print(f"per-step LCC loss fwd+bwd, batch 256 x 512, N=50k, 1 thread: eval_pass {ms['eval_pass']:.3f} ms, "
              f"train_pass (loss + buffer copy) {ms['train_pass']:.3f} ms")  # fmt: skip
        print(
            f"(samples with a target: {int(ms['targets_paper'])} of 50000; all_samples {int(ms['targets_all_samples'])})"
        )
        paper = ms["loss_paper"]
        print("per-step LCC loss variants, same setting (loss alone, median ms; ratio to paper): " + ", ".join(
            f"{k[5:]} {v:.3f} ms ({v / paper:.2f}x)" for k, v in ms.items() if k.startswith("loss_")))  # fmt: skip
        return
    seeds = [int(s) for s in a.seeds.split(",")]
    splits = load_data(DataConfig(**DEMO_DEFAULTS["data"]))
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in RUNS}
    with tempfile.TemporaryDirectory() as tmp:
        one_run(
            "train_pass", 10_000, a, splits, Path(tmp) / "warm-up"
        )  # imports, allocator, first faiss call
        for i, seed in enumerate(seeds):
            timed = RUNS[:3][i % 3 :] + RUNS[:3][: i % 3]  # the order rotates: no method always runs first
            for kind in (*timed, "probe"):
                r = one_run(kind, seed, a, splits, Path(tmp))
                runs[kind].append(r)
                print(f"seed {seed} {kind:10s} test top-1 {r['test_top1']:.4f}  wall {r['wall_s']:.2f} s  "
                      f"refresh {r['refresh_s']:.2f} s", flush=True)  # fmt: skip
    same = all(
        p["test_top1"] == t["test_top1"] for p, t in zip(runs["probe"], runs["train_pass"], strict=True)
    )
    diff = paired_difference(
        [r["test_top1"] for r in runs["train_pass"]], [r["test_top1"] for r in runs["eval_pass"]]
    )
    ratios = {k: [(r["wall_s"] - b["wall_s"]) / b["wall_s"] for r, b in zip(runs[k], runs["baseline"], strict=True)]
              for k in ("eval_pass", "train_pass")}  # fmt: skip
    probe_rows = [row for r in runs["probe"] for row in r["probe"]]
    summary = {
        "seeds": seeds, "epochs": a.epochs, "train_minus_eval_test_top1": diff,
        "vs_baseline": {k: {"per_seed": v, "mean": float(np.mean(v)), "ci95_half": mean_ci(v)[1]} for k, v in ratios.items()},
        "lcc_minus_baseline": {k: paired_difference([r["test_top1"] for r in runs[k]], [r["test_top1"] for r in runs["baseline"]])
                               for k in ("eval_pass", "train_pass")},
        "ami_train_vs_eval_partition": [r["ami"] for r in probe_rows],
        "mc_fraction": {k: float(np.mean([r["mc_fraction"] for r in runs[k]])) for k in ("eval_pass", "train_pass")},
        "probe_trains_like_train_pass": same, "runs": runs, "provenance": provenance(),
    }  # fmt: skip
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(summary, indent=1))
    print(report(summary, a.markdown))


def report(s: dict[str, Any], markdown: bool) -> str:
    d = s["train_minus_eval_test_top1"]
    lines = [
        f"train_pass - eval_pass, test top-1, paired over {d['n']} seeds: {100 * d['mean']:+.2f} pp, "
        f"95% CI [{100 * d['ci95_low']:+.2f}, {100 * d['ci95_high']:+.2f}] pp",
    ]
    for k in ("eval_pass", "train_pass"):
        v, lb = s["vs_baseline"][k], s["lcc_minus_baseline"][k]
        lines.append(
            f"{k}: wall clock vs baseline {100 * v['mean']:+.1f} % (per seed "
            + ", ".join(f"{100 * x:+.1f}" for x in v["per_seed"])
            + f" %); test top-1 vs baseline {100 * lb['mean']:+.2f} pp [{100 * lb['ci95_low']:+.2f}, "
            f"{100 * lb['ci95_high']:+.2f}]; MC fraction at refreshes {s['mc_fraction'][k]:.3f}"
        )
    ami = s["ami_train_vs_eval_partition"]
    lines.append(f"AMI(train-pass partition, eval-pass partition) on the same model, {len(ami)} refreshes: "
                 f"mean {np.mean(ami):.3f}, min {np.min(ami):.3f}; probe run trains like train_pass: "
                 f"{s['probe_trains_like_train_pass']}")  # fmt: skip
    sep = "\n- " if markdown else "\n"
    return (sep if markdown else "") + sep.join(lines)


def provenance() -> dict[str, Any]:
    import platform

    import torch

    sha = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return {"commit": sha, "torch": torch.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads(), "argv": sys.argv}  # fmt: skip


if __name__ == "__main__":
    main()
