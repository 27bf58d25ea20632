"""What every stage trained on a fixed dataset shares (SFT, reward, DPO and its family)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from rlhf_lightning.errors import ConfigError
from rlhf_lightning.models import export_model
from rlhf_lightning.modules.guards import GuardedOptimizerStep, NonFiniteGuard
from rlhf_lightning.modules.optim import OptimizerFactory, SchedulerFactory, configure_optimizers


class OfflineStage(GuardedOptimizerStep, L.LightningModule):
    """A stage with automatic optimisation over one trained model: non-finite updates skipped
    and counted (``GuardedOptimizerStep``), the optimizer and LR schedule built from factories
    over its trainable parameters, the export of the model with its tokenizer.

    A subclass keeps its trained model under its own attribute name (``model``, ``policy``;
    checkpoints' keys follow it) and names it in ``trained_model``.

    Args:
        tokenizer: the trained model's tokenizer (for the export).
        optimizer / scheduler: factories (Hydra `_partial_`).
        max_consecutive_bad_steps: skipped non-finite updates in a row before the run stops.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase | None = None,
        optimizer: OptimizerFactory = torch.optim.AdamW,
        scheduler: SchedulerFactory | None = None,
        max_consecutive_bad_steps: int = 10,
    ) -> None:
        super().__init__()
        self.guard = NonFiniteGuard(max_consecutive_bad_steps)
        self.tokenizer = tokenizer
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler

    @property
    def trained_model(self) -> nn.Module:
        """The model the optimizer updates and the export writes."""
        return self.model

    def export(self, out_dir: Path, merge_lora: bool = False) -> None:
        """The trained model and its tokenizer as a Hugging Face directory."""
        export_model(self.trained_model, self.require_tokenizer(), out_dir, merge_lora=merge_lora)

    def require_tokenizer(self) -> PreTrainedTokenizerBase:
        """The tokenizer, or a message saying how to give one."""
        if self.tokenizer is None:
            raise ConfigError(
                f"{type(self).__name__} needs its tokenizer here: pass tokenizer= when building it."
            )
        return self.tokenizer

    def configure_optimizers(self):
        return configure_optimizers(
            self.trained_model,
            self.optimizer_factory,
            self.scheduler_factory,
            self.trainer.estimated_stepping_batches,
            precision=str(self.trainer.precision),
        )
