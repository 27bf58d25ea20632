"""Supervised fine-tuning: next-token cross-entropy on the target tokens of each example."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchmetrics import SumMetric
from transformers import PreTrainedTokenizerBase

from rlhf_lightning.data import SFTDataModule
from rlhf_lightning.distributed import all_reduce_sum, rank_and_world
from rlhf_lightning.functional import sft_loss
from rlhf_lightning.functional import unigram_perplexity as unigram_baseline
from rlhf_lightning.modules.offline import OfflineStage
from rlhf_lightning.modules.optim import OptimizerFactory, SchedulerFactory
from rlhf_lightning.rollout import sample_completions

log = logging.getLogger(__name__)


class SFTModule(OfflineStage):
    """Causal-LM fine-tuning with automatic optimisation.

    Args:
        model: a causal LM (a `transformers` model, optionally wrapped by peft).
        tokenizer: its tokenizer (for the samples at the end and the export).
        optimizer: builds the optimizer from the trainable parameters (Hydra `_partial_`).
        scheduler: builds the LR schedule from `(optimizer, total_steps)`; stepped every
            optimizer step.
        unigram_perplexity: the validation split's unigram perplexity under the training
            split's token frequencies, logged once as `val/unigram_perplexity`: the baseline
            that `val/perplexity` should beat. None computes it from the datamodule
            (``target_tokens``) when the fit starts.
        sample_prompts / num_samples / sample_max_new_tokens: completions sampled after
            training (the prompts cycled to `num_samples`), printed and appended to
            `samples_path`. None takes `num_samples` prompts from the data
            (``SFTDataModule.sample_prompts``: the prompts, or openings of plain text).
        seed: the samples' seed.
    """

    model_head = "causal_lm"
    datamodule_class = SFTDataModule

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase | None = None,
        optimizer: OptimizerFactory = torch.optim.AdamW,
        scheduler: SchedulerFactory | None = None,
        unigram_perplexity: float | None = None,
        sample_prompts: Sequence[str] | None = None,
        num_samples: int = 0,
        sample_max_new_tokens: int = 40,
        samples_path: str | Path | None = None,
        seed: int = 0,
        max_consecutive_bad_steps: int = 10,
    ) -> None:
        super().__init__(tokenizer, optimizer, scheduler, max_consecutive_bad_steps)
        self.model = model
        self.unigram_perplexity = unigram_perplexity
        self._baseline_known = unigram_perplexity is not None
        self.sample_prompts = None if sample_prompts is None else list(sample_prompts)
        self.num_samples = num_samples
        self.sample_max_new_tokens = sample_max_new_tokens
        self.samples_path = Path(samples_path) if samples_path is not None else None
        self.seed = seed
        self.val_nll_sum = SumMetric()
        self.val_token_count = SumMetric()
        self._last_step_time: float | None = None

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        if self._baseline_known or not hasattr(datamodule, "target_tokens"):
            return
        datamodule.setup("fit")
        if getattr(datamodule, "val_dataset", None) is None:
            return  # no validation split (data.val_fraction=0): no baseline to log
        self.unigram_perplexity = unigram_baseline(
            datamodule.target_tokens("train"),
            datamodule.target_tokens("validation"),
            len(datamodule.tokenizer),
        )
        self._baseline_known = True
        log.info(
            "Validation unigram perplexity (train-split frequencies): %.1f",
            self.unigram_perplexity,
        )

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

    def finish(self) -> list[dict[str, Any]]:
        """After fit: sample `num_samples` completions of `sample_prompts`; print and save them."""
        if self.tokenizer is None or self.num_samples <= 0:
            return []
        if self.sample_prompts is not None:
            prompts = (self.sample_prompts * self.num_samples)[: self.num_samples]
        else:
            prompts = self.trainer.datamodule.sample_prompts(self.num_samples)
        if not prompts:
            return []
        completions = sample_completions(
            self.model,
            self.tokenizer,
            prompts,
            max_new_tokens=self.sample_max_new_tokens,
            seed=self.seed,
        )
        rows = [
            {"step": self.global_step, "prompt": p, "completion": c}
            for p, c in zip(prompts, completions, strict=True)
        ]
        if self.samples_path is not None:
            with self.samples_path.open("a", encoding="utf-8") as f:
                f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        print("\nSamples from the trained model:")
        for row in rows:
            print(f"  [{row['prompt']}]{row['completion']}")
        return rows

    def _log_throughput(self, batch: dict[str, torch.Tensor]) -> None:
        # Wall time between consecutive steps covers forward, backward and optimizer step.
        now = time.perf_counter()
        if self._last_step_time is not None:
            elapsed = max(now - self._last_step_time, 1e-9)
            tokens = float(batch["attention_mask"].sum())
            self.log("perf/tokens_per_s", tokens / elapsed)
            self.log("perf/samples_per_s", batch["input_ids"].shape[0] / elapsed)
        self._last_step_time = now
