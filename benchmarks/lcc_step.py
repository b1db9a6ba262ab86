"""LCC's epoch-start step and per-step loss: latentcc against a reference stack that mirrors the original code.

Stacks (every stage timed once with time.perf_counter; every (stack, setting) runs in a fresh subprocess, so
its peak RSS is its own):

- ``ours``: latentcc's defaults (``LCCConfig``): PCA to ``graph_dim`` (128) for the graph only -> ``knn_search``
  (backend "auto": exact faiss up to 30k points, above it IVF calibrated to recall@k >= 0.95) -> CSR graph from the neighbour array -> seeded
  igraph Leiden -> plurality matching -> targets precomputed for every MC sample -> ``lcc_loss`` per step.
- ``ours-exact512``: the same without PCA: exact faiss k-NN on the full latents (bound by N^2 D multiply-adds).
- ``reference``: the original implementation: faiss ``IndexFlatL2`` searched in query batches of 256 -> a
  networkx Graph built edge by edge -> networkx ``louvain_communities`` -> networkx ``max_flow_min_cost``
  matching -> at every training step, per-class faiss searches among the CC samples of each owned cluster.

Where this script had a choice in building the reference, it took the one that makes the reference faster
(integer node ids, a numpy contingency table, CC samples per cluster grouped once per epoch), so every
ratio printed is a lower bound on latentcc's speed-up over the original. See benchmarks/README.md.

    python benchmarks/lcc_step.py --grid quick
    python benchmarks/lcc_step.py --n 3000 --d 64 --c 10 --k 5 --markdown
    python benchmarks/lcc_step.py --n 50000 --d 512 --c 100 --k 50 --epoch-start 3

``--epoch-start R`` times latentcc's own ``epoch_start(x, y, LCCConfig(k=k))`` (the chained path a training
run takes, validated once at its door) R times, each in a fresh subprocess, and prints the median and spread
of its wall time and peak RSS with a digest of everything it returned (clusters, owners, CC mask, targets),
so two versions of latentcc can be compared on the same data: same digest, same numbers.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

STACKS = ("ours", "ours-exact512", "reference")
STAGES = ("reduce", "knn", "graph", "communities", "matching", "targets")
STAGE_LABELS = {
    "reduce": "PCA (graph only)",
    "knn": "k-NN search",
    "graph": "graph build",
    "communities": "communities",
    "matching": "matching + CC mask",
    "targets": "targets",
}
GRIDS: dict[str, list[tuple[int, int, int, int]]] = {  # (N, d, C, k)
    "quick": [(10_000, 512, c, k) for c in (10, 100) for k in (5, 50)],
    "targets": [(50_000, 512, 100, 50), (50_000, 512, 10, 50), (40_000, 512, 100, 500)],
    "full": [(n, 512, c, k) for n in (10_000, 50_000) for c in (10, 100) for k in (5, 50)]
    + [(40_000, 512, 100, 500)],
    "million": [(1_000_000, 128, 100, 10)],
}
# Targets from the issue, per setting: (stack, kind, bound). Checked on every setting: the per-step loss.
TARGETS: dict[tuple[int, int, int, int], list[tuple[str, str, float]]] = {
    (50_000, 512, 100, 50): [
        ("ours", "epoch_x", 10),
        ("ours", "ami", -0.01),
        ("ours-exact512", "epoch_x", 2),
    ],
    (50_000, 512, 10, 50): [("ours", "epoch_x", 20)],
    (40_000, 512, 100, 500): [("ours", "epoch_x", 10), ("ours", "rss_frac", 0.2)],
    (1_000_000, 128, 100, 10): [("ours", "epoch_s", 900), ("ours", "rss_gib", 6)],
}
EVERY_SETTING = [("ours", "loss_ms", 1.0), ("ours", "loss_x", 10)]
CHECKS = {  # kind: (value must be >= bound, else <=; description)
    "epoch_x": (True, "epoch start >= {}x faster than the reference"),
    "loss_x": (True, "loss fwd+bwd >= {}x faster than the reference"),
    "ami": (True, "AMI minus the reference's AMI >= {}"),
    "rss_frac": (False, "peak RSS <= {} of the reference's"),
    "loss_ms": (False, "loss fwd+bwd <= {} ms"),
    "epoch_s": (False, "epoch start <= {} s"),
    "rss_gib": (False, "peak RSS <= {} GiB"),
}
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# Centres ~ N(0, I) * sep. Squared distances within a class are 2d +- sqrt(8d); another class adds 2 sep^2 d.
# The misclustered fraction moves steeply with sep, and at a given sep it depends on the number of classes
# (samples per class vs k), so sep is set per C, measured with stack `ours` at N=50k, d=512, k=50:
# C=100: sep 0.225 -> 74 % MC (AMI 0.63), 0.25 -> 50 %, 0.27 -> 28 %, 0.28 -> 16 % (AMI 0.97), 0.30 -> 1 %;
# C=10: 0.17 -> 3.5 % MC (AMI 0.90), 0.19 -> 1.4 %, 0.225 -> 0.2 %. Other C: the scaling rule below.
SEP_BY_C = {10: 0.17, 100: 0.28}
SEP_SCALE = 0.9  # fallback: sep = SEP_SCALE * (2/d)^(1/4)
MC_RANGE = (0.02, 0.40)  # the misclustered fraction the data is meant to produce


# --------------------------------------------------------------------------- data and helpers (worker side)


def mixture(n: int, d: int, c: int, seed: int, sep: float | None) -> tuple[np.ndarray, np.ndarray, float]:
    """Seeded Gaussian mixture: x (N, d) float32, y (N,) int64 balanced labels. Same arguments, same arrays."""
    if sep is None:
        sep = SEP_BY_C.get(c, SEP_SCALE * (2 / d) ** 0.25)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((c, d), dtype=np.float32) * np.float32(sep)
    y = rng.permutation(np.arange(n) % c).astype(np.int64)
    x = rng.standard_normal((n, d), dtype=np.float32)  # float32 draws: no (N, d) float64 temporary at 1M
    for s in range(0, n, 65536):
        x[s : s + 65536] += centres[y[s : s + 65536]]
    return x, y, sep


def maxrss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def timed(fn: Any, *args: Any, **kw: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def median_ms(fn: Any, reps: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def loss_timings(loss_fn: Any, x: np.ndarray, a: argparse.Namespace, reps: int) -> dict[str, float]:
    """Median ms of loss_fn(z, idx) (forward) and with backward, over seeded batches shared by all stacks."""
    import faiss
    import torch

    # A 256-row step is too small to gain from a second thread, and on shared cores every parallel region
    # waits for the other thread to be scheduled: 8 ms instead of 0.03 ms per call was seen under load.
    torch.set_num_threads(a.loss_threads)
    faiss.omp_set_num_threads(a.loss_threads)
    rng = np.random.default_rng(a.seed + 1)
    b = min(a.batch, len(x))
    batches = [rng.choice(len(x), b, replace=False) for _ in range(16)]
    zs = [torch.from_numpy(x[i]).requires_grad_(True) for i in batches]
    ids = [torch.from_numpy(i) for i in batches]
    turn = itertools.cycle(range(len(batches)))

    def fwd() -> None:
        i = next(turn)
        loss_fn(zs[i], ids[i])

    def fwd_bwd() -> None:
        i = next(turn)
        zs[i].grad = None
        loss_fn(zs[i], ids[i]).backward()

    warm = min(5, reps)
    return {"loss_fwd_ms": median_ms(fwd, reps, warm), "loss_fwd_bwd_ms": median_ms(fwd_bwd, reps, warm)}


def sample_recall(xg: np.ndarray, idx: np.ndarray, seed: int, m: int = 1000) -> float:
    """Recall of idx on m sampled rows against an exact search done in chunks (a few MiB, so peak RSS is kept)."""
    import torch

    from latentcc.graph import knn_recall

    rows = np.random.default_rng(seed).choice(len(xg), min(m, len(xg)), replace=False)
    q, kq = torch.from_numpy(xg[rows]), idx.shape[1] + 1
    best_d = torch.full((len(rows), kq), float("inf"))
    best_i = torch.zeros((len(rows), kq), dtype=torch.int64)
    for s in range(0, len(xg), 16384):
        b = torch.from_numpy(xg[s : s + 16384])
        d = (q * q).sum(1, keepdim=True) - 2 * q @ b.T + (b * b).sum(1)
        cat_d = torch.cat([best_d, d], 1)
        cat_i = torch.cat([best_i, torch.arange(s, s + len(b)).expand(len(rows), -1)], 1)
        best_d, pos = torch.topk(cat_d, kq, dim=1, largest=False)
        best_i = torch.gather(cat_i, 1, pos)
    exact = best_i.numpy()
    keep = exact != rows[:, None]
    keep[keep.all(1), -1] = False  # self not found (duplicates): drop the farthest instead
    return knn_recall(idx[rows], exact[keep].reshape(len(rows), kq - 1))


# --------------------------------------------------------------------------- the stacks (worker side)


Run = tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray]  # record, clusters, owners, CC mask


def run_ours(x: np.ndarray, y: np.ndarray, a: argparse.Namespace, reduce: bool) -> Run:
    from latentcc.config import LCCConfig
    from latentcc.graph import communities, knn_graph_from_indices, knn_search, reduce_dim
    from latentcc.graph import knn as knn_module
    from latentcc.lcc import cc_mask, lcc_loss, lcc_targets, match_clusters

    cfg = LCCConfig(k=a.k, seed=a.seed)  # latentcc's defaults are the point of this stack
    # exact512 is exact on the full latents by definition; --knn-backend overrides the default for ours.
    backend = (a.knn_backend or cfg.knn_backend) if reduce else "faiss"
    # One-off costs (lazy imports of igraph and sklearn: ~0.4 s, first-call setup) are paid untimed here,
    # as the reference's are: a training run pays them once, not every epoch.
    toy = x[: min(len(x), 500)]
    communities(knn_graph_from_indices(knn_search(reduce_dim(toy, 8), 5)[0]), seed=0)
    sec: dict[str, float | None] = dict.fromkeys(STAGES)
    # The same calls epoch_start chains, split so the graph build is timed apart from the search.
    if reduce:
        xg, sec["reduce"] = timed(reduce_dim, x, cfg.graph_dim, method="pca", seed=cfg.seed)
    else:
        xg = x
    (idx, dist), sec["knn"] = timed(knn_search, xg, cfg.k, metric=cfg.metric, backend=backend, seed=cfg.seed)
    weights = np.sqrt(dist) if cfg.weighted else None  # as knn_graph does for metric="l2"
    graph, sec["graph"] = timed(knn_graph_from_indices, idx, len(x), distances=weights)
    exact_max_n = knn_module.EXACT_MAX_N  # where "auto" switches from exact to IVF
    resolved = backend if backend != "auto" else ("faiss" if len(x) <= exact_max_n else "ivf")
    # epoch_start keeps only the graph; so do we (the neighbour ids stay only for the recall check below)
    del dist, weights
    if resolved == "faiss":
        idx = None
    clusters, sec["communities"] = timed(
        communities, graph, community=cfg.community, resolution=cfg.resolution, seed=cfg.seed,
        leiden_iterations=cfg.leiden_iterations,
    )  # fmt: skip
    t = time.perf_counter()
    owners = match_clusters(y, clusters)
    cc = cc_mask(y, clusters, owners)
    sec["matching"] = time.perf_counter() - t
    targets, sec["targets"] = timed(
        lcc_targets,
        x,
        y,
        clusters,
        k_target=cfg.k_target or cfg.k,
        owners=owners,
        orphan_policy=cfg.orphan_policy,
    )
    rec: dict[str, Any] = {"seconds": sec, "peak_rss_gib": maxrss_gib()}  # before the checks below
    rec.update(knn_backend=resolved, knn_dim=int(xg.shape[1]), mc_with_target=targets.num_with_target)
    if resolved != "faiss":
        rec["knn_recall_sample"] = sample_recall(xg, idx, a.seed)
    del graph, idx, xg
    rec.update(loss_timings(lambda z, i: lcc_loss(z, i, targets), x, a, a.steps))
    return rec, clusters, owners, cc


def flow_matching(y: np.ndarray, clusters: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray]:
    """The original's matching: min-cost max-flow source -> cluster (cap 1) -> class (cap 1, cost -count) -> sink."""
    import networkx as nx

    m = int(clusters.max()) + 1
    table = np.bincount(y * m + clusters, minlength=c * m).reshape(c, m)  # numpy, not a Python count
    g = nx.DiGraph()
    for j in range(m):
        g.add_edge("source", ("cluster", j), capacity=1)
    for cls, j in zip(*np.nonzero(table), strict=True):
        g.add_edge(("cluster", int(j)), ("class", int(cls)), capacity=1, weight=-int(table[cls, j]))
    for cls in range(c):
        g.add_edge(("class", cls), "sink", capacity=len(y))
    flow = nx.max_flow_min_cost(g, "source", "sink")
    owners = np.full(m, -1, dtype=np.int64)
    for j in range(m):
        for (_, cls), f in flow[("cluster", j)].items():
            if f:
                owners[j] = cls
    return owners, table


def run_reference(x: np.ndarray, y: np.ndarray, a: argparse.Namespace) -> Run:
    import faiss
    import networkx as nx
    import torch

    n, d = x.shape
    # One-off first-call costs (networkx's dispatch setup: ~0.1 s) are paid untimed, as for ours.
    nx.community.louvain_communities(nx.karate_club_graph(), seed=0)
    flow_matching(y[:50], np.arange(50) % 3, a.c)
    sec: dict[str, float | None] = dict.fromkeys(STAGES)
    t = time.perf_counter()
    index = faiss.IndexFlatL2(d)
    index.add(x)
    nbrs = np.empty((n, a.k), dtype=np.int64)
    for s in range(0, n, 256):  # the original's query batches
        _, found = index.search(x[s : s + 256], a.k + 1)
        nbrs[s : s + 256] = found[:, 1:]  # drop self (first hit; no duplicate points in this data)
    sec["knn"] = time.perf_counter() - t
    del index

    t = time.perf_counter()
    g = nx.Graph()
    for i, row in enumerate(nbrs.tolist()):  # edge by edge, as the original (int node ids: kinder to it)
        for j in row:
            g.add_edge(i, j)
    sec["graph"] = time.perf_counter() - t

    t = time.perf_counter()
    parts = nx.community.louvain_communities(g, resolution=1, seed=a.seed)  # the original passed no seed
    clusters = np.empty(n, dtype=np.int64)
    for cid, members in enumerate(parts):
        clusters[np.fromiter(members, dtype=np.int64, count=len(members))] = cid
    sec["communities"] = time.perf_counter() - t
    del g, parts

    t = time.perf_counter()
    owners, table = flow_matching(y, clusters, a.c)
    cc = owners[clusters] == y
    sec["matching"] = time.perf_counter() - t
    # Targets: none at epoch start; the original searched for them at every step (loss timing below).
    rec: dict[str, Any] = {"seconds": sec, "peak_rss_gib": maxrss_gib()}
    rec["matching_is_plurality"] = bool((table[owners, np.arange(len(owners))] == table.max(0)).all())
    rec.update(knn_backend="faiss (batches of 256)", knn_dim=d)

    # Grouped once here, not per step, which favours the reference (the original sliced every step).
    cc_base = {j: np.ascontiguousarray(x[cc & (clusters == j)]) for j in range(len(owners))}
    scale = math.sqrt(d)

    def ref_loss(z: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        i = idx.numpy()
        rows = np.flatnonzero(~cc[i])
        q_all, cls_of = z.detach().numpy(), y[i[rows]]
        got_rows, got_t = [], []
        for cls in np.unique(cls_of):  # per class of the batch's MC samples ...
            r = rows[cls_of == cls]
            q = q_all[r]
            best_d = np.full(len(r), np.inf, dtype=np.float32)
            best_t = np.zeros_like(q)
            for j in np.flatnonzero(owners == cls):  # ... one exact search per cluster the class owns
                base = cc_base[j]
                if len(base) == 0:
                    continue
                index = faiss.IndexFlatL2(d)
                index.add(base)
                _, nn = index.search(q, min(a.k, len(base)))
                t_j = base[nn].mean(axis=1)
                dist = ((q - t_j) ** 2).sum(axis=1)
                better = dist < best_d
                best_d[better], best_t[better] = dist[better], t_j[better]
            has = np.isfinite(best_d)  # a class owning no cluster gives no target (the original)
            got_rows.append(r[has])
            got_t.append(best_t[has])
        r_all = np.concatenate(got_rows) if got_rows else np.zeros(0, dtype=np.int64)
        if r_all.size == 0:
            return z.sum() * 0.0
        diff = z[torch.from_numpy(r_all)] - torch.from_numpy(np.concatenate(got_t))
        return torch.linalg.vector_norm(diff, dim=1).mean() / scale

    rec.update(loss_timings(ref_loss, x, a, a.ref_steps))
    return rec, clusters, owners, cc


def calibrate() -> dict[str, Any]:
    """float32 matmul rate on this machine and thread count: exact k-NN cannot beat N^2 D multiply-adds at it."""
    import torch

    m, kk, n = 4096, 512, 16384
    a, b, out = torch.randn(m, kk), torch.randn(kk, n), torch.empty(m, n)
    best = min(timed(torch.mm, a, b, out=out)[1] for _ in range(4))
    return {"matmul_gflops": 2 * m * kk * n / best / 1e9, "matmul_shape": f"{m}x{kk} @ {kk}x{n}"}


def run_epoch_start(x: np.ndarray, y: np.ndarray, a: argparse.Namespace) -> dict[str, Any]:
    """One timed ``epoch_start`` with LCCConfig's defaults (k from --k): wall time, peak RSS, a digest."""
    import hashlib

    import latentcc
    from latentcc.config import LCCConfig
    from latentcc.lcc import epoch_start

    cfg = LCCConfig(k=a.k, seed=a.seed)
    toy = np.ascontiguousarray(x[: min(len(x), 500), :8])  # lazy imports and first-call setup, untimed
    epoch_start(toy, y[: len(toy)], LCCConfig(k=5, graph_dim=None))
    rss_before = maxrss_gib()
    es, wall = timed(epoch_start, x, y, cfg)
    t = es.targets
    digest = hashlib.sha256()
    for arr in (es.clusters, es.owners, es.cc, t.mc_mask.numpy(), t.slot.numpy(), t.vectors.numpy()):
        digest.update(np.ascontiguousarray(arr).tobytes())
    return {
        "epoch_start_wall_s": wall, "stage_s": es.seconds, "peak_rss_gib": maxrss_gib(),
        "rss_before_gib": rss_before, "digest": digest.hexdigest()[:16], "mc_with_target": t.num_with_target,
        "latentcc_path": str(Path(latentcc.__file__).parent),
    }, es.clusters, es.owners, es.cc  # fmt: skip


def epoch_start_repeats(a: argparse.Namespace, setting: tuple[int, int, int, int]) -> None:
    """--epoch-start R: R fresh workers, then the median, min and max of time and peak RSS."""
    runs = [run_worker("epoch", setting, a) for _ in range(a.epoch_start)]
    ok = [r for r in runs if r.get("status") == "ok"]
    for r in runs:
        print(json.dumps(r), flush=True)
    if not ok:
        sys.exit("no epoch-start run finished")
    for key in ("epoch_start_wall_s", "peak_rss_gib"):
        v = np.array([r[key] for r in ok])
        print(f"{key}: median {np.median(v):.3f}, min {v.min():.3f}, max {v.max():.3f} (n={len(v)})")
    print(f"digests: {sorted({r['digest'] for r in ok})}; AMI {sorted({round(r['ami'], 6) for r in ok})}; "
          f"MC {sorted({round(r['mc_fraction'], 6) for r in ok})}; latentcc from {ok[0]['latentcc_path']}")  # fmt: skip


def worker(a: argparse.Namespace) -> dict[str, Any]:
    rss_start = maxrss_gib()
    import faiss
    import torch

    torch.set_num_threads(a.threads)
    faiss.omp_set_num_threads(a.threads)  # faiss's own OpenMP pool; otherwise it takes every core
    if a.stack == "calibrate":
        return calibrate()
    from sklearn.metrics import adjusted_mutual_info_score

    (x, y, sep), data_s = timed(mixture, a.n, a.d, a.c, a.seed, a.sep)
    out: dict[str, Any] = {
        "sep": sep,
        "data_s": data_s,
        "rss_start_gib": rss_start,
        "rss_data_gib": maxrss_gib(),
    }
    if a.stack == "reference":
        rec, clusters, owners, cc = run_reference(x, y, a)
    elif a.stack == "epoch":
        rec, clusters, owners, cc = run_epoch_start(x, y, a)
    else:
        rec, clusters, owners, cc = run_ours(x, y, a, reduce=a.stack == "ours")
    out.update(rec)
    out["ami"] = float(adjusted_mutual_info_score(y, clusters))
    out["clusters"] = int(clusters.max()) + 1
    out["mc_fraction"] = float(1.0 - cc.mean())
    out["orphan_classes"] = int(a.c - np.unique(owners[owners >= 0]).size)
    return out


# --------------------------------------------------------------------------- orchestration (parent side)


def run_worker(stack: str, setting: tuple[int, int, int, int], a: argparse.Namespace) -> dict[str, Any]:
    n, d, c, k = setting
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--stack", stack]
    cmd += ["--n", str(n), "--d", str(d), "--c", str(c), "--k", str(k), "--seed", str(a.seed)]
    cmd += ["--threads", str(a.threads), "--batch", str(a.batch), "--loss-threads", str(a.loss_threads)]
    cmd += ["--steps", str(a.steps), "--ref-steps", str(a.ref_steps)]
    if a.knn_backend is not None:
        cmd += ["--knn-backend", a.knn_backend]
    if a.sep is not None:
        cmd += ["--sep", repr(a.sep)]
    env = {**os.environ, **dict.fromkeys(THREAD_VARS, str(a.threads))}  # numpy/scipy BLAS pools too
    print(f"  running {stack} ...", file=sys.stderr, flush=True)
    t = time.perf_counter()
    try:  # stderr is inherited: progress and tracebacks show up live
        p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=a.timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "wall_s": a.timeout}
    wall = time.perf_counter() - t
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:  # e.g. -9: killed, most likely out of memory
        return {"status": "error", "returncode": p.returncode, "wall_s": wall}
    rec = json.loads(lines[-1])
    rec.update(status="ok", wall_s=wall)
    if "seconds" in rec:
        rec["epoch_start_s"] = sum(v for v in rec["seconds"].values() if v is not None)
        steps = math.ceil(n / min(a.batch, n))  # one epoch of steps: the reference's targets live here
        rec["epoch_total_s"] = rec["epoch_start_s"] + steps * rec["loss_fwd_bwd_ms"] / 1e3
    return rec


def knn_limit_pct(rec: dict, n: int, gflops: float) -> float | None:
    """Share of the exact-k-NN floor: 2 N^2 D flops at the measured matmul rate, over the measured k-NN time."""
    if rec.get("status") != "ok" or not rec["seconds"]["knn"]:
        return None
    return 100 * (2 * n * n * rec["knn_dim"] / (gflops * 1e9)) / rec["seconds"]["knn"]


def ratio(num: dict | None, den: dict | None, key: str) -> float | None:
    """num[key] / den[key] for two finished worker records (or two stage dicts), None if either is missing."""
    if not num or not den or num.get("status", "ok") != "ok" or den.get("status", "ok") != "ok":
        return None
    a, b = num.get(key), den.get(key)
    return a / b if a and b else None


def check_value(kind: str, rec: dict, ref: dict | None) -> float | None:
    if kind in ("epoch_x", "loss_x"):
        return ratio(ref, rec, "epoch_start_s" if kind == "epoch_x" else "loss_fwd_bwd_ms")
    if kind == "rss_frac":
        return ratio(rec, ref, "peak_rss_gib")
    if kind == "ami":
        ok = ref is not None and ref.get("status") == "ok" and rec.get("status") == "ok"
        return rec["ami"] - ref["ami"] if ok else None
    return rec.get(
        {"loss_ms": "loss_fwd_bwd_ms", "epoch_s": "epoch_start_s", "rss_gib": "peak_rss_gib"}[kind]
    )


def check_setting(row: dict) -> list[dict[str, Any]]:
    """PASS/MISS for the issue's targets that apply to this setting."""
    key = (row["n"], row["d"], row["c"], row["k"])
    ref = row["stacks"].get("reference")
    out = []
    for stack, kind, bound in TARGETS.get(key, []) + EVERY_SETTING:
        if stack not in row["stacks"]:
            continue
        val = check_value(kind, row["stacks"][stack], ref)
        at_least, text = CHECKS[kind]
        status = (
            "n/a" if val is None else ("PASS" if (val >= bound if at_least else val <= bound) else "MISS")
        )
        out.append(
            {
                "setting": list(key),
                "stack": stack,
                "target": text.format(bound),
                "value": val,
                "status": status,
            }
        )
    return out


# --------------------------------------------------------------------------- printing


def fmt(v: Any, spec: str = ".3g", unit: str = "") -> str:
    return "-" if v is None else f"{v:{spec}}{unit}"


def table(row: dict, gflops: float) -> str:
    """Stacks side by side, one line per stage or figure, then reference / stack ratios."""
    st, n = row["stacks"], row["n"]
    names = list(st)
    ref = st.get("reference")
    others = [s for s in names if s != "reference"] if ref else []
    lines = [["", *names, *(f"ref/{s}" for s in others)]]

    def add(label: str, cell: Any, ratio_of: Any = None) -> None:
        vals = [cell(st[s]) if st[s].get("status") == "ok" else st[s]["status"].upper() for s in names]
        rats = [fmt(ratio_of(st[s]) if ratio_of else None, ".1f", "x") if ratio_of else "" for s in others]
        lines.append([label, *vals, *rats])

    def stage_ratio(stage: str) -> Any:
        ref_sec = ref.get("seconds") if ref else None
        return lambda r: ratio(ref_sec, r.get("seconds"), stage)

    def stage_cell(stage: str) -> Any:
        per_step = stage == "targets"  # the reference computes its targets inside every step
        return lambda r: (
            "per step" if per_step and "matching_is_plurality" in r else fmt(r["seconds"][stage], ".3g", " s")
        )

    for stage in STAGES:
        add(STAGE_LABELS[stage], stage_cell(stage), stage_ratio(stage))
    key_ratio = lambda key: lambda r: ratio(ref, r, key)  # noqa: E731
    add("epoch start (sum)", lambda r: fmt(r["epoch_start_s"], ".3g", " s"), key_ratio("epoch_start_s"))
    add("loss fwd (per step)", lambda r: fmt(r["loss_fwd_ms"], ".3g", " ms"), key_ratio("loss_fwd_ms"))
    add("loss fwd+bwd", lambda r: fmt(r["loss_fwd_bwd_ms"], ".3g", " ms"), key_ratio("loss_fwd_bwd_ms"))
    add("epoch start + N/B steps", lambda r: fmt(r["epoch_total_s"], ".3g", " s"), key_ratio("epoch_total_s"))
    add("AMI vs mixture", lambda r: fmt(r["ami"], ".4f"))
    add("clusters / orphan classes", lambda r: f"{r['clusters']} / {r['orphan_classes']}")
    in_range = lambda f: MC_RANGE[0] <= f <= MC_RANGE[1]  # noqa: E731
    add(
        "MC fraction",
        lambda r: fmt(100 * r["mc_fraction"], ".1f", " %") + ("" if in_range(r["mc_fraction"]) else " *"),
    )
    add("peak RSS", lambda r: fmt(r["peak_rss_gib"], ".2f", " GiB"))
    add("k-NN backend, D", lambda r: f"{r['knn_backend'].split()[0]}, {r['knn_dim']}")
    add("k-NN / exact floor", lambda r: fmt(knn_limit_pct(r, n, gflops), ".0f", " %"))
    if any("knn_recall_sample" in st[s] for s in names):
        add("k-NN recall (1000 rows)", lambda r: fmt(r.get("knn_recall_sample"), ".4f"))
    widths = [max(len(x[i]) for x in lines) for i in range(len(lines[0]))]
    out = [
        " | ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(x, widths, strict=True))
        )
        for x in lines
    ]
    out.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(out)


def markdown(results: dict) -> str:
    """One row per (setting, stack), then the machine and the target checks: ready for docs/benchmarks.md."""
    gflops = results["calibration"].get("matmul_gflops", float("nan"))
    cols = ["N, d, C, k", "stack", *(STAGE_LABELS[x] for x in STAGES), "epoch start", "ref / this"]
    cols += ["loss fwd+bwd", "ref / this", "AMI", "clusters", "MC", "peak RSS", "k-NN / exact floor"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in results["settings"]:
        key = f"{row['n']:,}, {row['d']}, {row['c']}, {row['k']}"
        ref = row["stacks"].get("reference")
        for s, r in row["stacks"].items():
            if r.get("status") != "ok":
                lines.append("| " + " | ".join([key, s, r["status"], *[""] * (len(cols) - 3)]) + " |")
                continue
            stages = [
                "per step" if x == "targets" and s == "reference" else fmt(r["seconds"][x], ".3g", " s")
                for x in STAGES
            ]
            vs = [
                "" if s == "reference" else fmt(ratio(ref, r, x), ".1f", "x")
                for x in ("epoch_start_s", "loss_fwd_bwd_ms")
            ]
            cells = [fmt(r["epoch_start_s"], ".3g", " s"), vs[0]]
            cells += [fmt(r["loss_fwd_bwd_ms"], ".3g", " ms"), vs[1], f"{r['ami']:.3f}"]
            cells += [str(r["clusters"]), f"{100 * r['mc_fraction']:.1f} %", f"{r['peak_rss_gib']:.2f} GiB"]
            cells += [fmt(knn_limit_pct(r, row["n"], gflops), ".0f", " %")]
            lines.append("| " + " | ".join([key, s, *stages, *cells]) + " |")
    prov, args = results["provenance"], results["args"]
    lines += [
        "",
        f"{prov['cpu']}, {args['threads']} threads ({args['loss_threads']} for the per-step loss), float32 matmul "
        f"{gflops:.0f} GFLOP/s; latentcc {prov['commit']}; `python benchmarks/lcc_step.py {' '.join(results['argv'])}`",
        "",
    ]
    for c in results["checks"]:
        lines.append(
            f"- {c['status']}: {c['stack']} at {tuple(c['setting'])}: {c['target']} (got {fmt(c['value'], '.3g')})"
        )
    return "\n".join(lines)


def provenance() -> dict[str, Any]:
    """Where the numbers come from: commit, CPU, library versions."""
    root = Path(__file__).resolve().parent.parent
    git = lambda *c: subprocess.run(["git", *c], cwd=root, capture_output=True, text=True).stdout.strip()  # noqa: E731
    cpu = platform.processor()
    if Path("/proc/cpuinfo").exists():
        names = [
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    versions: dict[str, str | None] = {}
    for pkg in (
        "latentcc",
        "torch",
        "numpy",
        "scipy",
        "faiss-cpu",
        "igraph",
        "leidenalg",
        "networkx",
        "scikit-learn",
    ):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "commit": git("rev-parse", "--short", "HEAD")
        + ("+dirty" if git("status", "--porcelain", "src") else ""),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = p.add_argument
    add(
        "--grid",
        choices=("quick", "targets", "full"),
        default="quick",
        help="settings to run (default quick)",
    )
    add("--million", action="store_true", help="N=1M, d=128, C=100, k=10; stack ours (approximate k-NN)")
    add("--n", type=int, help="one custom setting: N (--d/--c/--k default to 512/100/50)")
    add("--d", type=int, help="custom setting: latent dimension")
    add("--c", type=int, help="custom setting: classes")
    add("--k", type=int, help="custom setting: neighbours in the graph and the targets")
    add("--stacks", help=f"comma-separated subset of {','.join(STACKS)} (default all; --million: ours)")
    add("--seed", type=int, default=0)
    add(
        "--sep",
        type=float,
        help=f"centre scale (default by number of classes {SEP_BY_C}, else {SEP_SCALE} * (2/d)^(1/4))",
    )
    add("--threads", type=int, default=2, help="torch, faiss and BLAS threads per worker (default 2)")
    add("--knn-backend", help="k-NN backend of stack ours (default LCCConfig's: auto)")
    add("--batch", type=int, default=256, help="per-step loss batch size (default 256)")
    add("--loss-threads", type=int, default=1, help="threads while timing the per-step loss (default 1)")
    add("--steps", type=int, default=300, help="timed calls of latentcc's loss (median; default 300)")
    add("--ref-steps", type=int, default=10, help="timed calls of the reference's loss (median; default 10)")
    add("--timeout", type=float, default=1800, help="seconds per worker, then recorded as a timeout")
    add("--markdown", action="store_true", help="also print a Markdown table for docs/benchmarks.md")
    add("--epoch-start", type=int, metavar="R", help="time epoch_start itself R times (one custom setting)")
    add("--worker", action="store_true", help=argparse.SUPPRESS)
    add("--stack", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    if a.worker:
        print(json.dumps(worker(a)), flush=True)
        return
    if a.n is not None or a.d is not None or a.c is not None or a.k is not None:
        grid, settings = "custom", [(a.n or 10_000, a.d or 512, a.c or 100, a.k or 50)]
        if a.epoch_start:
            epoch_start_repeats(a, settings[0])
            return
    elif a.million:
        grid, settings = "million", GRIDS["million"]
    else:
        grid, settings = a.grid, GRIDS[a.grid]
    default = "ours" if grid == "million" else ",".join(STACKS)
    stacks = [s.strip() for s in (a.stacks or default).split(",")]
    if bad := [s for s in stacks if s not in STACKS]:
        sys.exit(f"--stacks: unknown {bad}; choose from {list(STACKS)}")
    out_path = Path(__file__).resolve().parent / "results" / f"lcc_step-{grid}.json"
    out_path.parent.mkdir(exist_ok=True)
    calib = run_worker("calibrate", (0, 0, 0, 0), a)
    gflops = calib.get("matmul_gflops", float("nan"))
    print(
        f"float32 matmul: {gflops:.0f} GFLOP/s on {a.threads} threads ({calib.get('matmul_shape')})",
        flush=True,
    )
    results: dict[str, Any] = {
        "grid": grid,
        "argv": sys.argv[1:],
        "args": vars(a),
        "provenance": provenance(),
        "calibration": calib,
        "settings": [],
        "checks": [],
    }
    for n, d, c, k in settings:
        print(f"\n== N={n:,} d={d} C={c} k={k} ==", flush=True)
        row = {"n": n, "d": d, "c": c, "k": k, "stacks": {s: run_worker(s, (n, d, c, k), a) for s in stacks}}
        sep = next((r["sep"] for r in row["stacks"].values() if "sep" in r), None)
        print(
            f"sep {fmt(sep, '.4f')}; ratios are reference / stack; * = MC outside {MC_RANGE[0]:.0%}-{MC_RANGE[1]:.0%}"
        )
        print(table(row, gflops), flush=True)
        results["settings"].append(row)
        results["checks"] = [ch for r in results["settings"] for ch in check_setting(r)]
        out_path.write_text(json.dumps(results, indent=1))  # after every setting: a long run keeps its work
    print("\nTargets:")
    for ch in results["checks"]:
        print(
            f"  {ch['status']:4}  {ch['stack']} at {tuple(ch['setting'])}: {ch['target']}: got {fmt(ch['value'], '.3g')}"
        )
    print(f"\nwrote {out_path}")
    if a.markdown:
        print("\n" + markdown(results))


if __name__ == "__main__":
    main()
