"""Diagnostics of a rollout and of a critic: diversity, explained variance, sequence KL."""

from __future__ import annotations

import torch
from torch import Tensor

from rlhf_lightning.functional.masked import masked_mean, masked_sum


def distinct_n(ids: Tensor, mask: Tensor, n: int = 2) -> float:
    """Distinct n-grams / all n-grams over the real tokens of a batch (1.0: no repetition).

    A collapse of the policy onto a few phrases shows up here before it shows in the reward
    (Li et al. 2016, "distinct-n").

    Args:
        ids: Token ids. Shape (B, A).
        mask: True at real tokens. Shape (B, A).
        n: The n-gram length.

    Returns:
        The ratio in [0, 1]; 0.0 when no row has n real tokens.
    """
    grams = [
        tuple(row[i : i + n])
        for row in (r[m].tolist() for r, m in zip(ids, mask, strict=True))
        for i in range(len(row) - n + 1)
    ]
    return len(set(grams)) / len(grams) if grams else 0.0


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    """``1 - Var(returns - values) / Var(returns)`` over the real tokens (1: a perfect critic,
    0: no better than the mean, negative: worse).

    Args:
        values: Critic predictions. Shape (B, A).
        returns: Value targets. Shape (B, A).
        mask: Bool, True = real token. Shape (B, A).

    Returns:
        Scalar; NaN with fewer than 2 real tokens.
    """
    if int(mask.sum()) < 2:
        return torch.tensor(float("nan"))
    var_returns = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    residual = returns - values
    var_residual = masked_mean((residual - masked_mean(residual, mask)) ** 2, mask)
    return 1.0 - var_residual / var_returns.clamp_min(1e-8)


def sequence_kl(logp: Tensor, ref_logp: Tensor, mask: Tensor) -> Tensor:
    """``Σ_t (logp_t - ref_logp_t)`` over each response's real tokens: the k1 estimate of
    KL(π‖ref) of the whole sequence (what ``rollout/kl`` averages).

    Args:
        logp: Policy log-probs of the sampled tokens. Shape (B, A).
        ref_logp: Reference log-probs of the same tokens. Shape (B, A).
        mask: Bool, True = response token. Shape (B, A).

    Returns:
        Shape (B,).
    """
    return masked_sum(logp - ref_logp, mask, dim=-1)
