"""latentcc.profile: one latent pass per split, metrics equal to the metric functions, report files."""

import csv
import json
import math
import re

import numpy as np
import pytest
import torch
from torch import nn

import latentcc
from latentcc.app.probe_args import load_groups
from latentcc.metrics import clusterability, knn_probe, linear_probe, neural_collapse
from latentcc.plumbing.errors import LatentccError
from latentcc.probes.profile import Profile
from latentcc.probes.report import plot_layer_curves, short_names, write_probe_report
from latentcc.probes.summary import summarize


class Named(nn.Module):
    """A tiny named MLP on 8x8 digits: lin0 -> act0 -> drop -> lin1 -> act1 -> head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.flat = nn.Flatten()
        self.lin0 = nn.Linear(64, 32)
        self.act0 = nn.ReLU()
        self.drop = nn.Dropout(0.5)
        self.lin1 = nn.Linear(32, 16)
        self.act1 = nn.Tanh()
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act1(self.lin1(self.drop(self.act0(self.lin0(self.flat(x)))))))


@pytest.fixture(scope="module")
def small(digits_splits):
    from latentcc.data.base import stratified_indices

    tr, te = digits_splits.train, digits_splits.test
    return {
        "train": tr.subset(stratified_indices(tr.targets, 400, seed=0)),
        "test": te.subset(stratified_indices(te.targets, 200, seed=0)),
    }


def _forward_counter(model: nn.Module) -> list[int]:
    calls = [0]
    model.register_forward_pre_hook(lambda m, a: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_profile_equals_metric_functions_and_uses_one_pass_per_split(small):
    model = Named()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    calls = _forward_counter(model)
    p = latentcc.profile(
        model,
        small,
        layers=["lin0", "act1"],
        metrics=["nc", "clusterability", "linear_probe", "knn_probe"],
        batch_size=100,
        progress=False,
    )
    assert calls[0] == 4 + 2  # 400 train + 200 test samples, batches of 100: one latent pass per split
    assert model.training  # mode restored
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # weights untouched
    assert p.layers == ["lin0", "act1"] and p.widths == {"lin0": 32, "act1": 16}

    lat = {
        s: latentcc.collect_latents(model, torch.utils.data.DataLoader(d, batch_size=64), p.layers)
        for s, d in small.items()
    }
    tr, te = lat["train"], lat["test"]
    for layer in p.layers:
        nc = neural_collapse(tr[layer], tr.labels)
        for key in ("nc1", "cdnv", "nc2_etf", "nc1_trace_ratio"):
            assert p.value(layer, key) == pytest.approx(nc[key], rel=1e-5)
        cl = clusterability(tr[layer], tr.labels, clustering="ward", seed=0)
        assert p.value(layer, "ami") == pytest.approx(cl["ami"], rel=1e-6)
        assert p.value(layer, "purity") == pytest.approx(cl["purity"], rel=1e-6)
        acc = linear_probe(tr[layer], tr.labels, te[layer], te.labels, seed=0)
        assert p.value(layer, "linear_probe_acc", "test") == pytest.approx(acc, abs=1e-9)
        knn = knn_probe(tr[layer], tr.labels, te[layer], te.labels, k=20)
        assert p.value(layer, "knn_probe_acc", "test") == pytest.approx(knn, abs=1e-9)
    # tidy: one row per (layer, metric), 8 NC + 4 clustering + 2 probe metrics
    assert len(p.rows) == 2 * (8 + 4 + 2)
    assert set(p.timings) >= {"latents:train", "latents:test", "nc", "clusterability", "views"}


def test_profile_all_layers_skips_pass_throughs_and_gc_matches_function(small):
    model = Named()
    p = latentcc.profile(model, small, metrics=["gc"], gc_examples=32, gc_projections=4, progress=False)
    assert p.layers == ["lin0", "act0", "lin1", "act1", "head"]  # Flatten and Dropout are not layers
    from latentcc.metrics import geometric_complexity, layer_fn

    x = torch.stack([small["train"][int(i)][0] for i in range(len(small["train"]))])
    # lin0 is linear in the input: GC = ||W0||_F^2 exactly, whatever the examples
    w0 = model.lin0.weight.detach().double()
    model.eval()  # GC is a function of the input: dropout off (profile does this itself)
    exact = geometric_complexity(layer_fn(model, "lin0"), x[:32], estimator="exact").mean
    assert exact == pytest.approx(float((w0**2).sum()), rel=1e-4)
    assert abs(p.value("lin0", "gc") - exact) <= 4 * p.value("lin0", "gc_stderr") + 1e-6


def test_profile_filters_layers_without_batch_outputs():
    class PosEmb(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pos = nn.Embedding(4, 3)
            self.lin = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            p = self.pos(torch.arange(3)[None])  # (1, 3, 3): not per sample
            return self.lin(x + p.mean(1))

    from latentcc.data import from_arrays

    rng = np.random.default_rng(0)
    data = from_arrays(rng.normal(size=(60, 3)).astype(np.float32), np.arange(60) % 2, seed=0)
    p = latentcc.profile(PosEmb(), data, metrics=["nc"], progress=False)
    assert p.layers == ["lin"]
    with pytest.raises(LatentccError, match="first dimension is not the batch"):
        latentcc.profile(PosEmb(), data, layers=["pos"], metrics=["nc"], progress=False)


def test_profile_groups_and_bad_input(small):
    model = Named()
    classes = small["train"].classes
    groups = {c: ("low" if i < 5 else "high") for i, c in enumerate(classes)}
    p = latentcc.profile(
        model, small, layers=["act1"], metrics=["clusterability"], groups=groups, progress=False
    )
    lat = latentcc.collect_latents(
        model, torch.utils.data.DataLoader(small["train"], batch_size=64), ["act1"]
    )
    want = clusterability(lat["act1"], lat.labels, groups=(lat.labels >= 5).astype(int), seed=0)
    assert p.value("act1", "ami") == pytest.approx(want["ami"], rel=1e-6)
    assert p.params["groups"] is True

    with pytest.raises(LatentccError, match="'groups'"):
        latentcc.profile(model, small, layers=["act1"], groups={"0": "a"}, progress=False)
    with pytest.raises(LatentccError, match="lin9"):
        latentcc.profile(model, small, layers=["lin9"], progress=False)
    with pytest.raises(LatentccError, match="Unknown argument"):
        latentcc.profile(model, small, overclustre=2)
    with pytest.raises(LatentccError, match="'metrics'"):
        latentcc.profile(model, small, metrics=["nc9"])
    with pytest.raises(LatentccError, match="'data'"):
        latentcc.profile(model, {"test": small["test"]})
    # no test split: the probes are skipped, with a note
    q = latentcc.profile(
        model, small["train"], layers=["act1"], metrics=["nc", "linear_probe"], progress=False
    )
    assert "linear_probe_acc" not in q.metrics() and any("held-out" in n for n in q.notes)


def test_undefined_metric_is_nan_with_a_note(small):
    class Dead(Named):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = super().forward(x)
            return self.zero(z)

    model = Dead()
    model.zero = nn.Linear(10, 3)
    with torch.no_grad():
        model.zero.weight.zero_()
        model.zero.bias.zero_()
    p = latentcc.profile(model, small, layers=["zero", "head"], metrics=["nc"], progress=False)
    assert math.isnan(p.value("zero", "nc1")) and math.isfinite(p.value("head", "nc1"))
    assert any("nc at zero" in n for n in p.notes)


def _synthetic_profile(nc1, acc):
    layers = [f"net.block.{i}" for i in range(len(nc1))]
    rows = []
    for i, layer in enumerate(layers):
        rows.append(dict(split="train", layer=layer, layer_index=i, width=4, metric="nc1", value=nc1[i]))
        rows.append(
            dict(split="test", layer=layer, layer_index=i, width=4, metric="linear_probe_acc", value=acc[i])
        )
    return Profile(rows, {}, layers, dict.fromkeys(layers, 4), [str(c) for c in range(10)])


def test_summary_separation_layer_and_correlations_equal_scipy():
    from scipy import stats

    nc1 = [9.0, 7.0, 3.0, 2.5, 2.0, 2.2]
    acc = [0.3, 0.5, 0.85, 0.9, 0.95, 0.93]
    s = summarize(_synthetic_profile(nc1, acc))
    thr = 0.1 + 0.9 * (0.95 - 0.1)
    assert s["separation"]["threshold"] == pytest.approx(thr)
    assert s["separation"]["layer"] == "net.block.3"  # first layer with acc >= 0.865
    assert s["separation"]["stays_above"] is True
    drop = summarize(_synthetic_profile(nc1, [0.3, 0.9, 0.5, 0.6, 0.95, 0.7]))["separation"]
    assert drop["layer"] == "net.block.1" and drop["stays_above"] is False
    c = s["nc1_vs_linear_probe"]
    assert c["spearman_rho"] == pytest.approx(stats.spearmanr(nc1, acc)[0])
    assert c["pearson_r"] == pytest.approx(stats.pearsonr(nc1, acc)[0])
    assert short_names(["net.a.0", "net.a.1", "net.b"]) == ["a.0", "a.1", "b"]


def test_report_files(small, tmp_path):
    p = latentcc.profile(
        Named(), small, layers=["lin0", "act1", "head"], gc_examples=16, gc_projections=2, progress=False
    )
    html = write_probe_report(p, tmp_path)
    text = html.read_text()
    assert text.count("data:image/png;base64,") == 3  # curves, projections, contingency
    assert "Classes separate from layer" in text and "Spearman rho" in text
    for name in ("layer_curves.png", "projections.png", "contingency.png"):
        assert (tmp_path / "figures" / name).stat().st_size > 5000
    with open(tmp_path / "profile.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(p.rows)
    assert float(rows[0]["value"]) == pytest.approx(p.rows[0]["value"])
    doc = json.loads((tmp_path / "profile.json").read_text())
    assert doc["layers"] == p.layers and doc["params"]["metrics"] == list(p.params["metrics"])
    assert "nc1_vs_linear_probe" in doc["summary"]


def test_load_groups(tmp_path):
    f = tmp_path / "g.json"
    f.write_text(json.dumps({"mammal": ["cat", "dog"], "bird": ["owl"]}))
    assert load_groups(f) == {"cat": "mammal", "dog": "mammal", "owl": "bird"}
    f.write_text(json.dumps({"cat": "mammal", "owl": "bird"}))
    assert load_groups(f) == {"cat": "mammal", "owl": "bird"}
    f.write_text(json.dumps({"a": ["cat"], "b": ["cat"]}))
    with pytest.raises(LatentccError, match="two groups"):
        load_groups(f)
    f.write_text("{not json")
    with pytest.raises(LatentccError, match="not valid JSON"):
        load_groups(f)


def test_cli_probe_writes_report(tmp_path, capsys):
    from latentcc.app.cli import main

    out = tmp_path / "probe"
    groups = tmp_path / "groups.json"
    groups.write_text(json.dumps({"small": ["0", "1", "2", "3", "4"], "big": ["5", "6", "7", "8", "9"]}))
    argv = [
        "probe",
        "--model",
        "mnist-cnn",
        "--data",
        "digits",
        "--max-samples-per-split",
        "300",
        "--no-progress",
    ]
    argv += ["--layers", "conv_layers.2,fc_layers.1", "--gc-examples", "16", "--out", str(out)]
    assert main([*argv, "--groups", str(groups)]) == 0
    printed = capsys.readouterr().out
    assert "report:" in printed and "Classes separate from layer" in printed
    doc = json.loads((out / "profile.json").read_text())
    assert doc["params"]["model"] == "mnist-cnn" and doc["params"]["groups"] is True
    assert doc["layers"] == ["net.conv_layers.2", "net.fc_layers.1"]
    assert {r["metric"] for r in doc["rows"]} >= {"nc1", "ami", "linear_probe_acc", "knn_probe_acc", "gc"}
    assert (out / "report.html").is_file()
    assert main(["probe", "--checkpoint", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "best.safetensors" in capsys.readouterr().err


def test_short_names_keep_a_name_never_a_bare_index():
    # the docs' own command: --layers fc_layers.0,fc_layers.1 (and any single layer)
    assert short_names(["net.fc_layers.0", "net.fc_layers.1"]) == ["fc_layers.0", "fc_layers.1"]
    assert short_names(["net.fc_layers.1"]) == ["fc_layers.1"]
    assert short_names(["net.conv_layers.2", "net.fc_layers.1"]) == ["conv_layers.2", "fc_layers.1"]
    # MiniLM: blocks keep their index and container; unique names stay short
    lm = ["hf.bert.encoder.layer.0", "hf.bert.encoder.layer.1", "hf.bert.pooler.dense", "hf.classifier"]
    assert short_names(lm) == ["layer.0", "layer.1", "dense", "classifier"]
    assert short_names(["hf.bert.encoder.layer.3.output"]) == ["layer.3.output"]
    assert short_names(["a.x", "b.x", "x"]) == ["a.x", "b.x", "x"]  # unique, and one-to-one
    assert short_names(["lin0", "act1"]) == ["lin0", "act1"]


def _figures(monkeypatch):
    """Capture the matplotlib figures the report would save (to read their titles and ticks)."""
    from latentcc.probes import report as probe_report

    figs = []
    monkeypatch.setattr(probe_report, "save_png", lambda fig, path: figs.append(fig) or path)
    return figs


def _texts(fig):
    import matplotlib.pyplot as plt

    out = {
        "titles": [ax.get_title() for ax in fig.axes],
        "ticks": [[t.get_text() for t in ax.get_xticklabels()] for ax in fig.axes if ax.get_xticks().size],
        "xlims": [ax.get_xlim() for ax in fig.axes if ax.get_xticks().size],
    }
    plt.close(fig)
    return out


def _two_class_data(n=120):
    from latentcc.data import from_arrays

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = np.arange(n) % 2
    x[y == 1] += 1.5
    return from_arrays(x, y, seed=0, val_fraction=0.0, test_fraction=0.25)


class Tabular(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(6, 8), nn.ReLU())
        self.fc_layers = nn.ModuleList([nn.Linear(8, 5), nn.Linear(5, 2)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_layers[1](self.fc_layers[0](self.body(x)))


def test_report_few_layers_two_classes(monkeypatch, tmp_path):
    from latentcc.probes import report as probe_report
    from latentcc.probes.summary import NC2_TWO_CLASSES, summary_lines

    data = _two_class_data()
    one = latentcc.profile(
        Tabular(), data, layers=["fc_layers.0"], gc_examples=16, gc_projections=2, progress=False
    )
    lines = summary_lines(one)
    assert "Geometric complexity at layer fc_layers.0: " in " ".join(lines)
    assert not any("ranges from" in s or "Classes separate from" in s for s in lines)
    assert any(s.startswith("The linear-probe accuracy at layer fc_layers.0 is ") for s in lines)
    assert NC2_TWO_CLASSES in lines  # 2 classes: NC2 flat by construction, and said so

    figs = _figures(monkeypatch)
    probe_report.plot_layer_curves(one, tmp_path / "c.png")
    probe_report.plot_views(one, tmp_path / "v.png")
    curves, views = (_texts(f) for f in figs)
    assert all(t == ["fc_layers.0"] for t in curves["ticks"])  # a name, not "0"
    assert all(lo < -0.4 and hi > 0.4 for lo, hi in curves["xlims"])  # one category, not a stretched axis
    assert "Simplex ETF distance (NC2): flat with 2 classes" in curves["titles"]
    assert views["titles"][0] == "fc_layers.0: by class"
    assert views["titles"][1] == "fc_layers.0: by ward cluster (ids arbitrary)"

    two = latentcc.profile(
        Tabular(),
        data,
        layers=["fc_layers.0", "fc_layers.1"],
        metrics=["nc", "gc"],
        gc_examples=16,
        progress=False,
    )
    figs.clear()
    probe_report.plot_layer_curves(two, tmp_path / "c.png")
    assert all(t == ["fc_layers.0", "fc_layers.1"] for t in _texts(figs[0])["ticks"])
    gc_line = [s for s in summary_lines(two) if s.startswith("Geometric complexity")]
    assert (
        gc_line
        and "ranges from" in gc_line[0]
        and "fc_layers.0" in gc_line[0]
        and "fc_layers.1" in gc_line[0]
    )


def test_summary_never_states_a_degenerate_range():
    from latentcc.probes.summary import summary_lines

    p = _synthetic_profile([2.0, 2.0], [0.1, 0.1])  # 10 classes: accuracy at chance everywhere
    for layer in p.layers:
        p.rows.append(dict(split="train", layer=layer, layer_index=0, width=4, metric="gc", value=5.0))
    lines = summary_lines(p)
    assert "Geometric complexity is 5 at each of the 2 layers." in lines
    assert any(s.startswith("No layer separates the classes") for s in lines)
    assert not any("ranges from" in s for s in lines)


def test_report_html_table_scrolls_and_clusters_have_their_own_colours(small, tmp_path):
    from latentcc.report.figure import palette

    p = latentcc.profile(
        Named(), small, layers=["lin0", "act1"], metrics=["nc", "clusterability"], progress=False
    )
    text = write_probe_report(p, tmp_path).read_text()
    assert ".scroll{max-width:100%;overflow-x:auto}" in text
    assert text.count("<div class='scroll'><table") == 3  # per-layer values, parameters, timings
    assert "Cluster ids and their colours are arbitrary" in text
    assert not set(palette(10, "class")) & set(palette(10, "cluster"))
    assert len(set(palette(30, "class"))) == 30  # no repeated colours past 20


@pytest.mark.parametrize("command", ["probe", "transfer-layers"])
def test_cli_same_seed_same_numbers(command, tmp_path, capsys):
    """The new head is random: it is seeded with --seed before the model is built."""
    from latentcc.app.cli import main

    def run(seed: int, name: str) -> dict:
        argv = [
            command,
            "--model",
            "mnist-cnn",
            "--data",
            "digits",
            "--max-samples-per-split",
            "100",
            "--no-progress",
        ]
        argv += ["--layers", "fc_layers.1,fc_layers.2", "--seed", str(seed), "--out", str(tmp_path / name)]
        if command == "probe":
            argv += ["--metrics", "nc,linear_probe", "--view-points", "20"]
        torch.manual_seed(1234 + len(name))  # whatever the global RNG holds before the command
        assert main(argv) == 0
        capsys.readouterr()
        doc = json.loads(
            (tmp_path / name / f"{'profile' if command == 'probe' else 'transfer_layers'}.json").read_text()
        )
        return {(r["layer"], r["metric"]): r["value"] for r in doc["rows"]}

    a, b, c = run(0, "a"), run(0, "bb"), run(1, "ccc")
    assert a == b  # identical numbers, every layer and metric
    head = ("net.fc_layers.2", "nc1")
    assert c[head] != a[head]  # another seed: another head (and another stratified subset)


def test_profile_of_a_float64_model_equals_its_float32_twin():
    """Float inputs take the model's dtype in every pass of profile (the layer scan included)."""
    from latentcc import profile
    from latentcc.data import load_dataset

    data = load_dataset("digits", max_samples=300)
    torch.manual_seed(0)
    m = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10)
    )
    p32 = profile(m, data, metrics=["nc"], progress=False)
    p64 = profile(m.double(), data, metrics=["nc"], progress=False)
    for layer in ("1", "3"):
        assert p64.value(layer, "nc1") == pytest.approx(p32.value(layer, "nc1"), rel=1e-4)


# ----------------------------------------------------------------------------- settings that would do nothing


def test_knn_k_at_least_the_training_samples_is_refused_before_any_pass(small):
    from latentcc.config import ProbeConfig
    from latentcc.probes.checks import check_knn_k

    model = Named()
    calls = _forward_counter(model)
    n = len(small["train"])  # 400
    with pytest.raises(
        LatentccError,
        match=rf"'knn_k' parameter of profile must be an int below the number of "
        rf"training samples probed \({n}\)\. Got {n} instead.*majority class.*--knn-k",
    ):
        latentcc.profile(model, small, layers=["act1"], metrics=["knn_probe"], knn_k=n, progress=False)
    # max_samples_per_split is what is probed: 100 training samples
    with pytest.raises(LatentccError, match=r"samples probed \(100\)\. Got 150"):
        latentcc.profile(
            model, small, metrics=["knn_probe"], knn_k=150, max_samples_per_split=100, progress=False
        )
    assert calls[0] == 0  # refused before the layer scan and the latent passes
    with pytest.raises(LatentccError, match=r"'knn_k' parameter of latentcc probe .*\(400\)"):
        check_knn_k(ProbeConfig(metrics=("knn_probe",), knn_k=500), small, func="latentcc probe")
    check_knn_k(ProbeConfig(metrics=("nc",)), small)  # no k-NN probe: nothing to check
    check_knn_k(ProbeConfig(metrics=("knn_probe",), knn_k=500), small["train"])  # no test split: skipped
    # one below the training samples is a k-NN probe (no longer capped in silence): equal to knn_probe
    p = latentcc.profile(model, small, layers=["act1"], metrics=["knn_probe"], knn_k=n - 1, progress=False)
    lat = {s: latentcc.collect_latents(model, torch.utils.data.DataLoader(d, batch_size=64), ["act1"])
           for s, d in small.items()}  # fmt: skip
    want = knn_probe(
        lat["train"]["act1"], lat["train"].labels, lat["test"]["act1"], lat["test"].labels, k=n - 1
    )
    assert p.value("act1", "knn_probe_acc", "test") == pytest.approx(want)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"metrics": ["nc"], "knn_k": 3}, r"'metrics' .*\(knn_k=3 \(--knn-k\) is read by knn_probe\)"),
        (
            {"metrics": ["nc", "clusterability"], "gc_examples": 10},
            r"gc_examples=10 \(--gc-examples\) is read by gc",
        ),
        (
            {"metrics": ["nc"], "gc_estimator": "exact"},
            r"gc_estimator='exact' \(--gc-estimator\) is read by gc",
        ),
        ({"metrics": ["nc"], "overcluster": 2}, r"overcluster=2 \(--overcluster\) is read by clusterability"),
        (
            {"metrics": ["nc"], "groups": {str(c): "g" for c in range(10)}},
            r"groups \(--groups\) is read by clust",
        ),
        (
            {"overcluster": 3, "clustering": "leiden"},
            r"'overcluster' .*must be 1 with clustering='leiden'",
        ),
        (
            {"metrics": ["gc"], "gc_estimator": "exact", "gc_projections": 4},
            r"'gc_projections' .*default \(8\) with gc_est",
        ),
    ],
)
def test_settings_that_would_do_nothing_are_refused_before_any_pass(small, kw, match):
    model = Named()
    calls = _forward_counter(model)
    with pytest.raises(LatentccError, match=match + r".*Fix: "):
        latentcc.profile(model, small, progress=False, **kw)
    assert calls[0] == 0


def test_settings_in_use_pass_the_check():
    from latentcc.config import ProbeConfig
    from latentcc.probes.checks import check_settings_used

    check_settings_used(ProbeConfig(metrics=("clusterability",), overcluster=3), groups=True)  # ward: read
    check_settings_used(ProbeConfig(metrics=("knn_probe", "gc"), knn_k=5, gc_examples=8, gc_projections=2))
    check_settings_used(ProbeConfig(metrics=("gc",), gc_estimator="exact"))
    # clustering and view_points shape the report's views whatever the metrics
    check_settings_used(ProbeConfig(metrics=("nc",), clustering="kmeans", view_points=50))


def test_cli_probe_refuses_inert_flags_before_loading_anything(tmp_path, capsys):
    from latentcc.app.cli import main

    base = [
        "probe",
        "--model",
        "mnist-cnn",
        "--data",
        "digits",
        "--no-progress",
        "--out",
        str(tmp_path / "out"),
    ]
    runs = [
        (["--metrics", "nc", "--knn-k", "3"], r"'metrics' parameter of latentcc probe .*--knn-k"),
        (["--overcluster", "3", "--clustering", "leiden"], r"'overcluster' parameter of latentcc probe"),
        (["--max-samples-per-split", "150", "--metrics", "knn_probe", "--knn-k", "500"], r"'knn_k' .*probed \(150\)"),
        (["--checkpoint", str(tmp_path / "run"), "--no-pretrained"],
         r"'pretrained' parameter of latentcc probe must be left unset with --checkpoint.*Got '--no-pretrained'"),
        (["--checkpoint", str(tmp_path / "run"), "--pretrained"], r"Got '--pretrained' instead"),
    ]  # fmt: skip
    for args, match in runs:
        assert main([*base, *args]) == 2
        assert re.search(match, capsys.readouterr().err)
        assert not (tmp_path / "out").exists()  # no report folder for a refused run


def _run_with_config(tmp_path, model="mnist-cnn", data="digits", weights=b"not safetensors"):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": {"model": model}, "data": {"data": data}}))
    (run / "best.safetensors").write_bytes(weights)
    return run


def test_cli_probe_checkpoint_refuses_a_model_or_data_the_run_was_not_trained_with(tmp_path, capsys):
    from latentcc.app.cli import main

    run = _run_with_config(tmp_path)
    base = ["probe", "--checkpoint", str(run), "--no-progress", "--out", str(tmp_path / "out")]
    runs = [
        (["--model", "efficientnet-lite0"],
         r"The 'model' parameter of latentcc probe must be the model the run was trained with when --checkpoint "
         r"is given \('mnist-cnn', from .*config\.json\)\. Got 'efficientnet-lite0' instead\..*Fix: drop --model "
         r"\(the run's model is used\), pass --model mnist-cnn"),
        (["--data", "cifar10"], r"'data' parameter .*\('digits', from .*Got 'cifar10' instead.*pass --data digits"),
        (["--model", "mnist-cnn", "--data", "fashion-mnist"], r"'data' parameter .*Got 'fashion-mnist'"),
    ]  # fmt: skip
    for args, match in runs:
        assert main([*base, *args]) == 2
        err = capsys.readouterr().err
        assert re.search(match, err) and "Missing key" not in err
        assert not (tmp_path / "out").exists()
    # the run's own model and data pass the check: the next door is the weights file (not safetensors here)
    assert main([*base, "--model", "mnist-cnn", "--data", "digits"]) == 2
    err = capsys.readouterr().err
    assert "is not a readable safetensors file" in err and "parameter of latentcc probe" not in err


def test_checkpoint_settings_same_folder_spelled_two_ways(tmp_path, monkeypatch):
    from latentcc.app.probe_args import check_checkpoint_settings

    (tmp_path / "hf-model").mkdir()
    monkeypatch.chdir(tmp_path)
    saved = {"model": {"model": str(tmp_path / "hf-model")}, "data": "not a section"}
    check_checkpoint_settings(tmp_path, saved, {"model": "./hf-model", "data": "digits"})  # no error
    with pytest.raises(LatentccError, match=r"Got 'other' instead"):
        check_checkpoint_settings(tmp_path, saved, {"model": "other"})


def test_load_weights_names_the_keys_that_do_not_fit_not_torchs_wall(tmp_path):
    from safetensors.torch import save_file

    from latentcc.plumbing.errors import CheckpointError
    from latentcc.train.checkpoint import load_weights

    path = tmp_path / "best.safetensors"
    trained = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 4))
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(path))
    other = nn.Sequential(nn.Linear(64, 12), nn.ReLU(), nn.Linear(12, 4), nn.Linear(4, 4))
    with pytest.raises(CheckpointError) as e:
        load_weights(path, other)
    msg = str(e.value)
    assert "does not fit this model (Sequential: " in msg and "Missing key" not in msg
    assert "size mismatch for 3.weight: [4, 16] in the file, [4, 4] in the model; " in msg
    assert "4 weights of the model missing from the file (0.weight, 0.bias, 2.weight and 1 more)" in msg
    assert "2 weights in the file not in the model (1.bias, 1.weight)" in msg
    assert msg.endswith("use the same --model and --data as the run that wrote it (a run folder's config.json "
                        "names them).")  # fmt: skip


def test_load_run_weights_without_config_names_the_model_built(tmp_path):
    from safetensors.torch import save_file

    from latentcc.app.probe_args import load_run_weights
    from latentcc.plumbing.errors import CheckpointError

    (tmp_path / "run").mkdir()
    save_file({"w": torch.zeros(2)}, str(tmp_path / "run" / "best.safetensors"))
    model = nn.Linear(3, 2)
    with pytest.raises(CheckpointError) as e:
        load_run_weights(tmp_path / "run", model, model_name="efficientnet-lite0", data_name="digits")
    assert re.search(r"The model here is 'efficientnet-lite0' built for 'digits'; .*run has no config\.json "
                     r"naming the run's own, so pass the --model and --data it was trained with\.$", str(e.value))  # fmt: skip
    (tmp_path / "run" / "config.json").write_text("{}")
    with pytest.raises(CheckpointError) as e:
        load_run_weights(tmp_path / "run", model, model_name="m", data_name="d")
    assert str(e.value).endswith("The model here is 'm' built for 'd'.")


# ----------------------------------------------------------------------------- the metric family registry


def test_every_registered_key_is_in_a_real_profile_on_its_split(small):
    """A family's entry and its job must agree: each declared key, on the declared split, at every layer."""
    from latentcc.probes.registry import FAMILIES

    p = latentcc.profile(
        Named(), small, layers=["lin0", "act1"], gc_examples=8, gc_projections=2, progress=False
    )
    assert p.params["metrics"] == list(FAMILIES)  # metrics="all" (the default): every family, registry order
    got = {(r["layer"], r["metric"], r["split"]) for r in p.rows}
    want = {(layer, key, fam.split) for fam in FAMILIES.values() for key in fam.keys for layer in p.layers}
    assert got == want
    assert len(p.rows) == len(want)  # one row each
    assert all(math.isfinite(r["value"]) for r in p.rows)


def _toy_family():
    """A metric family defined in a test: the mean L2 norm of each layer's training latents."""
    from latentcc.probes import registry

    def job(inp):
        tr = inp.latents["train"]
        return lambda layer: {"toy_norm": float(np.linalg.norm(tr[layer], axis=1).mean())}

    return registry.Family(
        "toy", "Mean latent norm", "mean L2 norm of the training latents", ("toy_norm",), "train", job,
        panels=(registry.Panel("Mean latent norm (toy)", (registry.Series("toy_norm", "norm"),)),),
    )  # fmt: skip


def test_a_registered_family_is_computed_summarised_and_drawn_without_other_edits(
    small, monkeypatch, tmp_path
):
    from latentcc.app.cli import build_parser
    from latentcc.probes import registry
    from latentcc.probes.summary import summary_lines

    monkeypatch.setitem(registry.FAMILIES, "toy", _toy_family())
    model = Named()
    p = latentcc.profile(model, small, layers=["lin0", "act1"], metrics=["nc", "toy"], progress=False)
    assert p.params["metrics"] == ["nc", "toy"] and "toy" in p.timings
    # computed: the value of an independent numpy computation on the same latents
    lat = latentcc.collect_latents(
        model, torch.utils.data.DataLoader(small["train"], batch_size=64), p.layers
    )
    norms = {layer: float(np.linalg.norm(lat[layer].astype(np.float64), axis=1).mean()) for layer in p.layers}
    for layer in p.layers:
        assert p.value(layer, "toy_norm") == pytest.approx(norms[layer], rel=1e-5)
    # summarised: the default sentence of a family (its first key's range over layers)
    lo, hi = min(norms, key=norms.get), max(norms, key=norms.get)
    want = f"Mean latent norm ranges from {p.value(lo, 'toy_norm'):.3g} ({lo}) to {p.value(hi, 'toy_norm'):.3g} ({hi})."
    assert want in summary_lines(p)
    # drawn: its column in the HTML table, its own panel in the curves
    assert "<th>toy_norm</th>" in write_probe_report(p, tmp_path).read_text()
    figs = _figures(monkeypatch)
    plot_layer_curves(p, tmp_path / "c.png")
    titles = _texts(figs[0])["titles"]
    assert "Mean latent norm (toy)" in titles and "Within-class variability (NC1)" in titles
    # listed by `latentcc probe --help`
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert "toy: mean L2 norm of the training latents" in sub.choices["probe"].format_help().replace(
        "\n", " "
    )


def test_a_family_whose_job_disagrees_with_its_entry_fails_loudly(small, monkeypatch):
    import dataclasses

    from latentcc.probes import registry

    toy = _toy_family()
    wrong = dataclasses.replace(toy, job=lambda inp: lambda layer: {"toy_nrom": 1.0})
    monkeypatch.setitem(registry.FAMILIES, "toy", wrong)
    with pytest.raises(
        TypeError, match=r"family 'toy' returned keys \['toy_nrom'\], declared \['toy_norm'\]"
    ):
        latentcc.profile(Named(), small, layers=["act1"], metrics=["toy"], progress=False)
    with pytest.raises(LatentccError, match="taken"):
        registry.register(dataclasses.replace(toy, name="nc"))
    with pytest.raises(
        LatentccError, match=r"keys \['ami'\] of family 'toy2' are written by 'clusterability'"
    ):
        registry.register(dataclasses.replace(toy, name="toy2", keys=("ami",)))


def test_selections_are_all_or_names_never_empty():
    from latentcc.config import ProbeConfig
    from latentcc.probes.registry import FAMILIES, select_families

    assert ProbeConfig().layers == ("all",) and ProbeConfig().metrics == ("all",)
    assert ProbeConfig(layers="all", metrics="nc").metrics == ("nc",)  # one name: a common slip, accepted
    for field_name, value in (
        ("layers", ()),
        ("metrics", []),
        ("layers", ("all", "lin0")),
        ("metrics", ("nc", "all")),
    ):
        with pytest.raises(LatentccError, match=rf"'{field_name}' parameter of ProbeConfig must be 'all' or a "
                           rf"non-empty list of names.*Fix: {field_name}='all'"):  # fmt: skip
            ProbeConfig(**{field_name: value})
    assert [f.name for f in select_families(("all",), "profile")] == list(FAMILIES)
    assert [f.name for f in select_families(("gc", "nc"), "profile")] == ["nc", "gc"]  # registry order
    with pytest.raises(LatentccError, match=r"'metrics' parameter of profile must be 'all' or names of metric "
                       r"families, any of \['nc', 'clusterability', 'linear_probe', 'knn_probe', 'gc'\]\. Got 'nc9'"):  # fmt: skip
        select_families(("nc", "nc9"), "profile")


def test_cli_max_samples_is_the_data_total_and_per_split_the_probes(tmp_path, capsys):
    """--max-samples means what it means in every command (the whole dataset, before the split);
    --max-samples-per-split then caps each split."""
    from latentcc.app.cli import main

    base = ["probe", "--model", "mnist-cnn", "--data", "digits", "--metrics", "nc", "--layers", "fc_layers.2",
            "--view-points", "20", "--no-progress"]  # fmt: skip
    assert main([*base, "--max-samples", "200", "--out", str(tmp_path / "a")]) == 0
    assert (
        main([*base, "--max-samples", "200", "--max-samples-per-split", "30", "--out", str(tmp_path / "b")])
        == 0
    )
    capsys.readouterr()
    a, b = (json.loads((tmp_path / n / "profile.json").read_text())["params"] for n in "ab")
    from latentcc.app.finetune import load_data
    from latentcc.config import DataConfig

    splits = load_data(
        DataConfig(data="digits", max_samples=200)
    )  # what finetune --max-samples 200 trains on
    assert a["samples"] == {"train": len(splits.train), "test": len(splits.test)}
    assert len(splits.train) + len(splits.val) + len(splits.test) == 200
    assert b["samples"] == {"train": 30, "test": 30} and b["max_samples_per_split"] == 30
