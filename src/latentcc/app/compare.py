"""Paired-seed comparison of two run configurations, seeds added until the answer is clear.

"Does LCC help on my model?" is a paired question: side ``a`` (e.g. plain fine-tuning) and side ``b``
(e.g. with LCC) are trained with the same training seed, and the per-seed differences ``b - a`` of one
metric are averaged with a 95 % t confidence interval (:func:`latentcc.report.stats.paired_difference`).
Pairing removes what a seed does to both sides alike (the head's initialisation, the data order).

Sequential rule (:func:`sequential_decision`), checked after each new pair, never before ``min_seeds``:
stop when the CI excludes 0, when its half-width is <= ``delta`` (a difference, if any, is too small to
matter), or at ``max_seeds``. Caveat: looking at the CI after every pair and stopping when it excludes
0 is optional stopping; the chance of a "CI excludes 0" stop without a true difference is above the
nominal 5 % (docs/compare.md measures it); ``min_seeds == max_seeds`` is the plain fixed-size test.

Cache: a side's runs live in ``out_dir/<side hash>/seed-<s>/``, the hash being that of the side's full
configuration (every setting that changes what is computed), so another configuration never reuses a
run. A run folder holding results.json is reused; one with a checkpoint but no results is resumed
(``fit(resume=True)``); one without a checkpoint is started again. A later call with a higher
``max_seeds`` (or ``min_seeds``) reuses every run it needs and trains only the new seeds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latentcc.app.finetune import check_lcc_has_layers, finetune, load_data
from latentcc.config import DataConfig, LCCConfig, MethodConfig, ModelConfig, TrainConfig, config_to_dict
from latentcc.plumbing.atomic import atomic_write_json, atomic_write_text
from latentcc.plumbing.errors import LatentccError, param_error
from latentcc.plumbing.runlock import FolderLock, check_new_output
from latentcc.plumbing.validate import check_int
from latentcc.report.stats import conclusion, mean_ci, paired_difference
from latentcc.train.resume import RESUME_FREE

STOP_EFFECT = "CI excludes 0"
STOP_PRECISE = "CI half-width <= delta"
STOP_MAX = "max_seeds reached"
CAVEAT = (
    "The CI is checked after every pair (optional stopping), so a 'CI excludes 0' stop is a false positive "
    "more often than 5 % of the time when there is no true difference; confirm such a result on fresh seeds "
    "(or set min_seeds = max_seeds for a fixed-size test)."
)
# Settings left out of a side's hash: the seed (one folder per seed) and what changes no number (fit
# lets a resume change them too).
_NOT_HASHED = {"seed", *RESUME_FREE["train"]}
_HASH_CHARS = 12  # 48 bits: a collision between two sides of one folder is out of reach


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class CompareConfig:
    """The sequential paired comparison (``latentcc.app.compare``); every default of `compare` lives here."""

    delta: float = _f(
        0.003, "stop when the half-width of the CI of b - a is <= this (metric units: 0.003 = 0.3 pp)"
    )
    min_seeds: int = _f(
        5, "never stop before this many seed pairs (a CI from 2-3 seeds is unreliable; 1: one pair, no CI)"
    )
    max_seeds: int = _f(20, "stop after this many seed pairs whatever the CI")
    metric: str = _f("test_top1", "key of each run's results.json compared (test_top1, best_val_top1, ...)")

    def __post_init__(self) -> None:
        f = "CompareConfig"
        ok = (
            isinstance(self.delta, int | float)
            and not isinstance(self.delta, bool)
            and math.isfinite(self.delta)
        )
        if not ok or self.delta < 0:
            raise param_error("delta", f, "a finite float >= 0 (in the metric's units)", self.delta)
        check_int(self.min_seeds, "min_seeds", f, 1, fix="Use 5 or more for a CI that can answer anything.")
        check_int(self.max_seeds, "max_seeds", f, self.min_seeds, fix=f"max_seeds must be >= min_seeds ({self.min_seeds}).")  # fmt: skip
        if not isinstance(self.metric, str) or not self.metric:
            raise param_error("metric", f, "a key of results.json such as 'test_top1'", self.metric)


@dataclass(frozen=True)
class RunSpec:
    """One side of a comparison: the configs ``latentcc.app.finetune.finetune`` takes (``train.seed`` is ignored:
    compare sets the seed of each pair). ``lcc=None`` (or no layers) trains without LCC."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    lcc: LCCConfig | None = None
    method: MethodConfig | None = None

    def __post_init__(self) -> None:
        for name, cls in (("model", ModelConfig), ("data", DataConfig), ("train", TrainConfig)):
            if not isinstance(getattr(self, name), cls):
                raise param_error(name, "RunSpec", f"a {cls.__name__}", getattr(self, name))
        for name, cls in (("lcc", LCCConfig), ("method", MethodConfig)):  # type: ignore[assignment]
            if getattr(self, name) is not None and not isinstance(getattr(self, name), cls):
                raise param_error(name, "RunSpec", f"a {cls.__name__} or None", getattr(self, name))
        check_lcc_has_layers(self.lcc)  # LCC settings without layers would be dropped silently


def side_config(spec: RunSpec) -> dict[str, Any]:
    """The settings of ``spec`` that change what a run computes, as stored in JSON (what is hashed)."""
    train = {k: v for k, v in _floats(spec.train).items() if k not in _NOT_HASHED}
    # the device type changes the floats (CPU vs CUDA kernels): "auto" is hashed as what it resolves to here
    from latentcc.train.loop import resolve_device

    train["device_type"] = resolve_device(spec.train.device, func="TrainConfig").type
    lcc = _floats(spec.lcc) if spec.lcc is not None and spec.lcc.layers else None
    import torch

    import latentcc

    record = {
        # another latentcc or torch may compute other numbers from the same settings: never pair across them
        "versions": {"latentcc": latentcc.__version__, "torch": torch.__version__},
        "model": _absolute(_floats(spec.model), "model"),
        "data": _absolute(_floats(spec.data), "data"),
        "train": train,
        "lcc": lcc,
        "method": _floats(spec.method or MethodConfig()),
    }
    return dict(json.loads(json.dumps(record, default=str)))  # tuples -> lists, as run folders store them


def _floats(cfg: Any) -> dict[str, Any]:
    """``config_to_dict(cfg)`` with an int given to a float setting stored as that float: ``weight=1`` and
    ``weight=1.0`` train the same runs, so they must hash the same (JSON writes 1 and 1.0 apart)."""
    import typing

    hints = typing.get_type_hints(type(cfg))
    out = config_to_dict(cfg)
    for k, v in out.items():
        if isinstance(v, int) and not isinstance(v, bool) and _takes_float(hints.get(k)):
            out[k] = float(v)
    return out


def _takes_float(hint: Any) -> bool:
    import typing

    return hint is float or float in typing.get_args(hint)


def _absolute(section: dict[str, Any], key: str) -> dict[str, Any]:
    """A model/data given as a folder, as an absolute path: the same relative path from another working
    directory is another folder. (A folder whose *contents* changed keeps its hash: use a new --out then.)"""
    value = section.get(key)
    if isinstance(value, str) and Path(value).exists():
        section = {**section, key: str(Path(value).resolve())}
    return section


def side_hash(spec: RunSpec) -> str:
    """The folder name of ``spec``'s runs: sha256 of its canonical :func:`side_config`, 12 hex digits."""
    text = json.dumps(
        side_config(spec), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH_CHARS]


def sequential_decision(
    diffs: Sequence[float], *, delta: float, min_seeds: int, max_seeds: int
) -> tuple[bool, str]:
    """Whether to stop adding seed pairs after the paired differences ``diffs``, and why.

    Never before ``min_seeds`` pairs; then stop when the 95 % t-CI of the mean difference excludes 0
    (:data:`STOP_EFFECT`), else when its half-width is <= ``delta`` (:data:`STOP_PRECISE`), else at
    ``max_seeds`` pairs (:data:`STOP_MAX`). Not stopping, the reason says what is missing.
    """
    func = "sequential_decision"
    cfg = CompareConfig(delta=delta, min_seeds=min_seeds, max_seeds=max_seeds)  # validates the three
    d = [float(v) for v in diffs]
    if not all(math.isfinite(v) for v in d):
        raise param_error(
            "diffs", func, "finite numbers", list(diffs), "A run without the metric cannot be paired."
        )
    return _decide(d, cfg.delta, cfg.min_seeds, cfg.max_seeds)


def _decide(diffs: list[float], delta: float, min_seeds: int, max_seeds: int) -> tuple[bool, str]:
    n = len(diffs)
    if n < min_seeds:
        return False, f"{n} of at least {min_seeds} pairs"
    mean, half = mean_ci(diffs)
    if mean - half > 0 or mean + half < 0:
        return True, STOP_EFFECT
    if half <= delta:
        return True, STOP_PRECISE
    if n >= max_seeds:
        return True, STOP_MAX
    return False, f"the CI includes 0 and its half-width {half:.4g} > delta {delta:g}"


def running_ci(diffs: Sequence[float]) -> list[dict[str, float]]:
    """Mean and 95 % CI of the first n differences, for n = 2 .. len(diffs) (the path of the sequential rule)."""
    out = []
    for n in range(2, len(diffs) + 1):
        mean, half = mean_ci(diffs[:n])
        out.append(
            {"n": n, "mean": mean, "ci95_half": half, "ci95_low": mean - half, "ci95_high": mean + half}
        )
    return out


def compare(
    side_a: RunSpec,
    side_b: RunSpec,
    *,
    out_dir: str | Path,
    delta: float = CompareConfig.delta,
    min_seeds: int = CompareConfig.min_seeds,
    max_seeds: int = CompareConfig.max_seeds,
    metric: str = CompareConfig.metric,
    seeds: Sequence[int] | None = None,
    names: tuple[str, str] = ("a", "b"),
    runs_dir: str | Path | None = None,
    loaded: dict[DataConfig, Any] | None = None,
) -> dict[str, Any]:
    """Train ``side_a`` and ``side_b`` with seed after seed until :func:`sequential_decision` stops.

    ``seeds``: the training seeds to draw from, in order (default 0, 1, 2, ...; at most ``max_seeds`` are
    used). Runs are cached in ``out_dir`` (see the module docstring), which is locked for the call, or in
    ``runs_dir`` when given: several comparisons that share a side (e.g. one baseline against several LCC
    settings, as ``latentcc reproduce lcc-variants`` does) then share its runs; the caller keeps one
    process per ``runs_dir``. ``loaded``: data already loaded (``load_data``'s splits by DataConfig), filled
    as data is loaded, so that several calls on one dataset load it once. Writes ``compare.json``
    (returned), ``compare.md`` and ``compare.png`` in ``out_dir``.
    """
    cfg = CompareConfig(delta=delta, min_seeds=min_seeds, max_seeds=max_seeds, metric=metric)
    for name, spec in (("side_a", side_a), ("side_b", side_b)):
        if not isinstance(spec, RunSpec):
            raise param_error(name, "compare", "a RunSpec (the configs of one side)", spec)
    if side_hash(side_a) == side_hash(side_b):
        raise param_error(
            "side_b", "compare", "a configuration that differs from side_a", side_config(side_b),
            "Both sides would train the same runs (only seed, device, workers, progress and logging settings "
            "differ, and they change no number). Fix: change the setting you want to test on one side.",
        )  # fmt: skip
    if not (isinstance(names, tuple) and len(names) == 2 and all(isinstance(n, str) and n for n in names)):
        raise param_error("names", "compare", "two non-empty strings", names)
    order = _seed_order(seeds, cfg)
    out = Path(out_dir)
    with FolderLock(out, func="compare", param="out_dir"):  # one process per comparison folder
        if not _is_compare_folder(out):
            check_new_output(
                out, func="compare", param="out_dir",
                fix="choose another output folder (a new one, or one a previous comparison wrote).",
            )  # fmt: skip
        runs = Path(runs_dir) if runs_dir is not None else out
        return _run(side_a, side_b, cfg, order, names, out, runs, {} if loaded is None else loaded)


def _seed_order(seeds: Sequence[int] | None, cfg: CompareConfig) -> list[int]:
    if seeds is None:
        return list(range(cfg.max_seeds))
    s = list(seeds)
    ok = all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**32 for v in s)
    if not ok or len(set(s)) != len(s) or len(s) < cfg.min_seeds:
        raise param_error(
            "seeds", "compare", f"at least min_seeds ({cfg.min_seeds}) distinct ints >= 0", seeds,
            "Leave it out for 0, 1, 2, ... or lower min_seeds.",
        )  # fmt: skip
    return s[: cfg.max_seeds]


def _is_compare_folder(out: Path) -> bool:
    """A folder an earlier comparison wrote (reused on purpose), recognised by its files."""
    return (out / "compare.json").is_file() or any(out.glob("*/side.json"))


def _run(
    side_a: RunSpec, side_b: RunSpec, cfg: CompareConfig, order: list[int], names: tuple[str, str], out: Path,
    runs_dir: Path, splits: dict[DataConfig, Any],
) -> dict[str, Any]:  # fmt: skip
    from latentcc.plumbing.progress import message

    sides = {"a": side_a, "b": side_b}
    folders = {key: _side_folder(runs_dir, spec) for key, spec in sides.items()}
    runs: dict[str, list[str]] = {"trained": [], "resumed": [], "reused": []}
    rows: list[dict[str, Any]] = []
    reason = ""
    for n, seed in enumerate(order):
        values, times = {}, {}
        # the sides take turns at running first: with one first always, its runs would pay the process's
        # warm-up and the wall-clock times of a pair would not compare
        for key in ("a", "b") if n % 2 == 0 else ("b", "a"):
            folder = folders[key] / f"seed-{seed}"
            label = f"{names[0 if key == 'a' else 1]}/seed-{seed}"
            _train_if_missing(sides[key], folder, seed, splits, runs, label, (side_a, side_b))
            values[key] = _metric_of(folder / "results.json", cfg.metric)
            times[key] = _metric_of(folder / "results.json", "wall_time_s")
        rows.append({"seed": seed, "a": values["a"], "b": values["b"], "diff": values["b"] - values["a"],
                     "a_time_s": times["a"], "b_time_s": times["b"]})  # fmt: skip
        stop, reason = _decide([r["diff"] for r in rows], cfg.delta, cfg.min_seeds, len(order))
        message(f"compare seed {seed}: {names[0]} {values['a']:.4g}, {names[1]} {values['b']:.4g}; {reason}")
        if stop:
            break
    result = _result(sides, folders, cfg, names, rows, reason, runs, max_used=len(order))
    _write_outputs(out, result)
    return result


def _side_folder(out: Path, spec: RunSpec) -> Path:
    """``out/<hash>``, with side.json (the hashed settings) so that a reader can tell the folders apart."""
    folder = out / side_hash(spec)
    if not (folder / "side.json").is_file():
        atomic_write_json(folder / "side.json", side_config(spec))
    return folder


def _train_if_missing(
    spec: RunSpec, folder: Path, seed: int, splits: dict[DataConfig, Any], runs: dict[str, list[str]],
    label: str, both: tuple[RunSpec, RunSpec],
) -> None:  # fmt: skip
    """A finished run folder is reused; else the run is trained (or resumed from its checkpoint)."""
    if (folder / "results.json").is_file():
        runs["reused"].append(label)
    else:
        if not runs["trained"] and not runs["resumed"]:  # the first run to train: every optional package
            from latentcc.extras import check_extras  # either side needs, before it starts

            for s in both:
                check_extras("compare", lcc=s.lcc, models=[s.model.model], data=[s.data.data])
        resume = (folder / "checkpoints" / "latest.json").is_file()  # stopped mid-run: continue it
        if spec.data not in splits:
            splits[spec.data] = load_data(spec.data)
        finetune(
            spec.model, spec.data, dataclasses.replace(spec.train, seed=seed), out_dir=folder, resume=resume,
            splits=splits[spec.data], lcc=spec.lcc, method=spec.method,
        )  # fmt: skip
        runs["resumed" if resume else "trained"].append(label)


def _metric_of(path: Path, metric: str) -> float:
    try:
        results = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise LatentccError(
            f"{path} cannot be read as JSON ({e}); delete its run folder {path.parent} to train that run again."
        ) from e
    value = results.get(metric) if isinstance(results, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        numeric = sorted(
            k for k, v in results.items() if isinstance(v, int | float) and not isinstance(v, bool)
        )
        raise param_error(
            "metric", "compare", f"a key of results.json with a finite number in every run ({numeric})", metric,
            f"{path} holds {value!r} for it (null: not measured, e.g. no test split). Fix: choose one of {numeric}.",
        )  # fmt: skip
    return float(value)


def _is_accuracy(metric: str) -> bool:
    return re.search(r"top\d+$", metric) is not None  # fractions in [0, 1]: shown in percentage points


def _result(
    sides: dict[str, RunSpec], folders: dict[str, Path], cfg: CompareConfig, names: tuple[str, str],
    rows: list[dict[str, Any]], reason: str, runs: dict[str, list[str]], max_used: int,
) -> dict[str, Any]:  # fmt: skip
    diff = paired_difference([r["b"] for r in rows], [r["a"] for r in rows])
    configs = {k: side_config(s) for k, s in sides.items()}
    if _is_accuracy(cfg.metric):
        said = conclusion(diff, treated=names[1], baseline=names[0], metric=cfg.metric)
    else:
        said = f"{names[1]} - {names[0]} in {cfg.metric}: {diff['mean']:+.4g}, 95% CI [{diff['ci95_low']:+.4g}, {diff['ci95_high']:+.4g}] over {diff['n']} seeds."  # fmt: skip
    return {
        "metric": cfg.metric,
        "names": {"a": names[0], "b": names[1]},
        "sides": {k: {"folder": folders[k].name, "config": configs[k]} for k in sides},
        "b_differs_in": _differences(configs["a"], configs["b"]),
        "rule": {"delta": cfg.delta, "min_seeds": cfg.min_seeds, "max_seeds": max_used, "level": 0.95},
        "rows": rows,
        **{k: diff[k] for k in ("n", "mean", "ci95_half", "ci95_low", "ci95_high")},
        "stop_reason": reason,
        "wall_time_s": _times(rows),
        "running": running_ci([r["diff"] for r in rows]),
        "runs": runs,
        "conclusion": said,
        "caveat": CAVEAT,
    }


def _times(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean wall-clock seconds per run of each side and the mean per-seed ratio b / a (each run's own
    results.json; cached runs keep the time of the call that trained them)."""
    a = [r["a_time_s"] for r in rows]
    b = [r["b_time_s"] for r in rows]
    ratio = [y / x for x, y in zip(a, b, strict=True) if x > 0]
    nan = float("nan")
    return {"a": sum(a) / len(a) if a else nan, "b": sum(b) / len(b) if b else nan,
            "b_over_a": sum(ratio) / len(ratio) if ratio else nan}  # fmt: skip


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """``section.key: a -> b`` for every setting in which the two sides differ (LCC switched on or off:
    ``lcc: off -> on`` and the settings of the LCC side that are not LCCConfig's defaults)."""
    out = []
    for section in a:
        x, y = a[section], b[section]
        if (x is None) != (y is None):
            on = x if y is None else y
            default = json.loads(json.dumps(config_to_dict(LCCConfig()), default=str))
            set_ = ", ".join(f"{k}={v!r}" for k, v in on.items() if v != default.get(k))
            out.append(
                f"{section}: {'off' if x is None else 'on'} -> {'off' if y is None else 'on'} ({set_})"
            )
        elif x is not None and y is not None:
            out += [f"{section}.{k}: {x.get(k)!r} -> {y.get(k)!r}" for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)]  # fmt: skip
    return out


def _fmt(v: float, metric: str, *, signed: bool = False) -> str:
    if not math.isfinite(v):
        return "-"
    if _is_accuracy(metric):
        return f"{100 * v:+.2f} pp" if signed else f"{100 * v:.2f}%"
    return f"{v:+.4g}" if signed else f"{v:.4g}"


def table_rows(result: dict[str, Any]) -> list[dict[str, str]]:
    """The paired table (seed, a, b, b - a) with the sides' names as column headers."""
    a, b, m = result["names"]["a"], result["names"]["b"], result["metric"]
    return [
        {"seed": str(r["seed"]), a: _fmt(r["a"], m), b: _fmt(r["b"], m), f"{b} - {a}": _fmt(r["diff"], m, signed=True)}
        for r in result["rows"]
    ]  # fmt: skip


def summary_lines(result: dict[str, Any]) -> list[str]:
    """What `latentcc compare` prints: the paired table, the mean difference, its CI and why it stopped."""
    from latentcc.report.table import format_table

    a, b, m = result["names"]["a"], result["names"]["b"], result["metric"]
    rule = result["rule"]
    return [
        format_table(table_rows(result)),
        f"mean difference {b} - {a} in {m}: {_fmt(result['mean'], m, signed=True)}, 95% CI "
        f"[{_fmt(result['ci95_low'], m, signed=True)}, {_fmt(result['ci95_high'], m, signed=True)}] over {result['n']} seeds",
        f"stopped: {result['stop_reason']} (min_seeds {rule['min_seeds']}, max_seeds {rule['max_seeds']}, "
        f"delta {_fmt(rule['delta'], m, signed=True).lstrip('+')})",
        result["conclusion"],
        f"runs: {len(result['runs']['trained'])} trained, {len(result['runs']['resumed'])} resumed, "
        f"{len(result['runs']['reused'])} reused from the cache; wall time per run {a} "
        f"{result['wall_time_s']['a']:.1f} s, {b} {result['wall_time_s']['b']:.1f} s ({b} / {a} = "
        f"{result['wall_time_s']['b_over_a']:.2f}x, mean over seeds)",
    ]  # fmt: skip


def _write_outputs(out: Path, result: dict[str, Any]) -> None:
    from latentcc.report.table import format_table

    atomic_write_json(out / "compare.json", result)
    a, b = result["names"]["a"], result["names"]["b"]
    lines = [
        f"# {b} vs {a}: paired comparison of {result['metric']}",
        "",
        f"- {a}: runs in `{result['sides']['a']['folder']}/seed-<s>/`",
        f"- {b}: runs in `{result['sides']['b']['folder']}/seed-<s>/`; differs from {a} in: "
        + (", ".join(f"`{d}`" for d in result["b_differs_in"]) or "nothing"),
        "",
        format_table(table_rows(result), markdown=True),
        "",
        *(f"{line}  " for line in summary_lines(result)[1:]),
        "",
        f"Stopping rule: after each pair (never before {result['rule']['min_seeds']}), stop when the 95% CI of "
        f"{b} - {a} excludes 0, or its half-width is <= delta, or at max_seeds. {result['caveat']}",
        "",
        "![per-seed differences and the running CI](compare.png)",
        "",
    ]
    atomic_write_text(out / "compare.md", "\n".join(lines))
    _plot(result, out / "compare.png")


def _plot(result: dict[str, Any], path: Path) -> None:
    """Left: each seed's difference with the mean and its CI; right: the running CI vs the number of seeds."""
    from latentcc.report.figure import pyplot, save_png

    scale, unit = (100.0, " (pp)") if _is_accuracy(result["metric"]) else (1.0, "")
    a, b = result["names"]["a"], result["names"]["b"]
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    seeds = [r["seed"] for r in result["rows"]]
    left.axhline(0, color="0.5", linewidth=1)
    left.bar(
        [str(s) for s in seeds], [scale * r["diff"] for r in result["rows"]], color="tab:blue", alpha=0.7
    )
    if math.isfinite(result["ci95_half"]):
        left.axhspan(
            scale * result["ci95_low"],
            scale * result["ci95_high"],
            color="tab:orange",
            alpha=0.2,
            label="95% CI",
            zorder=0,  # behind the bars
        )
    left.axhline(scale * result["mean"], color="tab:orange", label="mean")
    left.set(xlabel="seed", ylabel=f"{b} - {a}{unit}", title=f"per-seed {result['metric']} difference")
    left.legend(loc="best", fontsize=8)
    run = result["running"]
    delta = scale * result["rule"]["delta"]
    right.axhline(0, color="0.5", linewidth=1)
    right.axhspan(-delta, delta, color="0.85", label="± delta")
    if run:
        n = [r["n"] for r in run]
        mean = [scale * r["mean"] for r in run]
        half = [scale * r["ci95_half"] for r in run]
        right.errorbar(n, mean, yerr=half, marker="o", capsize=3, color="tab:orange", label="mean, 95% CI")
    from matplotlib.ticker import MaxNLocator

    right.xaxis.set_major_locator(MaxNLocator(integer=True))  # numbers of seeds: no 2.25, 2.5 ticks
    right.axvline(result["rule"]["min_seeds"], color="0.3", linestyle=":", label="min_seeds")
    right.set(
        xlabel="seeds (pairs)", ylabel=f"{b} - {a}{unit}", title=f"running CI; stop: {result['stop_reason']}"
    )
    right.legend(loc="best", fontsize=8)
    save_png(fig, path)
