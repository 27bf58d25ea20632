"""DPO: preference optimisation against a frozen reference, no reward model, no sampling."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from rlhf_lightning.data.pairs import REFERENCE_LOGP_KEYS
from rlhf_lightning.functional import DPOLossOutput, dpo_loss
from rlhf_lightning.models.reference import Reference, ReferenceMode
from rlhf_lightning.modules.optim import OptimizerFactory, SchedulerFactory
from rlhf_lightning.modules.preference import (
    PAIR_STATISTICS,
    PreferenceModule,
    ReferenceScoring,
    pair_logps,
    pair_statistics,
    score_batches,
)

__all__ = ["DPOModule", "pair_logps", "reference_logps"]


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
    chosen, rejected = score_batches(
        lambda batch: pair_logps(reference, batch, length_normalize), batches, device
    )
    return chosen, rejected


class DPOModule(ReferenceScoring, PreferenceModule):
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

    statistics = PAIR_STATISTICS

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
        super().__init__(model, tokenizer, optimizer, scheduler, max_consecutive_bad_steps)
        self.init_reference(model, reference, precompute_reference)
        self.beta = beta
        self.loss_type = loss_type
        self.label_smoothing = label_smoothing

    @property
    def length_normalize(self) -> bool:
        return self.loss_type == "ipo"  # IPO uses length-averaged log-probs

    def score_reference(
        self, reference: Reference | nn.Module, batch: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor]:
        return pair_logps(reference, batch, self.length_normalize)

    def _loss(self, batch: dict[str, Tensor]) -> DPOLossOutput:
        pi_c, pi_r = pair_logps(self.policy, batch, self.length_normalize)
        ref_c, ref_r = self.reference_logps(batch, REFERENCE_LOGP_KEYS)
        return dpo_loss(pi_c, pi_r, ref_c, ref_r, self.beta, self.loss_type, self.label_smoothing)

    def compute_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        out = self._loss(batch)
        return out.loss, pair_statistics(out)
