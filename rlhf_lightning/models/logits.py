"""Logits for the last positions only: the LM head (and its fp32 copy) skips the prompt.

RL losses read the logits at response positions alone. With a long prompt, a large vocabulary
or both, the LM head over every position is a large share of a forward's compute and of its
memory ((B, T, V) fp32). transformers' causal LMs take ``logits_to_keep=k`` and project only
the last k hidden states; a model without that argument gets the full logits, sliced.
"""

from __future__ import annotations

from typing import Any

import torch
from peft import PeftModel
from torch import Tensor, nn
from transformers import PreTrainedModel


def causal_lm_logits(model: nn.Module, logits_to_keep: int | Tensor = 0, **inputs: Any) -> Tensor:
    """``model(**inputs).logits`` for the last `logits_to_keep` positions (0: every position).

    Args:
        model: a transformers causal LM (peft-wrapped or not) or anything returning ``.logits``.
        logits_to_keep: how many final positions to keep, or a bool (B, T) mask of the positions
            to keep (packed sequences: the kept logits come flattened, row-major).
        **inputs: the forward's inputs (input_ids, attention_mask, position_ids, ...).

    Returns:
        Logits in the model's dtype. Shape (B, logits_to_keep or T, V), or (kept, V) for a mask.
    """
    is_mask = isinstance(logits_to_keep, Tensor)
    if not is_mask and logits_to_keep <= 0:
        return model(**inputs).logits
    try:
        return model(**inputs, logits_to_keep=logits_to_keep).logits
    except TypeError as err:
        if "logits_to_keep" not in str(err):
            raise
        logits = model(**inputs).logits
        return logits[logits_to_keep] if is_mask else logits[:, -logits_to_keep:]


def is_causal_lm(model: object) -> bool:
    """Whether `model` is a transformers model (or a peft wrapper of one): called through
    :func:`causal_lm_logits` with ``use_cache=False``, not with the project's own convention."""
    return isinstance(model, (PreTrainedModel, PeftModel))


def custom_mask_dtype(model: object) -> torch.dtype | None:
    """The dtype of an additive (B, 1, T, T) attention mask that `model` applies as given, or
    None when it does not take one.

    transformers passes a 4-D mask straight to the attention; eager and sdpa attention add it to
    the scores (a boolean mask would be added as 0/1 by eager attention, so it must be additive,
    in the model's dtype), other kernels (flash) ignore or reject it. A reference that is not a
    module itself is looked up through its ``model``.
    """
    root = model if isinstance(model, nn.Module) else getattr(model, "model", None)
    if not isinstance(root, nn.Module):
        return None
    for module in root.modules():
        if isinstance(module, PreTrainedModel):
            supported = module.config._attn_implementation in ("sdpa", "eager")
            return module.dtype if supported else None
    return None
