"""Write a trained model to a Hugging Face folder that transformers / peft load directly."""

from __future__ import annotations

from pathlib import Path

from torch import nn
from transformers import PreTrainedTokenizerBase

from rlhf_lightning.models.lora import is_peft_model


def export_model(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: str | Path,
    *,
    merge_lora: bool = False,
) -> Path:
    """Save `model` and `tokenizer` to `out_dir` as safetensors.

    A LoRA model is saved as its adapter alone (`adapter_config.json`,
    `adapter_model.safetensors`); with `merge_lora`, `out_dir/merged` also gets full weights
    with the adapter folded in. Merging happens in place, so call this last. A value-head
    wrapper (``CausalLMWithValueHead``) writes its LM and ``value_head.safetensors``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    lm = getattr(model, "pretrained_model", model)
    if merge_lora and is_peft_model(lm):
        merged = lm.merge_and_unload()
        merged.save_pretrained(out / "merged", safe_serialization=True)
        tokenizer.save_pretrained(out / "merged")
    return out
