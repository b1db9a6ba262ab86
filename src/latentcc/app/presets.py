"""The app's own presets: what `latentcc demo` (and `make demo`) runs unless told otherwise.

Library defaults live in :mod:`latentcc.config`; these are choices of the demo recipe (a model, a dataset,
a layer and seeds), kept apart so the configs hold only what every caller gets. Each section overrides the
matching config dataclass's fields (model -> ModelConfig, data -> DataConfig, train -> TrainConfig,
lcc -> LCCConfig).
"""

from __future__ import annotations

from typing import Any

# The demo (`latentcc demo`, `make demo`): baseline vs LCC fine-tuning of the pretrained MNIST CNN on
# Animal-MNIST over 3 seeds, sized for <= 5 min on 2 CPU cores.
DEMO_DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {"model": "mnist-cnn"},
    "data": {"data": "animal-mnist"},
    "train": {"epochs": 3, "batch_size": 64, "lr": 1e-3},
    "lcc": {"layers": ("net.fc_layers.1",), "diagnostic": True},
}
DEMO_SEEDS = (0, 1, 2)
# `latentcc demo --full`: a longer, stronger run (more seeds and epochs).
DEMO_FULL: dict[str, dict[str, Any]] = {"train": {"epochs": 6}}
DEMO_FULL_SEEDS = (0, 1, 2, 3, 4)
