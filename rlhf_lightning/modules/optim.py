"""Optimizer and LR-schedule wiring shared by the stage modules."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

OptimizerFactory = Callable[[Iterable[nn.Parameter]], Optimizer]
SchedulerFactory = Callable[[Optimizer, int], LRScheduler]


def configure_optimizers(
    model: nn.Module,
    optimizer: OptimizerFactory,
    scheduler: SchedulerFactory | None,
    total_steps: int,
) -> Optimizer | dict[str, Any]:
    """Lightning's `configure_optimizers` result: the trainable parameters of `model`, and the
    schedule (stepped every optimizer step) sized to `total_steps`."""
    opt = optimizer([p for p in model.parameters() if p.requires_grad])
    if scheduler is None:
        return opt
    return {
        "optimizer": opt,
        "lr_scheduler": {"scheduler": scheduler(opt, total_steps), "interval": "step"},
    }
