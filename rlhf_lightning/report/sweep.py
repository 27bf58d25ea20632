"""A Hydra multirun side by side: one row per job, the overrides that differ, the key metrics.

Hydra gives each job `<multirun_dir>/<job_num>/` with `.hydra/overrides.yaml` (the job's
command-line overrides, a YAML list of `key=value`) and, once the run finished,
`metrics.json`. A job without metrics.json (failed or still running) keeps its row, marked.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlhf_lightning.errors import ConfigError
from rlhf_lightning.report.text import fmt_number, md_table

# The metrics a sweep is judged by, in column order; those no job logged are left out.
KEY_METRICS = (
    "val/loss",
    "val/accuracy",
    "eval/accuracy",
    "val/perplexity",
    "rollout/reward_mean",
    "rollout/kl",
    "rollout/response_length",
)
# Used only when none of KEY_METRICS was logged (e.g. a run without validation).
FALLBACK_METRICS = ("train/loss",)


@dataclass
class Job:
    """One job directory of a multirun, as read."""

    name: str
    overrides: dict[str, str] = field(default_factory=dict)
    summary: dict[str, Any] | None = None


@dataclass
class SweepTable:
    """The table: `columns` headers, `rows` raw values (None where a job lacks the value)."""

    columns: list[str]
    rows: list[list[Any]]
    csv_path: Path | None = None
    md_path: Path | None = None

    def markdown(self) -> str:
        """The table as aligned Markdown, numbers to 4 significant digits."""
        return md_table(self.columns, [[fmt_number(v) for v in row] for row in self.rows])

    def csv_text(self) -> str:
        """The table as CSV, numbers at full precision, blanks where a value is missing."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.columns)
        writer.writerows([["" if v is None else v for v in row] for row in self.rows])
        return buf.getvalue()


def write_sweep(multirun_dir: Path) -> SweepTable:
    """Tabulate the jobs of `multirun_dir`; write `sweep.csv` and `sweep.md` into it.

    Raises:
        ConfigError: the directory does not exist or holds no job directories.
    """
    multirun_dir = Path(multirun_dir)
    table = tabulate(load_jobs(multirun_dir))
    table.csv_path = multirun_dir / "sweep.csv"
    table.md_path = multirun_dir / "sweep.md"
    table.csv_path.write_text(table.csv_text(), encoding="utf-8")
    table.md_path.write_text(table.markdown() + "\n", encoding="utf-8")
    return table


def load_jobs(multirun_dir: Path) -> list[Job]:
    """Every job directory (one holding .hydra/overrides.yaml or metrics.json), in job order."""
    fix = (
        "Fix: pass the hydra.sweep.dir of a multirun (python -m rlhf_lightning -m ...), "
        "the directory holding the numbered job directories."
    )
    if not multirun_dir.is_dir():
        raise ConfigError(f"report --sweep {multirun_dir}: no such directory. {fix}")
    dirs = [
        d
        for d in multirun_dir.iterdir()
        if d.is_dir()
        and ((d / ".hydra" / "overrides.yaml").is_file() or (d / "metrics.json").is_file())
    ]
    if not dirs:
        raise ConfigError(f"report --sweep {multirun_dir}: no job directories in it. {fix}")
    dirs.sort(key=lambda d: (0, int(d.name), "") if d.name.isdigit() else (1, 0, d.name))
    return [Job(d.name, _read_overrides(d), _read_summary(d)) for d in dirs]


def _read_overrides(job_dir: Path) -> dict[str, str]:
    """`key=value` overrides as a dict; an unreadable file counts as no overrides."""
    path = job_dir / ".hydra" / "overrides.yaml"
    try:
        items = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    overrides = {}
    for item in items if isinstance(items, list) else []:
        key, sep, value = str(item).partition("=")
        overrides[key] = value if sep else ""
    return overrides


def _read_summary(job_dir: Path) -> dict[str, Any] | None:
    try:
        summary = json.loads((job_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return summary if isinstance(summary, dict) else None


def tabulate(jobs: list[Job]) -> SweepTable:
    """Columns: job, the overrides that differ between jobs, key metrics, step, wall time."""
    keys = differing_overrides(jobs)
    metrics = key_metrics(jobs)
    columns = ["job", *keys, *metrics, "global_step", "wall_s"]
    with_status = any(job.summary is None for job in jobs)
    if with_status:
        columns.append("status")
    rows = []
    for job in jobs:
        summary = job.summary or {}
        values = summary.get("metrics") if isinstance(summary.get("metrics"), dict) else {}
        row = [job.name, *(job.overrides.get(k) for k in keys)]
        row += [values.get(m) for m in metrics]
        row += [summary.get("global_step"), summary.get("wall_s")]
        if with_status:
            row.append("ok" if job.summary is not None else "no metrics.json")
        rows.append(row)
    return SweepTable(columns, rows)


def differing_overrides(jobs: list[Job]) -> list[str]:
    """Override keys whose value is not the same in every job (all of them for a single job)."""
    keys = list(dict.fromkeys(k for job in jobs for k in job.overrides))
    if len(jobs) == 1:
        return keys
    return [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1]


def key_metrics(jobs: list[Job]) -> list[str]:
    """The KEY_METRICS any job logged (FALLBACK_METRICS when none), in KEY_METRICS order;
    held-out pass@k (``eval/pass@<k>``, by k) after held-out accuracy."""
    logged = set()
    for job in jobs:
        metrics = (job.summary or {}).get("metrics")
        if isinstance(metrics, dict):
            logged.update(metrics)
    chosen = [m for m in KEY_METRICS if m in logged]
    pass_at = sorted((m for m in logged if m.startswith("eval/pass@")), key=_k_of)
    if pass_at:
        at = chosen.index("eval/accuracy") + 1 if "eval/accuracy" in chosen else len(chosen)
        chosen[at:at] = pass_at
    return chosen or [m for m in FALLBACK_METRICS if m in logged]


def _k_of(name: str) -> int:
    k = name.rsplit("@", 1)[1]
    return int(k) if k.isdigit() else 0
