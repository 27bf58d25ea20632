"""A Rich progress bar that counts what a run counts: optimizer steps, or RL iterations.

For the online RL stages (PPO, GRPO, RLOO) one training batch is one iteration (rollout,
scoring, optimisation), so the bar's total is ``stage.iterations``, its ETA follows from the
time per iteration, and its description names the phase running now.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar


class RunProgressBar(RichProgressBar):
    """RichProgressBar with an iteration total and a live phase for the online RL stages.

    An online RL module (one with ``total_iterations``) calls :meth:`set_phase` as it moves
    between ``rollout``, ``scoring`` and ``optimising``; other stages show ``train`` and count
    optimizer steps against ``trainer.max_steps``.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._phase = "train"

    def _iterations(self) -> int | None:
        module = self.trainer.lightning_module if self._trainer is not None else None
        return getattr(module, "total_iterations", None)

    @property
    def total_train_batches(self) -> int | float:
        iterations = self._iterations()
        return iterations if iterations else super().total_train_batches

    def _get_train_description(self, current_epoch: int) -> str:
        if self._iterations():
            return f"{self._phase:<10}"
        return "train" if self.trainer.max_epochs in (None, -1) else f"epoch {current_epoch}"

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        # The logger's version number: each run has a directory of its own, so it says nothing.
        metrics.pop("v_num", None)
        return metrics

    def set_phase(self, phase: str) -> None:
        """Show `phase` (e.g. ``rollout``) in the bar's description now."""
        self._phase = phase
        if self.progress is not None and self.train_progress_bar_id is not None:
            self.progress.update(self.train_progress_bar_id, description=f"{phase:<10}")
            self.refresh()

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        iteration = getattr(pl_module, "iteration", None)
        if self._iterations() and iteration is not None:
            # Counting finished iterations (not batch_idx) keeps the bar right after a resume.
            if not self.is_disabled and self.train_progress_bar_id is None:
                self._initialize_train_progress_bar_id()
            self._update(self.train_progress_bar_id, iteration)
            self._update_metrics(trainer, pl_module)
            self.refresh()
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
