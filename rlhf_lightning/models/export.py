"""Write a trained model to a Hugging Face folder that transformers / peft load directly."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from rlhf_lightning.models.card import ModelCard, card_for_model, write_model_card
from rlhf_lightning.models.lora import is_peft_model
from rlhf_lightning.rundir import atomic_directory


def export_model(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: str | Path,
    *,
    merge_lora: bool = False,
    card: ModelCard | None = None,
    parts: Mapping[str, Any] | None = None,
) -> Path:
    """Save `model`, `tokenizer` and a model card (``README.md``) to `out_dir` as safetensors,
    all of it or nothing.

    A LoRA model is saved as its adapter alone (`adapter_config.json`,
    `adapter_model.safetensors`); with `merge_lora`, `out_dir/merged` also gets full weights
    with the adapter folded in. Merging happens in place, so call this last. A value-head
    wrapper (``CausalLMWithValueHead``) writes its LM and ``value_head.safetensors``.

    The directory is written beside `out_dir` and renamed into place
    (``rlhf_lightning.rundir.atomic_directory``): an interrupted or failed export leaves the
    previous `out_dir` (or none), never a half-written one.

    Args:
        card: what the card says; None describes the model object alone (a run writes the full
            card afterwards, ``rlhf_lightning.run_card``).
        parts: further models saved with their own ``save_pretrained`` into subdirectories
            (e.g. ``{"critic": critic}``), inside the same all-or-nothing write.
    """
    card = card or card_for_model(model)
    with atomic_directory(out_dir) as out:
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        # After save_pretrained: it replaces the empty template peft writes beside an adapter.
        write_model_card(out, card)
        for name, part in (parts or {}).items():
            part.save_pretrained(out / name, safe_serialization=True)
        lm = getattr(model, "pretrained_model", model)
        if merge_lora and is_peft_model(lm):
            merged = lm.merge_and_unload()
            merged.save_pretrained(out / "merged", safe_serialization=True)
            tokenizer.save_pretrained(out / "merged")
            write_model_card(out / "merged", merged_card(card))
    return Path(out_dir)


def merged_card(card: ModelCard) -> ModelCard:
    """The card of ``merged/``: full weights with the adapter folded in."""
    note = "The LoRA adapter is merged into these full weights (the adapter is one level up)."
    return replace(card, adapter=False, notes=[*card.notes, note])
