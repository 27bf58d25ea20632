"""DPO: preference optimisation against a frozen reference, no reward model, no sampling."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from rlhf_lightning.data.pairs import REFERENCE_LOGP_KEYS
from rlhf_lightning.errors import ConfigError
from rlhf_lightning.functional import dpo_loss, position_ids_from_mask, token_logprobs
from rlhf_lightning.models.reference import Reference
from rlhf_lightning.modules.guards import GuardedOptimizerStep, NonFiniteGuard
from rlhf_lightning.modules.optim import OptimizerFactory, SchedulerFactory, configure_optimizers

LogitsFn = Callable[[Tensor, Tensor], Tensor]


def pair_logps(
    batch: dict[str, Tensor], logits_fn: LogitsFn, length_normalize: bool = False
) -> tuple[Tensor, Tensor]:
    """(chosen, rejected) sequence log-probs, each (B,), from one forward over 2B rows.

    Args:
        batch: a ``collate_pairs`` batch (each side (B, T), one T for both sides).
        logits_fn: ``(input_ids, attention_mask) -> logits`` of shape (2B, T, V).
        length_normalize: average over completion tokens instead of summing (IPO).
    """
    ids = torch.cat([batch["chosen_input_ids"], batch["rejected_input_ids"]])
    mask = torch.cat([batch["chosen_attention_mask"], batch["rejected_attention_mask"]])
    targets = torch.cat([batch["chosen_completion_mask"], batch["rejected_completion_mask"]])
    logits = logits_fn(ids, mask)  # (2B, T, V)
    logps = token_logprobs(logits[:, :-1], ids[:, 1:])  # position t scores token t+1
    target_mask = targets[:, 1:].bool()
    sums = torch.where(target_mask, logps, 0.0).sum(1)
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

    def logits_fn(ids: Tensor, mask: Tensor) -> Tensor:
        return reference.reference_logits(ids, mask, position_ids_from_mask(mask))

    chosen, rejected = [], []
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        c, r = pair_logps(batch, logits_fn, length_normalize)
        chosen.append(c.float().cpu())
        rejected.append(r.float().cpu())
    return torch.cat(chosen), torch.cat(rejected)


class DPOModule(GuardedOptimizerStep, L.LightningModule):
    """Direct preference optimisation (ALGORITHMS.md §4) with automatic optimisation.

    Sequence log-probs are sums over completion tokens only (prompt and padding masked); IPO
    uses their per-token averages. The implicit rewards `beta * (pi - ref)` are logged.

    The reference's log-probs come from `reference` live, or from the batch when they were
    precomputed (``ref_chosen_logps``/``ref_rejected_logps``, see `reference_logps`); then
    `reference` may be None and no second model is held.

    Args:
        policy: the causal LM being trained (optionally LoRA-wrapped).
        reference: the frozen reference (a copy, or the adapter-off base with LoRA), or None
            when every batch carries precomputed reference log-probs.
        optimizer / scheduler: factories (Hydra `_partial_`).
        beta: strength of the implicit KL constraint.
        loss_type: `sigmoid` (with `label_smoothing`), `hinge` or `ipo`.
        label_smoothing: cDPO label-flip probability (sigmoid only).
    """

    def __init__(
        self,
        policy: nn.Module,
        reference: Reference | None,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        beta: float = 0.1,
        loss_type: Literal["sigmoid", "hinge", "ipo"] = "sigmoid",
        label_smoothing: float = 0.0,
        max_consecutive_bad_steps: int = 10,
    ) -> None:
        super().__init__()
        self.guard = NonFiniteGuard(max_consecutive_bad_steps)
        self.policy = policy
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

    def _policy_logits(self, ids: Tensor, mask: Tensor) -> Tensor:
        return self.policy(
            input_ids=ids,
            attention_mask=mask,
            position_ids=position_ids_from_mask(mask),
            use_cache=False,  # a training forward: no KV cache to fill
        ).logits

    def _reference_logits(self, ids: Tensor, mask: Tensor) -> Tensor:
        return self.reference.reference_logits(ids, mask, position_ids_from_mask(mask))

    def _reference_pair_logps(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        if all(key in batch for key in REFERENCE_LOGP_KEYS):
            return tuple(batch[key] for key in REFERENCE_LOGP_KEYS)
        if self.reference is None:
            raise ConfigError(
                "DPO has no reference model and the batch carries no precomputed reference "
                "log-probs. Fix: set stage.precompute_reference=true (the stage adds them) or "
                "pass a reference."
            )
        with torch.no_grad():
            return pair_logps(batch, self._reference_logits, self.length_normalize)

    def _loss(self, batch: dict[str, Tensor]):
        pi_c, pi_r = pair_logps(batch, self._policy_logits, self.length_normalize)
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

    def configure_optimizers(self):
        return configure_optimizers(
            self.policy,
            self.optimizer_factory,
            self.scheduler_factory,
            self.trainer.estimated_stepping_batches,
            precision=str(self.trainer.precision),
        )
