"""The probes: ``latentcc.profile`` of every layer vs its parts, and streaming NC at N = 1M, d = 512.

Part 1 (``profile``): every layer of the embedded MNIST CNN on Animal-MNIST, 10k samples (8k train +
2k test), all metric families. Timed in one process, side by side:

- ``inference``: one plain forward pass over the 10k samples (no hooks), the floor of any profiler;
- ``metrics``: each metric family called directly on precomputed latents (and GC on its inputs);
- ``profile``: ``latentcc.profile`` end to end (latent pass + metrics + report views);
- ``per-layer passes``: collecting each layer's latents with its own forward pass (what a loop of
  per-layer probes does) — the baseline the one-pass design removes.

Target: profile <= 1.5 x (inference + metrics).

Part 2 (``nc-stream``): ``neural_collapse_stream`` over N = 1M, d = 512, K = 100 synthetic features
generated batch by batch (seeded), in a fresh subprocess so its peak RSS is its own; compared with
the array it would otherwise need (N x d float32 = 1.91 GiB) and with ``neural_collapse`` on the same
data at N = 100k in memory (exactness check against the stream).

    python benchmarks/probe.py               # both parts
    python benchmarks/probe.py --part profile --markdown
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Any

import numpy as np


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def bench_profile(threads: int) -> dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader

    import latentcc
    from latentcc.data import load_dataset
    from latentcc.data.base import stratified_indices
    from latentcc.metrics import (
        clusterability,
        geometric_complexity,
        knn_probe,
        layer_fn,
        linear_probe,
        neural_collapse,
    )
    from latentcc.models import load_model

    torch.set_num_threads(threads)
    splits = load_dataset("animal-mnist", seed=0, val_fraction=0.0, test_fraction=0.2)
    model = load_model("mnist-cnn", num_classes=splits.num_classes).eval()
    data = {"train": splits.train, "test": splits.test}
    n = len(splits.train) + len(splits.test)
    cfg = latentcc.ProbeConfig(progress=False)
    layers = latentcc.latents.layers.all_layers(model)

    def run_inference() -> None:
        with torch.no_grad():
            for ds in data.values():
                for x, _, _ in DataLoader(ds, batch_size=cfg.batch_size):
                    model(x)

    run_inference()  # warm-up (allocator, weight layout)
    t0 = time.perf_counter()
    run_inference()
    t_inf = time.perf_counter() - t0

    t0 = time.perf_counter()
    prof = latentcc.profile(model, data, config=cfg)
    t_prof = time.perf_counter() - t0

    lat = {
        s: latentcc.collect_latents(model, DataLoader(d, batch_size=cfg.batch_size), prof.layers)
        for s, d in data.items()
    }
    tr, te = lat["train"], lat["test"]
    gc_x = torch.stack(
        [splits.train[int(i)][0] for i in stratified_indices(splits.train.targets, cfg.gc_examples, seed=0)]
    )
    parts: dict[str, float] = {}
    for name, fn in (
        ("nc", lambda layer: neural_collapse(tr[layer], tr.labels)),
        ("clusterability", lambda layer: clusterability(tr[layer], tr.labels, clustering=cfg.clustering)),
        ("linear_probe", lambda layer: linear_probe(tr[layer], tr.labels, te[layer], te.labels)),
        ("knn_probe", lambda layer: knn_probe(tr[layer], tr.labels, te[layer], te.labels, k=cfg.knn_k)),
        (
            "gc",
            lambda layer: geometric_complexity(
                layer_fn(model, layer), gc_x, estimator=cfg.gc_estimator, n_projections=cfg.gc_projections
            ),
        ),
    ):
        t0 = time.perf_counter()
        for layer in prof.layers:
            fn(layer)
        parts[name] = time.perf_counter() - t0
    t_metrics = sum(parts.values())

    t0 = time.perf_counter()
    for layer in prof.layers:
        for d in data.values():
            latentcc.collect_latents(model, DataLoader(d, batch_size=cfg.batch_size), [layer])
    t_per_layer = time.perf_counter() - t0
    t_one_pass = prof.timings["latents:train"] + prof.timings["latents:test"]
    return {
        "samples": n,
        "layers": len(prof.layers),
        "all_layers": len(layers),
        "inference_s": t_inf,
        "metrics_s": t_metrics,
        "metric_parts_s": parts,
        "profile_s": t_prof,
        "profile_stage_s": prof.timings,
        "ratio": t_prof / (t_inf + t_metrics),
        "latents_one_pass_s": t_one_pass,
        "latents_per_layer_s": t_per_layer,
        "per_layer_over_one_pass": t_per_layer / t_one_pass,
    }


def bench_nc_stream(n: int, d: int, k: int, batch: int, threads: int) -> dict[str, Any]:
    """Streams (features, labels) batches from a seeded generator twice; reports time and peak RSS."""
    import torch

    torch.set_num_threads(threads)
    from latentcc.metrics import neural_collapse, neural_collapse_stream

    rng0 = np.random.default_rng(0)
    means = rng0.normal(size=(k, d)).astype(np.float32) * 2.0

    def batches() -> Any:
        rng = np.random.default_rng(1)  # same stream on both passes
        for start in range(0, n, batch):
            m = min(batch, n - start)
            y = rng.integers(0, k, size=m)
            h = rng.standard_normal((m, d), dtype=np.float32)
            h += means[y]
            yield h, y

    rss0 = _rss_gib()
    t0 = time.perf_counter()
    r = neural_collapse_stream(batches, num_classes=k)
    t = time.perf_counter() - t0
    out = {
        "n": n,
        "d": d,
        "k": k,
        "batch": batch,
        "stream_s": t,
        "peak_rss_gib": _rss_gib(),
        "rss_before_gib": rss0,
        "array_gib": n * d * 4 / 2**30,
        "nc1": r["nc1"],
        "cdnv": r["cdnv"],
    }
    if n <= 200_000:  # exactness check: the same data in memory through the pure function
        h = np.concatenate([b[0] for b in batches()])
        y = np.concatenate([b[1] for b in batches()])
        ref = neural_collapse(h, y)
        out["max_rel_diff_vs_in_memory"] = max(
            abs(ref[key] - r[key]) / abs(ref[key]) for key in ("nc1", "cdnv", "nc1_trace_ratio", "nc2_etf")
        )
    return out


def _subprocess(args: list[str]) -> dict[str, Any]:
    res = subprocess.run(
        [sys.executable, __file__, *args, "--child"], capture_output=True, text=True, check=False
    )
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-3000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("all", "profile", "nc-stream"), default="all")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--n", type=int, default=1_000_000, help="nc-stream: samples")
    ap.add_argument("--d", type=int, default=512, help="nc-stream: width")
    ap.add_argument("--k", type=int, default=100, help="nc-stream: classes")
    ap.add_argument("--batch", type=int, default=65_536, help="nc-stream: rows per batch")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ns = ap.parse_args()
    if ns.child:  # one measurement in a fresh process: print its JSON and exit
        if ns.part == "profile":
            print(json.dumps(bench_profile(ns.threads)))
        else:
            print(json.dumps(bench_nc_stream(ns.n, ns.d, ns.k, ns.batch, ns.threads)))
        return
    print(
        f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, threads={ns.threads}"
    )
    if ns.part in ("all", "profile"):
        r = _subprocess(["--part", "profile", "--threads", str(ns.threads)])
        print(
            f"\n## profile: mnist-cnn, every layer ({r['layers']}), {r['samples']} samples, all metric families\n"
        )
        rows = [
            ("one inference pass (no hooks)", r["inference_s"]),
            *((f"metric: {k} (all layers)", v) for k, v in r["metric_parts_s"].items()),
            ("inference + metrics", r["inference_s"] + r["metrics_s"]),
            ("latentcc.profile end to end", r["profile_s"]),
        ]
        print("| stage | seconds |\n|---|---:|")
        for name, v in rows:
            print(f"| {name} | {v:.2f} |")
        print(f"\nprofile / (inference + metrics) = {r['ratio']:.2f} (target <= 1.5)")
        print(
            f"latents of all layers: one pass {r['latents_one_pass_s']:.2f} s vs one pass per layer "
            f"{r['latents_per_layer_s']:.2f} s ({r['per_layer_over_one_pass']:.1f}x)"
        )
        print("profile stages:", json.dumps({k: round(v, 2) for k, v in r["profile_stage_s"].items()}))
    if ns.part in ("all", "nc-stream"):
        small = _subprocess(["--part", "nc-stream", "--n", "100000", "--d", str(ns.d), "--k", str(ns.k)])
        big = _subprocess(
            [
                "--part",
                "nc-stream",
                "--n",
                str(ns.n),
                "--d",
                str(ns.d),
                "--k",
                str(ns.k),
                "--batch",
                str(ns.batch),
            ]
        )
        print(
            f"\n## streaming neural collapse, d = {ns.d}, K = {ns.k}, batches of {ns.batch} rows, two passes\n"
        )
        print(
            "| N | seconds | peak RSS (GiB) | RSS before (GiB) | N x d float32 array (GiB) | rel. diff vs in-memory |"
        )
        print("|---:|---:|---:|---:|---:|---:|")
        for r in (small, big):
            diff = r.get("max_rel_diff_vs_in_memory")
            diff_text = f"{diff:.1e}" if diff is not None else "—"
            print(
                f"| {r['n']:,} | {r['stream_s']:.1f} | {r['peak_rss_gib']:.2f} | {r['rss_before_gib']:.2f} | "
                f"{r['array_gib']:.2f} | "
                f"{diff_text} |"
            )
        print(f"\nN = {big['n']:,}: nc1 = {big['nc1']:.4g}, cdnv = {big['cdnv']:.4g}")


if __name__ == "__main__":
    main()
