"""One million samples on 2 CPU cores: latents collected into one memory-mapped array, then LCC's epoch start from it.

A synthetic 1M-sample dataset (100-class Gaussian mixture in 32-d, float32 inputs: 122 MiB) goes through
an MLP whose 128-d hidden layer is collected with ``collect_latents(..., memory_budget=128 MiB)``: the
(1M, 128) latents exceed the budget and are written to ONE memory-mapped file (float32: 488 MiB;
``--dtype float16``: 244 MiB). ``epoch_start`` then runs from that array with LCCConfig's defaults
(PCA to 128 = none here, calibrated IVF k-NN above 30k samples, Leiden, matching, targets). Each dtype runs in a
fresh subprocess so its peak RSS (ru_maxrss) is its own. Target (issue 7): <= 6 GiB RSS.

    python benchmarks/million.py                 # float32 and float16, ~6-8 min
    python benchmarks/million.py --n 200000      # a smaller check
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def one(n: int, dtype: str, threads: int) -> dict[str, Any]:
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    import latentcc
    from latentcc.config import LCCConfig
    from latentcc.data import IndexedDataset

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    k = 100
    y = rng.integers(0, k, n)
    centers = rng.normal(size=(k, 32)).astype(np.float32) * 1.0
    x = rng.standard_normal((n, 32), dtype=np.float32)
    x += centers[y]
    ds = IndexedDataset(torch.from_numpy(x), y, classes=[str(c) for c in range(k)], kind="tabular")
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(32, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 128),
        torch.nn.ReLU(),
        torch.nn.Linear(128, k),
    )
    rss_data = _rss_gib()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        lat = latentcc.collect_latents(
            model,
            DataLoader(ds, batch_size=8192),
            ["3"],
            memory_budget=128 * 2**20,
            memmap_dir=tmp,
            dtype=dtype,
        )
        t_collect = time.perf_counter() - t0
        arr = lat["3"]
        info = {
            "memmap": type(arr).__name__,
            "file_mib": os.path.getsize(lat.files[0]) / 2**20 if lat.files else 0,
        }
        rss_collect = _rss_gib()
        t0 = time.perf_counter()
        res = latentcc.epoch_start(arr, lat.labels, LCCConfig(layers=("3",)))
        t_epoch = time.perf_counter() - t0
    return {
        "n": n,
        "dtype": dtype,
        **info,
        "collect_s": t_collect,
        "epoch_start_s": t_epoch,
        "stages_s": res.stats(),
        "clusters": int(res.clusters.max()) + 1,
        "mc_fraction": float(res.targets.mc_mask.float().mean()),
        "rss_after_data_gib": rss_data,
        "rss_after_collect_gib": rss_collect,
        "peak_rss_gib": _rss_gib(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dtypes", default="float32,float16")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ns = ap.parse_args()
    if ns.child:
        print(json.dumps(one(ns.n, ns.child, ns.threads), default=float))
        return
    rows = []
    for dtype in ns.dtypes.split(","):
        cmd = [sys.executable, __file__, "--n", str(ns.n), "--threads", str(ns.threads), "--child", dtype]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise SystemExit(res.stderr[-3000:])
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    print(f"# N = {ns.n:,}, latents 128-d, {ns.threads} threads, memory_budget 128 MiB (latents on disk)\n")
    print(
        "| storage | memmap file (MiB) | collect (s) | epoch start (s) | clusters | MC fraction | peak RSS (GiB) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['dtype']} {r['memmap']} | {r['file_mib']:.0f} | {r['collect_s']:.1f} | {r['epoch_start_s']:.1f} | "
            f"{r['clusters']} | {r['mc_fraction']:.3f} | {r['peak_rss_gib']:.2f} |"
        )
    for r in rows:
        print(f"\n{r['dtype']} stages:", json.dumps(r["stages_s"], default=float))
        print(
            f"RSS after building the data {r['rss_after_data_gib']:.2f} GiB, after collecting "
            f"{r['rss_after_collect_gib']:.2f} GiB"
        )


if __name__ == "__main__":
    main()
