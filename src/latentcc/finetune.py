"""One fine-tuning run from configs: load data and model by name, train, write the run folder."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from latentcc.config import DataConfig, LCCConfig, ModelConfig, TrainConfig, config_to_dict
from latentcc.errors import LatentccError, param_error
from latentcc.seeding import seed_everything
from latentcc.train import FitResult, fit


def load_data(dcfg: DataConfig) -> Any:
    from latentcc.data import load_dataset

    return load_dataset(
        dcfg.data,
        seed=dcfg.split_seed,
        val_fraction=dcfg.val_fraction,
        test_fraction=dcfg.test_fraction,
        max_samples=dcfg.max_samples or None,
    )


def build_model(mcfg: ModelConfig, splits: Any) -> Any:
    from latentcc.models import MODELS, load_model, model_kind

    kind = model_kind(mcfg.model)  # raises for unknown names, listing the known ones
    if kind != splits.kind:
        raise LatentccError(
            f"The model '{mcfg.model}' takes {kind} input but the data '{splits.name}' is {splits.kind}; "
            f"pick a {splits.kind} model (see `latentcc models`) or {kind} data (see `latentcc datasets`)."
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


def finetune(
    mcfg: ModelConfig,
    dcfg: DataConfig,
    tcfg: TrainConfig,
    *,
    out_dir: str | Path | None,
    resume: bool = False,
    splits: Any = None,
    lcc: LCCConfig | None = None,
) -> FitResult:
    """Load ``dcfg.data`` and ``mcfg.model`` and fine-tune with ``tcfg`` (plus LCC if ``lcc`` names layers).

    The run folder stores every config; ``result.model`` holds the trained (best-on-val) model.
    """
    splits = splits if splits is not None else load_data(dcfg)
    seed_everything(tcfg.seed)  # the new head's initialisation is part of the run: same seed, same run
    model = build_model(mcfg, splits)
    extra = {"model": config_to_dict(mcfg), "data": config_to_dict(dcfg), "dataset": splits.summary()}
    use_lcc = lcc is not None and bool(lcc.layers)  # fit records the LCC config in config.json itself
    return fit(
        model,
        splits,
        config=tcfg,
        out_dir=out_dir,
        resume=resume,
        extra_config=extra,
        lcc=lcc if use_lcc else None,
    )
