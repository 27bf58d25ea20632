"""Policy losses of online RL and PPO's value loss.

A policy loss is one of the four parts an online-RL algorithm is composed of (advantage
estimator, policy loss, loss aggregation, KL placement). Every policy loss has the signature

    loss_fn(logp, old_logp, advantages, mask, **params) -> PolicyLoss

and returns the loss of each token, shape (B, A) with 0 outside the mask, or of each sequence,
shape (B,); an aggregation (``functional/aggregation.py``) reduces it to the scalar that is
back-propagated. Constants of the objective (old log-probs, advantages) are detached here, so a
caller cannot leak gradient into them by accident.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from rlhf_lightning.functional.masked import masked_mean, masked_sum


class PolicyLoss(NamedTuple):
    """What a policy loss returns: per-token or per-sequence losses and detached statistics."""

    losses: Tensor
    """Loss of each token, 0 outside the mask (B, A); or of each sequence (B,)."""
    clipfrac: Tensor
    """Fraction of tokens (or sequences) where the clipped branch is the active one."""
    ratio_mean: Tensor
    """Mean importance ratio (1 on the first minibatch of an iteration)."""
    approx_kl: Tensor
    """``0.5 · mean((logp - old_logp)²)`` over the real tokens."""
    policy_kl: Tensor
    """``mean(old_logp - logp)`` over the real tokens (what ``target_kl`` early stopping reads)."""


def _token_log_ratio_stats(log_ratio: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """(approx_kl, policy_kl) of a detached per-token log-ratio; 0 when the mask is empty."""
    if not bool(mask.any()):
        zero = log_ratio.new_zeros(())
        return zero, zero
    return 0.5 * masked_mean(log_ratio.square(), mask), masked_mean(-log_ratio, mask)


def clipped_token_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float | None = None,
) -> PolicyLoss:
    """The clipped surrogate per token (PPO, Schulman et al. 2017; GRPO; DAPO's clip-higher).

    ``ρ_t = exp(logp_t - old_t)``; ``L_t = max(-A_t ρ_t, -A_t clip(ρ_t, 1 - ε_low, 1 + ε_high))``
    (ALGORITHMS.md §1.2 step 7 and §4). Token-level advantages (PPO's GAE) or one advantage per
    sequence (GRPO, RLOO) broadcast over the tokens. ``clip_high > clip_low`` is DAPO's
    clip-higher (0.28 suggested); None uses ``clip_low`` both ways.

    Args:
        logp: Current log-probs of the sampled tokens (temperature applied). Shape (B, A).
        old_logp: Log-probs at rollout time. Shape (B, A).
        advantages: Shape (B, A), or (B,) for one advantage per sequence.
        mask: Bool, True = token trained on. Shape (B, A).
        clip_low: ε_low of the ratio clip.
        clip_high: ε_high; None means ``clip_low``.

    Returns:
        :class:`PolicyLoss` with per-token losses (B, A). ``clipfrac`` counts the tokens whose
        clipped branch is the larger loss, i.e. where clipping takes the gradient away.
    """
    clip_high = clip_low if clip_high is None else clip_high
    old_logp, advantages = old_logp.detach(), advantages.detach()
    if advantages.ndim == 1:
        advantages = advantages.unsqueeze(-1)  # (B, 1): one advantage for every token
    # Zero the log-ratio on padding so exp() cannot overflow there and poison the gradient.
    log_ratio = torch.where(mask, logp - old_logp, 0.0)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    losses = torch.where(mask, torch.maximum(unclipped, clipped), 0.0)
    any_token = bool(mask.any())
    clipfrac = (
        masked_mean((clipped > unclipped).float(), mask) if any_token else ratio.new_zeros(())
    )
    ratio_mean = masked_mean(ratio.detach(), mask) if any_token else ratio.new_ones(())
    approx_kl, policy_kl = _token_log_ratio_stats(log_ratio.detach(), mask)
    return PolicyLoss(losses, clipfrac.detach(), ratio_mean, approx_kl, policy_kl)


def clipped_sequence_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float | None = None,
    length_normalize: bool = False,
) -> PolicyLoss:
    """The clipped surrogate with one importance ratio per sequence (RLOO; GSPO).

    ``L_i = -min(s_i A_i, clip(s_i, 1 - ε_low, 1 + ε_high) A_i)`` with the sequence ratio

    - ``length_normalize=False`` (RLOO, TRL ``rloo_trainer.py``): ``s_i = exp(Σ_t logp - Σ_t old)``,
      the ratio of the two sequence probabilities;
    - ``length_normalize=True`` (GSPO, Zheng et al. 2025, eq. 7):
      ``s_i = exp(mean_t (logp_t - old_t))``, the geometric mean of the token ratios, whose
      clip range is much narrower (the paper uses ε = 3e-4 / 4e-4).

    Args:
        logp: Current log-probs of the sampled tokens. Shape (B, A).
        old_logp: Log-probs at rollout time. Shape (B, A).
        advantages: One advantage per sequence. Shape (B,).
        mask: Bool, True = token of the sequence. Shape (B, A).
        clip_low: ε_low.
        clip_high: ε_high; None means ``clip_low``.
        length_normalize: GSPO's length-normalised ratio instead of RLOO's plain one.

    Returns:
        :class:`PolicyLoss` with per-sequence losses (B,); ``clipfrac`` and ``ratio_mean`` are
        over sequences.
    """
    clip_high = clip_low if clip_high is None else clip_high
    old_logp, advantages = old_logp.detach(), advantages.detach()
    if advantages.ndim != 1:
        raise ValueError(
            f"a sequence-level loss needs one advantage per sequence (B,), got shape "
            f"{tuple(advantages.shape)}"
        )
    if length_normalize:
        lengths = mask.sum(dim=-1).clamp_min(1)
        log_ratio_seq = masked_sum(logp - old_logp, mask, dim=-1) / lengths
    else:
        log_ratio_seq = masked_sum(logp, mask, dim=-1) - masked_sum(old_logp, mask, dim=-1)
    ratio = torch.exp(log_ratio_seq)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * advantages
    approx_kl, policy_kl = _token_log_ratio_stats(
        torch.where(mask, logp - old_logp, 0.0).detach(), mask
    )
    return PolicyLoss(
        losses=-torch.minimum(unclipped, clipped),
        clipfrac=(clipped < unclipped).float().mean().detach(),
        ratio_mean=ratio.detach().mean(),
        approx_kl=approx_kl,
        policy_kl=policy_kl,
    )


class ValueLossOutput(NamedTuple):
    loss: Tensor
    """Scalar clipped value loss (already including the 0.5 factor, not the coefficient)."""
    clipfrac: Tensor
    """Fraction of tokens where the clipped prediction gives the larger error."""


def ppo_value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    clip: float = 0.2,
) -> ValueLossOutput:
    """Clipped value loss ``0.5 · masked_mean(max((V-R)², (V_clip-R)²))``.

    ``V_clip = clamp(V, V_old - clip, V_old + clip)`` (ALGORITHMS.md §1.2 step 7). Multiply by
    the value coefficient outside. A minibatch of empty responses has no value target: its
    loss is 0, the token count clamped to 1 as the policy loss's ``token_mean`` does.

    Args:
        values: Current value predictions. Shape (B, A).
        old_values: Value predictions at rollout time. Shape (B, A).
        returns: GAE returns. Shape (B, A).
        mask: Bool, True = token with a value target. Shape (B, A).
        clip: Half-width of the clip around ``old_values`` (TRL ``cliprange_value``).

    Returns:
        :class:`ValueLossOutput`.
    """
    old_values, returns = old_values.detach(), returns.detach()
    clipped_values = torch.clamp(values, old_values - clip, old_values + clip)
    unclipped_error = (values - returns).square()
    clipped_error = (clipped_values - returns).square()
    count = mask.sum().clamp(min=1)
    loss = 0.5 * masked_sum(torch.maximum(unclipped_error, clipped_error), mask) / count
    clipfrac = (masked_sum((clipped_error > unclipped_error).float(), mask) / count).detach()
    return ValueLossOutput(loss=loss, clipfrac=clipfrac)
