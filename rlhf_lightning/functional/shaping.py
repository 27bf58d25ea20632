"""Reward shaping for RL with verifiable rewards: length terms and dynamic sampling.

All functions act on one scalar per completion. Group layout is **prompt-major**, as GRPO's
``repeat_interleave`` (ALGORITHMS.md §5.10): row ``i*G + j`` is sample j of prompt i, so rows
``[i*G:(i+1)*G]`` form group i. Group statistics need the whole group, so gather across
processes before calling these.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlhf_lightning.functional.advantages import as_groups


def overlong_penalty(
    lengths: Tensor,
    max_length: int,
    cache_length: int,
    penalty: float = 1.0,
) -> Tensor:
    """DAPO's soft overlong punishment (Yu et al. 2025, arXiv:2503.14476, eq. 13).

    With ``L_max = max_length``, ``L_cache = cache_length`` and ``|y|`` the response length::

        R(y) =  0                                   if |y| <= L_max - L_cache
                ((L_max - L_cache) - |y|) / L_cache   if L_max - L_cache < |y| <= L_max
                -1                                  if |y| > L_max

    times ``penalty``. The middle branch falls linearly from 0 to -1 across the last
    ``L_cache`` tokens of the budget, so the three branches are ``clamp(middle, -1, 0)``. Add it
    to the task reward. (verl's ``overlong_buffer`` has no -1 floor, since its responses never
    exceed ``L_max``; the floor only matters for lengths beyond the budget.)

    Args:
        lengths: Response lengths in tokens (int or float). Shape (B,).
        max_length: ``L_max``, the length at which the penalty reaches -1.
        cache_length: ``L_cache``, the width of the soft-punishment window (DAPO: 4096 of
            20480).
        penalty: Scale of the penalty (verl ``penalty_factor``).

    Returns:
        Penalties in ``[-penalty, 0]`` (for ``penalty >= 0``), floating point. Shape (B,).

    Raises:
        ValueError: Unless ``0 < cache_length <= max_length``.
    """
    if not 0 < cache_length <= max_length:
        raise ValueError(
            f"need 0 < cache_length <= max_length, got cache_length={cache_length}, "
            f"max_length={max_length}"
        )
    lengths = lengths if lengths.is_floating_point() else lengths.to(torch.get_default_dtype())
    expected = max_length - cache_length
    return penalty * ((expected - lengths) / cache_length).clamp(min=-1.0, max=0.0)


def length_penalty(lengths: Tensor, correct: Tensor, group_size: int) -> Tensor:
    """Group-relative length reward of Kimi k1.5 (Team Kimi 2025, arXiv:2501.12599, §2.3.3).

    Within each group of the G responses to one prompt, with ``min_len`` and ``max_len`` the
    shortest and longest response of the group::

        λ_i = 0.5 - (len_i - min_len) / (max_len - min_len)
        len_reward_i = λ_i              if response i is correct
                       min(0, λ_i)      if it is incorrect

    so λ runs from 0.5 (shortest) to -0.5 (longest): short correct answers are promoted, long
    answers penalised, and short wrong answers are never rewarded. When every response of a
    group has the same length (``max_len == min_len``), the group carries no length signal and
    gets 0 (the paper's formula would divide by zero there). Add the result, with a weight of
    your choice, to the task reward; Kimi warms the weight up during training.

    Args:
        lengths: Response lengths in tokens (int or float). Shape (B,), B divisible by G.
        correct: Bool, True where the response is correct. Shape (B,).
        group_size: G, responses per prompt (prompt-major rows).

    Returns:
        Length rewards in ``[-0.5, 0.5]``, floating point. Shape (B,).

    Raises:
        TypeError: If ``correct`` is not a bool tensor.
        ValueError: On a bad layout or mismatched shapes.
    """
    if correct.dtype != torch.bool:
        raise TypeError(f"correct must be a bool tensor, got dtype {correct.dtype}")
    if correct.shape != lengths.shape:
        raise ValueError(
            f"correct {tuple(correct.shape)} and lengths {tuple(lengths.shape)} differ in shape"
        )
    lengths = lengths if lengths.is_floating_point() else lengths.to(torch.get_default_dtype())
    grouped = as_groups(lengths, group_size, "lengths")  # (B/G, G)
    min_len = grouped.amin(dim=1, keepdim=True)
    span = grouped.amax(dim=1, keepdim=True) - min_len
    # A flat group gets λ = 0; the where keeps the division by 0 out of the result.
    lam = torch.where(span > 0, 0.5 - (grouped - min_len) / span.clamp(min=1e-12), 0.0)
    lam = lam.reshape(-1)
    return torch.where(correct, lam, lam.clamp(max=0.0))


def informative_groups(rewards: Tensor, group_size: int, atol: float = 0.0) -> Tensor:
    """DAPO dynamic sampling: which groups carry a group-relative advantage signal.

    A group whose rewards are all equal (within ``atol``) gets zero advantage for every sample
    under GRPO/RLOO-style baselines, so it contributes no policy gradient; DAPO (Yu et al. 2025,
    §3.2) filters such groups out and keeps sampling until the batch is full of informative
    ones. A group is informative iff ``max(r) - min(r) > atol``; for binary rewards this is
    DAPO's ``0 < #correct < G``.

    Args:
        rewards: One scalar reward per completion, prompt-major. Shape (B,), B divisible by G.
        group_size: G, completions per prompt.
        atol: Rewards whose spread is at most this count as all equal.

    Returns:
        Bool, True where the group is informative. Shape (B // G,).

    Raises:
        ValueError: On a bad layout or a negative ``atol``.
    """
    if atol < 0:
        raise ValueError(f"atol must be >= 0, got {atol}")
    grouped = as_groups(rewards, group_size)
    spread = grouped.amax(dim=1) - grouped.amin(dim=1)
    return spread > atol


def expand_group_mask(group_mask: Tensor, group_size: int) -> Tensor:
    """Broadcast one flag per group to its G rows (prompt-major).

    ``expand_group_mask(informative_groups(r, G), G)`` selects the rows to keep.

    Args:
        group_mask: One value per group. Shape (B // G,).
        group_size: G, completions per prompt.

    Returns:
        ``group_mask`` repeated G times per group, same dtype. Shape (B,).

    Raises:
        ValueError: If ``group_mask`` is not 1-D or ``group_size < 1``.
    """
    if group_mask.ndim != 1:
        raise ValueError(f"group_mask must be 1-D (B // G,), got shape {tuple(group_mask.shape)}")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    return group_mask.repeat_interleave(group_size)
