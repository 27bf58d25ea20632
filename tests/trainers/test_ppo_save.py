"""`PPOTrainer.save_pretrained`: a complete directory (LM, value head, tokenizer) that loads
back into a trainer and into transformers, written whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlhf_lightning.demo.tokenizer import ensure_demo_tokenizer
from rlhf_lightning.models import ModelSpec, load_model_and_tokenizer
from rlhf_lightning.rewards.examples import letter_rate
from rlhf_lightning.trainers import PPOConfig, PPOTrainer

TINY = {"type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 32, "n_positions": 64}


@pytest.fixture
def trained() -> PPOTrainer:
    """A trainer one PPO step away from its initial weights (value head included)."""
    lm, tok = load_model_and_tokenizer(ModelSpec(tokenizer=str(ensure_demo_tokenizer()), arch=TINY))
    config = PPOConfig(ppo_epochs=1, learning_rate=1e-2, output_dir=None)
    trainer = PPOTrainer(config, lm, tokenizer=tok)
    queries = ["I love", "The flight", "my phone", "ok"]
    responses = trainer.generate(queries, seed=0, max_new_tokens=6)
    trainer.step(queries, responses, list(letter_rate(queries, responses)))
    return trainer


def _state(trainer: PPOTrainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.policy.state_dict().items()}


def test_save_pretrained_writes_a_directory_that_loads_back(trained, tmp_path):
    out = trained.save_pretrained(tmp_path / "ppo")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "value_head.safetensors"} <= names
    assert {"value_head_config.json", "tokenizer.json", "tokenizer_config.json"} <= names

    reloaded = PPOTrainer(PPOConfig(), out)
    expected, got = _state(trained), _state(reloaded)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert reloaded.tokenizer.get_vocab() == trained.tokenizer.get_vocab()
    lm = AutoModelForCausalLM.from_pretrained(out)  # a plain causal LM to transformers
    wte = trained.policy.pretrained_model.get_input_embeddings().weight
    assert torch.equal(lm.get_input_embeddings().weight, wte)


def test_a_failed_save_leaves_the_previous_directory_whole(trained, tmp_path, monkeypatch):
    out = trained.save_pretrained(tmp_path / "ppo")
    head_before = (out / "value_head.safetensors").read_bytes()
    with torch.no_grad():
        trained.policy.v_head.summary.weight.add_(1.0)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(trained.tokenizer, "save_pretrained", fail)
    with pytest.raises(OSError, match="disk full"):
        trained.save_pretrained(out)
    # The old save, whole: not the new value head beside the old tokenizer, no leftovers.
    assert (out / "value_head.safetensors").read_bytes() == head_before
    assert (out / "tokenizer.json").is_file()
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["ppo"]
