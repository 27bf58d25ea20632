"""Numerical guards: an update whose loss or gradients are not finite is skipped and counted.

A single NaN (a bad batch, an fp16 overflow, a reward source returning garbage) would otherwise
poison every weight through the optimizer's moments. Skipping costs one batch; many skips in a
row mean the run itself has diverged, and it stops with a message saying so.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
from torch import nn

from rlhf_lightning.errors import NumericalError


class NonFiniteGuard:
    """Counts skipped updates and stops after `max_consecutive` bad ones in a row.

    Args:
        max_consecutive: bad updates in a row tolerated before `NumericalError`.

    Attributes:
        skipped: updates skipped so far (logged as ``train/skipped_steps``).
        consecutive: bad updates since the last good one.
    """

    def __init__(self, max_consecutive: int = 10) -> None:
        if max_consecutive < 1:
            raise ValueError(f"max_consecutive must be >= 1, got {max_consecutive}")
        self.max_consecutive = max_consecutive
        self.skipped = 0
        self.consecutive = 0

    def update_is_finite(
        self, loss: torch.Tensor | None, parameters: Iterable[nn.Parameter]
    ) -> bool:
        """True when `loss` and every gradient are finite; otherwise counts a skip.

        Raises:
            NumericalError: on the `max_consecutive`-th bad update in a row.
        """
        grads = [p.grad for p in parameters if p.grad is not None]
        finite = loss is None or bool(torch.isfinite(loss.detach()).all())
        if finite and grads:
            finite = bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))
        return self.record(finite)

    def record(self, finite: bool) -> bool:
        """Count one update as good (`finite`) or skipped; returns `finite`.

        Raises:
            NumericalError: on the `max_consecutive`-th bad update in a row.
        """
        if finite:
            self.consecutive = 0
            return True
        self.record_skip()
        return False

    def record_skip(self) -> None:
        """Count one skipped update.

        Raises:
            NumericalError: on the `max_consecutive`-th bad update in a row.
        """
        self.skipped += 1
        self.consecutive += 1
        if self.consecutive >= self.max_consecutive:
            raise NumericalError(
                f"{self.consecutive} consecutive updates had a non-finite loss or gradient "
                f"({self.skipped} skipped in all): training has diverged. Fix: lower optim.lr, "
                "check the data and reward for NaN/Inf, or use trainer.precision=bf16-mixed "
                "instead of 16-mixed; the last good checkpoint is untouched."
            )

    def state_dict(self) -> dict[str, int]:
        return {"skipped": self.skipped, "consecutive": self.consecutive}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.skipped = state["skipped"]
        self.consecutive = state["consecutive"]


def optimized_parameters(optimizer: torch.optim.Optimizer) -> list[nn.Parameter]:
    """The parameters `optimizer` updates: the ones whose gradients the guard must check (a
    frozen reference or reward model held by the module has none, and walking it costs time)."""
    return [p for group in optimizer.param_groups for p in group["params"]]


def plain_gradients(trainer: Any) -> bool:
    """Whether `trainer`'s gradients are whole and unscaled (one device or DDP, fp32 or bf16),
    so that clipping them is ``clip_grad_norm_``; FSDP, DeepSpeed and fp16 loss scaling clip
    their own way (Lightning's ``clip_gradients``)."""
    precision = trainer.precision_plugin
    plain = type(precision) is Precision or (
        type(precision) is MixedPrecision and precision.scaler is None
    )
    return plain and type(trainer.strategy) in (SingleDeviceStrategy, DDPStrategy)


def clip_if_finite(guard: NonFiniteGuard, parameters: list[nn.Parameter], max_norm: float) -> bool:
    """The guard's check and ``clip_grad_norm_(parameters, max_norm)`` from one gradient norm
    (they computed it once each); the same arithmetic as ``clip_grad_norm_``.

    Returns:
        Whether the gradients are finite (when not, they are left unclipped and a skip is
        counted).
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return guard.record(True)
    norm = torch.nn.utils.get_total_norm(grads)
    if not guard.record(bool(torch.isfinite(norm))):
        return False
    torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, norm)
    return True


class GuardedOptimizerStep:
    """LightningModule mixin (automatic optimisation): skip steps with non-finite loss/grads.

    Runs the training closure (forward + backward) itself, then calls the optimizer only when
    the guard passes; a skipped step leaves the weights and optimizer moments untouched (its
    gradients are cleared by the next step's ``zero_grad``).
    """

    guard: NonFiniteGuard

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        loss = optimizer_closure() if optimizer_closure is not None else None
        if self.guard.update_is_finite(loss, optimized_parameters(optimizer)):
            optimizer.step()
        self.log("train/skipped_steps", float(self.guard.skipped))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["non_finite_guard"] = self.guard.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "non_finite_guard" in checkpoint:
            self.guard.load_state_dict(checkpoint["non_finite_guard"])
