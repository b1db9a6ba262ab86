"""`latentcc compare`: the sequential stop on synthetic paired data, the run cache, and a tiny real run."""

import dataclasses
import json
import math

import numpy as np
import pytest
from scipy import stats

import latentcc.app.compare
from latentcc.app.cli import main
from latentcc.app.compare import (
    STOP_EFFECT,
    STOP_MAX,
    STOP_PRECISE,
    RunSpec,
    compare,
    running_ci,
    sequential_decision,
    side_config,
    side_hash,
)
from latentcc.config import DataConfig, LCCConfig, ModelConfig, TrainConfig
from latentcc.plumbing.errors import LatentccError


def _ci(diffs):
    """Independent reference: scipy's one-sample t interval of the mean difference."""
    return stats.ttest_1samp(diffs, 0.0).confidence_interval(0.95)


def _walk(diffs, **rule):
    """Feed the pairs one at a time, as compare does: (number of pairs at the stop, reason)."""
    for n in range(1, len(diffs) + 1):
        stop, reason = sequential_decision(diffs[:n], **rule)
        if stop:
            return n, reason
    raise AssertionError("never stopped")


RULE = {"delta": 0.003, "min_seeds": 5, "max_seeds": 20}


def test_sequential_decision_matches_the_t_interval_of_scipy():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(300):
        n = int(rng.integers(5, 21))
        d = rng.normal(rng.choice([0.0, 0.004, 0.01]), rng.choice([0.001, 0.004, 0.02]), n)
        ci = _ci(d)
        expected = (
            STOP_EFFECT
            if ci.low > 0 or ci.high < 0
            else STOP_PRECISE
            if (ci.high - ci.low) / 2 <= 0.003
            else STOP_MAX
            if n >= 20
            else None
        )
        stop, reason = sequential_decision(d, **RULE)
        assert stop == (expected is not None) and (reason == expected or expected is None)
        seen.add(expected)
    assert seen == {STOP_EFFECT, STOP_PRECISE, STOP_MAX, None}  # every branch was exercised
    # never before min_seeds, however clear the difference
    assert sequential_decision([0.5, 0.51, 0.49, 0.5], **RULE) == (False, "4 of at least 5 pairs")
    assert sequential_decision([0.0] * 5, **RULE) == (True, STOP_PRECISE)  # identical runs: zero width


def test_a_true_effect_stops_at_min_seeds_a_precise_null_at_delta_a_noisy_null_at_max_seeds():
    rng = np.random.default_rng(1)
    # +2 pp with sd 0.5 pp: t = 2 / (0.5 / sqrt(5)) ~ 9 at 5 pairs, far past the 2.78 needed
    effect = [_walk(rng.normal(0.02, 0.005, 20), **RULE) for _ in range(200)]
    assert effect == [(5, STOP_EFFECT)] * 200
    # a null with sd 0.2 pp: half-width 2.78 * 0.2 / sqrt(5) ~ 0.25 pp <= delta 0.3 pp after about 5 pairs
    null = [_walk(rng.normal(0.0, 0.002, 20), **RULE) for _ in range(400)]
    precise = [n for n, r in null if r == STOP_PRECISE]
    assert len(precise) > 0.9 * len(null) and np.mean(precise) < 6.5
    assert all(r in (STOP_PRECISE, STOP_EFFECT) for _, r in null)
    # a null with sd 5 pp: the half-width never gets near 0.3 pp, so max_seeds unless a false positive
    noisy = [_walk(rng.normal(0.0, 0.05, 20), **RULE) for _ in range(400)]
    assert all((n, r) == (20, STOP_MAX) or r == STOP_EFFECT for n, r in noisy)
    assert sum(r == STOP_MAX for _, r in noisy) > 0.7 * len(noisy)


def test_optional_stopping_inflates_false_positives_and_a_fixed_size_test_does_not():
    """The caveat in docs/compare.md, measured: a null, a CI that never gets narrower than delta."""
    rng = np.random.default_rng(2)
    sims = 1000
    fixed = sum(_walk(rng.normal(0, 0.05, 5), delta=0.003, min_seeds=5, max_seeds=5)[1] == STOP_EFFECT for _ in range(sims))  # fmt: skip
    seq = sum(_walk(rng.normal(0, 0.05, 20), **RULE)[1] == STOP_EFFECT for _ in range(sims))
    # fixed size: the nominal 5 % (binomial sd 0.7 %, bounds at 3 sd); sequential 5..20: about 20 %
    assert 0.029 < fixed / sims < 0.071
    assert 0.15 < seq / sims < 0.25


def test_sequential_decision_refuses_bad_rules_by_name():
    for kw, says in [
        ({"min_seeds": 0}, "'min_seeds' parameter of CompareConfig must be an int >= 1"),
        ({"max_seeds": 4}, "'max_seeds' parameter of CompareConfig must be an int >= 5"),
        ({"delta": -0.1}, "'delta' parameter of CompareConfig must be a finite float >= 0"),
        ({"delta": math.nan}, "'delta' parameter"),
    ]:
        with pytest.raises(LatentccError, match=says):
            sequential_decision([0.1] * 5, **{**RULE, **kw})
    with pytest.raises(LatentccError, match="'diffs' parameter of sequential_decision must be finite"):
        sequential_decision([0.1, math.nan, 0, 0, 0], **RULE)


def test_running_ci_is_the_interval_of_each_prefix():
    d = [0.01, 0.03, -0.01, 0.02]
    run = running_ci(d)
    assert [r["n"] for r in run] == [2, 3, 4]
    for r in run:
        ci = _ci(d[: r["n"]])
        assert r["ci95_low"] == pytest.approx(ci.low, abs=1e-12) and r["ci95_high"] == pytest.approx(ci.high, abs=1e-12)  # fmt: skip


# --- the cache, with a stand-in for training (each run's accuracy: a known function of side and seed)

DATA = DataConfig(data="digits", max_samples=100)
A = RunSpec(ModelConfig(model="mnist-cnn"), DATA, TrainConfig(epochs=1, progress=False))
B = RunSpec(A.model, DATA, A.train, LCCConfig(layers=("net.fc_layers.1",), weight=0.1))


def _acc(lr, lcc, seed):
    return 0.8 + 0.01 * seed + (0.004 if lcc else 0.0) + (0.003 * (-1) ** seed if lcc else 0.0) + lr


@pytest.fixture
def fake_training(monkeypatch):
    calls = []

    def finetune(m, d, t, *, out_dir, resume, splits, lcc, method):
        calls.append((out_dir.parent.name, t.seed, resume))
        assert splits == ("splits of", d)  # loaded once by compare, passed in
        out_dir.mkdir(parents=True, exist_ok=True)
        value = _acc(t.lr if t.lr != 1e-3 else 0.0, lcc is not None, t.seed)
        time_s = 2.0 + (1.0 if lcc is not None else 0.0)  # the LCC side takes 1.5x as long
        (out_dir / "results.json").write_text(
            json.dumps({"test_top1": value, "test_loss": None, "wall_time_s": time_s})
        )

    loads = []
    monkeypatch.setattr(latentcc.app.compare, "finetune", finetune)
    monkeypatch.setattr(latentcc.app.compare, "load_data", lambda d: loads.append(d) or ("splits of", d))
    monkeypatch.setattr(latentcc.app.compare, "_plot", lambda result, path: path.write_bytes(b"png"))
    return calls, loads


def test_compare_trains_each_run_once_and_a_second_call_extends(tmp_path, fake_training):
    calls, loads = fake_training
    out = tmp_path / "cmp"
    r = compare(A, B, out_dir=out, min_seeds=3, max_seeds=3, names=("base", "lcc"))
    ha, hb = side_hash(A), side_hash(B)
    # every run once; the sides take turns at running first
    assert calls == [
        (ha, 0, False),
        (hb, 0, False),
        (hb, 1, False),
        (ha, 1, False),
        (ha, 2, False),
        (hb, 2, False),
    ]
    assert loads == [DATA]
    assert r["wall_time_s"] == {"a": 2.0, "b": 3.0, "b_over_a": 1.5}
    assert [(row["a_time_s"], row["b_time_s"]) for row in r["rows"]] == [(2.0, 3.0)] * 3
    diffs = [_acc(0, True, s) - _acc(0, False, s) for s in range(3)]  # 0.007, 0.001, 0.007
    ci = _ci(diffs)
    assert [row["diff"] for row in r["rows"]] == pytest.approx(diffs, abs=1e-12)
    assert (r["n"], r["mean"]) == (3, pytest.approx(np.mean(diffs), abs=1e-12))
    assert (r["ci95_low"], r["ci95_high"]) == (
        pytest.approx(ci.low, abs=1e-12),
        pytest.approx(ci.high, abs=1e-12),
    )
    assert r["stop_reason"] == (STOP_EFFECT if ci.low > 0 else STOP_MAX)
    saved = json.loads((out / "compare.json").read_text())
    assert saved["mean"] == pytest.approx(r["mean"]) and saved["names"] == {"a": "base", "b": "lcc"}
    assert saved["b_differs_in"] == ["lcc: off -> on (layers=['net.fc_layers.1'], weight=0.1)"]
    assert json.loads((out / hb / "side.json").read_text())["lcc"]["weight"] == 0.1
    assert "| seed | base | lcc | lcc - base |" in (out / "compare.md").read_text()

    calls.clear(), loads.clear()
    again = compare(A, B, out_dir=out, min_seeds=3, max_seeds=3, names=("base", "lcc"))
    assert calls == [] and loads == [] and again["rows"] == r["rows"]  # nothing trained, not even data loaded
    assert len(again["runs"]["reused"]) == 6 and again["runs"]["trained"] == []

    more = compare(A, B, out_dir=out, min_seeds=5, max_seeds=6)
    assert sorted(calls) == sorted((h, s, False) for h in (ha, hb) for s in (3, 4))  # only the new seeds
    assert more["n"] == 5 and more["rows"][:3] == r["rows"]

    # another configuration of one side: its own folder, the other side's runs reused
    calls.clear()
    c = RunSpec(A.model, DATA, TrainConfig(epochs=1, progress=False, lr=0.002))
    compare(A, c, out_dir=out, min_seeds=2, max_seeds=2)
    assert sorted(calls) == [(side_hash(c), 0, False), (side_hash(c), 1, False)]


def test_an_int_given_to_a_float_setting_hashes_like_the_float():
    one = RunSpec(A.model, DATA, A.train, LCCConfig(layers=("net.fc_layers.1",), weight=1))
    assert side_hash(one) == side_hash(dataclasses.replace(one, lcc=dataclasses.replace(one.lcc, weight=1.0)))
    assert side_config(one)["lcc"]["weight"] == 1.0 and side_config(one)["lcc"]["k"] == 5  # ints stay ints
    assert side_hash(one) != side_hash(dataclasses.replace(one, lcc=dataclasses.replace(one.lcc, weight=2)))


def test_a_half_finished_run_is_resumed_and_one_without_a_checkpoint_redone(tmp_path, fake_training):
    calls, _ = fake_training
    out = tmp_path / "cmp"
    (out / side_hash(A) / "seed-0" / "checkpoints").mkdir(parents=True)
    (out / side_hash(A) / "seed-0" / "checkpoints" / "latest.json").write_text("{}")
    (out / side_hash(B) / "seed-0").mkdir(parents=True)
    (out / side_hash(B) / "seed-0" / "config.json").write_text("{}")  # stopped before its first checkpoint
    r = compare(A, B, out_dir=out, min_seeds=2, max_seeds=2)
    assert (side_hash(A), 0, True) in calls and (side_hash(B), 0, False) in calls
    assert r["runs"]["resumed"] == ["a/seed-0"] and len(r["runs"]["trained"]) == 3


def test_compare_refuses_bad_input_by_name(tmp_path, fake_training):
    calls, _ = fake_training
    same = RunSpec(
        A.model, DATA, TrainConfig(epochs=1, progress=True, seed=7)
    )  # seed and progress: no number
    with pytest.raises(
        LatentccError, match="'side_b' parameter of compare must be a configuration that differs"
    ):
        compare(A, same, out_dir=tmp_path / "x")
    with pytest.raises(LatentccError, match="'seeds' parameter of compare must be at least min_seeds"):
        compare(A, B, out_dir=tmp_path / "x", seeds=[0, 1, 1, 2, 3])
    with pytest.raises(LatentccError, match="'layers' parameter of LCCConfig"):
        RunSpec(lcc=LCCConfig(weight=1.0))  # LCC settings without layers would be ignored
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text("{}")
    with pytest.raises(LatentccError, match="'out_dir' parameter of compare must be a new or empty folder"):
        compare(A, B, out_dir=run)
    assert calls == []
    with pytest.raises(
        LatentccError,
        match=r"'metric' parameter of compare must be a key of results.json .*\['test_top1', 'wall_time_s'\]",
    ):
        compare(
            A, B, out_dir=tmp_path / "y", metric="test_loss", min_seeds=2, max_seeds=2
        )  # null: not measured


# --- end to end: the command line on a tiny real run


def test_cli_compare_on_a_tiny_run_and_a_second_call_trains_nothing(tmp_path, capsys, monkeypatch):
    out = tmp_path / "cmp"
    args = ["compare", "--out", str(out), "--data", "digits", "--model", "mnist-cnn", "--max-samples", "200",
            "--epochs", "1", "--batch-size", "32", "--no-progress", "--no-tensorboard", "--min-seeds", "2",
            "--max-seeds", "2", "--name-a", "base", "--name-b", "lcc",
            "--b", "--lcc-layers net.fc_layers.1 --lcc-warmup 0 --lcc-weight 1"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / "compare.json").read_text())
    assert len(saved["runs"]["trained"]) == 4 and saved["n"] == 2
    for row in saved["rows"]:  # the numbers are those of the run folders
        for key, side in (("a", "a"), ("b", "b")):
            results = json.loads((out / saved["sides"][side]["folder"] / f"seed-{row['seed']}" / "results.json").read_text())  # fmt: skip
            assert row[key] == results["test_top1"]
    b_cfg = json.loads((out / saved["sides"]["b"]["folder"] / "seed-1" / "config.json").read_text())
    assert b_cfg["lcc"]["weight"] == 1 and b_cfg["train"]["seed"] == 1 and b_cfg["data"]["max_samples"] == 200
    ci = _ci([r["b"] - r["a"] for r in saved["rows"]])
    assert saved["ci95_low"] == pytest.approx(ci.low) and saved["ci95_high"] == pytest.approx(ci.high)
    assert "lcc - base" in printed and "95% CI" in printed and f"stopped: {saved['stop_reason']}" in printed
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"

    calls = []
    real = latentcc.app.compare.finetune
    monkeypatch.setattr(latentcc.app.compare, "finetune", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert main(args) == 0
    assert calls == [] and "0 trained, 0 resumed, 4 reused" in capsys.readouterr().out
    # a side flag finetune does not have is refused by argparse (exit code 2) before anything runs
    with pytest.raises(SystemExit) as e:
        main([*args[:-1], "--lcc-layers net.fc_layers.1 --no-such-flag 3"])
    assert e.value.code == 2 and calls == []
