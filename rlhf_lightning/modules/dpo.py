"""DPO: preference optimisation against a frozen reference, no reward model, no sampling."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric
from transformers import PreTrainedTokenizerBase

from rlhf_lightning.data import PreferenceDataModule
from rlhf_lightning.data.pairs import REFERENCE_LOGP_KEYS
from rlhf_lightning.errors import ConfigError
from rlhf_lightning.functional import dpo_loss, sequence_logprobs
from rlhf_lightning.models import build_reference, disable_dropout, export_model
from rlhf_lightning.models.reference import Reference, ReferenceMode, initial_reference
from rlhf_lightning.modules.guards import GuardedOptimizerStep, NonFiniteGuard
from rlhf_lightning.modules.optim import OptimizerFactory, SchedulerFactory, configure_optimizers
from rlhf_lightning.rollout import score_tokens

log = logging.getLogger(__name__)


def pair_logps(
    model: nn.Module | Reference, batch: dict[str, Tensor], length_normalize: bool = False
) -> tuple[Tensor, Tensor]:
    """(chosen, rejected) sequence log-probs, each (B,), from one forward over 2B rows.

    Args:
        model: the policy or a reference (``rollout.score_tokens``' call convention).
        batch: a ``collate_pairs`` batch (each side (B, T), one T for both sides).
        length_normalize: average over completion tokens instead of summing (IPO).
    """
    ids = torch.cat([batch["chosen_input_ids"], batch["rejected_input_ids"]])
    mask = torch.cat([batch["chosen_attention_mask"], batch["rejected_attention_mask"]])
    targets = torch.cat([batch["chosen_completion_mask"], batch["rejected_completion_mask"]])
    logps = score_tokens(
        model, ids, mask, start=1
    ).logprobs  # (2B, T-1): every token after the first
    target_mask = targets[:, 1:].bool()
    sums = sequence_logprobs(logps, target_mask)
    if length_normalize:
        sums = sums / target_mask.sum(1).clamp_min(1)
    chosen, rejected = sums.chunk(2)
    return chosen, rejected


@torch.no_grad()
def reference_logps(
    reference: Reference,
    batches: Iterable[dict[str, Tensor]],
    length_normalize: bool = False,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, Tensor]:
    """The reference's (chosen, rejected) log-probs over `batches`, concatenated: each (N,).

    DPO's precompute path: run once over the (unshuffled) data before training, stored as
    dataset columns, after which the reference need not be held at all.
    """
    chosen, rejected = [], []
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        c, r = pair_logps(reference, batch, length_normalize)
        chosen.append(c.float().cpu())
        rejected.append(r.float().cpu())
    return torch.cat(chosen), torch.cat(rejected)


class DPOModule(GuardedOptimizerStep, L.LightningModule):
    """Direct preference optimisation (ALGORITHMS.md §4) with automatic optimisation.

    Sequence log-probs are sums over completion tokens only (prompt and padding masked); IPO
    uses their per-token averages. The implicit rewards `beta * (pi - ref)` are logged.

    The reference's log-probs come from the reference live, or from the batch when they were
    precomputed (``ref_chosen_logps``/``ref_rejected_logps``): with ``precompute_reference``
    the untrained policy (or its adapter-off base with LoRA: no copy is made) scores every
    pair once before training, the scores become dataset columns, and no reference is held.

    Args:
        model: the causal LM being trained (optionally LoRA-wrapped); dropout is turned off so
            that the policy's and the reference's log-probs are comparable.
        tokenizer: its tokenizer (for the export).
        optimizer / scheduler: factories (Hydra `_partial_`).
        beta: strength of the implicit KL constraint.
        loss_type: `sigmoid` (with `label_smoothing`), `hinge` or `ipo`.
        label_smoothing: cDPO label-flip probability (sigmoid only).
        reference: `auto` | `copy` | `adapter_off` (built now), a reference object, or None
            when every batch carries precomputed reference log-probs.
        precompute_reference: score the pairs with the initial policy before training.
    """

    model_head = "causal_lm"
    datamodule_class = PreferenceDataModule

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase | None = None,
        optimizer: OptimizerFactory = torch.optim.AdamW,
        scheduler: SchedulerFactory | None = None,
        beta: float = 0.1,
        loss_type: Literal["sigmoid", "hinge", "ipo"] = "sigmoid",
        label_smoothing: float = 0.0,
        reference: Reference | ReferenceMode | None = "auto",
        precompute_reference: bool = False,
        max_consecutive_bad_steps: int = 10,
    ) -> None:
        super().__init__()
        self.guard = NonFiniteGuard(max_consecutive_bad_steps)
        self.policy = disable_dropout(model)
        self.tokenizer = tokenizer
        self.reference_mode: ReferenceMode = reference if isinstance(reference, str) else "auto"
        self.precompute_reference = precompute_reference
        if isinstance(reference, str):
            reference = None if precompute_reference else build_reference(model, reference)
        self.reference = reference
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.beta = beta
        self.loss_type = loss_type
        self.label_smoothing = label_smoothing
        self.val_metrics = nn.ModuleDict(
            {name: MeanMetric() for name in ("loss", "accuracy", "margin", "chosen", "rejected")}
        )

    @property
    def length_normalize(self) -> bool:
        return self.loss_type == "ipo"  # IPO uses length-averaged log-probs

    def setup(self, stage: str) -> None:
        if not self.precompute_reference or self.trainer.datamodule is None:
            return
        datamodule = self.trainer.datamodule
        if (
            getattr(datamodule, "train_dataset", None) is not None
            and REFERENCE_LOGP_KEYS[0] in datamodule.train_dataset.column_names
        ):
            return  # already scored (validate_at_start ran first)
        # Before training the policy is its own reference: no copy is made at all.
        device = self.trainer.strategy.root_device
        self.policy.to(device)
        reference = initial_reference(self.policy, mode=self.reference_mode)
        datamodule.add_reference_logps(
            lambda loader: reference_logps(reference, loader, self.length_normalize, device)
        )
        self.policy.to("cpu")
        log.info(
            "Precomputed reference log-probs for %d training and %d validation pairs; "
            "no reference model is held during training.",
            datamodule.num_train_examples,
            datamodule.num_val_examples,
        )

    def _reference_pair_logps(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        if all(key in batch for key in REFERENCE_LOGP_KEYS):
            return batch[REFERENCE_LOGP_KEYS[0]], batch[REFERENCE_LOGP_KEYS[1]]
        if self.reference is None:
            raise ConfigError(
                "DPO has no reference model and the batch carries no precomputed reference "
                "log-probs. Fix: set stage.precompute_reference=true (the stage adds them) or "
                "pass a reference."
            )
        with torch.no_grad():
            return pair_logps(self.reference, batch, self.length_normalize)

    def _loss(self, batch: dict[str, Tensor]):
        pi_c, pi_r = pair_logps(self.policy, batch, self.length_normalize)
        ref_c, ref_r = self._reference_pair_logps(batch)
        return dpo_loss(pi_c, pi_r, ref_c, ref_r, self.beta, self.loss_type, self.label_smoothing)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        out = self._loss(batch)
        self.log("train/loss", out.loss, prog_bar=True)
        self.log("train/accuracy", out.accuracy)
        self.log("train/margin", out.margin)
        self.log("train/rewards_chosen", out.chosen_rewards.mean())
        self.log("train/rewards_rejected", out.rejected_rewards.mean())
        return out.loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        out = self._loss(batch)
        n = batch["chosen_input_ids"].shape[0]
        values = {
            "loss": out.loss,
            "accuracy": out.accuracy,
            "margin": out.margin,
            "chosen": out.chosen_rewards.mean(),
            "rejected": out.rejected_rewards.mean(),
        }
        for name, value in values.items():
            self.val_metrics[name].update(value, weight=n)

    def on_validation_epoch_end(self) -> None:
        names = {"chosen": "val/rewards_chosen", "rejected": "val/rewards_rejected"}
        for name, metric in self.val_metrics.items():
            if metric.update_count:
                self.log(
                    names.get(name, f"val/{name}"), metric.compute(), prog_bar=name == "accuracy"
                )
            metric.reset()

    def export(self, out_dir: Path, merge_lora: bool = False) -> None:
        """The trained policy and its tokenizer as a Hugging Face directory."""
        if self.tokenizer is None:
            raise ConfigError(
                "DPOModule.export needs the tokenizer: pass tokenizer= when building it."
            )
        export_model(self.policy, self.tokenizer, out_dir, merge_lora=merge_lora)

    def configure_optimizers(self):
        return configure_optimizers(
            self.policy,
            self.optimizer_factory,
            self.scheduler_factory,
            self.trainer.estimated_stepping_batches,
            precision=str(self.trainer.precision),
        )
