"""Reliability cases of the probes and their report: same seed same numbers, progress without a terminal,
readable reports for one layer, two classes and 1-wide layers, and whole splits passed as one split."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np

from latentcc.plumbing.errors import LatentccError
from reliability_base import Case


def _two_class(n: int = 80) -> object:
    from latentcc.data import from_arrays

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = np.arange(n) % 2
    x[y == 1] += 1.0
    return from_arrays(x, y, seed=0, val_fraction=0.0, test_fraction=0.25)


def _mlp(width: int = 1) -> object:
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, width))


def _transfer_twice(tmp: Path) -> str:
    """Two identical `latentcc transfer-layers` runs (the new head is random): same numbers?"""
    import torch

    from latentcc.app.cli import main

    rows = []
    for i in range(2):
        torch.manual_seed(100 + i)  # whatever the global RNG holds before the command
        args = [
            "transfer-layers",
            "--model",
            "mnist-cnn",
            "--data",
            "digits",
            "--max-samples-per-split",
            "100",
        ]
        args += ["--layers", "fc_layers.2", "--no-progress", "--out", str(tmp / f"run{i}")]
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(args) == 0
        doc = json.loads((tmp / f"run{i}" / "transfer_layers.json").read_text())
        rows.append({r["metric"]: r["value"] for r in doc["rows"]})
    same = "identical" if rows[0] == rows[1] else "different"
    return f"works: two runs with --seed 0 give {same} numbers (head NC1 {rows[0]['nc1']:.6g} and {rows[1]['nc1']:.6g})"


def _profile_without_terminal(tmp: Path) -> str:
    import latentcc

    err = io.StringIO()  # stderr redirected to a file or a pipe: not a terminal
    with contextlib.redirect_stderr(err):
        latentcc.profile(_mlp(3), _two_class(), layers=["0"], metrics=["nc"])
    return f"works: stderr gets plain progress lines: {err.getvalue().strip().splitlines()[-1]!r}"


def _one_layer_report(tmp: Path) -> str:
    import latentcc
    from latentcc.probes.report import summary_lines, write_probe_report

    p = latentcc.profile(_mlp(1), _two_class(), layers=["2"], gc_examples=8, gc_projections=2, progress=False)
    write_probe_report(p, tmp / "report")  # a 1-wide layer used to break the 2-D view (PCA gave one column)
    return "works: report.html written; summary: " + " ".join(summary_lines(p))


def _splits_as_one_split(tmp: Path) -> object:
    import latentcc

    return latentcc.profile(
        _mlp(3), {"train": _two_class(), "test": _two_class()}, metrics=["nc"], progress=False
    )


def _probe_cli(tmp: Path, args: list[str]) -> str:
    """`latentcc probe --model mnist-cnn --data digits ARGS --out OUT`: exit code, folder made, message."""
    from latentcc.app.cli import main

    out, err = tmp / "out", io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(
            ["probe", "--model", "mnist-cnn", "--data", "digits", "--no-progress", *args, "--out", str(out)]
        )
    made = "a folder was created" if out.exists() else "no folder created"
    return f"works: exit {code}, {made}: {err.getvalue().strip()}"


def _run_folder(tmp: Path) -> None:
    (tmp / "run").mkdir()
    (tmp / "run" / "best.safetensors").write_bytes(b"weights")


def _trained_run(tmp: Path) -> None:
    """A run folder as `latentcc finetune --model mnist-cnn --data digits` leaves it (weights stand-in)."""
    _run_folder(tmp)
    (tmp / "run" / "config.json").write_text(
        json.dumps({"model": {"model": "mnist-cnn"}, "data": {"data": "digits"}})
    )


def _run_without_config(tmp: Path) -> None:
    """A run folder of copied weights only: a safetensors file of some other model, no config.json."""
    import torch
    from safetensors.torch import save_file

    (tmp / "run").mkdir()
    save_file({"encoder.weight": torch.zeros(3, 4)}, str(tmp / "run" / "best.safetensors"))


def _profile(**kw: object) -> object:
    import latentcc

    return latentcc.profile(_mlp(3), _two_class(), layers=["0"], progress=False, **kw)


def cases() -> list[Case]:
    refused = r"works: exit 2, no folder created: latentcc probe: error: "
    return [
        Case("probe-same-seed-new-head", "run `latentcc transfer-layers` twice with the same seed (random new head)",
             _transfer_twice, None, r"works: two runs with --seed 0 give identical numbers"),
        Case("probe-progress-no-terminal", "profile with stderr redirected to a log file (not a terminal)",
             _profile_without_terminal, None, r"works: stderr gets plain progress lines: 'probes: 100% \(1/1 layer "
             r"metrics\), [\d.]+ s elapsed'"),
        Case("probe-report-one-wide-layer", "probe report of one 1-wide layer (a binary logit) with 2 classes",
             _one_layer_report, None, r"works: report.html written; summary: The linear-probe accuracy at layer 2 "
             r"is .*Geometric complexity at layer 2: .*With 2 classes NC2 is flat by construction"),
        Case("profile-splits-in-mapping", "profile(model, {'train': DatasetSplits, ...})", _splits_as_one_split,
             LatentccError, r"'data' parameter of profile must be one dataset or DataLoader per entry of the mapping, "
             r"also its 'train' entry. Got 'DatasetSplits' instead. (Fix: )?Pass the DatasetSplits itself as data"),
        # --- settings that would do nothing, and a k-NN probe that would only count the majority class
        Case("probe-knn-k-above-train", "latentcc probe --data digits --max-samples-per-split 150 --metrics knn_probe "
             "--knn-k 500", lambda t: _probe_cli(t, ["--max-samples-per-split", "150", "--metrics", "knn_probe", "--knn-k",
                                                     "500"]),
             None, refused + r"The 'knn_k' parameter of latentcc probe must be an int below the number of training "
             r"samples probed \(150\)\. Got 500 instead\..*share of the majority class\. Fix: a smaller knn_k "
             r"\(--knn-k"),
        Case("profile-knn-k-above-train", "profile(metrics=['knn_probe'], knn_k=60) with 60 training samples",
             lambda t: _profile(metrics=["knn_probe"], knn_k=60), LatentccError,
             r"'knn_k' parameter of profile must be an int below the number of training samples probed \(60\)"),
        Case("probe-knn-k-without-knn-probe", "latentcc probe --metrics nc --knn-k 3",
             lambda t: _probe_cli(t, ["--metrics", "nc", "--knn-k", "3"]), None,
             refused + r"The 'metrics' parameter of latentcc probe must be metric families that read the settings "
             r"given \(knn_k=3 \(--knn-k\) is read by knn_probe\)\. Got \['nc'\] instead.*Fix: add the family"),
        Case("probe-gc-settings-without-gc", "profile(metrics=['nc'], gc_examples=10, gc_estimator='exact')",
             lambda t: _profile(metrics=["nc"], gc_examples=10, gc_estimator="exact"), LatentccError,
             r"'metrics' parameter of profile must be metric families that read the settings given \(gc_estimator="
             r"'exact' \(--gc-estimator\) is read by gc; gc_examples=10 \(--gc-examples\) is read by gc\)"),
        Case("probe-groups-without-clusterability", "profile(groups=[...], metrics=['nc'])",
             lambda t: _profile(metrics=["nc"], groups=["a", "b"]), LatentccError,
             r"settings given \(groups \(--groups\) is read by clusterability\)\. Got \['nc'\]"),
        Case("probe-overcluster-leiden", "latentcc probe --overcluster 3 --clustering leiden",
             lambda t: _probe_cli(t, ["--overcluster", "3", "--clustering", "leiden"]), None,
             refused + r"The 'overcluster' parameter of latentcc probe must be 1 with clustering='leiden'.*Leiden "
             r"takes no cluster count.*Got 3 instead\. Fix: clustering='ward' or 'kmeans'"),
        Case("probe-gc-projections-exact", "profile(metrics=['gc'], gc_estimator='exact', gc_projections=4)",
             lambda t: _profile(metrics=["gc"], gc_estimator="exact", gc_projections=4), LatentccError,
             r"'gc_projections' parameter of profile must be left at its default \(8\) with gc_estimator='exact'"),
        Case("probe-checkpoint-no-pretrained", "latentcc probe --checkpoint RUN --no-pretrained",
             lambda t: _probe_cli(t, ["--checkpoint", str(t / "run"), "--no-pretrained"]), None,
             refused + r"The 'pretrained' parameter of latentcc probe must be left unset with --checkpoint: the run's "
             r"trained weights replace every weight.*Got '--no-pretrained' instead.*Fix: drop --no-pretrained",
             _run_folder),
        Case("probe-checkpoint-other-model", "latentcc probe --checkpoint RUN --model efficientnet-lite0 (RUN trained "
             "with mnist-cnn)", lambda t: _probe_cli(t, ["--checkpoint", str(t / "run"), "--model",
                                                        "efficientnet-lite0"]), None,
             refused + r"The 'model' parameter of latentcc probe must be the model the run was trained with when "
             r"--checkpoint is given \('mnist-cnn', from .*config\.json\)\. Got 'efficientnet-lite0' instead\. The "
             r"run's weights fit only that model's architecture\. Fix: drop --model \(the run's model is used\), "
             r"pass --model mnist-cnn", _trained_run),
        Case("probe-checkpoint-other-data", "latentcc probe --checkpoint RUN --data cifar10 (RUN trained on digits)",
             lambda t: _probe_cli(t, ["--checkpoint", str(t / "run"), "--data", "cifar10"]), None,
             refused + r"The 'data' parameter of latentcc probe must be the data the run was trained with .*"
             r"\('digits', .*Got 'cifar10' instead\..*Fix: drop --data \(the run's data is used\), pass --data "
             r"digits", _trained_run),
        Case("probe-checkpoint-no-config-misfit", "latentcc probe --checkpoint RUN (weights of another model, no "
             "config.json)", lambda t: _probe_cli(t, ["--checkpoint", str(t / "run"), "--max-samples-per-split", "50"]), None,
             r"works: exit 2, no folder created: latentcc probe: error: .*best\.safetensors does not fit this model "
             r"\(ImageClassifier: \d+ weights of the model missing from the file \(net\.[^;]* and \d+ more\); 1 "
             r"weight in the file not in the model \(encoder\.weight\)\)\..*use the same --model and --data as "
             r"the run that wrote it.*The model here is 'mnist-cnn' built for 'digits'; .*run has no config\.json "
             r"naming the run's own", _run_without_config),
    ]  # fmt: skip
