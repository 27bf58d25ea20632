"""Learning-rate schedules: linear warmup, then cosine / linear decay or constant."""

from __future__ import annotations

import math
from typing import Literal

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_decay_schedule(
    optimizer: Optimizer,
    total_steps: int,
    warmup_steps: int = 0,
    warmup_ratio: float = 0.0,
    decay: Literal["cosine", "linear", "constant"] = "cosine",
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """Linear warmup from 0 to the base LR, then decay to `min_lr_ratio` x base at `total_steps`.

    The warmup length is `warmup_steps`, or `warmup_ratio * total_steps` when that is larger.
    """
    warmup = max(warmup_steps, int(warmup_ratio * total_steps))
    decay_steps = max(1, total_steps - warmup)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / decay_steps)
        if decay == "constant":
            shape = 1.0
        elif decay == "linear":
            shape = 1.0 - progress
        else:
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        return min_lr_ratio + (1.0 - min_lr_ratio) * shape

    return LambdaLR(optimizer, factor)
