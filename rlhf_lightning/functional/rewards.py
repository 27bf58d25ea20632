"""Per-token PPO rewards: a KL penalty on every response token plus the score at the end."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from rlhf_lightning.functional.kl import KLEstimator, kl_penalty


class TokenRewards(NamedTuple):
    """Output of `ppo_token_rewards`.

    Attributes:
        rewards: Per-token rewards, 0 outside the mask. Shape (B, A).
        kl: Per-token KL estimate, 0 outside the mask. Shape (B, A).
    """

    rewards: Tensor
    kl: Tensor


def last_token_index(mask: Tensor) -> Tensor:
    """Index of the last True position of each row (0 for an all-False row).

    Args:
        mask: Bool. Shape (B, A).

    Returns:
        Long indices. Shape (B,).
    """
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask, positions, -1).amax(dim=1).clamp_min(0)


def ppo_token_rewards(
    logp: Tensor,
    ref_logp: Tensor,
    response_mask: Tensor,
    scores: Tensor,
    kl_coef: float,
    estimator: KLEstimator = "k1",
    kl: Tensor | None = None,
) -> TokenRewards:
    """`r_t = -kl_coef * KL_t`, with the sequence score added on the last response token.

    The classic TRL convention (ALGORITHMS.md §1.2 step 4): the score sits on the last real
    response token, i.e. the stop token when the response stopped. (TRL's newer PPO puts it one
    position later, on the first pad; §2 and pitfall 7 show the numeric difference.)

    Args:
        logp: Policy log-probs of the response tokens at rollout time. Shape (B, A).
        ref_logp: Reference log-probs of the same tokens. Shape (B, A).
        response_mask: True on real response tokens. Shape (B, A).
        scores: Sequence scores from the reward source. Shape (B,).
        kl_coef: Weight of the per-token KL penalty.
        estimator: KL estimator (`k1`, `abs`, `mse`, `k3`) of the sampled tokens.
        kl: a precomputed per-token KL that replaces the estimator, e.g. the exact
            full-vocabulary KL (`full_kl`, TRL's `full`). Shape (B, A).

    Returns:
        `TokenRewards(rewards, kl)`, each (B, A).
    """
    per_token = kl_penalty(logp, ref_logp, estimator) if kl is None else kl
    kl = torch.where(response_mask, per_token, 0.0)
    rewards = -kl_coef * kl
    last = last_token_index(response_mask)
    rewards = rewards.scatter_add(1, last[:, None], scores[:, None].to(rewards.dtype))
    return TokenRewards(rewards=rewards, kl=kl)


def place_turn_rewards(token_rewards: Tensor, turn_rewards: Tensor, mask: Tensor) -> Tensor:
    """Move a multi-turn trajectory's rewards from its last token to the turns that earned them.

    A KL placement puts each trajectory's whole score on its last masked token. An environment
    rewards each assistant turn (``turn_rewards``: the reward of turn k on the last token of
    turn k); this takes the sum of those turn rewards off the last token and puts each one back
    where it was earned. Whatever else the last token held stays: the KL penalty and any part
    of the score that is not a turn reward (score shaping, a reward source added to the
    environment's). The sum of each row is unchanged, so sequence-level estimators see the
    same totals; per-token estimators (GAE, REINFORCE++) see when each reward came.

    Args:
        token_rewards: Per-token rewards with the score on the last masked token. Shape (B, A).
        turn_rewards: Each turn's reward on its last token, 0 elsewhere. Shape (B, A).
        mask: Bool, True = a token the policy chose. Shape (B, A).

    Returns:
        Per-token rewards, 0 outside the mask. Shape (B, A).

    Example:
        mask ``[T, T, F, T]``, token rewards ``[0, 0, 0, 1.5]`` (score 1.5 on the last token),
        turn rewards ``[0, 0.5, 0, 1.0]`` -> ``[0, 0.5, 0, 1.0]``: the 0.5 of the first turn
        moves to its last token, the 1.0 stays.
    """
    turn_rewards = torch.where(mask, turn_rewards.to(token_rewards.dtype), 0.0)
    last = last_token_index(mask)
    moved = token_rewards.scatter_add(1, last[:, None], -turn_rewards.sum(1, keepdim=True))
    return torch.where(mask, moved + turn_rewards, 0.0)
