"""Per-epoch metrics to JSON + CSV (rewritten atomically each epoch) and TensorBoard when installed."""

from __future__ import annotations

import csv
import importlib.util
import io
from pathlib import Path
from typing import Any

from latentcc.plumbing.atomic import atomic_write_json, atomic_write_text


class MetricsLogger:
    """Holds the run's history (a list of flat dicts, one per epoch) and mirrors it to disk."""

    def __init__(
        self, run_dir: Path, *, history: list[dict[str, Any]] | None = None, tensorboard: bool = True
    ) -> None:
        self.run_dir = run_dir
        self.history: list[dict[str, Any]] = list(history or [])
        self._tb = None
        if tensorboard and importlib.util.find_spec("tensorboard") is not None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a crashed run wrote after its last checkpoint
            self._tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=len(self.history) + 1)

    def log_epoch(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        atomic_write_json(self.run_dir / "metrics.json", self.history)
        atomic_write_text(self.run_dir / "metrics.csv", history_to_csv(self.history))
        if self._tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    self._tb.add_scalar(k, v, global_step=row["epoch"])
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def history_to_csv(history: list[dict[str, Any]]) -> str:
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows(history)
    return buf.getvalue()
