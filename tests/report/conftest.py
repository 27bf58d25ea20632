"""Synthetic run directories shaped like the ones SFT, reward modelling and PPO write."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest


def write_metrics_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """A sparse CSVLogger-style file: one column per metric, blank where not logged."""
    columns = sorted({k for row in rows for k in row} - {"step", "epoch"})
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["epoch", *columns, "step"])
        writer.writeheader()
        for row in rows:
            writer.writerow({"epoch": 0, **row})


def write_run(
    run_dir: Path,
    stage: str,
    rows: list[dict[str, Any]],
    samples: list[dict[str, Any]] | None = None,
    wall_s: float = 12.5,
) -> Path:
    """metrics.csv, metrics.json (last values), .hydra/config.yaml and optional samples.jsonl."""
    (run_dir / ".hydra").mkdir(parents=True)
    write_metrics_csv(run_dir / "metrics.csv", rows)
    last = {k: v for row in rows for k, v in row.items() if k not in ("step", "epoch")}
    summary = {"stage": stage, "global_step": rows[-1]["step"] + 1, "wall_s": wall_s}
    (run_dir / "metrics.json").write_text(json.dumps({**summary, "metrics": last}))
    (run_dir / ".hydra" / "config.yaml").write_text(f"stage:\n  name: {stage}\nseed: 0\n")
    if samples is not None:
        lines = [json.dumps(s) for s in samples]
        (run_dir / "samples.jsonl").write_text("\n".join(lines) + "\n")
    return run_dir


def sft_rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for step in range(4, 40, 5):
        rows.append({"step": step, "train/loss": 8.0 - 0.05 * step})
        if step % 10 == 9:
            val = 7.9 - 0.05 * step
            rows.append(
                {
                    "step": step,
                    "val/loss": val,
                    "val/perplexity": math.exp(val),
                    "val/unigram_perplexity": 1200.0,
                }
            )
    return rows


def reward_rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for step in range(0, 30):
        rows.append({"step": step, "train/loss": 0.69 - 0.01 * step, "train/accuracy": 0.5})
        if step % 10 == 9:
            rows.append(
                {"step": step, "val/loss": 0.68 - 0.01 * step, "val/accuracy": 0.5 + step / 100}
            )
    return rows


def ppo_rows() -> list[dict[str, Any]]:
    return [
        {
            "step": step,
            "rollout/reward_mean": 0.1 + 0.01 * step,
            "rollout/reward_std": 0.05,
            "rollout/kl": 0.2 * step,
            "rollout/response_length": 12.0,
            "rollout/eos_rate": 0.1,
            "kl_coef": 0.05,
            "train/loss": 0.1,
            "train/policy_loss": -0.05 - 0.001 * step,
            "train/value_loss": 1.0 / (1 + step),
        }
        for step in range(40)
    ]


# The first and last logged steps share their prompts, in a different order; one prompt
# carries markup that must come out escaped.
PPO_SAMPLES = [
    {
        "step": 0,
        "prompt": "Say <b>hi</b>",
        "completion": "<script>alert(1)</script>",
        "reward": 0.125,
    },
    {"step": 0, "prompt": "Rate the film", "completion": "meh & so on", "reward": -1.5, "kl": 0.0},
    {"step": 20, "prompt": "Middle step", "completion": "not shown", "reward": 0.0},
    {
        "step": 35,
        "prompt": "Rate the film",
        "completion": "eeee excellent",
        "reward": 2.75,
        "kl": 3.5,
    },
    {"step": 35, "prompt": "Say <b>hi</b>", "completion": "hello there", "reward": 1.25},
    # The end-of-run comparison (rlhf_lightning/rollout/compare.py): same prompt, both policies.
    {
        "step": 40,
        "kind": "final_comparison",
        "prompt": "Name a colour",
        "completion": "green\u0011",
        "reward": 0.75,
        "ref_completion": "grey",
        "ref_reward": 0.25,
    },
]


@pytest.fixture
def make_run():
    """`write_run`, for tests that shape their own run directory."""
    return write_run


@pytest.fixture
def ppo_samples() -> list[dict[str, Any]]:
    return [dict(s) for s in PPO_SAMPLES]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One run directory per stage shape, shared by a module's tests (plots take time)."""
    root = tmp_path_factory.mktemp("runs")
    return {
        "sft": write_run(root / "sft", "sft", sft_rows()),
        "reward": write_run(root / "reward", "reward", reward_rows()),
        "ppo": write_run(root / "ppo", "ppo", ppo_rows(), samples=PPO_SAMPLES, wall_s=3725.0),
    }
