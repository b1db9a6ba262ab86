"""Reliability cases of the commands' front door: optional packages checked before any work, install hints
that work from the checkout, strict JSON, and the demo's report."""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch

from latentcc.plumbing.errors import MissingExtraError
from reliability_base import Case

TINY = ["--data", "digits", "--model", "mnist-cnn", "--max-samples", "300", "--epochs", "2", "--no-progress",
        "--no-tensorboard"]  # fmt: skip


def _without(*modules: str) -> Any:
    """``import m`` raises ImportError inside the block, as when the package is not installed."""
    return mock.patch.dict(sys.modules, dict.fromkeys(modules))


def _no_training(*a: Any, **k: Any) -> None:
    raise AssertionError("training started although a needed package is missing")


def _api_without_igraph(tmp: Path) -> str:
    """fit(lcc=...), LatentClusterCorrection and profile(clustering='leiden') from Python, igraph absent."""
    from latentcc import profile
    from latentcc.config import LCCConfig, TrainConfig
    from latentcc.data import load_dataset
    from latentcc.lcc.correction import LatentClusterCorrection
    from latentcc.plumbing.errors import MissingExtraError
    from latentcc.train import fit

    data = load_dataset("digits", max_samples=200)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    lcc = LCCConfig(layers=("1",))
    said = []
    with _without("igraph"):
        for name, call in (
            ("fit", lambda: fit(model, data, config=TrainConfig(epochs=2), out_dir=tmp / "run", lcc=lcc)),
            ("LatentClusterCorrection", lambda: LatentClusterCorrection(lcc)),
            ("profile", lambda: profile(model, data, clustering="leiden", metrics=["clusterability"])),
        ):
            try:
                call()
                said.append(f"{name}: no error")
            except MissingExtraError as e:
                said.append(f"{name}: MissingExtraError naming igraph: {'igraph' in str(e)}")
    return f"works: {'; '.join(said)}; run folder created: {(tmp / 'run').exists()}"


def _demo_without_igraph(tmp: Path) -> None:
    from latentcc.app.demo import run_demo
    from latentcc.config import DataConfig, LCCConfig, ModelConfig, TrainConfig

    with _without("igraph"), mock.patch("latentcc.app.compare.finetune", _no_training):
        run_demo(ModelConfig(), DataConfig(data="digits"), TrainConfig(), LCCConfig(layers=("fc_layers.1",)),
                 out_dir=tmp / "demo")  # fmt: skip


def _cli(tmp: Path, args: list[str], missing: tuple[str, ...]) -> str:
    """Run the CLI with ``missing`` packages absent; say what it did (exit code, folder, message)."""
    from latentcc.app.cli import main

    out, err = tmp / "out", io.StringIO()
    with (
        _without(*missing),
        mock.patch("latentcc.app.finetune.fit", _no_training),
        contextlib.redirect_stderr(err),
    ):
        code = main([*args, "--out", str(out)])
    made = "a folder was created" if out.exists() else "no folder created"
    return f"works: exit {code}, {made}, nothing trained: {err.getvalue().strip()}"


def strict_json(tmp: Path) -> str:
    from latentcc.plumbing.atomic import atomic_write_json

    path = atomic_write_json(
        tmp / "x.json", {"ci95_half": float("nan"), "best": math.inf, "acc": np.float32(0.5)}
    )
    text = path.read_text()
    back = json.loads(text, parse_constant=lambda c: f"non-standard token {c}")
    return f"works: strict JSON {json.dumps(back)} (NaN and inf written as null, numpy scalars as numbers)"


def _require_hint(tmp: Path) -> None:
    from latentcc.plumbing.errors import require

    with _without("leidenalg"):
        require("leidenalg", "graph", purpose="community detection with community='leidenalg'")


def cases() -> list[Case]:
    extra_re = r"Nothing was run and no folder was written\. Install them: \S*python\S* -m pip install -e '\S*\[graph\]'"
    return [
        Case("demo-missing-graph-extra", "run_demo with LCC when igraph (the graph extra) is not installed",
             _demo_without_igraph, MissingExtraError, r"The demo needs optional packages that are not installed: "
             r"'igraph' \(for the LCC clustering \(community='leiden'\); extra 'graph'\)\. " + extra_re),
        Case("finetune-lcc-missing-extras", "latentcc finetune --lcc-layers ... --lcc-community leidenalg without "
             "igraph and leidenalg", lambda t: _cli(t, ["finetune", *TINY, "--lcc-layers", "fc_layers.1",
             "--lcc-community", "leidenalg"], ("igraph", "leidenalg")), None,
             r"works: exit 2, no folder created, nothing trained: .*'igraph' .*'leidenalg' .*" + extra_re),
        Case("probe-leiden-missing-extras", "latentcc probe --clustering leiden without faiss and igraph",
             lambda t: _cli(t, ["probe", "--data", "digits", "--clustering", "leiden"], ("faiss", "igraph")),
             None, r"works: exit 2, no folder created, nothing trained: .*'faiss' \(for the k-NN probe.*'igraph' "
             r"\(for clusterability with clustering='leiden'.*" + extra_re),
        Case("reproduce-all-missing-extra", "latentcc reproduce all without igraph (two reproductions cluster)",
             lambda t: _cli(t, ["reproduce", "all", "--size", "ci"], ("igraph",)), None,
             r"works: exit 2, no folder created, nothing trained: latentcc reproduce: error: latentcc reproduce "
             r"needs .*'igraph'.*" + extra_re),
        Case("api-missing-graph-extra", "fit(lcc=...), LatentClusterCorrection(...) and profile(clustering="
             "'leiden') from Python without igraph", _api_without_igraph, None,
             r"works: fit: MissingExtraError naming igraph: True; LatentClusterCorrection: MissingExtraError naming "
             r"igraph: True; profile: MissingExtraError naming igraph: True; run folder created: False"),
        Case("install-hint-from-checkout", "an optional import fails (latentcc is not on a package registry)",
             _require_hint, MissingExtraError, r"'leidenalg' is needed for community detection with "
             r"community='leidenalg'.*latentcc\[graph\]\)\. Install it: \S*python\S* -m pip install -e '\S*\[graph\]'"),
        Case("json-non-finite", "atomic_write_json of NaN, inf and numpy scalars (results, summaries)",
             strict_json, None, r'works: strict JSON \{"ci95_half": null, "best": null, "acc": 0\.5\}'),
    ]  # fmt: skip
