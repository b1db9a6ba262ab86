"""The command line: flags generated from the configs, clear errors with exit code 2, runs that resume."""

import json
import re

import numpy as np
import pytest

from latentcc.app.cli import build_parser, main
from latentcc.config import DataConfig, LCCConfig, MethodConfig, ModelConfig, TrainConfig

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


def _config_flag_calls(monkeypatch) -> list[dict]:
    """Every add_config_args call build_parser makes (the one way config fields become flags), with the
    flags of the subcommand it filled."""
    import latentcc.app.cli as cli

    calls: list[dict] = []
    real = cli.add_config_args

    def record(parser, cls, **kw):
        real(parser, cls, **kw)
        calls.append({"parser": parser, "cls": cls, **kw})

    monkeypatch.setattr(cli, "add_config_args", record)
    build_parser()
    return calls


def test_every_config_field_is_a_flag_with_its_default_in_help(monkeypatch):
    """Every field of every config that makes flags (latentcc.config's dataclasses and CompareConfig), in
    every subcommand that adds them: a --flag whose help text says what it does and shows its default."""
    import dataclasses

    import latentcc.config as config
    from latentcc.app.compare import CompareConfig

    calls = _config_flag_calls(monkeypatch)
    configs = {
        c for c in vars(config).values() if dataclasses.is_dataclass(c) and c.__module__ == config.__name__
    }
    assert {c["cls"] for c in calls} == configs | {CompareConfig}, "a config without flags, or a new config"
    for c in calls:
        actions = {s: a for a in c["parser"]._actions for s in a.option_strings}
        prefix = f"{c['prefix']}_" if c.get("prefix") else ""
        for f in dataclasses.fields(c["cls"]):
            if f.name in c.get("exclude", ()):
                continue
            flag = "--" + (prefix + f.name).replace("_", "-")
            default = (c.get("defaults") or {}).get(f.name, f.default)
            assert flag in actions, (c["parser"].prog, flag)
            assert actions[flag].help == f"{f.metadata['help']} (default: {default})", flag
    commands = {c["parser"].prog.split()[-1] for c in calls}
    assert commands == {"demo", "finetune", "compare", "probe", "transfer-layers"}


def test_finetune_shows_the_config_defaults_and_the_demo_its_presets(monkeypatch):
    from latentcc.app.presets import DEMO_DEFAULTS

    calls = _config_flag_calls(monkeypatch)
    fine = [c for c in calls if c["parser"].prog.endswith(" finetune")]
    assert [c["cls"] for c in fine] == [ModelConfig, DataConfig, TrainConfig, LCCConfig, MethodConfig]
    assert all(not c.get("defaults") for c in fine)  # the dataclass defaults, nothing else
    demo = {c["cls"]: c.get("defaults") for c in calls if c["parser"].prog.endswith(" demo")}
    assert demo == {ModelConfig: DEMO_DEFAULTS["model"], DataConfig: DEMO_DEFAULTS["data"],
                    TrainConfig: DEMO_DEFAULTS["train"], LCCConfig: DEMO_DEFAULTS["lcc"]}  # fmt: skip
    help_text = " ".join(
        build_parser()._subparsers._group_actions[0].choices["finetune"].format_help().split()
    )
    assert "--lr LR" in help_text and "--optimizer {adamw,sgd}" in help_text and "--lcc-k K" in help_text


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
    err = capsys.readouterr().err
    assert "already holds a run (latentcc finetune): best.safetensors, checkpoints, config.json" in err
    assert "Fix: continue that run with --resume (without --seeds)" in err
    # --resume alone reuses the run's own config.json (a finished run: nothing left to train)
    assert main(["finetune", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert [r["epoch"] for r in json.loads((out / "metrics.json").read_text())] == [1]
    # settings that change the computation are refused on resume, and nothing is overwritten
    before = (out / "config.json").read_text()
    assert main(["finetune", "--out", str(out), "--resume", "--epochs", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Cannot resume" in err and "train.epochs: 1 -> 2" in err
    assert (out / "config.json").read_text() == before
    # F3: config.json edited by hand was read back as the run's settings and resumed; now refused
    edited = json.loads(before)
    edited["train"]["lr"] *= 10
    (out / "config.json").write_text(json.dumps(edited))
    assert main(["finetune", "--out", str(out), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "config.json was edited after the run started (changed: train)" in err
    assert json.loads((out / "config.json").read_text()) == edited  # nothing recorded


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


def test_layers_prints_names_types_and_shapes_in_columns(capsys):
    assert main(["layers", "--model", "mnist-cnn"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["layer", "type", "output_shape"]
    rows = {line.split()[0]: line.split(maxsplit=2)[1:] for line in lines[2:]}
    assert rows["net.conv_layers.0"] == ["Conv2d", "(B, 32, 28, 28)"]
    assert rows["net.fc_layers.1"] == ["ReLU", "(B, 256)"]
    assert rows["net.fc_layers.2"] == ["Linear", "(B, 10)"]
    col = lines[0].index("type")  # every row's type starts in the header's column
    assert all(line[col - 2 : col] == "  " and line[col] != " " for line in lines[2:])
    assert main(["layers", "--model", "mnist-cnnn"]) == 2
    assert "The '--model' parameter of latentcc layers" in capsys.readouterr().err


def test_finetune_a_saved_hf_dataset_with_other_column_names(tmp_path, capsys):
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(0)
    labels = np.arange(40) % 2
    pixels = rng.random((40, 8, 8)) * 0.5 + labels[:, None, None] * 0.5  # class 1 brighter
    ds = datasets.Dataset.from_dict({"pix": pixels.tolist(), "lab": labels.tolist()})
    ds.save_to_disk(str(tmp_path / "d"))
    args = ["finetune", "--data", str(tmp_path / "d"), "--model", "mnist-cnn", "--epochs", "1", "--batch-size",
            "16", "--no-progress", "--no-tensorboard"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "r0")]) == 2  # no 'label' column: the flag that fixes it
    err = capsys.readouterr().err
    assert "'label_column'" in err and "['pix', 'lab']" in err and "--label-column" in err
    assert main([*args, "--out", str(tmp_path / "r1"), "--label-column", "lab", "--input-column", "pix"]) == 0
    saved = json.loads((tmp_path / "r1" / "config.json").read_text())
    assert saved["data"]["label_column"] == "lab" and saved["data"]["input_column"] == "pix"
    assert saved["dataset"]["input_shape"] == [1, 8, 8] and saved["dataset"]["num_classes"] == 2
    assert main(["finetune", "--out", str(tmp_path / "r2"), *FAST, "--label-column", "lab"]) == 2
    assert "'label_column' parameter of load_dataset must be left unset" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("cls", "field", "value", "message"),
    [
        (TrainConfig, "batch_size", 10**30, "an int with 1 <= batch_size <= 2147483647"),
        (TrainConfig, "epochs", 10**7, "an int with 1 <= epochs <= 1000000"),
        (TrainConfig, "seed", 2**32, "an int with 0 <= seed <= 4294967295"),
        (TrainConfig, "num_workers", 10**5, "an int with 0 <= num_workers <= 1024"),
        (TrainConfig, "max_steps_per_epoch", 2**63, "an int with 0 <= max_steps_per_epoch <= 2147483647"),
        (TrainConfig, "momentum", 1.5, r"a float in \[0, 1\)"),
        (TrainConfig, "progress", "false", "True or False"),
        (DataConfig, "max_samples", 10**30, "an int with 0 <= max_samples <= 2147483647"),
        (DataConfig, "split_seed", -1, "an int >= 0"),
        (DataConfig, "val_fraction", True, r"a float in \[0, 1\)"),
        (DataConfig, "label_column", None, "a string"),
        (ModelConfig, "input_size", 10**6, "an int with 0 <= input_size <= 4096"),
        (ModelConfig, "pretrained", "yes", "True or False"),
    ],
)
def test_configs_refuse_absurd_values_naming_the_field(cls, field, value, message):
    from latentcc.plumbing.errors import LatentccError

    with pytest.raises(LatentccError, match=rf"The '{field}' parameter of {cls.__name__} must be {message}"):
        cls(**{field: value})


def test_lcc_and_probe_configs_refuse_absurd_values():
    from latentcc.config import LCCConfig, MethodConfig, ProbeConfig
    from latentcc.plumbing.errors import LatentccError

    for cls, field, value in [
        (LCCConfig, "k", 10**30), (LCCConfig, "dim", 2**40), (LCCConfig, "seed", 2**33), (LCCConfig, "warmup", 10**9),
        (LCCConfig, "leiden_iterations", -2), (LCCConfig, "weighted", 1), (MethodConfig, "gc_projections", 10**30),
        (ProbeConfig, "knn_k", 10**30), (ProbeConfig, "seed", 2**33), (ProbeConfig, "progress", "no"),
    ]:  # fmt: skip
        with pytest.raises(LatentccError, match=rf"'{field}' parameter of {cls.__name__}"):
            cls(**{field: value})
    assert LCCConfig(leiden_iterations=-1, seed=2**32 - 1).seed == 2**32 - 1  # the bounds themselves are fine
    assert TrainConfig(batch_size=2**31 - 1, epochs=10**6).batch_size == 2**31 - 1


TINY = ["--data", "digits", "--max-samples", "100", "--no-progress"]


def _files(folder):
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("command", "held", "says"),
    [
        (["probe", "--metrics", "nc"], "profile.json", r"probe outputs \(latentcc probe\): profile.json"),
        (["transfer-layers"], "transfer_layers.csv", r"layer-wise transfer tables .*: transfer_layers.csv"),
        (["probe", "--metrics", "nc"], "config.json", r"a run \(latentcc finetune\): config.json"),
        (["transfer-layers"], "seed-3/", r"runs of several seeds .*: seed-3"),
        (["finetune", "--epochs", "1", "--no-tensorboard"], "summary.json", r"a demo report .*: summary.json"),
        (["finetune", "--epochs", "1", "--no-tensorboard"], "seed-0/", r"Fix: continue those runs with "
         r"--resume --seeds 0,"),
    ],
)  # fmt: skip
def test_every_command_refuses_a_folder_that_holds_latentcc_outputs(tmp_path, capsys, command, held, says):
    """F8/F9: a second probe/transfer-layers --out P replaced P's outputs; finetune wrote beside seed-*/."""
    out = tmp_path / "out"
    (out / held.rstrip("/")).parent.mkdir(parents=True, exist_ok=True)
    if held.endswith("/"):
        (out / held).mkdir()
    else:
        (out / held).write_text("{}\n")
    (out / "notes.txt").write_text("mine\n")
    before = _files(out)
    assert main([command[0], "--out", str(out), *TINY, *command[1:]]) == 2
    err = capsys.readouterr().err
    assert re.search(r"'--out' parameter of latentcc [a-z-]+ must be a new or empty folder .*" + says, err), (
        err
    )
    assert (
        "nothing was written" in err
        and _files(out) == before
        and sorted(out.iterdir()) == sorted([out / held.rstrip("/"), out / "notes.txt"])
    )


def test_a_folder_of_other_files_is_accepted(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    assert main(["transfer-layers", "--out", str(out), *TINY]) == 0
    assert (out / "transfer_layers.json").is_file() and (out / "notes.txt").read_text() == "mine\n"


def test_resume_refuses_seeds_that_do_not_match_the_folder(tmp_path, capsys):
    """F10/F11: --seeds on a single run started a fresh run in R/seed-0; no --seeds on seed folders said
    'Nothing to resume... Start without --resume'. Both now name the layout and the fix, before any write."""
    single, multi, empty = tmp_path / "single", tmp_path / "multi", tmp_path / "empty"
    single.mkdir()
    (single / "config.json").write_text('{"train": {"epochs": 2}}\n')
    for s in (0, 2):
        (multi / f"seed-{s}").mkdir(parents=True)
    empty.mkdir()
    before = {d: sorted(d.rglob("*")) for d in (single, multi, empty)}
    assert main(["finetune", "--out", str(single), "--resume", "--seeds", "0"]) == 2
    err = capsys.readouterr().err
    assert (
        "'--seeds' parameter of latentcc finetune --resume must be left out when --out holds a single run"
        in err
    )
    assert f"{single}/seed-0" in err and "Fix: resume it without --seeds" in err
    assert main(["finetune", "--out", str(multi), "--resume"]) == 2
    err = capsys.readouterr().err
    assert (
        "must be given when --out holds runs per seed" in err
        and "Fix: resume them with --resume --seeds 0,2" in err
    )
    assert main(["finetune", "--out", str(empty), "--resume", "--seeds", "0,1"]) == 2
    assert "Nothing to resume in" in capsys.readouterr().err
    assert {d: sorted(d.rglob("*")) for d in (single, multi, empty)} == before


def test_demo_checks_the_lcc_schedule_before_the_baseline_runs(tmp_path, capsys):
    """F13: warmup >= epochs failed at the first LCC run, after the baseline had trained into the folder."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *TINY, "--epochs", "1", "--seeds", "0"]) == 2
    err = capsys.readouterr().err
    assert "'warmup' parameter of LCCConfig must be smaller than the number of epochs, 1" in err
    assert not out.exists()  # not even the folder
    assert (
        main(["demo", "--out", str(out), *TINY, "--epochs", "2", "--seeds", "0", "--lcc-layers", "nope"]) == 2
    )
    assert "nope" in capsys.readouterr().err and not out.exists()


def test_reproduce_docs_inside_a_run_folder_is_refused_before_the_reproduction_runs(tmp_path):
    """F12: --docs R/doc.md wrote doc.md and reproductions/ into the run folder R (after waiting for its lock)."""
    from latentcc.app.reproduce import run_reproduction
    from latentcc.plumbing.errors import LatentccError

    run = tmp_path / "R"
    run.mkdir()
    (run / "config.json").write_text("{}\n")
    (run / "checkpoints").mkdir()
    with pytest.raises(LatentccError, match=r"'docs' parameter of run_reproduction must be a Markdown file in a "
                       r"docs folder.*holds a run \(latentcc finetune\): checkpoints, config.json"):  # fmt: skip
        run_reproduction("nc-transfer", size="ci", seeds=[0], out_dir=tmp_path / "X", docs=run / "doc.md")
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.json"]
    assert not (tmp_path / "X").exists()  # refused before the run, not after minutes of it
    (tmp_path / "X").mkdir()
    (tmp_path / "X" / "result.json").write_text("{}\n")
    with pytest.raises(
        LatentccError, match=r"'out_dir' parameter of run_reproduction .*a reproduction .*result.json"
    ):
        run_reproduction("nc-transfer", size="ci", seeds=[0], out_dir=tmp_path / "X")
