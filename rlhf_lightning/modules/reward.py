"""Reward modelling: a scalar head trained with the pairwise ranking loss on preference pairs."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchmetrics import MeanMetric
from transformers import PreTrainedTokenizerBase

from rlhf_lightning.data import PreferenceDataModule
from rlhf_lightning.data.demo_prompts import demo_prompts
from rlhf_lightning.functional import pairwise_loss
from rlhf_lightning.models import (
    ModelSpec,
    disable_dropout,
    is_peft_model,
    load_model_and_tokenizer,
)
from rlhf_lightning.modules.offline import OfflineStage
from rlhf_lightning.modules.optim import OptimizerFactory, SchedulerFactory
from rlhf_lightning.rewards import ModelReward
from rlhf_lightning.rewards.model import CALIBRATION_FILE
from rlhf_lightning.rollout import sample_completions
from rlhf_lightning.rundir import atomic_write_text

log = logging.getLogger(__name__)


@dataclass
class Calibration:
    """After training, score completions the starting policy samples and store their mean and
    std in the exported config, so that the starting policy scores mean 0, std 1 (a reward of
    +1.0 then means one standard deviation better than the starting policy).

    Attributes:
        policy: the starting policy's model directory.
        num_samples: completions sampled (prompts: openings of demo corpus texts, the demo RL
            stages' prompts).
        max_new_tokens: tokens per completion.
        batch_size: completions sampled per batch.
    """

    policy: str
    num_samples: int = 256
    max_new_tokens: int = 40
    batch_size: int = 64


class RewardModule(OfflineStage):
    """Train a sequence classifier (one output) so that r(chosen) > r(rejected).

    Loss (ALGORITHMS.md §3): `-logsigmoid(r_c - r_r - margin)`, plus
    `center_coef * mean((r_c + r_r)^2)` when set, which keeps scores near zero.

    Args:
        model: an `AutoModelForSequenceClassification` with `num_labels=1`. Decoder backbones
            pool at the last non-pad token (pad is distinct from EOS here, so that is the EOS).
            Dropout is turned off: scores must not depend on a dropout draw.
        tokenizer: its tokenizer (calibration and export).
        optimizer: builds the optimizer from the trainable parameters.
        scheduler: builds the LR schedule from `(optimizer, total_steps)`.
        center_coef: reward-centring coefficient; None disables it.
        use_margin: subtract the batch's `margin` column when present.
        calibration: calibrate on a starting policy after training; None leaves scores raw.
        seed: the calibration samples' seed.
    """

    model_head = "reward"
    datamodule_class = PreferenceDataModule

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase | None = None,
        optimizer: OptimizerFactory = torch.optim.AdamW,
        scheduler: SchedulerFactory | None = None,
        center_coef: float | None = None,
        use_margin: bool = True,
        calibration: Calibration | None = None,
        seed: int = 0,
        max_consecutive_bad_steps: int = 10,
    ) -> None:
        super().__init__(tokenizer, optimizer, scheduler, max_consecutive_bad_steps)
        self.model = disable_dropout(model)
        if getattr(model.config, "use_cache", None):
            # Scoring never decodes: a KV cache filled in every forward only costs time.
            model.config.use_cache = False
        self.center_coef = center_coef
        self.use_margin = use_margin
        self.calibration = calibration
        self.seed = seed
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

    def finish(self) -> dict[str, float] | None:
        """After fit: calibrate on the starting policy (stored in the model's config)."""
        if self.calibration is None:
            return None
        mean, std = calibrate(
            self.model, self.require_tokenizer(), self.calibration, seed=self.seed
        )
        # Stored with the model: ModelReward returns (score - mean) / std.
        self.model.config.reward_calibration = {"mean": mean, "std": std}
        log.info("Reward calibration on the starting policy: mean %.4f, std %.4f", mean, std)
        return {"mean": mean, "std": std}

    def export(self, out_dir: Path, merge_lora: bool = False) -> None:
        """The reward model and its tokenizer (``AutoModelForSequenceClassification`` loads it).

        A LoRA export holds no model config, so its calibration goes beside the adapter in
        ``reward_calibration.json`` (read by ``ModelReward`` and ``AdapterReward``).
        """
        super().export(out_dir, merge_lora)
        calibration = getattr(self.model.config, "reward_calibration", None)
        if calibration is not None and is_peft_model(self.model):
            atomic_write_text(out_dir / CALIBRATION_FILE, json.dumps(calibration) + "\n")


def calibrate(
    reward_model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    calibration: Calibration,
    seed: int = 0,
) -> tuple[float, float]:
    """Mean and std of the raw reward of completions the starting policy samples.

    The prompts are openings of demo corpus texts (the demo RL stages' prompts).
    """
    policy, policy_tokenizer = load_model_and_tokenizer(ModelSpec(name_or_path=calibration.policy))
    prompts = demo_prompts(calibration.num_samples, seed=seed)
    completions: list[str] = []
    for start in range(0, len(prompts), calibration.batch_size):
        batch = prompts[start : start + calibration.batch_size]
        completions += sample_completions(
            policy,
            policy_tokenizer,
            batch,
            max_new_tokens=calibration.max_new_tokens,
            seed=seed + start,
        )
    scores = ModelReward(reward_model, tokenizer)(prompts, completions)
    return float(scores.mean()), float(scores.std().clamp_min(1e-6))
