"""Reward modelling: a scalar head trained with the pairwise ranking loss on preference pairs."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanMetric

from rlhf_lightning.functional import pairwise_loss
from rlhf_lightning.modules.guards import GuardedOptimizerStep, NonFiniteGuard
from rlhf_lightning.modules.optim import OptimizerFactory, SchedulerFactory, configure_optimizers


class RewardModule(GuardedOptimizerStep, L.LightningModule):
    """Train a sequence classifier (one output) so that r(chosen) > r(rejected).

    Loss (ALGORITHMS.md §3): `-logsigmoid(r_c - r_r - margin)`, plus
    `center_coef * mean((r_c + r_r)^2)` when set, which keeps scores near zero.

    Args:
        model: an `AutoModelForSequenceClassification` with `num_labels=1`. Decoder backbones
            pool at the last non-pad token (pad is distinct from EOS here, so that is the EOS).
        optimizer: builds the optimizer from the trainable parameters.
        scheduler: builds the LR schedule from `(optimizer, total_steps)`.
        center_coef: reward-centring coefficient; None disables it.
        use_margin: subtract the batch's `margin` column when present.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        center_coef: float | None = None,
        use_margin: bool = True,
        max_consecutive_bad_steps: int = 10,
    ) -> None:
        super().__init__()
        self.guard = NonFiniteGuard(max_consecutive_bad_steps)
        self.model = model
        if getattr(model.config, "use_cache", None):
            # Scoring never decodes: a KV cache filled in every forward only costs time.
            model.config.use_cache = False
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.center_coef = center_coef
        self.use_margin = use_margin
        self.val_loss = MeanMetric()
        self.val_accuracy = MeanMetric()
        self.val_tie_rate = MeanMetric()
        self.val_margin = MeanMetric()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Scores, shape (B,), fp32."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0].float()

    def score_pairs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(r_chosen, r_rejected), each (B,), from one forward over the 2B sequences."""
        ids = torch.cat([batch["chosen_input_ids"], batch["rejected_input_ids"]])
        mask = torch.cat([batch["chosen_attention_mask"], batch["rejected_attention_mask"]])
        chosen, rejected = self(ids, mask).chunk(2)
        return chosen, rejected

    def _loss(self, batch: dict[str, torch.Tensor]):
        chosen, rejected = self.score_pairs(batch)
        margin = batch.get("margin") if self.use_margin else None
        return pairwise_loss(chosen, rejected, margin=margin, center_coef=self.center_coef)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self._loss(batch)
        self.log("train/loss", out.loss, prog_bar=True)
        self.log("train/accuracy", out.accuracy)
        self.log("train/margin", out.margin_mean)
        return out.loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        out = self._loss(batch)
        n = batch["chosen_input_ids"].shape[0]
        self.val_loss.update(out.loss, weight=n)
        self.val_accuracy.update(out.accuracy, weight=n)
        self.val_tie_rate.update(out.tie_rate, weight=n)
        self.val_margin.update(out.margin_mean, weight=n)

    def on_validation_epoch_end(self) -> None:
        for name, metric in [
            ("val/loss", self.val_loss),
            ("val/accuracy", self.val_accuracy),
            ("val/tie_rate", self.val_tie_rate),
            ("val/margin", self.val_margin),
        ]:
            if metric.update_count:
                self.log(name, metric.compute(), prog_bar=name == "val/accuracy")
            metric.reset()

    def configure_optimizers(self):
        return configure_optimizers(
            self.model,
            self.optimizer_factory,
            self.scheduler_factory,
            self.trainer.estimated_stepping_batches,
            precision=str(self.trainer.precision),
        )
