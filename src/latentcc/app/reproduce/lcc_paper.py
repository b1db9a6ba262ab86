"""``lcc-paper``: the LCC paper's own setting, ImageNet ResNet-18 fine-tuned on CIFAR-100, as one command.

The paper's grid w in {1e-4, 1e-2} x k in {5, 50, 500} against plain fine-tuning, 5 paired seeds: every
cell of a seed shares the baseline's data split, head initialisation and data order, and the report gives
each cell's mean paired difference in test top-1 with a 95 % confidence interval (as ``lcc-gain``).

Data and model come from the Hugging Face hub (``uoft-cs/cifar100``, ``microsoft/resnet-18``) or from
local folders in the same format: a ``DatasetDict.save_to_disk`` folder with columns ``img``,
``fine_label``, ``coarse_label`` and splits train/test, and a ``save_pretrained`` image-model folder.
Hub ids are only turned into local folders (one download, kept in the Hugging Face caches); from there
one code path trains, so the offline test on a tiny fake runs exactly what the hub run runs.
The ``ci`` size trains on a tiny fake it writes itself (no network): it checks the plumbing, not the claim.
This needs internet and a GPU for hours (docs/reproductions.md gives the cost); it is not run by
``latentcc reproduce all``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from latentcc.app.compare import RunSpec
from latentcc.app.finetune import load_data
from latentcc.app.reproduce.base import ClaimResult, Paired, fmt_ci, paired_grid, verdict
from latentcc.app.reproduce.lcc_gain import plot_cells
from latentcc.config import DataConfig, LCCConfig, ModelConfig, TrainConfig
from latentcc.models.text import quiet_transformers
from latentcc.plumbing.errors import LatentccError, param_error, require

HUB_DATA = "uoft-cs/cifar100"
HUB_MODEL = "microsoft/resnet-18"
# The pooled (penultimate) output of the HF ResNet, (B, 512, 1, 1): the latent the classifier reads.
LAYER = "resnet.pooler"
GRID: tuple[tuple[float, int], ...] = tuple((w, k) for w in (1e-4, 1e-2) for k in (5, 50, 500))
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
# CIFAR-100's own test split is the test set; 20 % of its 50k training images are held out for model
# selection, which leaves the 40k training samples the paper clusters.
DATA = DataConfig(val_fraction=0.2, label_column="fine_label", input_column="img")
# The paper does not state its optimiser, epochs or batch size (docs/reproductions.md, `lcc-paper`): a
# standard ImageNet -> CIFAR fine-tuning recipe, long enough for 9 correction epochs after the warm-up.
TRAIN = TrainConfig(
    epochs=10, batch_size=128, optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, scheduler="cosine"
)
# The paper's procedure: latents from an eval-mode pass over the training set, k-NN on the full
# 512-d latents (no PCA); every other setting is LCCConfig's default (warm-up 1, interval 1).
LCC = LCCConfig(layers=(LAYER,), latent_source="eval_pass", graph_dim=None)

SIZES: dict[str, dict[str, Any]] = {
    "default": {"train": TRAIN, "grid": GRID},
    # two epochs: the first correction epoch comes after the one warm-up epoch
    "ci": {"train": dataclasses.replace(TRAIN, epochs=2, batch_size=16), "grid": ((1e-4, 5), (1e-2, 5))},
}


def run(
    size: str, seeds: tuple[int, ...], out: Path, *, data: str | None = None, model: str | None = None
) -> ClaimResult:
    """``latentcc reproduce lcc-paper``: the hub (or the given folders) at ``size``'s budget and grid.

    Without ``data`` / ``model`` the ``default`` size uses the hub ids and ``ci`` a tiny fake written
    into ``out/fake``.
    """
    s = SIZES[size]
    if size == "ci" and (data is None or model is None):
        fake = write_fake(out / "fake")
        data, model = data or str(fake / "data"), model or str(fake / "model")
    return run_paper(
        data=data or HUB_DATA,
        model=model or HUB_MODEL,
        out=out,
        seeds=seeds,
        grid=s["grid"],
        train=s["train"],
    )


def run_paper(
    *,
    data: str = HUB_DATA,
    model: str = HUB_MODEL,
    out: Path,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    grid: Sequence[tuple[float, int]] = GRID,
    train: TrainConfig = TRAIN,
    layer: str = LAYER,
    cache: str | Path | None = None,
) -> ClaimResult:
    """Baseline and every (w, k) of ``grid`` for each seed; paired test top-1 differences as a ClaimResult.

    ``data`` / ``model``: local folders, or hub ids (downloaded once into ``cache``, default the Hugging
    Face caches). ``layer``: the corrected layer (name, dotted suffix or regex; the paper's best cell used
    the head). Runs: ``out/runs/<side hash>/seed-<seed>``, each cell's paired report in ``out/<cell>/``
    (``w0.0001_k5``, ...); the same call again reuses finished runs and resumes a half-finished one.
    """
    if not seeds:
        raise param_error("seeds", "run_paper", "at least one seed", seeds)
    dcfg = dataclasses.replace(DATA, data=str(local_data(data, cache)))
    mcfg = ModelConfig(model=str(local_model(model, cache)))
    tcfg = dataclasses.replace(train, progress=False, tensorboard=False)
    base = RunSpec(model=mcfg, data=dcfg, train=tcfg)
    cells = {
        f"w={w:g}, k={k}": dataclasses.replace(
            base, lcc=dataclasses.replace(LCC, layers=(layer,), weight=w, k=k)
        )
        for w, k in grid
    }
    loaded: dict[DataConfig, Any] = {}
    acc = paired_grid(base, cells, seeds, out, loaded)  # cached: the same command again continues
    splits = loaded[dcfg] if dcfg in loaded else load_data(dcfg)  # (nothing trained: all runs cached)
    setting = (
        f"{model} fine-tuned on {data} ({len(splits.train)} train / {len(splits.val)} val / {len(splits.test)} "
        f"test, {splits.num_classes} classes), {tcfg.epochs} epochs, {tcfg.optimizer} lr {tcfg.lr} batch "
        f"{tcfg.batch_size}, {tcfg.scheduler} schedule; LCC on `{layer}` (eval-pass latents, no PCA); "
        f"{len(seeds)} seeds per cell, paired with the same-seed baseline."
    )
    return _result(acc, setting, out)


def _result(acc: dict[str, list[float]], setting: str, out: Path) -> ClaimResult:
    base = acc["baseline"]
    rows: list[dict[str, Any]] = [
        {"setting": "baseline", "test_top1": fmt_ci(base), "minus baseline (paired)": "—"}
    ]
    cells: dict[str, dict[str, Any]] = {"baseline": {"acc": base}}
    for key, values in acc.items():
        if key == "baseline":
            continue
        diffs = [a - b for a, b in zip(values, base, strict=True)]
        p = Paired.of(diffs)
        cells[key] = {"diff": p.mean, "half": p.half, "acc": values, "diffs": diffs}
        rows.append({"setting": key, "test_top1": fmt_ci(values), "minus baseline (paired)": fmt_ci(diffs)})
    lcc_cells = {k: v for k, v in cells.items() if k != "baseline"}
    summaries = {k: Paired(tuple(v["diffs"]), v["diff"], v["half"]) for k, v in lcc_cells.items()}
    better = sum(p.above for p in summaries.values())  # NaN half (one seed): never counted
    worse = sum(p.below for p in summaries.values())
    best = max(lcc_cells, key=lambda k: lcc_cells[k]["diff"])
    plot_cells(out / "lcc_paper.png", cells)
    return ClaimResult(
        name="lcc-paper",
        claim="Fine-tuning the ImageNet ResNet-18 on CIFAR-100 with the LCC loss (CE + w * LCC) beats plain "
        "fine-tuning across the grid w in {1e-4, 1e-2} x k in {5, 50, 500}, by up to +1.02 points of test "
        "accuracy (LCC paper).",
        setting=setting,
        result=f"{better} of {len(lcc_cells)} grid cells beat the baseline with a 95 % CI above 0, {worse} fall "
        f"below it; best cell {best}: {lcc_cells[best]['diff']:+.4f} test top-1 (paper: +0.0102, on the head layer).",
        verdict=verdict(summaries, "majority"),
        table=rows,
        numbers=cells,
        figures=["lcc_paper.png"],
    )


def local_data(data: str, cache: str | Path | None = None) -> Path:
    """A saved-dataset folder for ``data``: the folder itself, or the hub dataset saved to disk once."""
    folder = Path(data)
    if folder.is_dir():
        return folder
    _check_hub_id(data, "data")
    datasets = require(
        "datasets", "hf", purpose=f"downloading the dataset {data!r} from the Hugging Face hub"
    )
    root = Path(cache) if cache is not None else Path(datasets.config.HF_DATASETS_CACHE)
    saved = root / "latentcc-saved" / data.replace("/", "--")
    if not (saved / "dataset_dict.json").is_file():  # CIFAR-100: ~170 MB downloaded, ~150 MB saved
        try:
            ds = datasets.load_dataset(data, cache_dir=str(cache) if cache is not None else None)
        except (OSError, ValueError) as e:  # ConnectionError is an OSError
            raise _unreachable(data, "data", e) from e
        # save beside, then rename into place: save_to_disk writes dataset_dict.json before the splits, so an
        # interrupted save in place would leave a marker this check trusts over a partial folder
        partial = saved.with_name(saved.name + f".partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        ds.save_to_disk(str(partial))
        shutil.rmtree(saved, ignore_errors=True)  # a partial folder left by a latentcc older than this check
        os.replace(partial, saved)
    return saved


def local_model(model: str, cache: str | Path | None = None) -> Path:
    """A ``save_pretrained`` folder for ``model``: the folder itself, or the hub snapshot (config + weights)."""
    folder = Path(model)
    if folder.is_dir():
        return folder
    _check_hub_id(model, "model")
    hub = require(
        "huggingface_hub", "hf", purpose=f"downloading the model {model!r} from the Hugging Face hub"
    )
    try:
        path = hub.snapshot_download(
            model,
            allow_patterns=["*.json", "*.safetensors"],  # config, preprocessor (size, mean/std), weights only
            cache_dir=str(cache) if cache is not None else None,
        )
    except (OSError, ValueError) as e:  # no network, unknown repo: requests' errors are OSErrors
        raise _unreachable(model, "model", e) from e
    return Path(path)


def _check_hub_id(name: str, param: str) -> None:
    """A missing local folder is refused here, before it is mistaken for a hub id ("owner/name")."""
    parts = name.split("/")
    if Path(name).exists() or name.startswith((".", "/", "~")) or len(parts) > 2 or not all(parts):
        raise param_error(
            param, "run_paper", "an existing local folder or a Hugging Face hub id ('owner/name')", name,
            f"No folder {name} exists. Fix: pass the folder written by save_to_disk / save_pretrained, or a hub "
            f"id such as {HUB_DATA if param == 'data' else HUB_MODEL!r}.",
        )  # fmt: skip


def _unreachable(name: str, param: str, e: Exception) -> LatentccError:
    return LatentccError(
        f"run_paper: could not fetch the {param} {name!r} from the Hugging Face hub ({type(e).__name__}: {e}). "
        f"Fix: run where the hub is reachable, or pass a local folder (--{param}; save_to_disk / save_pretrained "
        "format)."
    )


def write_fake(folder: Path, *, n_train: int = 64, n_test: int = 32, classes: int = 4) -> Path:
    """A tiny CIFAR-100 look-alike and a tiny HF ResNet in the hub formats, under ``folder`` (data/, model/).

    Images are 32 x 32 RGB whose mean colour depends on the fine label (so fine-tuning has something to
    learn); the model sees them at 32 px (its preprocessor_config.json), with 8-channel stages.
    """
    import numpy as np
    import torch

    datasets = require("datasets", "hf", purpose="the lcc-paper CI fake dataset")
    transformers = require("transformers", "hf", purpose="the lcc-paper CI fake model")
    from PIL import Image

    rng = np.random.default_rng(0)
    colours = rng.integers(40, 216, size=(classes, 3))
    features = datasets.Features(
        {
            "img": datasets.Image(),
            "fine_label": datasets.ClassLabel(names=[f"fine{i}" for i in range(classes)]),
            "coarse_label": datasets.ClassLabel(names=[f"coarse{i}" for i in range((classes + 1) // 2)]),
        }
    )

    def split(n: int) -> Any:
        fine = [i % classes for i in range(n)]
        noise = rng.integers(-40, 41, size=(n, 32, 32, 3))
        pixels = np.clip(colours[fine][:, None, None, :] + noise, 0, 255).astype(np.uint8)
        imgs = [Image.fromarray(p) for p in pixels]
        return datasets.Dataset.from_dict(
            {"img": imgs, "fine_label": fine, "coarse_label": [f // 2 for f in fine]}, features=features
        )

    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # a CI fake of 96 rows needs no progress bars
    try:
        datasets.DatasetDict(train=split(n_train), test=split(n_test)).save_to_disk(str(folder / "data"))
    finally:
        if bars:
            datasets.enable_progress_bars()
    config = transformers.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 8, 8, 8], depths=[1, 1, 1, 1], num_labels=classes
    )
    with torch.random.fork_rng(), quiet_transformers(transformers):  # the same fake weights on every call
        torch.manual_seed(0)
        transformers.ResNetForImageClassification(config).save_pretrained(str(folder / "model"))
    prep = {"size": {"shortest_edge": 32}, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}
    (folder / "model" / "preprocessor_config.json").write_text(json.dumps(prep, allow_nan=False))
    return folder
