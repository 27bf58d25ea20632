"""The Python API: each call composes the CLI's config, and the stages chain by run directory."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from rlhf_lightning import api
from rlhf_lightning.errors import ConfigError
from rlhf_lightning.rewards.examples import letter_rate

QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def test_reward_and_ppo_arguments_become_the_cli_overrides(composed, tmp_path):
    sft_dir, rm_dir = tmp_path / "sft" / "model", tmp_path / "rm" / "model"
    api.reward(sft_dir, calibrate_on=sft_dir, max_steps=7, output_dir=tmp_path / "a")
    api.reward("tiny", output_dir=tmp_path / "b")
    api.ppo(sft_dir, reward_model=rm_dir, iterations=3, output_dir=tmp_path / "c")
    api.ppo("tiny", reward_fn=letter_rate, output_dir=tmp_path / "d")
    api.ppo(output_dir=tmp_path / "e")
    calibrated, raw, with_model, with_function, default = composed

    assert calibrated.stage.name == "reward" and calibrated.trainer.max_steps == 7
    assert calibrated.model.name_or_path == str(sft_dir)
    assert calibrated.stage.calibration.policy == str(sft_dir)
    # opt-in here, so that a tiny run never builds the demo policy just to calibrate on it
    assert raw.stage.calibration is None and raw.model.name_or_path is None

    assert with_model.model.name_or_path == str(sft_dir) and with_model.stage.iterations == 3
    assert with_model.reward._target_.endswith("ModelReward.from_pretrained")
    assert with_model.reward.path == str(rm_dir)
    # a function object is recorded by its import path, as the CLI would name it
    assert with_function.reward._target_.endswith("CallableReward")
    assert with_function.reward.function == "rlhf_lightning.rewards.examples:letter_rate"
    assert default.reward.path == "demo:reward" and default.model.name_or_path == "demo:sft"
    assert [Path(c.run_dir).name for c in composed] == list("abcde")


def test_run_stage_takes_any_stage_model_and_data_path(composed, tmp_path):
    result = api.run_stage(
        "dpo", "tiny", dataset="pairs.jsonl", output_dir=tmp_path / "dpo", overrides=["seed=3"]
    )
    (cfg,) = composed
    assert cfg.stage.name == "dpo" and cfg.data.path == "pairs.jsonl" and cfg.seed == 3
    assert cfg.model.arch.n_layer == 2  # model=tiny
    assert result.model_dir == tmp_path / "dpo" / "model"


def test_ppo_refuses_two_rewards_and_an_unimportable_function(composed, tmp_path):
    with pytest.raises(ConfigError, match="both reward_model and reward_fn"):
        api.ppo("tiny", reward_model=tmp_path, reward_fn=letter_rate)
    with pytest.raises(ConfigError, match="cannot be imported by that name"):
        api.ppo("tiny", reward_fn=lambda prompts, completions: [0.0] * len(completions))
    assert composed == []  # refused before anything ran


def test_sft_reward_ppo_chain_by_model_dir(tmp_path):
    sft = api.sft("tiny", max_steps=4, output_dir=tmp_path / "sft", overrides=["data=tiny", *QUIET])
    rm = api.reward(
        sft.model_dir,
        calibrate_on=sft.model_dir,
        max_steps=4,
        output_dir=tmp_path / "rm",
        overrides=[
            "data=tiny_pairs",
            "stage.calibration.num_samples=8",
            "stage.calibration.max_new_tokens=4",
            *QUIET,
        ],
    )
    ppo = api.ppo(
        sft.model_dir,
        reward_model=rm.model_dir,
        iterations=2,
        output_dir=tmp_path / "ppo",
        overrides=[
            "data.batch_size=8",
            "data.num_prompts=16",
            "stage.sampling.max_new_tokens=4",
            "stage.algorithm.epochs=1",
            "stage.algorithm.num_minibatches=2",
            "reward.max_length=32",
            *QUIET,
        ],
    )
    assert rm.global_step == 4 and "val/accuracy" in rm.metrics
    calibration = json.loads((rm.model_dir / "config.json").read_text())["reward_calibration"]
    assert calibration["std"] > 0
    assert ppo.global_step == 2 * 1 * 2  # iterations x epochs x minibatches
    saved = OmegaConf.load(ppo.run_dir / ".hydra" / "config.yaml")
    assert saved.model.name_or_path == str(sft.model_dir)
    assert saved.reward.path == str(rm.model_dir)
    rewards = pd.read_csv(ppo.run_dir / "metrics.csv")["rollout/reward_mean"].dropna()
    assert len(rewards) == 2
    assert (ppo.model_dir / "value_head.safetensors").is_file()


def test_ppo_with_a_python_reward_function(tmp_path):
    result = api.ppo(
        "tiny",
        reward_fn=letter_rate,
        iterations=2,
        output_dir=tmp_path / "ppo",
        overrides=["experiment=ppo_smoke", "stage.sampling.max_new_tokens=4"],
    )
    assert result.metrics["rollout/reward_mean"] >= 0.0  # a share of characters
    rows = (result.run_dir / "samples.jsonl").read_text().splitlines()
    assert rows and "reward" in json.loads(rows[0])
