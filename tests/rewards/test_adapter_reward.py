"""Adapters-only RLHF: a LoRA reward model scored as a second adapter on the policy's base."""

from __future__ import annotations

import json

import torch
from peft import AutoPeftModelForSequenceClassification
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

from rlhf_lightning.models import CausalLMWithValueHead, LoraSpec, apply_lora
from rlhf_lightning.rewards import AdapterReward, ModelReward


def _base(tmp_path, tokenizer):
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    return tmp_path / "base"


def test_adapter_reward_scores_like_the_reward_model_on_one_copy_of_the_base(
    tmp_path, demo_tokenizer
):
    base = _base(tmp_path, demo_tokenizer)
    # a LoRA reward model on the base, with a trained-looking (non-zero) adapter and head
    classifier = LlamaForSequenceClassification.from_pretrained(base, num_labels=1)
    reward_model = apply_lora(classifier, LoraSpec(enabled=True, r=4), task_type="SEQ_CLS")
    with torch.no_grad():
        for name, p in reward_model.named_parameters():
            if "lora_B" in name or "score" in name:
                p.normal_(0, 0.5)
    reward_model.save_pretrained(tmp_path / "rm")
    demo_tokenizer.save_pretrained(tmp_path / "rm")
    (tmp_path / "rm" / "reward_calibration.json").write_text(json.dumps({"mean": 0.5, "std": 2}))

    prompts, completions = ["I love", "The flight"], [" it so much", " was late again"]
    separate = ModelReward.from_pretrained(str(tmp_path / "rm"))(prompts, completions)
    loaded = AutoPeftModelForSequenceClassification.from_pretrained(tmp_path / "rm", num_labels=1)
    assert loaded.config.num_labels == 1

    policy_lm = LlamaForCausalLM.from_pretrained(base)
    policy = CausalLMWithValueHead(apply_lora(policy_lm, LoraSpec(enabled=True, r=4)))
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    reward = AdapterReward(tmp_path / "rm")
    reward.attach(policy)
    shared = reward(prompts, completions)
    torch.testing.assert_close(shared, separate, atol=1e-5, rtol=0)
    # calibrated like the separate model: (raw - 0.5) / 2
    # the policy still trains its own adapter only, and holds one copy of the base
    assert {n for n, p in policy.named_parameters() if p.requires_grad} == trainable
    assert policy.pretrained_model.active_adapter == "default"
    bases = [p for n, p in policy.named_parameters() if "q_proj.base_layer.weight" in n]
    assert len(bases) == 2  # one per layer: the reward adapter adds no second copy
