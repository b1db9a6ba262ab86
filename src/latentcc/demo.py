"""`latentcc demo`: fine-tune a real pretrained model on a real downstream dataset, offline.

Default: the MNIST-trained CNN (digit-recognizer-py weights) fine-tuned on Animal-MNIST, beside the
same architecture trained from random initialisation with the same budget and seed, so the table
shows what the pretrained weights are worth.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from latentcc.atomic import atomic_write_json, atomic_write_text
from latentcc.config import DataConfig, ModelConfig, TrainConfig
from latentcc.finetune import finetune, load_data
from latentcc.report.curves import plot_compare
from latentcc.report.table import format_table


def run_demo(
    mcfg: ModelConfig,
    dcfg: DataConfig,
    tcfg: TrainConfig,
    *,
    out_dir: str | Path | None = None,
    compare_scratch: bool = True,
) -> list[dict[str, Any]]:
    """Run the demo, print the result table and write ``out_dir`` (default ``runs/demo/<timestamp>``)."""
    t0 = time.perf_counter()
    out = Path(out_dir) if out_dir else Path("runs") / "demo" / time.strftime("%Y%m%d-%H%M%S")
    splits = load_data(dcfg)
    s = splits.summary()
    print(
        f"data: {splits.name}  classes={splits.num_classes}  train/val/test = "
        f"{len(splits.train)}/{len(splits.val)}/{len(splits.test)}  (split seed {dcfg.split_seed})"
    )
    runs = {"pretrained": mcfg}
    if compare_scratch and mcfg.pretrained:
        runs["random-init"] = dataclasses.replace(mcfg, pretrained=False)
    rows, histories = [], {}
    for label, m in runs.items():
        print(f"\n== {label}: {m.model} -> {splits.name}, {tcfg.epochs} epochs ==")
        res = finetune(m, dcfg, tcfg, out_dir=out / label, splits=splits)
        histories[label] = res.history
        test = res.test
        rows.append(
            {
                "run": label,
                "model": m.model,
                "epochs": tcfg.epochs,
                "best_epoch": res.best_epoch,
                "val_top1": res.best_val_top1,
                "test_top1": test.top1 if test else float("nan"),
                f"test_top{test.k if test else 5}": test.topk if test else float("nan"),
                "time_s": round(res.wall_time_s, 1),
            }
        )
    table = format_table(rows)
    print("\n" + table)
    print(
        f"\n(test accuracy on the best-on-val weights; total {time.perf_counter() - t0:.0f} s; run folder: {out})"
    )
    plot_compare(
        histories, out / "val_accuracy.png", title=f"{mcfg.model} -> {splits.name}: validation top-1"
    )
    atomic_write_json(
        out / "summary.json", {"rows": rows, "dataset": s, "wall_time_s": time.perf_counter() - t0}
    )
    atomic_write_text(out / "summary.md", format_table(rows, markdown=True) + "\n")
    return rows
