"""Read a run directory (the run-directory contract) into one `RunData`, noting what is missing.

Nothing here raises on a missing, empty or malformed file: each problem becomes a line in
`RunData.problems`, which the page shows, so a report of a half-finished run still renders.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

# Stages that generate and score completions, and so write samples.jsonl.
RL_STAGES = frozenset({"ppo", "grpo", "rloo"})


@dataclass
class Series:
    """One metric as logged: the steps it was logged at and its values (finite values only)."""

    steps: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.values)


@dataclass
class RunData:
    """Everything a report needs from one run directory.

    Attributes:
        run_dir: the directory read.
        stage: the stage name from metrics.json, else from the config, else "unknown".
        summary: metrics.json as a dict ({} when missing).
        final: the final value of each metric (metrics.json, else last values in metrics.csv).
        series: each metrics.csv column (except step/epoch) as a `Series`; empty ones dropped.
        config_text: .hydra/config.yaml verbatim ("" when missing).
        samples: samples.jsonl rows that parsed and carry a step, prompt and completion.
        problems: one human-readable line per missing, empty or unreadable file.
    """

    run_dir: Path
    stage: str = "unknown"
    summary: dict[str, Any] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)
    series: dict[str, Series] = field(default_factory=dict)
    config_text: str = ""
    samples: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def is_rl(self) -> bool:
        """True for stages that score generated completions (they log rollout/* metrics)."""
        return self.stage in RL_STAGES or any(k.startswith("rollout/") for k in self.series)


def load_run(run_dir: Path) -> RunData:
    """Read metrics.csv, metrics.json, .hydra/config.yaml and samples.jsonl from `run_dir`."""
    data = RunData(run_dir=run_dir)
    data.series = _read_metrics_csv(run_dir / "metrics.csv", data.problems)
    data.summary = _read_metrics_json(run_dir / "metrics.json", data.problems)
    data.config_text, config = _read_config(run_dir / ".hydra" / "config.yaml", data.problems)
    data.stage = _stage_name(data.summary, config)
    data.final = _final_metrics(data.summary, data.series)
    if data.is_rl or (run_dir / "samples.jsonl").exists():
        data.samples = _read_samples(run_dir / "samples.jsonl", data.problems)
    return data


def _read_metrics_csv(path: Path, problems: list[str]) -> dict[str, Series]:
    """Columns of a Lightning CSVLogger file as `Series`, keeping only finite values.

    Rows are sparse (a blank cell where a metric was not logged at that step), so each column
    keeps its own steps; a file without a `step` column falls back to the row number.
    """
    if not path.is_file():
        problems.append("metrics.csv is missing: no curves to plot.")
        return {}
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        problems.append(f"metrics.csv could not be read ({err}): no curves to plot.")
        return {}
    if not rows:
        problems.append("metrics.csv is empty: no curves to plot.")
        return {}
    steps = np.array([_to_float(row.get("step")) for row in rows])
    if np.isnan(steps).all():
        steps = np.arange(len(rows), dtype=float)
    series = {}
    for name in rows[0]:
        if name in ("step", "epoch", None):
            continue
        values = np.array([_to_float(row.get(name)) for row in rows])
        keep = np.isfinite(values) & np.isfinite(steps)
        if keep.any():
            # A resumed run appends to the file; in step order its curves read left to right.
            order = np.argsort(steps[keep], kind="stable")
            series[name] = Series(steps=steps[keep][order], values=values[keep][order])
    if not series:
        problems.append("metrics.csv has no logged values: no curves to plot.")
    return series


def _to_float(raw: Any) -> float:
    """A CSV cell as a float; blank or unparsable cells are NaN."""
    try:
        return float(raw)
    except (TypeError, ValueError):
        return math.nan


def _read_metrics_json(path: Path, problems: list[str]) -> dict[str, Any]:
    if not path.is_file():
        problems.append("metrics.json is missing: stage, step and wall time unknown.")
        return {}
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        problems.append(f"metrics.json could not be read ({err}).")
        return {}
    if not isinstance(summary, dict):
        problems.append("metrics.json is not a JSON object.")
        return {}
    return summary


def _read_config(path: Path, problems: list[str]) -> tuple[str, dict[str, Any]]:
    """The config's text (shown verbatim) and its parsed form (for the stage name)."""
    if not path.is_file():
        problems.append(".hydra/config.yaml is missing: the resolved config is not shown.")
        return "", {}
    try:
        text = path.read_text(encoding="utf-8")
        parsed = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        problems.append(f".hydra/config.yaml could not be read ({err}).")
        return "", {}
    return text, parsed if isinstance(parsed, dict) else {}


def _stage_name(summary: dict[str, Any], config: dict[str, Any]) -> str:
    stage = summary.get("stage")
    if not stage and isinstance(config.get("stage"), dict):
        stage = config["stage"].get("name")
    return str(stage) if stage else "unknown"


def _final_metrics(summary: dict[str, Any], series: dict[str, Series]) -> dict[str, float]:
    """metrics.json's final values; metrics.csv's last values fill in when it is absent."""
    final = {name: float(s.values[-1]) for name, s in series.items()}
    metrics = summary.get("metrics")
    if isinstance(metrics, dict):
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                final[name] = float(value)
    return dict(sorted(final.items()))


def _read_samples(path: Path, problems: list[str]) -> list[dict[str, Any]]:
    """Rows of samples.jsonl that carry step, prompt and completion; bad lines are counted."""
    if not path.is_file():
        problems.append("samples.jsonl is missing: no before/after samples.")
        return []
    rows, bad = [], 0
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as err:
        problems.append(f"samples.jsonl could not be read ({err}).")
        return []
    for line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(row, dict) and {"step", "prompt", "completion"} <= row.keys():
            rows.append(row)
        else:
            bad += 1
    if bad:
        problems.append(
            f"samples.jsonl: {bad} line(s) skipped (not JSON with step/prompt/completion)."
        )
    if not rows and not bad:
        problems.append("samples.jsonl is empty: no before/after samples.")
    return rows
