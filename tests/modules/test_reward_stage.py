"""The reward-model stage end to end on tiny models: it learns to rank, exports, calibrates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rlhf_lightning.api import compose_config
from rlhf_lightning.rewards import ModelReward
from rlhf_lightning.train import run

TINY_REWARD = [
    "model=tiny",
    "data=tiny_pairs",
    "stage.calibration=null",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=5",
]


def _synthetic_pairs(n: int = 96) -> Dataset:
    """Chosen texts praise, rejected texts complain: a ranking a tiny model learns in seconds."""
    good = ["great", "wonderful", "happy", "love", "awesome", "thanks"]
    bad = ["awful", "terrible", "angry", "hate", "broken", "delayed"]
    subjects = ["flight", "phone", "car", "game", "crew", "service", "seat", "app"]
    rows = {"chosen": [], "rejected": []}
    for i in range(n):
        subject = subjects[i % len(subjects)]
        rows["chosen"].append(f"the {subject} was {good[i % len(good)]}")
        rows["rejected"].append(f"the {subject} was {bad[(i * 5) % len(bad)]}")
    return Dataset.from_dict(rows)


def test_reward_model_learns_to_rank_and_exports(tmp_path):
    cfg = compose_config(
        "reward",
        [
            *TINY_REWARD,
            "trainer.max_steps=40",
            "trainer.val_check_interval=20",
            "optim.lr=3e-3",
            "data.val_fraction=0.25",
        ],
        run_dir=tmp_path / "rm",
    )
    summary = run(cfg, dataset=_synthetic_pairs())
    m = summary["metrics"]
    assert m["val/accuracy"] >= 0.9, m
    assert m["val/loss"] < 0.6931  # below log 2, the loss at equal scores
    assert 0.0 <= m["val/tie_rate"] <= 1.0 and "val/margin" in m

    model_dir = Path(summary["run_dir"]) / "model"
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert model.config.num_labels == 1
    scorer = ModelReward(model, tok)
    scores = scorer(["", ""], ["the flight was wonderful", "the flight was terrible"])
    assert scores[0] > scores[1]


def test_calibration_centres_the_starting_policy(tmp_path):
    policy = compose_config(
        "sft", ["experiment=smoke", "trainer.max_steps=5"], run_dir=tmp_path / "sft"
    )
    run(policy)
    cfg = compose_config(
        "reward",
        [
            *(o for o in TINY_REWARD if not o.startswith("stage.calibration")),
            "trainer.max_steps=5",
            f"stage.calibration.policy={tmp_path / 'sft' / 'model'}",
            "stage.calibration.num_samples=32",
            "stage.calibration.max_new_tokens=8",
        ],
        run_dir=tmp_path / "rm",
    )
    run(cfg)
    config = json.loads((tmp_path / "rm" / "model" / "config.json").read_text())
    calibration = config["reward_calibration"]
    assert calibration["std"] > 0 and torch.isfinite(torch.tensor(calibration["mean"]))
    calibrated = ModelReward.from_pretrained(tmp_path / "rm" / "model")(["x"], [" y"])
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm" / "model")
    del model.config.reward_calibration
    raw = ModelReward(model, AutoTokenizer.from_pretrained(tmp_path / "rm" / "model"))(
        ["x"], [" y"]
    )
    expected = (raw - calibration["mean"]) / calibration["std"]
    torch.testing.assert_close(calibrated, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_minilm_reward_model_reaches_085_on_held_out_demo_pairs(tmp_path):
    cfg = compose_config(
        "reward",
        [
            "experiment=reward_minilm",
            "stage.calibration=null",
            "trainer.enable_progress_bar=false",
        ],
        run_dir=tmp_path / "minilm",
    )
    summary = run(cfg)
    assert summary["metrics"]["val/accuracy"] >= 0.85


def test_lora_reward_model_trains_adapter_and_head_only(tmp_path):
    cfg = compose_config(
        "reward",
        [
            *TINY_REWARD,
            "trainer.max_steps=4",
            "model.lora.enabled=true",
            "model.lora.merge_on_export=true",
        ],
        run_dir=tmp_path / "rm",
    )
    run(cfg)
    state = torch.load(
        tmp_path / "rm/checkpoints/last.ckpt", map_location="cpu", weights_only=False
    )
    optimizer_params = sum(len(g["params"]) for g in state["optimizer_states"][0]["param_groups"])
    trainable = [k for k in state["state_dict"] if "lora_" in k or "modules_to_save" in k]
    assert 0 < optimizer_params <= len(trainable)
    assert (tmp_path / "rm/model/adapter_config.json").is_file()
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm/model/merged")
    assert merged.config.num_labels == 1
