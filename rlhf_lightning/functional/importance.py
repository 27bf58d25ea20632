"""Off-policy correction between the sampler's and the trainer's log-probabilities.

An inference engine (vLLM, a KV-cache sampler in another precision) samples the rollout and
reports the log-probability of each sampled token; the trainer recomputes them with its own
kernels. The two disagree even at identical weights, so the rollout is slightly off-policy for
the policy being trained. Truncated importance sampling (TIS) reweights each token's loss by
the trainer/sampler probability ratio, capped to bound the variance (Yao et al. 2025, "Your
efficient RL framework secretly brings you off-policy RL training", fengyao.notion.site).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from rlhf_lightning.functional.masked import masked_mean


class ImportanceWeightsOutput(NamedTuple):
    weights: Tensor
    """``min(exp(trainer - sampler), cap)`` on real tokens, 0 on padding. Shape (B, A)."""
    logprob_gap: Tensor
    """Scalar: mean ``|trainer - sampler|`` over real tokens (``rollout/logprob_gap``)."""
    clipfrac: Tensor
    """Scalar: fraction of real tokens whose ratio exceeds ``cap`` (truncated)."""
    max_ratio: Tensor
    """Scalar: the largest untruncated ratio over real tokens (may be ``inf``)."""


def _log_ratio(trainer_logp: Tensor, sampler_logp: Tensor, mask: Tensor) -> Tensor:
    """Detached ``trainer - sampler`` on real tokens, 0 on padding (which may hold inf/NaN)."""
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = real token), got dtype {mask.dtype}")
    return torch.where(mask, trainer_logp.detach() - sampler_logp.detach(), 0.0)


def truncated_importance_weights(
    trainer_logp: Tensor,
    sampler_logp: Tensor,
    mask: Tensor,
    cap: float = 2.0,
) -> ImportanceWeightsOutput:
    """Per-token truncated importance weights ``min(π_trainer / π_sampler, C)``.

    ``w_t = min(exp(logp_trainer_t - logp_sampler_t), C)`` (Yao et al. 2025), to multiply the
    per-token policy-gradient loss: the rollout was drawn from the sampler's distribution, the
    gradient is wanted under the trainer's. The cap C trades a little bias for bounded variance;
    only the upper side is truncated. The weights are constants of the objective, hence
    detached. ``trainer_logp`` is the trainer's recomputation at rollout time (PPO's
    ``old_logp``), not the current minibatch's ``logp``.

    Args:
        trainer_logp: Trainer log-probabilities of the sampled tokens. Shape (B, A).
        sampler_logp: Log-probabilities reported by the sampling engine. Shape (B, A).
        mask: Bool, True = real response token. Shape (B, A).
        cap: C, the truncation threshold (> 0; 2.0 in Yao et al.).

    Returns:
        :class:`ImportanceWeightsOutput`.

    Raises:
        ValueError: If ``cap <= 0`` or the mask selects no token.
        TypeError: If ``mask`` is not bool.
    """
    if cap <= 0:
        raise ValueError(f"cap must be > 0, got {cap}")
    log_ratio = _log_ratio(trainer_logp, sampler_logp, mask)
    ratio = torch.exp(log_ratio)  # 1 on padding; inf on a real token only if the gap overflows
    weights = torch.where(mask, ratio.clamp(max=cap), 0.0)
    return ImportanceWeightsOutput(
        weights=weights,
        logprob_gap=masked_mean(log_ratio.abs(), mask),
        clipfrac=masked_mean((ratio > cap).to(ratio.dtype), mask),
        max_ratio=torch.where(mask, ratio, -torch.inf).max(),
    )


def logprob_gap(trainer_logp: Tensor, sampler_logp: Tensor, mask: Tensor) -> Tensor:
    """Mean absolute log-probability gap between trainer and sampler over real tokens.

    ``mean_t |logp_trainer_t - logp_sampler_t|``, the ``rollout/logprob_gap`` metric: 0 when the
    two agree exactly; a growing value flags a precision or weight-sync mismatch.

    Args:
        trainer_logp: Trainer log-probabilities of the sampled tokens. Shape (B, A).
        sampler_logp: Log-probabilities reported by the sampling engine. Shape (B, A).
        mask: Bool, True = real response token. Shape (B, A).

    Returns:
        Scalar, detached.

    Raises:
        ValueError: If the mask selects no token.
        TypeError: If ``mask`` is not bool.
    """
    return masked_mean(_log_ratio(trainer_logp, sampler_logp, mask).abs(), mask)
