"""The pad rule: distinct from EOS, reusing an unused special token before growing a vocabulary."""

from __future__ import annotations

import pytest
import torch

from rlhf_lightning.errors import ConfigError
from rlhf_lightning.models import (
    ModelSpec,
    export_model,
    load_model_and_tokenizer,
    prepare_tokenizer,
)
from rlhf_lightning.models.tokenizer import PAD_TOKEN, choose_pad_token

EMBED_WIDTH = 64


def test_smollm_like_tokenizer_pads_with_its_unknown_token(smollm_tokenizer):
    n = len(smollm_tokenizer)
    assert smollm_tokenizer.pad_token_id == smollm_tokenizer.eos_token_id  # as released
    prepare_tokenizer(smollm_tokenizer)
    # BOS <|im_start|> and EOS <|im_end|> mark chat turns; <|endoftext|> (unk, id 0) does not.
    assert smollm_tokenizer.pad_token == "<|endoftext|>" and smollm_tokenizer.pad_token_id == 0
    assert len(smollm_tokenizer) == n
    batch = smollm_tokenizer(["hello", "hello world"], padding=True)
    assert batch.input_ids[0][-1] == 0 and batch.attention_mask[0][-1] == 0


def test_candidates_used_by_the_chat_template_or_as_eos_are_skipped(smollm_tokenizer):
    # With <|endoftext|> ending turns in the template, nothing else qualifies: grow.
    template = "{% for m in messages %}{{ m['content'] + '<|endoftext|>' }}{% endfor %}"
    prepare_tokenizer(smollm_tokenizer, chat_template=template)
    assert smollm_tokenizer.pad_token == PAD_TOKEN
    assert smollm_tokenizer.pad_token_id == len(smollm_tokenizer) - 1


def test_reserved_pad_token_is_found_when_there_is_no_unknown_token(smollm_tokenizer):
    smollm_tokenizer.unk_token = None
    smollm_tokenizer.add_special_tokens(
        {"additional_special_tokens": ["<|finetune_right_pad_id|>"]}
    )
    assert choose_pad_token(smollm_tokenizer) == "<|finetune_right_pad_id|>"


def test_explicit_pad_token_is_added_when_missing_and_eos_is_refused(smollm_tokenizer):
    n = len(smollm_tokenizer)
    prepare_tokenizer(smollm_tokenizer, pad_token="<|pad|>")
    assert smollm_tokenizer.pad_token == "<|pad|>" and len(smollm_tokenizer) == n + 1
    with pytest.raises(
        ConfigError, match=r"model.pad_token=<\|im_end\|> is the tokenizer's EOS.*Fix"
    ):
        prepare_tokenizer(smollm_tokenizer, pad_token="<|im_end|>")


def _save_tiny_llama(directory, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=EMBED_WIDTH,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,  # as SmolLM2
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def test_lora_adapter_stays_adapter_sized_for_a_49k_vocabulary(tmp_path, smollm_sized_tokenizer):
    _save_tiny_llama(tmp_path / "base", smollm_sized_tokenizer)
    lora = {"enabled": True, "r": 8, "alpha": 16}
    model, tok = load_model_and_tokenizer(ModelSpec(name_or_path=str(tmp_path / "base"), lora=lora))
    assert len(tok) == 49_152 and tok.pad_token == "<|endoftext|>"
    assert model.get_input_embeddings().num_embeddings == 49_152
    adapter = export_model(model, tok, tmp_path / "out") / "adapter_model.safetensors"
    embedding_bytes = 49_152 * EMBED_WIDTH * 4  # 12.6 MB
    assert adapter.stat().st_size < 0.05 * embedding_bytes, adapter.stat().st_size

    # Asking for a new pad token grows the vocabulary, and peft then saves the whole matrix.
    grown, tok = load_model_and_tokenizer(
        ModelSpec(name_or_path=str(tmp_path / "base"), lora=lora, pad_token=PAD_TOKEN)
    )
    assert grown.get_input_embeddings().num_embeddings == 49_153
    adapter = export_model(grown, tok, tmp_path / "grown") / "adapter_model.safetensors"
    assert adapter.stat().st_size > embedding_bytes
