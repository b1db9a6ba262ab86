"""Plain-PyTorch fine-tuning: ``fit`` (resumable, best-on-val) and ``evaluate``."""

from latentcc.config import TrainConfig
from latentcc.train.loop import EpochContext, EvalResult, FitResult, evaluate, fit, resolve_device

__all__ = ["EpochContext", "EvalResult", "FitResult", "TrainConfig", "evaluate", "fit", "resolve_device"]
