"""A rule reward for the shape of a completion: it matches a regular expression, or not."""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor

from rlhf_lightning.errors import RewardError
from rlhf_lightning.rewards.base import check_inputs, check_scores
from rlhf_lightning.rewards.verifiers.common import check_score_values

# Named formats. Both allow surrounding whitespace and nothing else around the tags, so a
# completion cannot collect the reward by appending a tag to free text.
FORMATS = {
    # Only the answer, as the built-in tasks ask: "<answer>42</answer>".
    "answer": r"\s*<answer>(?:(?!</?answer>).)+</answer>\s*",
    # Reasoning, then the answer (DeepSeek-R1-Zero style).
    "think_answer": (
        r"\s*<think>(?:(?!</?think>).)*</think>\s*<answer>(?:(?!</?answer>).)+</answer>\s*"
    ),
}


class FormatReward:
    """``matched`` when the completion has the expected structure, else ``unmatched``.

    Args:
        pattern: ``answer`` (``<answer>...</answer>`` and nothing else), ``think_answer``
            (``<think>...</think><answer>...</answer>``), or a regular expression.
        full_match: True: the whole completion must match (``re.fullmatch``); False: a match
            anywhere counts (``re.search``).
        matched: Score of a completion in the format.
        unmatched: Score of any other completion.

    Dot matches newlines (``re.DOTALL``). Usually mixed with a correctness reward
    (``rewards.WeightedReward``) with a small weight, so the format is learned first but never
    pays more than a right answer.

    Example:
        >>> FormatReward()(["p", "p"], ["<answer>4</answer>", "4"]).tolist()
        [1.0, 0.0]
    """

    def __init__(
        self,
        pattern: str = "answer",
        full_match: bool = True,
        matched: float = 1.0,
        unmatched: float = 0.0,
    ) -> None:
        self.source = "format reward"
        try:
            self.regex = re.compile(FORMATS.get(pattern, pattern), re.DOTALL)
        except re.error as err:
            raise RewardError(
                f"{self.source}: pattern={pattern!r} is neither one of {sorted(FORMATS)} nor a "
                f"valid regular expression ({err}). Fix: use a name or a valid regex."
            ) from err
        check_score_values(self.source, matched=matched, unmatched=unmatched)
        self.pattern = pattern
        self.full_match = full_match
        self.matched = float(matched)
        self.unmatched = float(unmatched)

    def __call__(self, prompts: list[str], completions: list[str], **columns: Any) -> Tensor:
        """Score the batch. Shapes: ``prompts``/``completions`` length B; returns (B,) float32."""
        batch = check_inputs(prompts, completions, columns, self.source)
        match = self.regex.fullmatch if self.full_match else self.regex.search
        scores = [self.matched if match(c) else self.unmatched for c in completions]
        return check_scores(torch.tensor(scores), batch, self.source, prompts=prompts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(pattern={self.pattern!r}, full_match={self.full_match})"
