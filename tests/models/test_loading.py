"""Model and tokenizer loading: from scratch, from a local directory, LoRA, clear errors."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from rlhf_lightning.errors import ConfigError, ModelError
from rlhf_lightning.models import (
    LoraSpec,
    ModelSpec,
    load_model_and_tokenizer,
    prepare_tokenizer,
)
from rlhf_lightning.models.tokenizer import PAD_TOKEN

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


def _demo_tok() -> str:
    from rlhf_lightning.demo.tokenizer import ensure_demo_tokenizer

    return str(ensure_demo_tokenizer())


def test_demo_tokenizer_has_distinct_pad_and_chat_template(demo_tokenizer):
    assert demo_tokenizer.pad_token_id is not None
    assert demo_tokenizer.pad_token_id != demo_tokenizer.eos_token_id
    assert demo_tokenizer.padding_side == "right"
    rendered = demo_tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    text = "Loving the new phone!"
    assert demo_tokenizer.decode(demo_tokenizer(text).input_ids) == text


def test_digits_tokenizer_splits_numbers_into_digits(demo_tokenizer):
    from rlhf_lightning.builtins import resolve_name
    from rlhf_lightning.models import load_tokenizer

    digits = load_tokenizer(resolve_name("demo:digits_tokenizer"))
    ids = digits("<answer>1081</answer> in 2024").input_ids
    tokens = digits.convert_ids_to_tokens(ids)
    assert tokens[5:9] == ["1", "0", "8", "1"] and tokens[-4:] == ["2", "0", "2", "4"]
    # The demo vocabulary, special tokens and text round trip are those of the demo tokenizer.
    assert len(digits) == len(demo_tokenizer) and digits.pad_token_id == demo_tokenizer.pad_token_id
    assert digits.decode(ids) == "<answer>1081</answer> in 2024"
    assert digits("no digits here").input_ids == demo_tokenizer("no digits here").input_ids


def _gpt2_like_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with only <|endoftext|>, padded with EOS like GPT-2's."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(["hello world", "a short text"], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )


def test_prepare_tokenizer_adds_pad_when_pad_is_eos():
    tok = _gpt2_like_tokenizer()
    n = len(tok)
    assert tok.pad_token_id == tok.eos_token_id
    prepare_tokenizer(tok)
    assert tok.pad_token == PAD_TOKEN and tok.pad_token_id == n
    assert tok.pad_token_id != tok.eos_token_id and len(tok) == n + 1
    assert tok.chat_template is not None


@pytest.mark.parametrize("arch", [TINY_GPT2, TINY_LLAMA], ids=["gpt2", "llama"])
def test_build_from_arch_matches_tokenizer(arch):
    model, tok = load_model_and_tokenizer(ModelSpec(tokenizer=_demo_tok(), arch=arch))
    assert model.get_input_embeddings().num_embeddings == len(tok)
    assert model.config.pad_token_id == tok.pad_token_id
    ids = tok(["hello world"], return_tensors="pt").input_ids
    assert model(input_ids=ids).logits.shape == (1, ids.shape[1], len(tok))


def test_same_seed_same_init_and_global_rng_untouched():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, _ = load_model_and_tokenizer(ModelSpec(tokenizer=_demo_tok(), arch=TINY_GPT2, seed=7))
    after = torch.rand(1)
    b, _ = load_model_and_tokenizer(ModelSpec(tokenizer=_demo_tok(), arch=TINY_GPT2, seed=7))
    assert torch.equal(before, after)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_round_trip_through_local_directory(tmp_path):
    model, tok = load_model_and_tokenizer(ModelSpec(tokenizer=_demo_tok(), arch=TINY_GPT2))
    model.eval()  # built models start in train mode (dropout on); loaded ones in eval mode
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, loaded_tok = load_model_and_tokenizer(ModelSpec(name_or_path=str(tmp_path)))
    assert loaded.training  # loaded and built models both start in train mode
    loaded.eval()
    assert loaded_tok.pad_token_id == tok.pad_token_id
    ids = tok(["a short text"], return_tensors="pt").input_ids
    torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_local_gpt2_without_pad_gets_one_and_embeddings_grow(tmp_path):
    tok = _gpt2_like_tokenizer()
    tok.save_pretrained(tmp_path)
    n_vocab = len(tok)
    config = GPT2Config(vocab_size=n_vocab, n_layer=1, n_embd=16, n_head=2)
    GPT2LMHeadModel(config).save_pretrained(tmp_path)
    model, loaded_tok = load_model_and_tokenizer(ModelSpec(name_or_path=str(tmp_path)))
    assert loaded_tok.pad_token_id != loaded_tok.eos_token_id
    assert model.get_input_embeddings().num_embeddings == n_vocab + 1
    assert model.config.pad_token_id == loaded_tok.pad_token_id


def test_missing_local_model_dir_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match=r"model.name_or_path=.*no such directory.*Fix"):
        load_model_and_tokenizer(ModelSpec(name_or_path=str(tmp_path / "nope")))


def test_spec_needs_a_model():
    with pytest.raises(ConfigError, match="Fix"):
        ModelSpec()


def test_lora_trains_only_adapter_weights():
    model, _ = load_model_and_tokenizer(
        ModelSpec(tokenizer=_demo_tok(), arch=TINY_GPT2, lora=LoraSpec(enabled=True, r=4))
    )
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_exported_model_loads_with_transformers(tmp_path):
    from rlhf_lightning.models import export_model

    model, tok = load_model_and_tokenizer(ModelSpec(tokenizer=_demo_tok(), arch=TINY_GPT2))
    model.eval()
    export_model(model, tok, tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    ids = torch.tensor([[1, 5, 9]])
    torch.testing.assert_close(reloaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_gpt2_runs_its_tanh_gelu_fused_with_the_same_logits(tmp_path):
    from transformers.activations import GELUTanh

    tok = _gpt2_like_tokenizer()
    config = GPT2Config(vocab_size=len(tok), n_layer=1, n_embd=16, n_head=2)
    assert config.activation_function == "gelu_new"
    GPT2LMHeadModel(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model, _ = load_model_and_tokenizer(ModelSpec(name_or_path=str(tmp_path)))
    act = model.transformer.h[0].mlp.act
    assert isinstance(act, GELUTanh)
    assert model.config.activation_function == "gelu_new"  # a saved model is unchanged
    # 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3))) at x = 1, -1, 2 (by hand).
    expected = torch.tensor([0.841192, -0.158808, 1.954598])
    torch.testing.assert_close(act(torch.tensor([1.0, -1.0, 2.0])), expected, atol=1e-6, rtol=0)
    model.eval()
    reference = GPT2LMHeadModel.from_pretrained(tmp_path).eval()  # gelu_new, unfused
    ids = torch.tensor([[1, 5, 9, 30, 2]])
    logits = model(input_ids=ids).logits[..., : len(tok)]  # without the added pad token
    torch.testing.assert_close(logits, reference(input_ids=ids).logits, atol=1e-5, rtol=0)
