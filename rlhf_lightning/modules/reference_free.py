"""ORPO and SimPO: preference optimisation on pairs without a reference model.

Both score length-averaged completion log-probs (one forward over the 2B sequences of a batch,
as DPO) and need neither a reference model nor a precompute pass.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from rlhf_lightning.functional import orpo_loss, simpo_loss
from rlhf_lightning.modules.optim import OptimizerFactory, SchedulerFactory
from rlhf_lightning.modules.preference import (
    PAIR_STATISTICS,
    PreferenceModule,
    pair_logps,
    pair_statistics,
)


class ORPOModule(PreferenceModule):
    """Odds-ratio preference optimisation (Hong et al. 2024): SFT and preference in one stage.

    The loss is the chosen completions' NLL plus ``lam`` times the odds-ratio term
    (``functional.orpo_loss``). The NLL is the paper's: each chosen completion's mean token
    NLL, averaged over the pairs (TRL averages over all chosen tokens of the batch instead; the
    two agree when the completions have equal lengths).

    Logged: ``loss``, ``accuracy`` (pairs whose chosen completion has the higher odds), ``nll``,
    ``odds_ratio_loss`` and ``log_odds_ratio``, as ``train/*`` and ``val/*``.

    Args:
        model / tokenizer / optimizer / scheduler: as ``DPOModule``.
        lam: λ, the weight of the odds-ratio term (TRL's ``ORPOConfig.beta``, default 0.1).
    """

    statistics = ("accuracy", "nll", "odds_ratio_loss", "log_odds_ratio")

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase | None = None,
        optimizer: OptimizerFactory = torch.optim.AdamW,
        scheduler: SchedulerFactory | None = None,
        lam: float = 0.1,
        max_consecutive_bad_steps: int = 10,
    ) -> None:
        super().__init__(model, tokenizer, optimizer, scheduler, max_consecutive_bad_steps)
        self.lam = lam

    def compute_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        chosen, rejected = pair_logps(self.policy, batch, length_normalize=True)
        out = orpo_loss(chosen, rejected, -chosen.mean(), self.lam)
        return out.loss, {name: getattr(out, name) for name in self.statistics}


class SimPOModule(PreferenceModule):
    """Simple preference optimisation (Meng et al. 2024): reference-free, length-normalised.

    The implicit reward is ``beta`` times the average token log-prob of a completion; the loss
    asks the chosen reward to exceed the rejected one by the margin ``gamma``
    (``functional.simpo_loss``). Logged as DPO: ``loss``, ``accuracy``, ``margin``,
    ``rewards_chosen``, ``rewards_rejected``.

    Args:
        model / tokenizer / optimizer / scheduler: as ``DPOModule``.
        beta: β, the reward scale (the paper: 2.0-2.5).
        gamma: γ, the target reward margin, in reward units (the paper: γ/β around 0.5; TRL's
            ``CPOConfig.simpo_gamma``).
        label_smoothing: probability that a label is flipped, in [0, 0.5).
    """

    statistics = PAIR_STATISTICS

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase | None = None,
        optimizer: OptimizerFactory = torch.optim.AdamW,
        scheduler: SchedulerFactory | None = None,
        beta: float = 2.0,
        gamma: float = 1.0,
        label_smoothing: float = 0.0,
        max_consecutive_bad_steps: int = 10,
    ) -> None:
        super().__init__(model, tokenizer, optimizer, scheduler, max_consecutive_bad_steps)
        self.beta = beta
        self.gamma = gamma
        self.label_smoothing = label_smoothing

    def compute_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        chosen, rejected = pair_logps(self.policy, batch, length_normalize=True)
        out = simpo_loss(chosen, rejected, self.beta, self.gamma, self.label_smoothing)
        return out.loss, pair_statistics(out)
