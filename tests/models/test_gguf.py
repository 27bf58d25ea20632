"""GGUF files as a model source: a tiny Llama written here, converted once, equal to its source."""

from __future__ import annotations

import logging
import os

import pytest
import torch

from rlhf_lightning.errors import ModelError
from rlhf_lightning.models import ModelSpec, load_model_and_tokenizer
from rlhf_lightning.models.gguf import MARKER, gguf_model_dir
from rlhf_lightning.paths import cache_dir

TEXT = "what is two plus two? it is four."


def test_logits_and_tokenizer_equal_the_source(tiny_gguf):
    path, source, source_tok = tiny_gguf()
    model, tok = load_model_and_tokenizer(
        ModelSpec(name_or_path=str(path.parent), gguf_file=path.name)
    )
    model.eval()
    ids = source_tok(TEXT, return_tensors="pt").input_ids
    assert tok(TEXT, return_tensors="pt").input_ids.tolist() == ids.tolist()
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, source(input_ids=ids).logits)
    # The file's specials and chat template come through; pad == eos in the file, so an unused
    # special token pads instead and the vocabulary keeps its size.
    assert (tok.bos_token, tok.eos_token, tok.unk_token) == (
        "<|im_start|>",
        "<|im_end|>",
        "<|endoftext|>",
    )
    assert tok.pad_token == "<|endoftext|>" and len(tok) == len(source_tok)
    assert model.get_input_embeddings().num_embeddings == len(source_tok)
    assert tok.chat_template == source_tok.chat_template
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


def test_two_optimizer_steps_train_the_loaded_model(tiny_gguf):
    path, _, source_tok = tiny_gguf()
    model, tok = load_model_and_tokenizer(
        ModelSpec(name_or_path=None, gguf_file=str(path), dtype="float32")
    )
    assert model.training and all(p.requires_grad for p in model.parameters())
    batch = tok([TEXT, "hello world"], return_tensors="pt", padding=True)
    labels = batch.input_ids.masked_fill(~batch.attention_mask.bool(), -100)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(2):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[1] < losses[0]
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())


def test_converted_once_and_again_when_the_file_changes(tiny_gguf, caplog):
    path, _, _ = tiny_gguf()
    with caplog.at_level(logging.INFO, logger="rlhf_lightning.models.gguf"):
        first = gguf_model_dir(path.parent, path.name)
        assert sum("converted in" in r.message for r in caplog.records) == 1
        assert gguf_model_dir(None, path) == first  # cached: no second conversion
        assert sum("converted in" in r.message for r in caplog.records) == 1
    assert not list(first.parent.glob(".*partial*"))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a rewritten file
    second = gguf_model_dir(path.parent, path.name)
    assert second != first and (second / MARKER).is_file()


def test_damaged_entry_is_rebuilt_with_one_warning(tiny_gguf, caplog):
    path, source, source_tok = tiny_gguf()
    entry = gguf_model_dir(path.parent, path.name)
    weights = entry / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # e.g. a disk filled up mid-copy
    with caplog.at_level(logging.WARNING, logger="rlhf_lightning.models.gguf"):
        assert gguf_model_dir(path.parent, path.name) == entry
    damaged = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    assert len(damaged) == 1 and "model.safetensors is missing or has the wrong size" in damaged[0]
    model, _ = load_model_and_tokenizer(ModelSpec(name_or_path=str(entry)))
    ids = source_tok(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(input_ids=ids).logits, source(input_ids=ids).logits)


def test_missing_or_unreadable_file_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match=r"model.gguf_file=nope.gguf: no such file.*Fix"):
        load_model_and_tokenizer(ModelSpec(name_or_path=str(tmp_path), gguf_file="nope.gguf"))
    (tmp_path / "bad.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(ModelError, match=r"cannot convert this GGUF file.*Fix"):
        gguf_model_dir(tmp_path, "bad.gguf")
    assert not list((cache_dir() / "gguf").glob(".bad*partial*"))  # nothing half-written


def test_chat_targets_and_preference_pairs_on_the_converted_tokenizer(tiny_gguf):
    from rlhf_lightning.data.chat import tokenize_messages
    from rlhf_lightning.data.pairs import tokenize_pairs

    path, _, _ = tiny_gguf()
    _, tok = load_model_and_tokenizer(ModelSpec(gguf_file=str(path)))
    chat = [{"role": "user", "content": "what is two plus two?"}]
    example = tokenize_messages([*chat, {"role": "assistant", "content": "four"}], tok, None)
    targets = [t for t, m in zip(example["input_ids"], example["loss_mask"], strict=True) if m]
    # The assistant turn and the end of turn the model must learn to emit; nothing padded.
    assert tok.decode(targets) == "four<|im_end|>\n"
    assert (
        example["input_ids"][0] == tok.bos_token_id and tok.pad_token_id not in example["input_ids"]
    )
    row = {
        "chosen": [*chat, {"role": "assistant", "content": "four"}],
        "rejected": [*chat, {"role": "assistant", "content": "five"}],
    }
    (pair,) = tokenize_pairs([row], "messages", {}, tok, None)
    for side in ("chosen", "rejected"):
        ids, mask = pair[f"{side}_input_ids"], pair[f"{side}_completion_mask"]
        completion = tok.decode([t for t, m in zip(ids, mask, strict=True) if m])
        assert completion.startswith(row[side][-1]["content"] + "<|im_end|>")


def test_the_sft_stage_trains_two_steps_on_a_gguf_file(tiny_gguf, tmp_path):
    """`model.name_or_path=DIR model.gguf_file=NAME`: the CLI's path, converted once, exported as
    a normal Hugging Face directory (with LoRA: an adapter on the converted base)."""
    from rlhf_lightning.api import compose_config
    from rlhf_lightning.train import run

    path, _, _ = tiny_gguf()
    cfg = compose_config(
        "sft",
        [
            "experiment=smoke",
            "model=pretrained",
            f"model.name_or_path={path.parent}",
            f"model.gguf_file={path.name}",
            "trainer.max_steps=2",
            "trainer.val_check_interval=2",
            "stage.num_samples=1",
        ],
        run_dir=tmp_path / "sft",
    )
    summary = run(cfg)
    assert summary["global_step"] == 2
    exported, tok = load_model_and_tokenizer(ModelSpec(name_or_path=str(tmp_path / "sft/model")))
    assert exported.config.model_type == "llama" and len(tok) == exported.config.vocab_size
