"""The one scoring path: token ids in, log-probs (and values, entropy) of the scored tokens out.

Every forward that scores sampled or given tokens goes through :func:`score_tokens`: the policy
at rollout time and in every minibatch, the reference, PPO's value head, DPO's chosen and
rejected completions. One forward over the whole sequence with position ids from the mask
(ALGORITHMS.md §5.2), the LM head over the scored positions only, and ``logits[:, t]`` scoring
token ``t + 1`` (§5.1), at the sampling temperature (§2), so the policy, the reference and the
update see identical positions and temperature.

Scored models share one call convention, ``model(input_ids=, attention_mask=, position_ids=,
logits_to_keep=)``: a transformers causal LM (or peft model), a
:class:`~rlhf_lightning.models.CausalLMWithValueHead` (logits and values), or a reference
(:class:`~rlhf_lightning.models.Reference`, logits). A separate critic scores values only
(:func:`critic_values`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from rlhf_lightning.functional import entropy_from_logits, position_ids_from_mask, token_logprobs
from rlhf_lightning.models.logits import causal_lm_logits, is_causal_lm


class TokenScores(NamedTuple):
    """What :func:`score_tokens` returns. A = T - start scored tokens per row."""

    logprobs: Tensor
    """Log-probs of the scored tokens at the temperature. Shape (B, A), fp32."""
    values: Tensor | None
    """The value head's value of the state before each scored token. Shape (B, A), fp32."""
    entropy: Tensor | None
    """Entropy of each next-token distribution (at the temperature). Shape (B, A), fp32."""
    logits: Tensor | None
    """The logits that scored each token (for the exact KL). Shape (B, A, V)."""


def score_tokens(
    model: nn.Module | Any,
    input_ids: Tensor,
    attention_mask: Tensor,
    start: int,
    *,
    temperature: float = 1.0,
    values: bool = False,
    entropy: bool = False,
    keep_logits: bool = False,
) -> TokenScores:
    """Score tokens ``start .. T-1`` of each row with one forward of `model`.

    Gradients flow when enabled: wrap in ``torch.no_grad()`` for rollout and reference scoring.
    Keep dropout at p=0 so the first minibatch's ratio is exactly 1 (ALGORITHMS.md §5.3).

    Args:
        model: A causal LM, a value-head wrapper, or a reference (see the module docstring).
        input_ids: Token ids. Shape (B, T).
        attention_mask: True (or 1) at real tokens; any padding side. Shape (B, T).
        start: Column of the first scored token: the query width Q for a left-padded rollout
            (the response tokens), 1 for every token of right-padded sequences (DPO).
        temperature: Logits are divided by it before normalising (as sampling did).
        values: Also return the value head's values (the model must return ``values``).
        entropy: Also return the entropy of each next-token distribution.
        keep_logits: Also return the (B, A, V) logits, e.g. for the exact full-vocabulary KL.

    Returns:
        :class:`TokenScores`; positions outside the mask are left as computed (mask them
        downstream).
    """
    if input_ids.shape != attention_mask.shape or not 0 < start < input_ids.shape[1]:
        raise ValueError(
            f"ids {tuple(input_ids.shape)} and mask {tuple(attention_mask.shape)} must match, "
            f"with 0 < start ({start}) < T"
        )
    keep = input_ids.shape[1] - start + 1  # positions start-1 .. T-1: the LM head skips the rest
    positions = position_ids_from_mask(attention_mask)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": positions}
    if is_causal_lm(model):
        out: Any = causal_lm_logits(model, keep, use_cache=False, **inputs)
    else:
        out = model(**inputs, logits_to_keep=keep)
    logits = out if isinstance(out, Tensor) else out.logits
    logits = logits[:, -keep:-1]  # (B, A, V): position t scores token t+1
    logprobs = token_logprobs(logits, input_ids[:, start:], temperature)
    entropies = None
    if entropy:
        with torch.no_grad():
            scaled = logits.float()  # no copy for fp32 logits
            scaled = scaled if temperature == 1.0 else scaled / temperature
            entropies = entropy_from_logits(scaled)
    value = None
    if values:
        found = getattr(out, "values", None)
        if not isinstance(found, Tensor):  # an HF ModelOutput's `.values` is the dict method
            raise TypeError(
                f"{type(model).__name__} returned no `values` tensor: scoring values needs a "
                "value-head model (CausalLMWithValueHead)."
            )
        value = found[:, start - 1 : -1].float()
    return TokenScores(logprobs, value, entropies, logits if keep_logits else None)


def critic_values(
    critic: nn.Module, input_ids: Tensor, attention_mask: Tensor, start: int
) -> Tensor:
    """A separate critic's value of the state before each scored token.

    Same alignment as :func:`score_tokens`' values: ``values[:, start-1:-1]``.

    Args:
        critic: Returns values (B, T) for ``(input_ids, attention_mask, position_ids)``
            (:class:`~rlhf_lightning.models.ValueModel`).
        input_ids: Shape (B, T).
        attention_mask: True at real tokens. Shape (B, T).
        start: Column of the first scored token.

    Returns:
        Values, fp32. Shape (B, T - start).
    """
    positions = position_ids_from_mask(attention_mask)
    values = critic(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions)
    return values[:, start - 1 : -1].float()
