"""Shared fixtures: an isolated cache, the demo tokenizer, tiny models, composed configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rlhf_lightning.api import compose_config


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Artefacts built on first use (demo tokenizer) go to a per-session cache."""
    path = tmp_path_factory.mktemp("rlhf_cache")
    os.environ["RLHF_LIGHTNING_CACHE"] = str(path)
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    return path


@pytest.fixture(scope="session")
def demo_tokenizer(isolated_cache):
    from rlhf_lightning.demo.tokenizer import ensure_demo_tokenizer
    from rlhf_lightning.models import load_tokenizer

    return load_tokenizer(str(ensure_demo_tokenizer()))


@pytest.fixture
def smoke_cfg(tmp_path: Path):
    """Compose the seconds-long smoke SFT config with extra overrides, writing into tmp_path."""

    def make(*overrides: str, run_dir: Path | None = None):
        return compose_config(
            "sft", ["experiment=smoke", *overrides], run_dir=run_dir or tmp_path / "run"
        )

    return make


def toy_pairs(n: int = 96):
    """Preference pairs a tiny model learns in a few steps: one positive word over a negative."""
    from datasets import Dataset

    good = ["great", "wonderful", "happy", "lovely"]
    bad = ["awful", "terrible", "angry", "broken"]
    subjects = ["flight", "phone", "car", "game", "crew", "seat"]
    return Dataset.from_dict(
        {
            "prompt": [f"The {subjects[i % 6]} was" for i in range(n)],
            "chosen": [f" {good[i % 4]}" for i in range(n)],
            "rejected": [f" {bad[(i * 3) % 4]}" for i in range(n)],
        }
    )


@pytest.fixture(name="toy_pairs")
def toy_pairs_fixture():
    """``toy_pairs(n)``: see the function."""
    return toy_pairs


@pytest.fixture
def composed(monkeypatch):
    """Replace the training run with a recorder: each api call composes, nothing trains."""
    configs = []

    def record(cfg, dataset=None):
        configs.append(cfg)
        return {"run_dir": cfg.run_dir, "metrics": {}, "global_step": 0}

    monkeypatch.setattr("rlhf_lightning.api.execute", record)
    return configs
