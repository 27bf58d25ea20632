"""LoRA adapters through peft: only adapter weights train, the base stays bit-identical."""

from __future__ import annotations

from dataclasses import dataclass

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn


@dataclass
class LoraSpec:
    """`model.lora.*` settings.

    Attributes:
        enabled: wrap the model with a LoRA adapter.
        r: adapter rank.
        alpha: scaling numerator (the update is scaled by alpha / r).
        dropout: dropout on the adapter input.
        target_modules: module names to adapt; None adapts every linear layer but the output head.
        merge_on_export: also export weights with the adapter merged into the base.
    """

    enabled: bool = False
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] | None = None
    merge_on_export: bool = False


def apply_lora(model: nn.Module, spec: LoraSpec, task_type: str = "CAUSAL_LM") -> PeftModel:
    """Wrap `model` with a fresh LoRA adapter; every base parameter is frozen.

    With `task_type="SEQ_CLS"` peft also trains the (new) classification head in full.
    """
    config = LoraConfig(
        task_type=task_type,
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=list(spec.target_modules) if spec.target_modules else "all-linear",
    )
    peft_model = get_peft_model(model, config)
    if getattr(model, "is_gradient_checkpointing", False):
        # Checkpointed blocks need an input that requires grad when the embeddings are frozen.
        peft_model.enable_input_require_grads()
    return peft_model


def is_peft_model(model: nn.Module) -> bool:
    return isinstance(model, PeftModel)
