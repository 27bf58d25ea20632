"""The run-directory contract: metrics.json, samples.jsonl, checkpoints/, model/."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any


def checkpoint_path(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "last.ckpt"


def last_logged_values(metrics_csv: Path) -> dict[str, float]:
    """The last non-empty value of every column of a Lightning `metrics.csv`."""
    if not metrics_csv.is_file():
        return {}
    values: dict[str, float] = {}
    with metrics_csv.open(newline="") as f:
        for row in csv.DictReader(f):
            for key, raw in row.items():
                if key in ("epoch", "step") or raw in (None, ""):
                    continue
                value = float(raw)
                if not math.isnan(value):
                    values[key] = value
    return values


def write_metrics_json(
    run_dir: Path, stage: str, global_step: int, wall_s: float, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write `metrics.json`: the stage, the step reached, wall time and each metric's last value."""
    summary = {
        "stage": stage,
        "global_step": global_step,
        "wall_s": round(wall_s, 3),
        "metrics": last_logged_values(run_dir / "metrics.csv"),
    }
    if extra:
        summary.update(extra)
    atomic_write_text(run_dir / "metrics.json", json.dumps(summary, indent=2) + "\n")
    return summary


def append_samples(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Append rows (prompt, completion, step, ...) to `samples.jsonl`."""
    with (run_dir / "samples.jsonl").open("a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file and rename, so readers never see a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
