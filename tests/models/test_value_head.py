"""Value head and value model: shapes, dtypes, left padding, save/load, critic from a reward model."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

from rlhf_lightning.errors import ConfigError, ModelError
from rlhf_lightning.models import (
    CausalLMWithValueHead,
    LoraSpec,
    ValueHead,
    ValueModel,
    apply_lora,
    build_causal_lm,
    load_pretrained_causal_lm,
    position_ids_from_mask,
)
from rlhf_lightning.models.loading import build_from_arch

TINY_GPT2 = {"type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 32, "n_positions": 64}
TINY_LLAMA = {
    "type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "max_position_embeddings": 64,
}
ARCHS = pytest.mark.parametrize("arch", [TINY_GPT2, TINY_LLAMA], ids=["gpt2", "llama"])


def _batch(tok, texts: list[str], side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    rows = [tok(t).input_ids for t in texts]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tok.pad_token_id)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, row in enumerate(rows):
        cols = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[i, cols] = torch.tensor(row)
        mask[i, cols] = True
    return ids, mask


def _policy(tok, arch=TINY_GPT2, **kwargs) -> CausalLMWithValueHead:
    return CausalLMWithValueHead(build_causal_lm(arch, tok), **kwargs).eval()


def test_position_ids_are_the_exclusive_cumsum():
    # ALGORITHMS.md §5.2: mask [0,0,1,1,1] -> [0,0,0,1,2]; a right-padded row keeps 0..n-1.
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    expected = torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 3, 3]])
    assert torch.equal(position_ids_from_mask(mask), expected)


def test_value_head_inits_and_dropout_default():
    torch.manual_seed(0)
    hidden = torch.randn(2, 3, 16)
    zero = ValueHead(16, init="zero")
    assert torch.equal(zero(hidden), torch.zeros(2, 3))
    normal = ValueHead(1000, init="normal", init_std=0.2)
    assert torch.equal(normal.summary.bias, torch.zeros(1))
    assert 0.18 < normal.summary.weight.std().item() < 0.22
    assert ValueHead(16).dropout.p == 0.0
    with pytest.raises(ConfigError, match="Fix"):
        ValueHead(16, init="xavier")


def test_values_read_the_last_hidden_state(demo_tokenizer):
    policy = _policy(demo_tokenizer)
    assert "v_head.summary.weight" in policy.state_dict()  # a submodule: trained and saved
    ids, mask = _batch(demo_tokenizer, ["hello there", "a longer text to pad others"])
    out = policy(ids, mask)
    positions = position_ids_from_mask(mask)
    hidden = policy.pretrained_model(
        input_ids=ids, attention_mask=mask, position_ids=positions, output_hidden_states=True
    ).hidden_states[-1]
    w, b = policy.v_head.summary.weight[0], policy.v_head.summary.bias[0]
    torch.testing.assert_close(out.values, hidden @ w + b)
    assert out.logits.shape == (*ids.shape, len(demo_tokenizer))


def test_values_and_logits_are_fp32_on_a_bf16_trunk(demo_tokenizer):
    lm = build_causal_lm(TINY_LLAMA, demo_tokenizer).to(torch.bfloat16)
    policy = CausalLMWithValueHead(lm)
    ids, mask = _batch(demo_tokenizer, ["hello there", "a longer text to pad others"])
    out = policy(ids, mask)
    assert policy.v_head.summary.weight.dtype == torch.float32
    assert out.values.dtype == torch.float32 and out.values.shape == ids.shape
    assert out.logits.dtype == torch.float32
    assert out.logits.shape == (*ids.shape, len(demo_tokenizer))


@ARCHS
def test_left_padded_row_matches_unpadded_row(demo_tokenizer, arch):
    policy = _policy(demo_tokenizer, arch)
    text = "the short one"
    ids, mask = _batch(
        demo_tokenizer, [text, "a much longer text that forces some padding"], "left"
    )
    n = int(mask[0].sum())
    assert not mask[0, 0]  # row 0 really is left-padded
    padded = policy(ids, mask)
    alone = policy(*_batch(demo_tokenizer, [text]))
    torch.testing.assert_close(padded.logits[0, -n:], alone.logits[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(padded.values[0, -n:], alone.values[0], rtol=0, atol=1e-5)
    if arch is TINY_GPT2:
        # Learned absolute positions: 0..T-1 for the padded row shifts it (the test is sensitive).
        arange = torch.arange(ids.shape[1]).expand_as(ids)
        shifted = policy(ids, mask, position_ids=arange)
        assert not torch.allclose(shifted.logits[0, -n:], alone.logits[0], atol=1e-3)


def test_generate_delegates_to_the_lm(demo_tokenizer):
    policy = _policy(demo_tokenizer)
    ids, mask = _batch(demo_tokenizer, ["hello"])
    kwargs = {"max_new_tokens": 3, "do_sample": False}
    expected = policy.pretrained_model.generate(input_ids=ids, attention_mask=mask, **kwargs)
    assert torch.equal(policy.generate(input_ids=ids, attention_mask=mask, **kwargs), expected)


def _assert_same_outputs(a: CausalLMWithValueHead, b: CausalLMWithValueHead, tok) -> None:
    ids, mask = _batch(tok, ["hello there", "a longer text to pad others"], "left")
    out_a, out_b = a.eval()(ids, mask), b.eval()(ids, mask)
    assert torch.equal(out_a.logits, out_b.logits)
    assert torch.equal(out_a.values, out_b.values)


def test_save_and_load_full_policy_exactly(demo_tokenizer, tmp_path):
    policy = _policy(demo_tokenizer, init="normal")
    policy.save_pretrained(tmp_path)
    assert {"model.safetensors", "value_head.safetensors", "value_head_config.json"} <= {
        p.name for p in tmp_path.iterdir()
    }
    loaded = CausalLMWithValueHead.from_pretrained(tmp_path)
    assert torch.equal(loaded.v_head.summary.weight, policy.v_head.summary.weight)
    _assert_same_outputs(policy, loaded, demo_tokenizer)


def test_save_and_load_lora_policy_exactly(demo_tokenizer, tmp_path):
    # The adapter is saved alone, so its base must live in a directory it can name.
    build_causal_lm(TINY_GPT2, demo_tokenizer).save_pretrained(tmp_path / "base")
    lm = apply_lora(load_pretrained_causal_lm(str(tmp_path / "base")), LoraSpec(enabled=True, r=4))
    with torch.no_grad():  # a trained-looking adapter (peft starts lora_B at zero)
        for name, param in lm.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.1)
    policy = CausalLMWithValueHead(lm, init="normal").eval()
    policy.save_pretrained(tmp_path / "ppo")
    saved = {p.name for p in (tmp_path / "ppo").iterdir()}
    assert "adapter_config.json" in saved and "model.safetensors" not in saved
    loaded = CausalLMWithValueHead.from_pretrained(tmp_path / "ppo")
    assert loaded.is_peft
    trainable = [n for n, p in loaded.pretrained_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    _assert_same_outputs(policy, loaded, demo_tokenizer)


def test_lora_on_an_unsaved_base_is_a_clear_error(demo_tokenizer, tmp_path):
    lm = apply_lora(build_causal_lm(TINY_GPT2, demo_tokenizer), LoraSpec(enabled=True, r=4))
    CausalLMWithValueHead(lm).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="names no base model.*Fix"):
        CausalLMWithValueHead.from_pretrained(tmp_path)


def test_sft_export_without_head_loads_with_a_fresh_head(demo_tokenizer, tmp_path, caplog):
    lm = build_causal_lm(TINY_GPT2, demo_tokenizer).eval()
    lm.save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING, logger="rlhf_lightning.models.value_head"):
        policy = CausalLMWithValueHead.from_pretrained(tmp_path, init="zero").eval()
    assert "fresh value head" in caplog.text
    ids, mask = _batch(demo_tokenizer, ["hello there"])
    out = policy(ids, mask)
    assert torch.equal(out.values, torch.zeros_like(out.values))
    assert torch.equal(out.logits, lm(input_ids=ids, attention_mask=mask).logits)


def test_mismatched_head_width_is_a_clear_error(demo_tokenizer):
    with pytest.raises(ModelError, match="hidden size is 32.*Fix"):
        CausalLMWithValueHead(build_causal_lm(TINY_GPT2, demo_tokenizer), ValueHead(16))


@ARCHS
def test_value_model_matches_the_reward_model_at_the_last_token(demo_tokenizer, tmp_path, arch):
    rm = build_from_arch(arch, demo_tokenizer, head="reward").eval()
    # The reward stage's calibration is in the config; the critic must ignore it.
    rm.config.reward_calibration = {"mean": 5.0, "std": 2.0}
    rm.save_pretrained(tmp_path)
    critic = ValueModel.from_pretrained(tmp_path).eval()
    ids, mask = _batch(demo_tokenizer, ["hello there", "a longer text to pad others"])
    values = critic(ids, mask)
    assert values.shape == ids.shape and values.dtype == torch.float32
    last = mask.sum(1) - 1
    scores = rm(input_ids=ids, attention_mask=mask).logits[:, 0]
    torch.testing.assert_close(values[torch.arange(2), last], scores, rtol=0, atol=1e-6)


def test_value_model_from_a_lora_reward_model(demo_tokenizer, tmp_path):
    build_causal_lm(TINY_GPT2, demo_tokenizer).save_pretrained(tmp_path / "base")
    rm = AutoModelForSequenceClassification.from_pretrained(tmp_path / "base", num_labels=1)
    rm.config.pad_token_id = demo_tokenizer.pad_token_id
    rm = apply_lora(rm, LoraSpec(enabled=True, r=4), task_type="SEQ_CLS").eval()
    with torch.no_grad():  # a trained-looking adapter
        for name, param in rm.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.1)
    rm.save_pretrained(tmp_path / "rm")
    critic = ValueModel.from_pretrained(tmp_path / "rm").eval()
    assert not any("lora_" in n for n, _ in critic.named_parameters())  # merged: all weights train
    ids, mask = _batch(demo_tokenizer, ["hello there", "a longer text to pad others"])
    last = mask.sum(1) - 1
    with torch.no_grad():
        scores = rm(input_ids=ids, attention_mask=mask).logits[:, 0]
        values = critic(ids, mask)
    torch.testing.assert_close(values[torch.arange(2), last], scores, rtol=0, atol=1e-5)


def test_value_model_rejects_models_without_a_per_position_head():
    bert = AutoConfig.for_model(
        "bert",
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=1,
    )
    with pytest.raises(ModelError, match="no per-position score head.*Fix"):
        ValueModel(AutoModelForSequenceClassification.from_config(bert))
    gpt2 = AutoConfig.for_model("gpt2", vocab_size=50, n_layer=1, n_head=2, n_embd=16, num_labels=2)
    with pytest.raises(ModelError, match="num_labels=2.*Fix"):
        ValueModel(AutoModelForSequenceClassification.from_config(gpt2))
