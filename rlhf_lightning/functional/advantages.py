"""Advantage estimators: GAE (PPO), group-relative (GRPO), leave-one-out (RLOO), score moments."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor


def gae(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, arXiv:1506.02438).

    ``delta_t = r_t + γ·V_{t+1} - V_t``; ``A_t = delta_t + γλ·A_{t+1}``; ``returns = A + V``
    (ALGORITHMS.md §1.2 step 5). The value after the last masked position is 0, so a response
    ends the episode. Positions outside the mask are not time steps at all: the recursion
    passes over them, so ``V_{t+1}`` is the value of the next *masked* position. For a mask
    that is True up to the end of each response this is TRL's ``values *= mask; rewards *=
    mask``; for a multi-turn trajectory, whose environment tokens interleave the policy's
    (mask False there: not decisions of the policy), it is GAE over the policy's tokens alone,
    as if they were compacted side by side. Vectorised over the batch; the loop runs backwards.

    Args:
        rewards: Per-token rewards. Shape (B, A).
        values: Value estimates V(state at token t). Shape (B, A).
        mask: Bool, True = token takes part. Shape (B, A).
        gamma: Discount γ.
        lam: GAE λ.

    Returns:
        ``(advantages, returns)``, each (B, A), 0 outside the mask. Not whitened: apply
        :func:`~rlhf_lightning.functional.masked.masked_whiten` to the advantages if wanted.
    """
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = real token), got dtype {mask.dtype}")
    if not rewards.shape == values.shape == mask.shape or rewards.ndim != 2:
        raise ValueError(
            "rewards, values and mask must share one (B, A) shape, got "
            f"{tuple(rewards.shape)}, {tuple(values.shape)}, {tuple(mask.shape)}"
        )
    rewards = torch.where(mask, rewards, 0.0)
    values = torch.where(mask, values, 0.0)
    length = rewards.shape[-1]
    next_value = torch.zeros_like(values[:, 0])
    last_advantage = torch.zeros_like(values[:, 0])
    reversed_advantages = []
    for t in reversed(range(length)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * last_advantage
        reversed_advantages.append(advantage)
        # An unmasked position is skipped: the next masked one sees the state after it.
        last_advantage = torch.where(mask[:, t], advantage, last_advantage)
        next_value = torch.where(mask[:, t], values[:, t], next_value)
    advantages = torch.where(mask, torch.stack(reversed_advantages[::-1], dim=1), 0.0)
    return advantages, advantages + values


class RunningMoments:
    """Running mean and std of scalar scores, for reward scaling (ALGORITHMS.md §1.2 step 1).

    TRL ``RunningMoments`` (``trainer/utils.py``, v0.6+): starts at mean 0, var 1, std 1, count
    1e-24 and merges each batch with Chan et al.'s parallel update. ``var`` is biased; ``std`` is
    its Bessel-corrected square root. State is held as Python floats (float64). In a distributed
    run, gather the scores of all processes before calling :meth:`update`.
    """

    def __init__(self) -> None:
        self.mean = 0.0
        self.var = 1.0
        self.std = 1.0
        self.count = 1e-24

    @torch.no_grad()
    def update(self, xs: Tensor) -> tuple[float, float]:
        """Merge a batch of scores into the running moments.

        Args:
            xs: Scores. Any shape, at least 2 elements.

        Returns:
            ``(batch_mean, batch_std)`` of ``xs``, the std unbiased.

        Raises:
            ValueError: If ``xs`` has fewer than 2 elements (its std is undefined).
        """
        n = xs.numel()
        if n < 2:
            raise ValueError(f"RunningMoments.update needs at least 2 scores, got {n}")
        batch_var, batch_mean = torch.var_mean(xs.detach().cpu().double(), correction=0)
        batch_mean_f, batch_var_f = batch_mean.item(), batch_var.item()

        delta = batch_mean_f - self.mean
        total = self.count + n
        old_sum = self.var * self.count + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.var = (old_sum + batch_var_f * n) / total
        self.std = math.sqrt(self.var * total / (total - 1))
        self.count = total
        return batch_mean_f, math.sqrt(batch_var_f * n / (n - 1))

    def state_dict(self) -> dict[str, float]:
        """Plain floats, so a checkpoint can store them."""
        return {"mean": self.mean, "var": self.var, "std": self.std, "count": self.count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore from :meth:`state_dict`."""
        self.mean = float(state["mean"])
        self.var = float(state["var"])
        self.std = float(state["std"])
        self.count = float(state["count"])


def as_groups(x: Tensor, group_size: int, name: str = "rewards") -> Tensor:
    """(B,) prompt-major -> (B // G, G): row i holds the G samples of prompt i.

    Raises:
        ValueError: If `x` is not 1-D or B does not split into groups of `group_size`.
    """
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D (B,), got shape {tuple(x.shape)}")
    if group_size < 1 or x.numel() % group_size:
        raise ValueError(f"batch of {x.numel()} {name} does not split into groups of {group_size}")
    return x.view(-1, group_size)


def group_advantages(
    rewards: Tensor,
    group_size: int,
    scale: Literal["group", "batch", "none"] = "group",
    eps: float = 1e-4,
) -> Tensor:
    """GRPO advantages: reward minus its group mean, optionally divided by a std.

    ``A_i = (r_i - mean_g) / (std + eps)`` with the **unbiased** std of the group (``"group"``),
    of the whole batch (``"batch"``), or no division (``"none"``, Dr. GRPO). ALGORITHMS.md §4.

    Layout is **prompt-major** (``repeat_interleave``): rows ``[g*G:(g+1)*G]`` are the G samples
    of prompt g (ALGORITHMS.md §5.10). Rewards must already be gathered across processes so that
    each group is complete.

    Args:
        rewards: One scalar reward per completion. Shape (B,), B divisible by ``group_size``.
        group_size: G, completions per prompt.
        scale: Which std divides the centred rewards.
        eps: Added to the std (TRL: 1e-4).

    Returns:
        Advantages. Shape (B,).

    Raises:
        ValueError: On a bad layout, or a std over fewer than 2 samples.
    """
    grouped = as_groups(rewards, group_size)
    centred = (grouped - grouped.mean(dim=1, keepdim=True)).reshape(-1)
    if scale == "none":
        return centred
    if scale == "group":
        if group_size < 2:
            raise ValueError("scale='group' needs group_size >= 2 for an unbiased std")
        std = grouped.std(dim=1, keepdim=True).expand_as(grouped).reshape(-1)
    elif scale == "batch":
        if rewards.numel() < 2:
            raise ValueError("scale='batch' needs at least 2 rewards for an unbiased std")
        std = rewards.std()
    else:
        raise ValueError(f"unknown scale {scale!r}; expected 'group', 'batch' or 'none'")
    return centred / (std + eps)


def rloo_advantages(rewards: Tensor, k: int, normalize: bool = False, eps: float = 1e-4) -> Tensor:
    """REINFORCE leave-one-out advantages (Ahmadian et al. 2024, arXiv:2402.14740).

    Baseline ``b_i = (Σ_j r_j - r_i) / (k - 1)`` over the other samples of the same prompt;
    ``A = r - b``, which equals ``k/(k-1) · (r - mean)``. With ``normalize``, the advantages are
    standardised over the whole batch: ``(A - mean) / (std + eps)``, unbiased std (TRL HEAD
    ``normalize_advantages``). ALGORITHMS.md §4.

    Layout is **prompt-major** like GRPO, rows ``[g*k:(g+1)*k]`` share a prompt. Old TRL RLOO
    (v0.19) used the k-major ``repeat`` layout; permute such data first (ALGORITHMS.md §5.10).

    Args:
        rewards: One scalar reward per completion (KL already subtracted if wanted). Shape (B,).
        k: Completions per prompt, >= 2.
        normalize: Standardise the advantages over the batch.
        eps: Added to the std when normalising.

    Returns:
        Advantages. Shape (B,).

    Raises:
        ValueError: If ``k < 2`` or B is not divisible by k.
    """
    if k < 2:
        raise ValueError(f"rloo_advantages needs k >= 2 samples per prompt, got {k}")
    grouped = as_groups(rewards, k)
    baseline = (grouped.sum(dim=1, keepdim=True) - grouped) / (k - 1)
    advantages = (grouped - baseline).reshape(-1)
    if normalize:
        advantages = (advantages - advantages.mean()) / (advantages.std() + eps)
    return advantages
