"""Settings renamed in 0.1 (docs/glossary.md, "Renamed settings"): a run folder recorded with the old names still
resumes and is still probed; any other use of an old name is refused, naming the new one."""

import json

import pytest

from latentcc.app.cli import main
from latentcc.config import RENAMED_FIELDS, LCCConfig, MethodConfig, ProbeConfig, config_from_dict
from latentcc.plumbing.errors import LatentccError

RUN = ["--data", "digits", "--max-samples", "300", "--epochs", "2", "--batch-size", "64", "--no-progress",
       "--no-tensorboard", "--lcc-layers", "fc_layers.1", "--lcc-weight", "0.1", "--lcc-k", "5",
       "--lcc-community", "louvain"]  # fmt: skip


def _record_old_names(monkeypatch):
    """Make fine-tuning write its config.json with the names latentcc used before the renames (as a run folder
    of that version holds them, its checkpoints' config digest included)."""
    import latentcc.app.finetune
    import latentcc.train.loop
    from latentcc.config import config_to_dict

    def as_before(cfg):
        renamed = {new: old for old, new in RENAMED_FIELDS.get(type(cfg).__name__, {}).items()}
        return {renamed.get(k, k): v for k, v in config_to_dict(cfg).items()}

    monkeypatch.setattr(latentcc.app.finetune, "config_to_dict", as_before)
    monkeypatch.setattr(latentcc.train.loop, "config_to_dict", as_before)


def test_a_run_recorded_with_the_old_names_resumes_and_is_probed(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        _record_old_names(m)
        assert main(["finetune", "--out", str(run), *RUN, "--max-steps-per-epoch", "2"]) == 0
    recorded = json.loads((run / "config.json").read_text())
    assert recorded["lcc"]["method"] == "louvain" and "community" not in recorded["lcc"]
    assert {"gc_lambda", "gc_draws"} <= set(recorded["method"]) and "gc_weight" not in recorded["method"]
    results = json.loads((run / "results.json").read_text())
    assert (
        main(["finetune", "--out", str(run), "--resume", "--no-progress"]) == 0
    )  # finished: nothing retrained
    again = json.loads((run / "results.json").read_text())
    assert {k: v for k, v in again.items() if k != "wall_time_s"} == {
        k: v for k, v in results.items() if k != "wall_time_s"
    }
    capsys.readouterr()
    out = tmp_path / "probe"
    assert main(["probe", "--checkpoint", str(run), "--data", "digits", "--max-samples", "300", "--layers",
                 "fc_layers.1", "--metrics", "nc", "--out", str(out), "--no-progress"]) == 0  # fmt: skip
    assert (out / "profile.json").is_file()
    # another subset would put the run's training samples into the probed splits: refused, naming the fix
    capsys.readouterr()
    argv = [
        "probe",
        "--checkpoint",
        str(run),
        "--data",
        "digits",
        "--max-samples",
        "400",
        "--out",
        str(tmp_path / "p"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        "'max_samples' parameter of latentcc probe must be the run's own value when --checkpoint is given (300"
        in err
    )
    assert "Fix: drop --max-samples" in err and not (tmp_path / "p").exists()


def test_an_old_name_anywhere_else_is_refused_naming_the_new_one():
    with pytest.raises(LatentccError, match="'method' was renamed 'community'"):
        config_from_dict(LCCConfig, {"layers": ["a"], "method": "leiden"})
    with pytest.raises(LatentccError, match="'gc_lambda' was renamed 'gc_weight'"):
        config_from_dict(MethodConfig, {"gc_lambda": 0.1})
    with pytest.raises(LatentccError, match="'cluster_method' was renamed 'clustering'"):
        config_from_dict(ProbeConfig, {"cluster_method": "ward"})
    for cls in (LCCConfig, MethodConfig, ProbeConfig):  # the new names exist, the old ones do not
        fields = set(cls.__dataclass_fields__)
        assert set(RENAMED_FIELDS[cls.__name__].values()) <= fields
        assert not set(RENAMED_FIELDS[cls.__name__]) & fields
