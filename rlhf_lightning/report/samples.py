"""Before/after sample pairs: completions at the first logged step next to those at the last."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

# Rows shown by default; enough to judge a change by eye without a wall of text.
DEFAULT_ROWS = 8
# The `kind` of the rows an RL run appends at its end (rlhf_lightning/rollout/compare.py): the
# reference policy's and the trained policy's completions of the same prompts, both scored.
COMPARISON_KIND = "final_comparison"


@dataclass
class SamplePair:
    """One prompt's completion before (first logged step) and after (last logged step)."""

    before: dict[str, Any]
    after: dict[str, Any] | None


@dataclass
class BeforeAfter:
    """The comparison the report shows.

    Attributes:
        first_step / last_step: the first and last step samples were logged at.
        matched: True when pairs share their prompt; False when the prompts differ between
            the two steps and the pairs are simply the first N rows of each.
        pairs: the rows to show (``after`` is None when only one step was logged).
        mean_reward_first / mean_reward_last: mean reward over all samples of each step.
    """

    first_step: Any = None
    last_step: Any = None
    matched: bool = False
    pairs: list[SamplePair] = field(default_factory=list)
    mean_reward_first: float | None = None
    mean_reward_last: float | None = None


@dataclass
class ReferenceComparison:
    """The end-of-run rows: reference (starting) policy vs trained policy, same prompts.

    Attributes:
        step: the step the comparison was written at.
        rows: the rows to show (``completion``/``reward`` trained, ``ref_*`` reference).
        mean_reward / mean_ref_reward: over all comparison rows of that step.
    """

    step: Any
    rows: list[dict[str, Any]]
    mean_reward: float | None
    mean_ref_reward: float | None


def split_samples(
    samples: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(samples logged during training, end-of-run reference comparison rows)."""
    during = [r for r in samples if r.get("kind") != COMPARISON_KIND]
    comparison = [r for r in samples if r.get("kind") == COMPARISON_KIND]
    return during, comparison


def reference_comparison(
    rows: list[dict[str, Any]], max_rows: int = DEFAULT_ROWS
) -> ReferenceComparison | None:
    """The last written comparison (a resumed run may hold several), or None without one."""
    if not rows:
        return None
    last = max((r["step"] for r in rows), key=_step_key)
    rows = [r for r in rows if r["step"] == last]
    refs = [{"reward": r.get("ref_reward")} for r in rows]
    return ReferenceComparison(last, rows[:max_rows], _mean_reward(rows), _mean_reward(refs))


def before_after(samples: list[dict[str, Any]], max_rows: int = DEFAULT_ROWS) -> BeforeAfter:
    """Pair the first logged step's samples with the last's, by prompt where the prompts match.

    A prompt logged several times in a step (GRPO/RLOO log a whole group) pairs its k-th
    completion before with its k-th after. Where no prompt is shared, the pairs are the first
    `max_rows` samples of each step, distinct prompts first.
    """
    by_step = _group_by_step(samples)
    if not by_step:
        return BeforeAfter()
    steps = sorted(by_step, key=_step_key)
    first, last = by_step[steps[0]], by_step[steps[-1]]
    result = BeforeAfter(
        first_step=steps[0],
        last_step=steps[-1],
        mean_reward_first=_mean_reward(first),
        mean_reward_last=_mean_reward(last),
    )
    if len(steps) == 1:
        result.pairs = [SamplePair(row, None) for row in first[:max_rows]]
        return result
    result.pairs = _pairs_by_prompt(first, last, max_rows)
    result.matched = bool(result.pairs)
    if not result.matched:
        befores, afters = _spread(first)[:max_rows], _spread(last)[:max_rows]
        result.pairs = [SamplePair(b, a) for b, a in zip(befores, afters, strict=False)]
    return result


def _group_by_step(samples: list[dict[str, Any]]) -> dict[Any, list[dict[str, Any]]]:
    by_step: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for row in samples:
        by_step[row["step"]].append(row)
    return by_step


def _step_key(step: Any) -> tuple[int, float, str]:
    """Numeric steps in numeric order; anything else after them, as text."""
    try:
        return (0, float(step), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(step))


def _pairs_by_prompt(
    first: list[dict[str, Any]], last: list[dict[str, Any]], max_rows: int
) -> list[SamplePair]:
    """The k-th occurrence of a prompt before with its k-th occurrence after.

    Ordered so every shared prompt's first pair comes before any prompt's second: GRPO/RLOO
    log whole groups, and the first N rows would otherwise show only N/G prompts.
    """
    after_by_prompt: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in last:
        after_by_prompt[str(row["prompt"])].append(row)
    pairs = []
    for k, _, row in _occurrences(first):
        matches = after_by_prompt.get(str(row["prompt"]), [])
        if k < len(matches):
            pairs.append(SamplePair(row, matches[k]))
    return pairs[:max_rows]


def _spread(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`rows` with each prompt's first sample before any prompt's second (see above)."""
    return [row for _, _, row in _occurrences(rows)]


def _occurrences(rows: list[dict[str, Any]]) -> list[tuple[int, int, dict[str, Any]]]:
    """(k, i, row): row i is the k-th sample of its prompt; sorted by k, then by position."""
    seen: dict[str, int] = defaultdict(int)
    keyed = []
    for i, row in enumerate(rows):
        prompt = str(row["prompt"])
        keyed.append((seen[prompt], i, row))
        seen[prompt] += 1
    return sorted(keyed, key=lambda t: t[:2])


def _mean_reward(rows: list[dict[str, Any]]) -> float | None:
    rewards = [r.get("reward") for r in rows]
    finite = [float(x) for x in rewards if _is_number(x) and math.isfinite(float(x))]
    return sum(finite) / len(finite) if finite else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
