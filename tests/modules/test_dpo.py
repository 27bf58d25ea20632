"""DPO end to end on a tiny model: held-out preference accuracy rises, the reference stays put."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from datasets import Dataset

from rlhf_lightning.api import compose_config
from rlhf_lightning.train import run


def _pairs(n: int = 96) -> Dataset:
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


def test_dpo_raises_held_out_preference_accuracy(tmp_path):
    cfg = compose_config(
        "dpo",
        [
            "model=tiny",
            "trainer.max_steps=30",
            "trainer.val_check_interval=10",
            "optim.lr=3e-3",
            "data.val_fraction=0.25",
            "data.batch_size=8",
            "trainer.log_every_n_steps=5",
            "trainer.enable_progress_bar=false",
        ],
        run_dir=tmp_path / "dpo",
    )
    summary = run(cfg, dataset=_pairs())
    metrics = pd.read_csv(Path(summary["run_dir"]) / "metrics.csv").dropna(subset=["val/accuracy"])
    assert summary["metrics"]["val/accuracy"] >= 0.9
    assert summary["metrics"]["val/rewards_chosen"] > summary["metrics"]["val/rewards_rejected"]
    state = torch.load(
        tmp_path / "dpo/checkpoints/last.ckpt", map_location="cpu", weights_only=False
    )
    ref = next(
        v
        for k, v in state["state_dict"].items()
        if k.startswith("reference.") and k.endswith("wte.weight")
    )
    pol = next(
        v
        for k, v in state["state_dict"].items()
        if k.startswith("policy.") and k.endswith("wte.weight")
    )
    assert not torch.equal(ref, pol)
    assert len(metrics) >= 3
