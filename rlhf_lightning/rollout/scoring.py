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

``packed=True`` runs the same forward padding-free (``functional/packing.py``): the real tokens
packed into fewer rows, each sequence with its own positions and no attention mask (the model
reads the sequence boundaries from the positions), and the LM head only where a scored token is
real. The result has the padded layout and the padded forward's numbers (to float rounding);
scored positions whose token or scoring token is padding are 0 instead of "as computed".
When rows share their prompt (GRPO/RLOO's groups) and the model's attention takes a custom 4-D
mask (eager, sdpa), each group's prompt is packed once, its completions after it
(``shared_prefix_layout``): the prompt's forward (and backward) runs once per group instead of
once per row; otherwise the rows are packed as they are.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from rlhf_lightning.functional import (
    PackedLayout,
    entropy_from_logits,
    indexed_token_logprobs,
    pack,
    pack_layout,
    packed_positions_of,
    position_ids_from_mask,
    prompt_groups,
    shared_prefix_layout,
    token_logprobs,
)
from rlhf_lightning.models.logits import causal_lm_logits, custom_mask_dtype, is_causal_lm


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
    packed: bool = False,
    only: Tensor | None = None,
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
        packed: Run the forward padding-free (see the module docstring).
        only: True at the scored tokens whose log-probs are wanted; the LM head runs at those
            positions alone and every other one comes back 0. A multi-turn episode's
            environment tokens are most of its response and never scored by a loss: with a
            small model the LM head over them was most of the training step. None: every
            scored token. Shape (B, T - start), bool.

    Returns:
        :class:`TokenScores`; positions outside the mask are left as computed (0 when packed
        or outside `only`; mask them downstream). Values cover every position.
    """
    if input_ids.shape != attention_mask.shape or not 0 < start < input_ids.shape[1]:
        raise ValueError(
            f"ids {tuple(input_ids.shape)} and mask {tuple(attention_mask.shape)} must match, "
            f"with 0 < start ({start}) < T"
        )
    if only is not None and only.shape != (input_ids.shape[0], input_ids.shape[1] - start):
        raise ValueError(f"only {tuple(only.shape)} must be (B, T - start) for start={start}")
    if packed and not bool(attention_mask.all()):  # without padding, packing moves nothing
        return _score_packed(
            model, input_ids, attention_mask.bool(), start, temperature, values, entropy,
            keep_logits, only=only,
        )  # fmt: skip
    positions = position_ids_from_mask(attention_mask)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": positions}
    if only is not None:
        return _score_only(model, inputs, start, only.bool(), temperature, values, entropy,
                           keep_logits)  # fmt: skip
    keep = input_ids.shape[1] - start + 1  # positions start-1 .. T-1: the LM head skips the rest
    if is_causal_lm(model):
        out: Any = causal_lm_logits(model, keep, use_cache=False, **inputs)
    else:
        out = model(**inputs, logits_to_keep=keep)
    logits = out if isinstance(out, Tensor) else out.logits
    logits = logits[:, -keep:-1]  # (B, A, V): position t scores token t+1
    logprobs = token_logprobs(logits, input_ids[:, start:], temperature)
    entropies = _entropies(logits, temperature) if entropy else None
    value = _values_of(model, out)[:, start - 1 : -1].float() if values else None
    return TokenScores(logprobs, value, entropies, logits if keep_logits else None)


def _entropies(logits: Tensor, temperature: float) -> Tensor:
    """The entropy of each next-token distribution of `logits` (..., V) at `temperature`,
    without gradient: shape (...)."""
    with torch.no_grad():
        scaled = logits.float()  # no copy for fp32 logits
        scaled = scaled if temperature == 1.0 else scaled / temperature
        return entropy_from_logits(scaled)


def _values_of(model: nn.Module | Any, out: Any) -> Tensor:
    """The value head's output of a forward, or a clear error for a model without one."""
    found = getattr(out, "values", None)
    if not isinstance(found, Tensor):  # an HF ModelOutput's `.values` is the dict method
        raise TypeError(
            f"{type(model).__name__} returned no `values` tensor: scoring values needs a "
            "value-head model (CausalLMWithValueHead)."
        )
    return found


def _score_only(
    model: nn.Module | Any,
    inputs: dict[str, Tensor],
    start: int,
    only: Tensor,
    temperature: float,
    values: bool,
    entropy: bool,
    keep_logits: bool,
) -> TokenScores:
    """:func:`score_tokens` (padded) with the LM head at the positions scoring `only`'s tokens."""
    input_ids = inputs["input_ids"]
    keep = torch.zeros_like(input_ids, dtype=torch.bool)  # (B, T)
    keep[:, start - 1 : -1] = only  # position t scores token t+1
    if is_causal_lm(model):
        out: Any = causal_lm_logits(model, keep, use_cache=False, **inputs)
    else:
        out = model(**inputs, logits_to_keep=keep)
    kept = out if isinstance(out, Tensor) else out.logits  # (N, V), row-major like `only`
    if kept.ndim == 3:  # a model that returned every position's logits
        kept = kept[keep]
    targets = input_ids[:, start:][only]  # (N,)
    # One (1, N, V) batch: the half-precision path upcasts per row, not per token.
    logprobs = token_logprobs(kept[None], targets[None], temperature)[0]
    zeros = logprobs.new_zeros(only.shape)
    entropies = zeros.masked_scatter(only, _entropies(kept, temperature)) if entropy else None
    value = _values_of(model, out)[:, start - 1 : -1].float() if values else None
    logits = None
    if keep_logits:
        full = kept.new_zeros(*only.shape, kept.shape[-1])
        logits = full.masked_scatter(only[..., None], kept)
    return TokenScores(zeros.masked_scatter(only, logprobs), value, entropies, logits)


def _score_packed(
    model: nn.Module | Any,
    input_ids: Tensor,
    mask: Tensor,
    start: int,
    temperature: float,
    values: bool,
    entropy: bool,
    keep_logits: bool,
    capacity: int | None = None,
    only: Tensor | None = None,
) -> TokenScores:
    """:func:`score_tokens` padding-free: one forward over the packed rows, results unpacked."""
    mask_dtype = custom_mask_dtype(model)
    layout = _packed_layout(mask_dtype is not None, input_ids, mask, start, capacity)
    plan = _PackPlan.of(layout, mask, start, only)
    inputs = plan.inputs(input_ids, mask_dtype)
    if is_causal_lm(model):
        out: Any = causal_lm_logits(model, plan.keep, use_cache=False, **inputs)
    else:
        out = model(**inputs, logits_to_keep=plan.keep)
    kept = out if isinstance(out, Tensor) else out.logits  # (K, V), in packed order
    targets = input_ids[:, start:][plan.scored]  # (N,) in padded order
    logprobs = indexed_token_logprobs(kept, plan.rank, targets, temperature)
    entropies = plan.unpack(_entropies(kept, temperature)[plan.rank]) if entropy else None
    value = None
    if values:
        value = plan.unpack(_values_of(model, out).reshape(-1)[plan.scorers].float())
    logits = None
    if keep_logits:
        full = kept.new_zeros(*plan.scored.shape, kept.shape[-1])
        logits = full.masked_scatter(plan.scored[..., None], kept[plan.rank])
    return TokenScores(plan.unpack(logprobs), value, entropies, logits)


def _packed_layout(
    takes_mask: bool, input_ids: Tensor, mask: Tensor, start: int, capacity: int | None
) -> PackedLayout:
    """Each shared prompt once when rows share prompts and the model takes the custom mask that
    needs (`takes_mask`), else the rows packed as they are."""
    if takes_mask:
        groups = prompt_groups(input_ids, mask, start)
        if int(groups.max()) + 1 < groups.numel():  # some prompt is there twice
            return shared_prefix_layout(mask, start, groups, capacity)
    return pack_layout(mask, capacity)


class _PackPlan(NamedTuple):
    """What a packed scoring forward needs: the layout and where the scored tokens sit."""

    layout: PackedLayout
    scored: Tensor  # (B, A): token start+j and the token before it are both real
    scorers: Tensor  # (N,) flat packed index of the token before each scored one, padded order
    keep: Tensor  # (R, C) bool: the LM head runs here only
    rank: Tensor  # (N,) each scorer's place among the kept logits (packed row-major order);
    # a shared prompt's last token scores the first token of every completion after it

    @classmethod
    def of(
        cls, layout: PackedLayout, mask: Tensor, start: int, only: Tensor | None = None
    ) -> _PackPlan:
        scored = mask[:, start:] & mask[:, start - 1 : -1]  # (B, A)
        if only is not None:
            scored = scored & only.bool()
        before = torch.zeros_like(mask)
        before[:, start - 1 : -1] = scored  # the position whose logits score each token
        scorers = packed_positions_of(layout, before)
        keep = torch.zeros(layout.position_ids.numel(), dtype=torch.bool, device=mask.device)
        keep[scorers] = True
        rank = (keep.cumsum(0) - 1)[scorers]
        return cls(layout, scored, scorers, keep.view_as(layout.position_ids), rank)

    def inputs(self, input_ids: Tensor, dtype: torch.dtype | None) -> dict[str, Tensor | None]:
        mask = None  # the positions restarting at 0 separate the packed sequences
        if self.layout.attention is not None:  # additive, in the model's dtype (eager adds it)
            blocked = torch.finfo(dtype or torch.float32).min
            allowed = self.layout.attention[:, None]  # (R, 1, C, C)
            mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
            mask = mask.masked_fill(~allowed, blocked)
        return {
            "input_ids": pack(input_ids, self.layout),
            "attention_mask": mask,
            "position_ids": self.layout.position_ids,
        }

    def unpack(self, x: Tensor) -> Tensor:
        """(N,) in padded order -> (B, A), 0 where nothing is scored."""
        return x.new_zeros(self.scored.shape).masked_scatter(self.scored, x)


@torch.no_grad()
def packing_error(
    model: nn.Module | Any, input_ids: Tensor, attention_mask: Tensor, start: int
) -> float:
    """Largest log-prob difference between the padded forward and packed ones of the two
    shortest rows: both in one packed row, and (when `model` takes a custom mask) the second
    row's prompt made the first's, so the two share it. ~1e-7 when the model separates packed
    sequences, large when it lets one attend to the other.

    A model whose attention ignores the positions (an architecture transformers does not build
    its masks for) or the mask would train on mixed-up sequences without any error; this check,
    run once, turns that into one. Shapes as :func:`score_tokens`; needs B >= 2.
    """
    mask = attention_mask.bool()
    rows = mask.sum(dim=1).argsort()[:2]
    two_ids, two_mask = input_ids[rows], mask[rows]
    cases = [(two_ids, two_mask)]
    # Sharing the prompt only where the model takes the mask (elsewhere it packs as the first).
    if custom_mask_dtype(model) is not None:
        shared_ids, shared_mask = two_ids.clone(), two_mask.clone()
        shared_ids[1, :start], shared_mask[1, :start] = two_ids[0, :start], two_mask[0, :start]
        cases.append((shared_ids, shared_mask))
    errors = [0.0]
    for ids, real in cases:
        padded = score_tokens(model, ids, real, start)
        capacity = int(real.sum())  # both sequences in one packed row
        packed = _score_packed(model, ids, real, start, 1.0, False, False, False, capacity)
        scored = real[:, start:] & real[:, start - 1 : -1]
        if bool(scored.any()):
            errors.append(float((packed.logprobs - padded.logprobs)[scored].abs().max()))
    return max(errors)


def critic_values(
    critic: nn.Module, input_ids: Tensor, attention_mask: Tensor, start: int, packed: bool = False
) -> Tensor:
    """A separate critic's value of the state before each scored token.

    Same alignment as :func:`score_tokens`' values: ``values[:, start-1:-1]``.

    Args:
        critic: Returns values (B, T) for ``(input_ids, attention_mask, position_ids)``
            (:class:`~rlhf_lightning.models.ValueModel`).
        input_ids: Shape (B, T).
        attention_mask: True at real tokens. Shape (B, T).
        start: Column of the first scored token.
        packed: Run the forward padding-free (0 where nothing is scored).

    Returns:
        Values, fp32. Shape (B, T - start).
    """
    if packed and not bool(attention_mask.all()):
        mask = attention_mask.bool()
        plan = _PackPlan.of(pack_layout(mask), mask, start)  # a critic takes no custom mask
        found = critic(**plan.inputs(input_ids, None))
        return plan.unpack(found.reshape(-1)[plan.scorers].float())
    positions = position_ids_from_mask(attention_mask)
    values = critic(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions)
    return values[:, start - 1 : -1].float()
