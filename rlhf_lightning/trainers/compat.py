"""Classic TRL's model helpers under their TRL names, for the PPO loop of TRL 0.5's README.

``AutoModelForCausalLMWithValueHead`` is :class:`~rlhf_lightning.models.CausalLMWithValueHead`
and ``create_reference_model`` is :func:`~rlhf_lightning.models.create_reference_model`.
:func:`respond_to_batch` keeps TRL's signature (token ids in, token ids out); the text version
is :func:`rlhf_lightning.rollout.respond_to_batch`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rlhf_lightning.models import CausalLMWithValueHead, create_reference_model
from rlhf_lightning.models.dropout import eval_mode

AutoModelForCausalLMWithValueHead = CausalLMWithValueHead

__all__ = ["AutoModelForCausalLMWithValueHead", "create_reference_model", "respond_to_batch"]


@torch.no_grad()
def respond_to_batch(
    model: nn.Module, queries: Tensor, txt_len: int = 20, top_k: int = 0, top_p: float = 1.0
) -> Tensor:
    """`txt_len` sampled tokens after each query, as TRL's ``respond_to_batch``.

    Like TRL's, it never stops early (the stop token cannot end a response before `txt_len`)
    and returns the new tokens only; unlike TRL's token-by-token loop, it decodes with the KV
    cache in one ``generate`` call.

    Args:
        model: a causal LM or a value-head wrapper (its LM samples).
        queries: token ids of equal-length queries. Shape (B, Q).
        txt_len: tokens to sample per query.
        top_k / top_p: 0 / 1.0 sample from the full distribution.

    Returns:
        The sampled tokens. Shape (B, txt_len).
    """
    lm = getattr(model, "pretrained_model", model)
    device = next(lm.parameters()).device
    queries = queries.to(device)
    config = lm.generation_config
    pad = config.pad_token_id if config.pad_token_id is not None else config.eos_token_id
    with eval_mode(model):
        out = lm.generate(
            input_ids=queries,
            attention_mask=torch.ones_like(queries),
            do_sample=True,
            top_k=top_k,
            top_p=top_p,
            max_new_tokens=txt_len,
            min_new_tokens=txt_len,
            pad_token_id=pad,
        )
    return out[:, queries.shape[1] :]
