"""The demo SFT policy and demo reward model: the starting points of the later stages.

Each is built on first use by running its stage on the embedded default (SFT: about 5 minutes
on 2 CPU cores; reward: about 2 more), then cached under `$RLHF_LIGHTNING_CACHE/demo-<stage>-<version>/`.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhf_lightning.config import compose_stage
from rlhf_lightning.demo.cache import ensure_entry, model_problem
from rlhf_lightning.demo.tokenizer import ensure_demo_tokenizer
from rlhf_lightning.paths import cache_dir
from rlhf_lightning.rundir import atomic_directory
from rlhf_lightning.train import run

log = logging.getLogger(__name__)

_VERSION = "v1"


def demo_run_dir(stage: str) -> Path:
    return cache_dir() / f"demo-{stage}-{_VERSION}"


def ensure_model_from_stage(
    name: str,
    stage: str,
    duration: str,
    overrides: Callable[[], list[str]],
    dataset: Callable[[], Any] | None = None,
) -> Path:
    """A built-in model made by running `stage` (cached as ``demo-<name>``, built on first use).

    Args:
        name: The cache entry's name.
        stage: The stage that makes it.
        duration: How long the build takes, for the log.
        overrides: The stage's overrides (a function: models it starts from are built first).
        dataset: Makes the in-memory dataset the stage trains on; None: the stage's own data.
    """
    return _ensure_demo_model(stage, duration, overrides, name=name, dataset=dataset)


def ensure_demo_sft_model() -> Path:
    """The directory of the demo SFT model (`save_pretrained` format), building it if needed."""
    return _ensure_demo_model(
        "sft", "about 5 minutes", lambda: [f"model.tokenizer={ensure_demo_tokenizer()}"]
    )


def ensure_demo_reward_model() -> Path:
    """The demo reward model (demo SFT backbone, calibrated on its samples), built if needed."""

    def links() -> list[str]:
        policy = ensure_demo_sft_model()
        return [f"model.name_or_path={policy}", f"stage.calibration.policy={policy}"]

    return _ensure_demo_model("reward", "about 2 minutes after the SFT policy", links)


def _ensure_demo_model(
    stage: str,
    duration: str,
    links: Callable[[], list[str]],
    name: str | None = None,
    dataset: Callable[[], Any] | None = None,
) -> Path:
    run_dir = demo_run_dir(name or stage)
    model_dir = run_dir / "model"

    def build() -> None:
        overrides = links()  # the models this one starts from, built first if needed
        log.warning(
            "The demo %s model is not cached yet: training it now on the embedded default "
            "(first use only, %s on 2 CPU cores) -> %s",
            name or stage,
            duration,
            run_dir,
        )
        # The cache only ever holds a finished build: it is trained beside and renamed.
        with atomic_directory(run_dir) as building, _preserved_rng():
            overrides = ["trainer.enable_progress_bar=false", *overrides]
            data = dataset() if dataset is not None else None
            run(compose_stage(stage, overrides, run_dir=building), dataset=data)
            summary_path = building / "metrics.json"
            summary = json.loads(summary_path.read_text())
            summary["run_dir"] = str(run_dir)
            summary_path.write_text(json.dumps(summary, indent=2) + "\n")
        log.info("Demo %s model cached at %s", name or stage, model_dir)

    ensure_entry(run_dir, lambda: model_problem(model_dir), build)
    return model_dir


class _preserved_rng:
    """Building the demo model inside another run must not shift that run's random streams."""

    def __enter__(self) -> None:
        self.state = (random.getstate(), np.random.get_state(), torch.get_rng_state())

    def __exit__(self, *exc) -> None:
        random.setstate(self.state[0])
        np.random.set_state(self.state[1])
        torch.set_rng_state(self.state[2])
