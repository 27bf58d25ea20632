"""A weighted sum of reward sources, keeping each component for logging."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from rlhf_lightning.errors import RewardError
from rlhf_lightning.rewards.base import RewardSource, check_inputs, check_scores


class WeightedReward:
    """``r = Σ_i w_i · r_i`` over named reward sources.

    Every source gets the same call (prompts, completions and all extra columns). After each call
    ``last_components`` holds every source's unweighted rewards, so a stage can log them, e.g. as
    ``rollout/reward/<name>``.

    Args:
        sources: Name -> reward source.
        weights: Name -> weight; exactly the names of ``sources``.

    Example:
        >>> from rlhf_lightning.rewards import CallableReward
        >>> mix = WeightedReward(
        ...     {"a": CallableReward(lambda p, c: [1.0] * len(c)),
        ...      "b": CallableReward(lambda p, c: [2.0] * len(c))},
        ...     {"a": 0.5, "b": -1.0},
        ... )
        >>> mix(["x"], ["y"]).tolist()  # 0.5 * 1 - 1 * 2
        [-1.5]
    """

    def __init__(self, sources: Mapping[str, RewardSource], weights: Mapping[str, float]) -> None:
        sources, weights = dict(sources), dict(weights)
        if not sources:
            raise RewardError("weighted reward: no sources. Fix: give at least one reward source.")
        if set(sources) != set(weights):
            raise RewardError(
                f"weighted reward: sources {sorted(sources)} and weights {sorted(weights)} name "
                "different components. Fix: give exactly one weight per source."
            )
        for name, source in sources.items():
            if not callable(source):
                raise RewardError(
                    f"weighted reward: source '{name}' is a {type(source).__name__}, not a "
                    "reward source. Fix: give an object called as source(prompts, completions)."
                )
        for name, weight in weights.items():
            if (
                isinstance(weight, bool)
                or not isinstance(weight, numbers.Real)
                or not math.isfinite(weight)
            ):
                raise RewardError(
                    f"weighted reward: weight of '{name}' is {weight!r}. Fix: a finite number."
                )
        self.sources: dict[str, RewardSource] = sources
        self.weights: dict[str, float] = {name: float(w) for name, w in weights.items()}
        self.last_components: dict[str, Tensor] = {}

    def attach(self, policy: Any) -> None:
        """Pass the policy to every source that shares its weights (``AdapterReward``)."""
        for source in self.sources.values():
            attach = getattr(source, "attach", None)
            if attach is not None:
                attach(policy)

    def __call__(self, prompts: list[str], completions: list[str], **columns: Any) -> Tensor:
        """Score the batch with every source and sum. Returns (B,) float32 on CPU."""
        batch = check_inputs(prompts, completions, columns, "weighted reward")
        components = {
            name: check_scores(
                source(prompts, completions, **columns),
                batch,
                f"weighted reward component '{name}'",
                prompts=prompts,
            )
            for name, source in self.sources.items()
        }
        total = torch.zeros(batch)
        for name, rewards in components.items():
            total = total + self.weights[name] * rewards
        self.last_components = components
        return check_scores(total, batch, "weighted reward", prompts=prompts)

    def __repr__(self) -> str:
        parts = ", ".join(f"{self.weights[n]} * {self.sources[n]!r}" for n in self.sources)
        return f"{type(self).__name__}({parts})"
