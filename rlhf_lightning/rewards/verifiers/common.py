"""What the verifiers share: reading a per-row column of the batch, checking score settings."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

from rlhf_lightning.errors import RewardError
from rlhf_lightning.rewards.base import is_batch_column


def batch_column(columns: Mapping[str, Any], name: str, batch: int, source: str) -> list[Any]:
    """The extra column ``name`` as a list of B values, or one clear error.

    Raises:
        RewardError: the batch has no such column, or it is not one value per completion.
    """
    if name not in columns:
        raise RewardError(
            f"{source}: the batch has no '{name}' column (it has: {sorted(columns) or 'none'}). "
            f"Fix: use a dataset with a '{name}' column (e.g. a built-in task: data=arithmetic, "
            "countdown or code_tasks), or point the reward at your column's name."
        )
    values = columns[name]
    if not is_batch_column(values):
        raise RewardError(
            f"{source}: column '{name}' is a {type(values).__name__}, not one value per "
            "completion. Fix: pass a list of B values."
        )
    values = list(values)
    if len(values) != batch:
        raise RewardError(
            f"{source}: column '{name}' has {len(values)} values for {batch} completions. "
            "Fix: give one value per completion (repeat a prompt's row for each of its samples)."
        )
    return values


def check_score_values(source: str, **scores: float) -> None:
    """Every score setting (``correct=``, ``wrong=``...) must be a finite number."""
    for name, value in scores.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not math.isfinite(value)
        ):
            raise RewardError(f"{source}: {name}={value!r}. Fix: a finite number.")
