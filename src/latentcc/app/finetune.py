"""One fine-tuning run from configs: load data and model by name, train, write the run folder."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

from latentcc.config import DataConfig, LCCConfig, MethodConfig, ModelConfig, TrainConfig, config_to_dict
from latentcc.plumbing.errors import LatentccError, param_error
from latentcc.plumbing.seeding import seed_everything
from latentcc.train import FitResult, fit
from latentcc.train.methods import MethodSetup, apply_method


def load_data(dcfg: DataConfig) -> Any:
    from latentcc.data import load_dataset

    return load_dataset(
        dcfg.data,
        seed=dcfg.split_seed,
        val_fraction=dcfg.val_fraction,
        test_fraction=dcfg.test_fraction,
        max_samples=dcfg.max_samples or None,
        label_column=dcfg.label_column,
        input_column=dcfg.input_column or None,
    )


def build_model(mcfg: ModelConfig, splits: Any) -> Any:
    from latentcc.models import MODELS, SPECS, load_model, model_kind

    # unknown names raise, listing the known ones and naming what the user set: ModelConfig.model / --model
    kind = model_kind(mcfg.model, param="model", func="ModelConfig (--model)")
    if kind != splits.kind:
        fits = [name for name, spec in SPECS.items() if spec.kind == splits.kind]
        other = (
            f"pick {_a(splits.kind)} model ({', '.join(fits)}; see `latentcc models`)"
            if fits
            else f"no embedded model takes {splits.kind} data, so train your own with latentcc.train.fit"
        )
        raise LatentccError(
            f"The model '{mcfg.model}' takes {kind} input but the data '{splits.name}' is {splits.kind}; "
            f"{other}, or pick {kind} data (see `latentcc datasets`)."
        )
    kw: dict[str, Any] = {"pretrained": mcfg.pretrained}
    if mcfg.input_size:
        factory = MODELS.get(mcfg.model)
        if factory is None or "input_size" not in inspect.signature(factory).parameters:
            raise param_error(
                "input_size",
                "ModelConfig",
                "0 (the model's fixed input size) for this model",
                mcfg.input_size,
                f"'{mcfg.model}' has a fixed input size; --input-size applies to efficientnet-lite0.",
            )
        kw["input_size"] = mcfg.input_size
    return load_model(mcfg.model, num_classes=splits.num_classes, **kw)


def _a(word: str) -> str:
    """``word`` with its indefinite article: "an image", "a text"."""
    return ("an " if word[:1] in "aeiou" else "a ") + word


def prepare_model(mcfg: ModelConfig, splits: Any, method: MethodConfig | None = None) -> MethodSetup:
    """``build_model`` then ``apply_method`` (which parameters train; SCL-FT's skip), measured on two samples."""
    from torch.utils.data import default_collate

    from latentcc.plumbing.batch import unpack_batch

    model = build_model(mcfg, splits)
    n = min(2, len(splits.train))
    x = unpack_batch(default_collate([splits.train[i] for i in range(n)]))[0] if n else None
    return apply_method(model, method, example_input=x)


def finetune(
    mcfg: ModelConfig,
    dcfg: DataConfig,
    tcfg: TrainConfig,
    *,
    out_dir: str | Path | None,
    resume: bool = False,
    splits: Any = None,
    lcc: LCCConfig | None = None,
    method: MethodConfig | None = None,
) -> FitResult:
    """Load ``dcfg.data`` and ``mcfg.model`` and fine-tune with ``tcfg`` (plus LCC if ``lcc`` names layers).

    ``method`` (default: full fine-tuning) chooses what trains (``latentcc.train.methods.apply_method``).
    The run folder stores every config, and the parameter counts in config.json's ``parameters``;
    ``result.model`` holds the trained (best-on-val) model.
    """
    check_lcc_has_layers(lcc)
    splits = splits if splits is not None else load_data(dcfg)
    seed_everything(tcfg.seed)  # the new head's initialisation is part of the run: same seed, same run
    setup = prepare_model(mcfg, splits, method)
    extra = {
        "model": config_to_dict(mcfg),
        "data": config_to_dict(dcfg),
        "method": config_to_dict(method or MethodConfig()),
        "parameters": {"trainable": setup.trainable, "total": setup.total},  # derived; checked on resume too
        "dataset": splits.summary(),
    }
    use_lcc = lcc is not None and bool(lcc.layers)  # fit records the LCC config in config.json itself
    return fit(
        setup.model,
        splits,
        config=tcfg,
        out_dir=out_dir,
        resume=resume,
        extra_config=extra,
        lcc=lcc if use_lcc else None,
        penalty=setup.penalty,
    )


def check_lcc_has_layers(lcc: LCCConfig | None) -> None:
    """LCC settings without layers would be dropped silently (no layers = no LCC): refuse them by name."""
    if lcc is None or lcc.layers:
        return
    default = LCCConfig()
    set_ = [f.name for f in dataclasses.fields(lcc) if getattr(lcc, f.name) != getattr(default, f.name)]
    if set_:
        flags = ", ".join(f"{n}={getattr(lcc, n)!r} (--lcc-{n.replace('_', '-')})" for n in set_)
        raise param_error(
            "layers", "LCCConfig", f"at least one layer name when other LCC settings are given ({flags})",
            lcc.layers,
            "Without layers LCC does not run and those settings would be ignored. Fix: name the layers to "
            "correct with --lcc-layers (see `latentcc layers --model ...`), or drop the other --lcc-* settings.",
        )  # fmt: skip
