"""Model loading, LoRA wrapping and export."""

from rlhf_lightning.models.card import ModelCard, card_for_model, write_model_card
from rlhf_lightning.models.critic import ValueModel
from rlhf_lightning.models.dropout import disable_dropout
from rlhf_lightning.models.export import export_model
from rlhf_lightning.models.loading import (
    ModelSpec,
    build_causal_lm,
    load_model_and_tokenizer,
    load_pretrained_causal_lm,
)
from rlhf_lightning.models.lora import LoraSpec, apply_lora, is_peft_model
from rlhf_lightning.models.reference import (
    AdapterDisabledReference,
    FrozenCopyReference,
    Reference,
    build_reference,
    create_reference_model,
)
from rlhf_lightning.models.tokenizer import load_tokenizer, prepare_tokenizer
from rlhf_lightning.models.value_head import (
    CausalLMWithValueHead,
    ValueHead,
    ValueHeadOutput,
    position_ids_from_mask,
)

__all__ = [
    "LoraSpec",
    "ModelCard",
    "ModelSpec",
    "apply_lora",
    "build_causal_lm",
    "card_for_model",
    "disable_dropout",
    "export_model",
    "is_peft_model",
    "load_model_and_tokenizer",
    "load_pretrained_causal_lm",
    "load_tokenizer",
    "prepare_tokenizer",
    "write_model_card",
    # PPO: critics and the reference policy
    "AdapterDisabledReference",
    "CausalLMWithValueHead",
    "FrozenCopyReference",
    "Reference",
    "ValueHead",
    "ValueHeadOutput",
    "ValueModel",
    "build_reference",
    "create_reference_model",
    "position_ids_from_mask",
]
