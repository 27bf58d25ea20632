"""Supervised fine-tuning: next-token cross-entropy on the target tokens of each example."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import SumMetric

from rlhf_lightning.distributed import all_reduce_sum, rank_and_world
from rlhf_lightning.functional import sft_loss
from rlhf_lightning.modules.guards import GuardedOptimizerStep, NonFiniteGuard
from rlhf_lightning.modules.optim import OptimizerFactory, SchedulerFactory, configure_optimizers


class SFTModule(GuardedOptimizerStep, L.LightningModule):
    """Causal-LM fine-tuning with automatic optimisation.

    Args:
        model: a causal LM (a `transformers` model, optionally wrapped by peft).
        optimizer: builds the optimizer from the trainable parameters (Hydra `_partial_`).
        scheduler: builds the LR schedule from `(optimizer, total_steps)`; stepped every
            optimizer step.
        unigram_perplexity: the validation split's unigram perplexity under the training
            split's token frequencies; logged once as `val/unigram_perplexity`, the baseline
            that `val/perplexity` should beat.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        unigram_perplexity: float | None = None,
        max_consecutive_bad_steps: int = 10,
    ) -> None:
        super().__init__()
        self.guard = NonFiniteGuard(max_consecutive_bad_steps)
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.unigram_perplexity = unigram_perplexity
        self.val_nll_sum = SumMetric()
        self.val_token_count = SumMetric()
        self._last_step_time: float | None = None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits, shape (B, T, V)."""
        # use_cache=False: a training forward has no use for a KV cache (it only costs time).
        return self.model(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).logits

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch["input_ids"], batch["attention_mask"])
        out = sft_loss(logits, batch["input_ids"], batch["loss_mask"])
        loss, logged = out.loss, out.loss.detach()
        _, world = rank_and_world()
        if world > 1:
            # The mean over the global batch's target tokens: each rank divides its token sum by
            # its share of the global count, and DDP's gradient average completes the mean.
            nll_sum, tokens = all_reduce_sum(
                torch.stack([logged * out.num_tokens, out.num_tokens.float()])
            )
            loss = out.loss * out.num_tokens * world / tokens
            logged = nll_sum / tokens
        self.log("train/loss", logged, prog_bar=True)
        self._log_throughput(batch)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self(batch["input_ids"], batch["attention_mask"])
        out = sft_loss(logits, batch["input_ids"], batch["loss_mask"])
        # Token-weighted over the whole split, so perplexity does not depend on batching.
        self.val_nll_sum.update(out.loss.detach() * out.num_tokens)
        self.val_token_count.update(out.num_tokens)

    def on_validation_epoch_end(self) -> None:
        tokens = self.val_token_count.compute()
        if tokens <= 0:
            return
        val_loss = self.val_nll_sum.compute() / tokens
        self.log("val/loss", val_loss, prog_bar=True)
        self.log("val/perplexity", torch.exp(val_loss))
        if self.unigram_perplexity is not None and not self.trainer.sanity_checking:
            self.log("val/unigram_perplexity", self.unigram_perplexity)
            self.unigram_perplexity = None  # logged once per run
        self.val_nll_sum.reset()
        self.val_token_count.reset()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        # A resumed run must not log the once-per-run baseline a second time.
        checkpoint["sft"] = {"baseline_logged": self.unigram_perplexity is None}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if checkpoint.get("sft", {}).get("baseline_logged"):
            self.unigram_perplexity = None

    def configure_optimizers(self):
        return configure_optimizers(
            self.model,
            self.optimizer_factory,
            self.scheduler_factory,
            self.trainer.estimated_stepping_batches,
            precision=str(self.trainer.precision),
        )

    def _log_throughput(self, batch: dict[str, torch.Tensor]) -> None:
        # Wall time between consecutive steps covers forward, backward and optimizer step.
        now = time.perf_counter()
        if self._last_step_time is not None:
            elapsed = max(now - self._last_step_time, 1e-9)
            tokens = float(batch["attention_mask"].sum())
            self.log("perf/tokens_per_s", tokens / elapsed)
            self.log("perf/samples_per_s", batch["input_ids"].shape[0] / elapsed)
        self._last_step_time = now
