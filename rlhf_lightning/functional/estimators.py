"""Advantage estimators of online RL, one signature for all.

One of the four parts of an online-RL algorithm. Every estimator has the signature

    estimate(inputs: AdvantageInputs, **params) -> Advantages

and sees the whole generation batch (gathered across data-parallel processes), so batch-wide
statistics are those of the batch, not of a process's share. Rows are prompt-major: row
``i * G + j`` is sample j of prompt i (``RolloutBatch.repeat_interleave``).

Built in: GAE with a critic (PPO), group-normalised scores (GRPO, Dr. GRPO), the leave-one-out
baseline (RLOO), and REINFORCE++'s batch-normalised returns. A new estimator is one function
with this signature plus a config file naming it (``conf/advantage/``; docs/algorithms.md).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

from rlhf_lightning.functional.advantages import (
    as_groups,
    gae,
    group_advantages,
    rloo_advantages,
)
from rlhf_lightning.functional.masked import masked_whiten


class AdvantageInputs(NamedTuple):
    """What an estimator sees. Shapes: B rollout rows, A response tokens."""

    sequence_rewards: Tensor
    """One reward per response: the score, minus the KL penalty when it sits in the reward.
    Shape (B,)."""
    token_rewards: Tensor
    """Per-token rewards: ``-coef · KL_t`` on every response token (when the KL sits in the
    reward) with the score added on the last one. Shape (B, A), 0 outside the mask."""
    values: Tensor | None
    """The critic's value of each response position, 0 outside the mask; None without one.
    Shape (B, A)."""
    mask: Tensor
    """Bool, True = response token. Shape (B, A)."""
    group_size: int
    """Samples per prompt (1 for PPO)."""


class Advantages(NamedTuple):
    """What an estimator returns."""

    advantages: Tensor
    """Per token (B, A), 0 outside the mask; or one per response (B,)."""
    returns: Tensor | None
    """Value targets (B, A) for estimators that use a critic; else None."""


def gae_advantages(
    inputs: AdvantageInputs,
    gamma: float = 1.0,
    lam: float = 0.95,
    whiten_rewards: bool = False,
    whiten: bool = True,
) -> Advantages:
    """Generalised advantage estimation over the token rewards with the critic's values (PPO).

    ALGORITHMS.md §1.2 steps 4-6: optionally whiten the token rewards (keeping their mean),
    ``gae`` backwards over time, then whiten the advantages over the batch's real tokens
    (classic TRL, unbiased variance).

    Args:
        inputs: ``token_rewards``, ``values`` (required) and ``mask`` are used.
        gamma: Discount γ.
        lam: GAE λ.
        whiten_rewards: Whiten the per-token rewards first (their mean kept).
        whiten: Whiten the advantages (mean 0, std 1 over the real tokens).

    Returns:
        Per-token advantages and returns, each (B, A).

    Raises:
        ValueError: Without values (no critic).
    """
    if inputs.values is None:
        raise ValueError(
            "gae_advantages needs the critic's values; run it with a critic (stage.critic="
            "shared or separate) or pick an estimator without one (group, leave_one_out, "
            "reinforce_pp)."
        )
    rewards = inputs.token_rewards
    if whiten_rewards:
        rewards = masked_whiten(rewards, inputs.mask, keep_mean=True)
    advantages, returns = gae(rewards, inputs.values, inputs.mask, gamma, lam)
    if whiten:
        advantages = masked_whiten(advantages, inputs.mask)
    return Advantages(advantages, returns)


def group_normalized_advantages(
    inputs: AdvantageInputs,
    scale: Literal["group", "batch", "none"] = "group",
    eps: float = 1e-4,
) -> Advantages:
    """GRPO: each reward minus its group's mean, divided by the group's std (``scale="group"``),
    the batch's (``"batch"``) or nothing (``"none"``, Dr. GRPO). See ``group_advantages``.

    Args:
        inputs: ``sequence_rewards`` and ``group_size`` are used.
        scale: Which standard deviation divides the centred rewards.
        eps: Added to the std (TRL: 1e-4).

    Returns:
        One advantage per response (B,); no returns.
    """
    advantages = group_advantages(inputs.sequence_rewards, inputs.group_size, scale, eps)
    return Advantages(advantages, None)


def leave_one_out_advantages(
    inputs: AdvantageInputs, normalize: bool = False, eps: float = 1e-4
) -> Advantages:
    """RLOO: each reward minus the mean of the other samples of its prompt (``rloo_advantages``);
    with ``normalize``, standardised over the batch.

    Args:
        inputs: ``sequence_rewards`` (the KL-penalised score) and ``group_size`` are used.
        normalize: Standardise the advantages over the batch.
        eps: Added to the std when normalising.

    Returns:
        One advantage per response (B,); no returns.
    """
    advantages = rloo_advantages(inputs.sequence_rewards, inputs.group_size, normalize, eps)
    return Advantages(advantages, None)


def reinforce_pp_advantages(inputs: AdvantageInputs, gamma: float = 1.0) -> Advantages:
    """REINFORCE++ (Hu 2025, arXiv:2501.03262): returns of the token rewards, normalised over
    the whole batch instead of by a critic or a per-prompt baseline.

    ``G_t = Σ_{s >= t} γ^{s-t} r_s`` over the per-token rewards (the KL penalty on every token,
    the score on the last; s counts masked tokens only), then ``A = (G - mean) / std`` over
    every real token of the batch.
    With ``group_size > 1`` this is "REINFORCE++-baseline" only if the group mean is removed
    first; here the batch is the baseline, as in the paper's main variant.

    Args:
        inputs: ``token_rewards`` and ``mask`` are used.
        gamma: Discount γ.

    Returns:
        Per-token advantages (B, A), 0 outside the mask; no returns.
    """
    rewards = torch.where(inputs.mask, inputs.token_rewards, 0.0)
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        # Positions outside the mask (a multi-turn trajectory's environment tokens) are not
        # time steps: the discount counts the policy's tokens only.
        running = torch.where(inputs.mask[:, t], rewards[:, t] + gamma * running, running)
        returns[:, t] = running
    return Advantages(masked_whiten(returns, inputs.mask), None)


def turn_group_advantages(
    inputs: AdvantageInputs,
    scale: Literal["group", "batch", "none"] = "group",
    eps: float = 1e-4,
) -> Advantages:
    """GRPO over the turns of multi-turn episodes: each turn's tokens get the return from that
    turn on, minus the mean of that return over the group's episodes that reached the turn,
    divided by the std of the group's episode rewards (``scale="group"``), the batch's
    (``"batch"``) or nothing (``"none"``).

    With per-turn rewards (a guess paid on its own turn) GRPO's one advantage per episode gives
    a wasted third guess the credit of a good first one. Here turn k is compared with turn k of
    the same game's other episodes; the baseline does not depend on the turn's own tokens, so the
    estimate stays unbiased. Turn 0 (the return is the episode's reward) is GRPO's advantage; a
    single-turn batch gives exactly GRPO's, on every token. A turn is a run of True in the
    mask: the environment's tokens between turns are False.

    Args:
        inputs: ``token_rewards`` (each turn's reward on its tokens, 0 elsewhere), ``mask`` and
            ``group_size`` are used.
        scale: Which standard deviation divides the centred returns.
        eps: Added to the std (TRL: 1e-4).

    Returns:
        Per-token advantages (B, A), 0 outside the mask; no returns.

    Example (one game, G=2, two turns each; rewards per turn [0.5, 1] and [0, 0]): returns
    from turn 0 are 1.5 and 0, from turn 1: 1 and 0; baselines 0.75 and 0.5; the group std of
    (1.5, 0) is 1.0607, so turn 0 gets +-0.7070 and turn 1 +-0.4714 (eps included).
    """
    mask = inputs.mask.bool()
    rewards = torch.where(mask, inputs.token_rewards, 0.0)
    returns = rewards.flip(1).cumsum(1).flip(1)  # (B, A): the rewards of token t and later
    starts = mask & ~torch.nn.functional.pad(mask[:, :-1], (1, 0), value=False)
    turn = (starts.cumsum(1) - 1).clamp_min(0)  # (B, A): the turn each token belongs to
    rows, cols = starts.nonzero(as_tuple=True)
    turns = int(starts.sum(1).max()) if rows.numel() else 1
    first = returns.new_zeros(mask.shape[0], turns)  # (B, K): each turn's return
    reached = torch.zeros_like(first, dtype=torch.bool)
    first[rows, turn[rows, cols]] = returns[rows, cols]
    reached[rows, turn[rows, cols]] = True
    episode = as_groups(first[:, 0], inputs.group_size)  # (P, G): the episodes' rewards
    grouped = first.view(*episode.shape, turns)  # (P, G, K)
    present = reached.view(*episode.shape, turns)
    count = present.sum(1, keepdim=True).clamp_min(1)
    baseline = (torch.where(present, grouped, 0.0).sum(1, keepdim=True) / count).expand_as(grouped)
    centred = returns - baseline.reshape(first.shape).gather(1, turn)
    if scale == "group":
        if inputs.group_size < 2:
            raise ValueError("scale='group' needs group_size >= 2 for an unbiased std")
        std = episode.std(dim=1, keepdim=True)
        centred = centred / (std.expand(-1, inputs.group_size).reshape(-1, 1) + eps)
    elif scale == "batch":
        centred = centred / (episode.std() + eps)
    elif scale != "none":
        raise ValueError(f"unknown scale {scale!r}; expected 'group', 'batch' or 'none'")
    return Advantages(torch.where(mask, centred, 0.0), None)
