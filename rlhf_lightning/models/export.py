"""Write a trained model to a Hugging Face folder that transformers / peft load directly."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from torch import nn
from transformers import PreTrainedTokenizerBase

from rlhf_lightning.models.card import ModelCard, card_for_model, write_model_card
from rlhf_lightning.models.lora import is_peft_model


def export_model(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: str | Path,
    *,
    merge_lora: bool = False,
    card: ModelCard | None = None,
) -> Path:
    """Save `model`, `tokenizer` and a model card (``README.md``) to `out_dir` as safetensors.

    A LoRA model is saved as its adapter alone (`adapter_config.json`,
    `adapter_model.safetensors`); with `merge_lora`, `out_dir/merged` also gets full weights
    with the adapter folded in. Merging happens in place, so call this last. A value-head
    wrapper (``CausalLMWithValueHead``) writes its LM and ``value_head.safetensors``.

    Args:
        card: what the card says; None describes the model object alone (a run writes the full
            card afterwards, ``rlhf_lightning.run_card``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    card = card or card_for_model(model)
    # After save_pretrained: it replaces the empty template peft writes beside an adapter.
    write_model_card(out, card)
    lm = getattr(model, "pretrained_model", model)
    if merge_lora and is_peft_model(lm):
        merged = lm.merge_and_unload()
        merged.save_pretrained(out / "merged", safe_serialization=True)
        tokenizer.save_pretrained(out / "merged")
        write_model_card(out / "merged", merged_card(card))
    return out


def merged_card(card: ModelCard) -> ModelCard:
    """The card of ``merged/``: full weights with the adapter folded in."""
    note = "The LoRA adapter is merged into these full weights (the adapter is one level up)."
    return replace(card, adapter=False, notes=[*card.notes, note])
