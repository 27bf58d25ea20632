"""An export (`<run>/model`, a critic beside the policy) is written whole or not at all."""

from __future__ import annotations

import pytest
import transformers

from rlhf_lightning.models.export import export_model


def _tiny_gpt2(seed: int) -> transformers.GPT2LMHeadModel:
    transformers.set_seed(seed)
    config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64)
    return transformers.GPT2LMHeadModel(config)


class _BrokenPart:
    def save_pretrained(self, directory, **kwargs):
        directory.mkdir()
        (directory / "half.bin").write_bytes(b"\0" * 10)
        raise OSError("disk full")


def test_parts_land_inside_the_export_and_a_failure_keeps_the_old_one(tmp_path, tokenizer):
    out = tmp_path / "model"
    export_model(_tiny_gpt2(0), tokenizer, out, parts={"critic": _tiny_gpt2(1)})
    assert (out / "model.safetensors").is_file()
    assert (out / "critic" / "model.safetensors").is_file()
    before = (out / "model.safetensors").read_bytes()

    with pytest.raises(OSError, match="disk full"):
        export_model(_tiny_gpt2(2), tokenizer, out, parts={"critic": _BrokenPart()})
    assert (out / "model.safetensors").read_bytes() == before  # the previous export, whole
    assert (out / "critic" / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary leftovers
