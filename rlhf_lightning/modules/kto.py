"""KTO: unpaired desirable / undesirable completions against a frozen reference."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics import CatMetric
from torchmetrics.functional.classification import binary_auroc
from transformers import PreTrainedTokenizerBase

from rlhf_lightning.data.kto import KTO_PREFIXES, KTO_REFERENCE_KEYS, KTODataModule
from rlhf_lightning.distributed import all_reduce_sum
from rlhf_lightning.functional import KTOLossOutput, kto_loss, kto_reference_point
from rlhf_lightning.models.reference import Reference, ReferenceMode
from rlhf_lightning.modules.optim import OptimizerFactory, SchedulerFactory
from rlhf_lightning.modules.preference import PreferenceModule, ReferenceScoring, side_logps


class KTOModule(ReferenceScoring, PreferenceModule):
    """Kahneman-Tversky optimisation (Ethayarajh et al. 2024) with automatic optimisation.

    Each row is a completion labelled desirable or undesirable (``KTODataModule``; paired data
    is converted). The implicit reward is ``β (logπ - logπ_ref)`` of the completion (sums over
    its tokens); the reference point z0 is the KL estimate on each row's mismatched sequence,
    averaged over the global batch (every data-parallel rank's rows) and clamped at 0. The
    policy scores the mismatched sequences without gradient, as z0 is a constant of the loss.

    Logged: ``train/loss``, ``train/kl`` (z0), ``train/rewards_desirable`` and
    ``train/rewards_undesirable`` (class means of the implicit reward, when the batch has the
    class). Validation is computed over the whole validation set at once (z0 from all its
    mismatched sequences): ``val/loss``, ``val/kl``, the two class means, ``val/margin`` (their
    difference) and ``val/separation``, the probability that a desirable row's reward exceeds
    an undesirable row's (AUROC; ties count one half): KTO's counterpart of pairwise accuracy.

    Args:
        model / tokenizer / optimizer / scheduler: as ``DPOModule``.
        beta: β, the implicit-reward scale (TRL default 0.1).
        desirable_weight / undesirable_weight: λ_D and λ_U of the paper; with n_D, n_U rows of
            each class, keep ``λ_D n_D / (λ_U n_U)`` in [1, 4/3].
        reference / precompute_reference: as ``DPOModule`` (the stored columns are
            ``ref_logps`` and ``ref_kl_logps``).
    """

    datamodule_class = KTODataModule

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase | None = None,
        optimizer: OptimizerFactory = torch.optim.AdamW,
        scheduler: SchedulerFactory | None = None,
        beta: float = 0.1,
        desirable_weight: float = 1.0,
        undesirable_weight: float = 1.0,
        reference: Reference | ReferenceMode | None = "auto",
        precompute_reference: bool = False,
        max_consecutive_bad_steps: int = 10,
    ) -> None:
        super().__init__(model, tokenizer, optimizer, scheduler, max_consecutive_bad_steps)
        self.init_reference(model, reference, precompute_reference)
        self.beta = beta
        self.desirable_weight = desirable_weight
        self.undesirable_weight = undesirable_weight
        # Validation rows, gathered over ranks at the end: z0 and AUROC need all of them.
        self.val_rows = nn.ModuleDict({k: CatMetric() for k in ("logratio", "label", "kl")})

    def score_reference(
        self, reference: Reference | nn.Module, batch: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor]:
        """(own sequence, mismatched sequence) log-probs, one forward over 2B rows."""
        own, mismatched = side_logps(reference, batch, KTO_PREFIXES)
        return own, mismatched

    def _log_ratios(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Policy and reference log-probs of each row, and the mismatched log-ratio (no grad)."""
        (policy,) = side_logps(self.policy, batch, KTO_PREFIXES[:1])
        with torch.no_grad():
            (policy_kl,) = side_logps(self.policy, batch, KTO_PREFIXES[1:])
        reference, reference_kl = self.reference_logps(batch, KTO_REFERENCE_KEYS)
        return policy, reference, policy_kl - reference_kl

    def _loss(self, logps: Tensor, reference: Tensor, labels: Tensor, kl: Tensor) -> KTOLossOutput:
        z0 = kto_reference_point(kl, torch.zeros_like(kl))
        return kto_loss(
            logps, reference, labels, z0, self.beta, self.desirable_weight, self.undesirable_weight
        )

    def compute_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        policy, reference, kl = self._log_ratios(batch)
        # z0 is a mean over the global batch: the same value on every data-parallel rank.
        total = all_reduce_sum(torch.stack([kl.sum(), kl.new_tensor(float(kl.numel()))]))
        out = self._loss(policy, reference, batch["label"], (total[0] / total[1]).reshape(1))
        return out.loss, {
            "kl": out.kl_reference_point,
            **class_rewards(out.rewards, batch["label"]),
        }

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        policy, reference, kl = self._log_ratios(batch)
        self.val_rows["logratio"].update(policy - reference)
        self.val_rows["label"].update(batch["label"].float())
        self.val_rows["kl"].update(kl)

    def on_validation_epoch_end(self) -> None:
        if not self.val_rows["label"].update_count:
            return
        logratio, label, kl = (self.val_rows[k].compute() for k in ("logratio", "label", "kl"))
        for metric in self.val_rows.values():
            metric.reset()
        desirable = label.bool()
        out = self._loss(logratio, torch.zeros_like(logratio), desirable, kl)
        metrics = {"val/loss": out.loss, "val/kl": out.kl_reference_point}
        by_class = class_rewards(out.rewards, desirable)
        metrics |= {f"val/{name}": value for name, value in by_class.items()}
        if len(by_class) == 2:
            metrics["val/margin"] = by_class["rewards_desirable"] - by_class["rewards_undesirable"]
            metrics["val/separation"] = binary_auroc(out.rewards, desirable.long())
        for name, value in metrics.items():
            self.log(name, value, prog_bar=name == "val/separation")


def class_rewards(rewards: Tensor, desirable: Tensor) -> dict[str, Tensor]:
    """Mean implicit reward of the desirable and of the undesirable rows (those present)."""
    means = {}
    for name, rows in (("rewards_desirable", desirable), ("rewards_undesirable", ~desirable)):
        if rows.any():
            means[name] = rewards[rows].mean()
    return means
