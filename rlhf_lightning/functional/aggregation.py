"""Loss aggregations: how per-token (or per-sequence) losses become one scalar.

One of the four parts of an online-RL algorithm. Every aggregation has the signature

    aggregate(losses, mask, context) -> scalar

where ``losses`` is what a policy loss returned: per token (B, A), 0 outside the mask, or per
sequence (B,). The rules differ in how they weigh tokens against sequences, which is what
distinguishes GRPO, Dr. GRPO and DAPO (ALGORITHMS.md §4). A per-sequence loss has one value
per row, so every aggregation averages it over the rows.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from rlhf_lightning.functional.masked import masked_sum


class AggregationContext(NamedTuple):
    """Batch-level numbers some aggregations divide by."""

    num_items: float | Tensor
    """Real tokens of the whole generation batch, divided by the number of processes and by
    the minibatches one pass is split into (TRL ``num_items_in_batch``): the DAPO normaliser."""
    max_completion_length: int
    """The response budget (``sampling.max_new_tokens``): Dr. GRPO's constant."""


def token_mean(losses: Tensor, mask: Tensor, context: AggregationContext) -> Tensor:
    """``Σ L·M / Σ M`` over the minibatch: every token weighs the same (PPO; GRPO's "bnpo").

    An empty mask gives 0 (the count is clamped to 1, as in TRL).

    Args:
        losses: Per-token losses (B, A), or per-sequence (B,).
        mask: Bool, True = trained token. Shape (B, A).
        context: Unused.

    Returns:
        Scalar loss.
    """
    if losses.ndim == 1:
        return losses.mean()
    return masked_sum(losses, mask) / mask.sum().clamp(min=1)


def sequence_mean(losses: Tensor, mask: Tensor, context: AggregationContext) -> Tensor:
    """``mean_b(Σ_t L·M / Σ_t M)``: every sequence weighs the same (the original GRPO).

    Long sequences' tokens each count less, the length bias Dr. GRPO points out.

    Args:
        losses: Per-token losses (B, A), or per-sequence (B,).
        mask: Bool, True = trained token. Shape (B, A).
        context: Unused.

    Returns:
        Scalar loss.
    """
    if losses.ndim == 1:
        return losses.mean()
    per_sequence = masked_sum(losses, mask, dim=-1) / mask.sum(dim=-1).clamp(min=1)
    return per_sequence.mean()


def constant_normalizer(losses: Tensor, mask: Tensor, context: AggregationContext) -> Tensor:
    """``Σ L·M / (B · max_completion_length)`` (Dr. GRPO, Liu et al. 2025): no length bias.

    Args:
        losses: Per-token losses (B, A), or per-sequence (B,).
        mask: Bool, True = trained token. Shape (B, A).
        context: ``max_completion_length`` is the constant.

    Returns:
        Scalar loss.
    """
    if losses.ndim == 1:
        return losses.mean()
    return masked_sum(losses, mask) / (losses.shape[0] * context.max_completion_length)


def global_token_mean(losses: Tensor, mask: Tensor, context: AggregationContext) -> Tensor:
    """``Σ L·M / num_items``: the mean over every token of the whole generation batch (DAPO).

    A minibatch divides by its share of the batch's token count, so the gradient summed over
    the minibatches (and averaged over processes) is that of the batch-wide token mean.

    Args:
        losses: Per-token losses (B, A), or per-sequence (B,).
        mask: Bool, True = trained token. Shape (B, A).
        context: ``num_items`` is the divisor.

    Returns:
        Scalar loss.
    """
    if losses.ndim == 1:
        return losses.mean()
    return masked_sum(losses, mask) / context.num_items
