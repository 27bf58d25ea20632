"""Step 1 of an online-RL iteration: the reward source's scores shaped before the KL penalty
and the advantages, and DAPO's dynamic sampling (which groups the loss keeps).

The math is in ``functional/shaping.py`` (overlong and length terms, the group filter); this
module applies the configured terms in order and keeps the running score moments, which
travel in checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rlhf_lightning.distributed import gather_rows
from rlhf_lightning.errors import ConfigError
from rlhf_lightning.functional import (
    RunningMoments,
    expand_group_mask,
    informative_groups,
    length_penalty,
    overlong_penalty,
)


@dataclass
class ScoreShaping:
    """What happens to the reward source's scores before the KL penalty and the advantages.

    In order: the length terms are added to the raw scores, then the missing-stop penalty,
    the running scaling and the clip apply.

    Attributes:
        overlong_buffer: DAPO's soft overlong punishment (``functional.overlong_penalty``): a
            penalty falling linearly from 0 to ``-overlong_penalty`` over the last
            ``overlong_buffer`` tokens of the response budget (``sampling.max_new_tokens``);
            None disables.
        overlong_penalty: the size of that penalty at the budget.
        length_penalty: weight of Kimi k1.5's group-relative length reward
            (``functional.length_penalty``): within each group, short correct answers gain up
            to +0.5, long ones lose up to 0.5 (wrong ones are never rewarded); None disables.
        correct_reward: a raw score at least this counts as correct for the length reward.
        missing_stop_penalty: subtracted from the score of a response that never stopped.
        scale: divide by the running std of the scores (classic TRL ``use_score_scaling``).
        normalize: subtract the running mean too (``use_score_norm``).
        clip: clamp the scores to ``[-clip, clip]``; None disables.
    """

    missing_stop_penalty: float | None = None
    scale: bool = False
    normalize: bool = False
    clip: float | None = None
    # After the older fields, so positional construction (ppo_api) keeps its meaning.
    overlong_buffer: int | None = None
    overlong_penalty: float = 1.0
    length_penalty: float | None = None
    correct_reward: float = 1.0


class ScoreShaper:
    """Applies a ``ScoreShaping`` to each iteration's scores (prompt-major groups).

    Args:
        shaping: the terms to apply.
        max_new_tokens: the response budget (the overlong penalty's ``L_max``).
        group_size: samples per prompt.
        dynamic_sampling: whether ``informative_rows`` drops groups whose scores are equal.
    """

    def __init__(
        self,
        shaping: ScoreShaping,
        max_new_tokens: int,
        group_size: int = 1,
        dynamic_sampling: bool = False,
    ) -> None:
        buffer = shaping.overlong_buffer
        if buffer is not None and not 0 < buffer <= max_new_tokens:
            raise ConfigError(
                f"algorithm.shaping.overlong_buffer={buffer}: the window must lie inside the "
                f"response budget (sampling.max_new_tokens={max_new_tokens}). Fix: a number "
                f"in 1..{max_new_tokens}, or null."
            )
        self.shaping = shaping
        self.max_new_tokens = max_new_tokens
        self.group_size = group_size
        self.dynamic_sampling = dynamic_sampling
        self.moments = RunningMoments()

    def __call__(self, scores: Tensor, contains_stop: Tensor, lengths: Tensor) -> Tensor:
        """Length terms, the missing-stop penalty, running scaling, clipping.

        Args:
            scores: the reward source's scores. Shape (B,).
            contains_stop: whether each response stopped. Shape (B,), bool.
            lengths: response lengths in tokens. Shape (B,).

        Returns:
            Shaped scores, float. Shape (B,).
        """
        shaping = self.shaping
        raw = scores = scores.float()
        if shaping.overlong_buffer is not None:
            scores = scores + overlong_penalty(
                lengths, self.max_new_tokens, shaping.overlong_buffer, shaping.overlong_penalty
            ).to(scores.dtype)
        if shaping.length_penalty is not None:
            # Groups are whole on every process (each expands its own prompts), so this
            # group statistic needs no gather.
            bonus = length_penalty(lengths, raw >= shaping.correct_reward, self.group_size)
            scores = scores + shaping.length_penalty * bonus.to(scores.dtype)
        if shaping.missing_stop_penalty is not None:
            scores = torch.where(contains_stop, scores, scores - shaping.missing_stop_penalty)
        if shaping.scale or shaping.normalize:
            # Every rank updates with the whole batch: identical running moments everywhere.
            self.moments.update(gather_rows(scores)[0])
            std = self.moments.std + torch.finfo(scores.dtype).eps
            scores = (scores - self.moments.mean) / std if shaping.normalize else scores / std
        if shaping.clip is not None:
            scores = scores.clamp(-shaping.clip, shaping.clip)
        return scores

    def informative_rows(self, scores: Tensor) -> Tensor:
        """Rows whose group's shaped scores differ (DAPO dynamic sampling); all True without it.

        Args:
            scores: shaped scores, prompt-major groups (whole on every process). Shape (B,).

        Returns:
            Bool. Shape (B,).
        """
        if not self.dynamic_sampling:
            return torch.ones_like(scores, dtype=torch.bool)
        keep = informative_groups(scores, self.group_size)
        return expand_group_mask(keep, self.group_size)
