"""`stage=pipeline`: SFT -> reward model -> PPO, each stage's output feeding the next.

Each stage runs exactly as its own ``stage=<name>`` would, in ``<run_dir>/<name>/`` with the
usual run-directory contract. What links them:

- the reward model's backbone and its calibration policy are the SFT output;
- PPO starts from the SFT output and is scored by the reward model (``reward=model``).

A stage is skipped by pointing at an existing output: ``pipeline.sft_model=<dir>``,
``pipeline.reward_model=<dir>``. Each stage takes its own overrides from ``pipeline.<stage>``
(a nested mapping, e.g. ``pipeline.sft.trainer.max_steps=500``; new keys with a ``+``).
The pipeline's own ``model``/``data`` choices go to the SFT stage; ``seed``, ``threads``, ``logger``,
``callbacks`` and the placement keys of ``trainer`` (accelerator, devices, strategy,
precision, num_nodes) go to every stage.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from rlhf_lightning.builtins import resolve_builtins
from rlhf_lightning.config import compose_stage, share_run_settings
from rlhf_lightning.errors import ConfigError
from rlhf_lightning.rundir import atomic_write_text, save_resolved_config
from rlhf_lightning.train import run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyMetric:
    """The number that says whether a stage worked, read from its metrics.csv."""

    name: str
    better: str  # "lower" or "higher"
    window: int  # start/end are means over this many logged values (noisy rollout metrics)


KEY_METRICS = {
    "sft": KeyMetric("val/perplexity", "lower", 1),
    "reward": KeyMetric("val/accuracy", "higher", 1),
    "ppo": KeyMetric("rollout/reward_mean", "higher", 5),
}


@dataclass
class StageOutcome:
    """One row of the pipeline's summary table."""

    stage: str
    run_dir: Path | None
    model_dir: Path
    wall_s: float | None
    metric: str
    start: float | None
    end: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "run_dir": str(self.run_dir) if self.run_dir else None,
            "model_dir": str(self.model_dir),
            "wall_s": self.wall_s,
            "metric": self.metric,
            "start": self.start,
            "end": self.end,
        }


def overrides_from_mapping(node: Mapping | DictConfig | None, prefix: str = "") -> list[str]:
    """Flatten ``{"trainer": {"max_steps": 5}}`` into Hydra overrides ``["trainer.max_steps=5"]``.

    Raises:
        ConfigError: for values an override string cannot carry (nested lists of mappings).
    """
    if node is None:
        return []
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    overrides = []
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            overrides.extend(overrides_from_mapping(value, f"{path}."))
        else:
            overrides.append(f"{path}={_override_value(value, path)}")
    return overrides


def _override_value(value: Any, path: str) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # quoted: spaces, commas and '=' survive Hydra's parser
    if isinstance(value, list | ListConfig) and all(
        isinstance(v, str | int | float | bool) or v is None for v in value
    ):
        return "[" + ",".join(_override_value(v, path) for v in value) + "]"
    raise ConfigError(
        f"pipeline override {path}={value!r}: cannot be passed to a stage. Fix: use scalar "
        "values or lists of scalars."
    )


def run_pipeline(cfg: DictConfig) -> dict[str, Any]:
    """Run SFT, reward modelling and PPO into sub-directories of ``cfg.run_dir``.

    Args:
        cfg: the composed root config with ``stage=pipeline``.

    Returns:
        The pipeline's metrics.json summary; ``stages`` holds the per-stage table rows.
    """
    start = time.perf_counter()
    run_dir = Path(cfg.run_dir).expanduser().resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    save_resolved_config(cfg, run_dir)
    pipeline = cfg.pipeline
    outcomes: list[StageOutcome] = []

    def stage_config(stage: str, links: list[str]) -> DictConfig:
        user = overrides_from_mapping(pipeline.get(stage))
        sub = compose_stage(stage, [*links, *user], run_dir=run_dir / stage)
        return share_run_settings(sub, cfg, group=run_dir.name)

    def run_or_reuse(stage: str, given: str | None, links: list[str], fix: str) -> Path:
        if given:
            model_dir = _existing_model_dir(given, f"pipeline.{stage}_model", fix)
            log.info("Pipeline: %s skipped, using %s", stage, model_dir)
            outcomes.append(StageOutcome(stage, None, model_dir, None, "", None, None))
            return model_dir
        sub = stage_config(stage, links)
        if stage == "sft":
            with open_dict(sub):
                sub.model = cfg.model
                sub.data = cfg.data
        log.info("Pipeline: %s -> %s", stage, sub.run_dir)
        summary = run(resolve_builtins(sub))
        outcomes.append(_outcome(stage, Path(summary["run_dir"]), summary["wall_s"]))
        return Path(summary["run_dir"]) / "model"

    sft_model = run_or_reuse("sft", pipeline.sft_model, [], "a directory with config.json")
    reward_model = run_or_reuse(
        "reward",
        pipeline.reward_model,
        [f"model.name_or_path={sft_model}", f"stage.calibration.policy={sft_model}"],
        "an exported reward model directory (<reward run>/model)",
    )
    run_or_reuse(
        "ppo",
        None,
        [
            f"model.name_or_path={sft_model}",
            "reward=model",
            f"reward.path={reward_model}",
        ],
        "",
    )
    summary = {
        "stage": "pipeline",
        "global_step": 0,
        "wall_s": round(time.perf_counter() - start, 3),
        "metrics": {
            f"{o.stage}/{o.metric}": o.end for o in outcomes if o.metric and o.end is not None
        },
        "stages": [o.as_dict() for o in outcomes],
        "run_dir": str(run_dir),
    }
    atomic_write_text(run_dir / "metrics.json", json.dumps(summary, indent=2) + "\n")
    table = format_table(outcomes)
    atomic_write_text(run_dir / "pipeline.md", _page(table, outcomes))
    print(table, flush=True)
    report = run_dir / "ppo" / "report" / "index.html"
    print(f"Report: {report if report.exists() else run_dir / 'pipeline.md'}", flush=True)
    return summary


def _existing_model_dir(given: str, key: str, fix: str) -> Path:
    path = Path(given).expanduser().resolve()
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"{key}={given}: no model there (no config.json). Fix: give {fix}, or drop {key} "
            "to train that stage."
        )
    return path


def _outcome(stage: str, run_dir: Path, wall_s: float) -> StageOutcome:
    key = KEY_METRICS[stage]
    values = _logged(run_dir / "metrics.csv", key.name)
    if stage == "sft" and not values:
        key = KeyMetric("train/loss", "lower", 5)
        values = _logged(run_dir / "metrics.csv", key.name)
    window = max(1, min(key.window, len(values) // 2))
    start = sum(values[:window]) / window if values else None
    end = sum(values[-window:]) / window if values else None
    label = key.name if window == 1 else f"{key.name} (mean of {window})"
    return StageOutcome(stage, run_dir, run_dir / "model", wall_s, label, start, end)


def _logged(metrics_csv: Path, name: str) -> list[float]:
    """Every logged value of column `name`, in order (empty if the file or column is absent)."""
    if not metrics_csv.is_file():
        return []
    with metrics_csv.open(newline="") as f:
        values = []
        for row in csv.DictReader(f):
            raw = row.get(name)
            if raw not in (None, "") and not math.isnan(float(raw)):
                values.append(float(raw))
    return values


def format_table(outcomes: list[StageOutcome]) -> str:
    """A Markdown table: stage, key metric, start, end, wall time."""

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    lines = [
        "| stage | key metric | start | end | wall |",
        "|---|---|---:|---:|---:|",
    ]
    for o in outcomes:
        wall = "skipped" if o.wall_s is None else f"{o.wall_s / 60:.1f} min"
        lines.append(
            f"| {o.stage} | {o.metric or '-'} | {number(o.start)} | {number(o.end)} | {wall} |"
        )
    return "\n".join(lines)


def _page(table: str, outcomes: list[StageOutcome]) -> str:
    links = []
    for o in outcomes:
        where = o.run_dir if o.run_dir else o.model_dir
        report = o.run_dir / "report" / "index.html" if o.run_dir else None
        line = f"- **{o.stage}**: `{where}`"
        if report is not None and report.exists():
            line += f" — [report]({o.stage}/report/index.html)"
        links.append(line)
    return "# Pipeline: SFT -> reward model -> PPO\n\n" + table + "\n\n" + "\n".join(links) + "\n"
