"""Every conf/reward option composes under the root config and instantiates with Hydra."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from rlhf_lightning.paths import config_dir
from rlhf_lightning.rewards import (
    CallableReward,
    HTTPReward,
    ModelReward,
    WeightedReward,
    build_reward_source,
)

PROMPTS = ["How was it?", "And then?"]
COMPLETIONS = [" I love it, great fun", " sad and bad"]


def compose_reward(*overrides: str):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=list(overrides)).reward


def test_option_files_exist():
    names = {path.stem for path in (config_dir() / "reward").glob("*.yaml")}
    assert {"model", "callable", "http", "mix"} <= names


def test_callable_config():
    reward = instantiate(compose_reward("reward=callable"))
    assert isinstance(reward, CallableReward)
    # (love, great, fun) / 5 words; -(sad, bad) / 3 words
    assert reward(PROMPTS, COMPLETIONS).tolist() == pytest.approx([3 / 5, -2 / 3])


def test_mix_config_has_two_components():
    reward = instantiate(compose_reward("reward=mix"))
    assert isinstance(reward, WeightedReward)
    scores = reward(PROMPTS, COMPLETIONS)
    # sentiment 3/5 and -2/3; length -|5-20|/20 and -|3-20|/20 with weight 0.1
    assert scores.tolist() == pytest.approx([3 / 5 - 0.1 * 0.75, -2 / 3 - 0.1 * 0.85])
    assert set(reward.last_components) == {"sentiment", "length"}


def test_http_config(reward_server, monkeypatch):
    monkeypatch.setenv("REWARD_API_TOKEN", "env-secret-123")
    cfg = compose_reward(
        "reward=http",
        f"reward.url={reward_server.url}",
        "reward.timeout=0.5",
        "+reward.headers.Authorization='Bearer ${oc.env:REWARD_API_TOKEN}'",
    )
    assert "env-secret-123" not in OmegaConf.to_yaml(cfg)  # resolved only when instantiated
    reward = instantiate(cfg)
    assert isinstance(reward, HTTPReward)
    assert reward(PROMPTS, COMPLETIONS).tolist() == [float(len(c)) for c in COMPLETIONS]
    assert reward_server.requests[0]["headers"]["Authorization"] == "Bearer env-secret-123"
    assert "env-secret-123" not in repr(reward)


def test_model_config(tmp_path, demo_tokenizer, gpt2_reward_model):
    model = gpt2_reward_model()
    model.save_pretrained(tmp_path / "rm")
    demo_tokenizer.save_pretrained(tmp_path / "rm")
    reward = instantiate(compose_reward("reward=model", f"reward.path={tmp_path / 'rm'}"))
    assert isinstance(reward, ModelReward)
    expected = ModelReward(model, demo_tokenizer)(PROMPTS, COMPLETIONS)
    torch.testing.assert_close(reward(PROMPTS, COMPLETIONS), expected, atol=1e-5, rtol=0)


def test_build_reward_source_without_hydra():
    mix = build_reward_source(
        "mix",
        sources={
            "a": {"kind": "callable", "function": "rlhf_lightning.rewards.examples:positive_words"},
            "b": CallableReward(lambda p, c: [1.0] * len(c)),
        },
        weights={"a": 1.0, "b": 2.0},
    )
    assert mix(PROMPTS, COMPLETIONS).tolist() == pytest.approx([3 / 5 + 2, -2 / 3 + 2])
    with pytest.raises(Exception, match="reward kind 'magic' is unknown. Fix: one of"):
        build_reward_source("magic")
