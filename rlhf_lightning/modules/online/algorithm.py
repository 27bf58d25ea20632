"""`RLAlgorithm`: an online-RL algorithm as a composition of four parts and a few numbers.

PPO, GRPO, RLOO, REINFORCE++ and GSPO are configurations of this one dataclass (``conf/stage/``
with the ``advantage``, ``policy_loss``, ``aggregation`` and ``kl`` config groups), built by
Hydra and run by :class:`~rlhf_lightning.modules.online.core.OnlineRLCore`:

- ``advantage``: ``(AdvantageInputs) -> Advantages`` (``functional/estimators.py``);
- ``policy_loss``: ``(logp, old_logp, advantages, mask) -> PolicyLoss`` (``functional/policy.py``);
- ``aggregation``: ``(losses, mask, AggregationContext) -> scalar`` (``functional/aggregation.py``);
- ``kl``: where the KL penalty goes, ``KLInReward`` or ``KLInLoss`` (``functional/kl_placement.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from rlhf_lightning.errors import ConfigError
from rlhf_lightning.functional import (
    AdvantageInputs,
    Advantages,
    AggregationContext,
    KLInLoss,
    KLInReward,
    PolicyLoss,
)
from rlhf_lightning.modules.online.shaping import ScoreShaping

AdvantageEstimator = Callable[[AdvantageInputs], Advantages]
PolicyLossFn = Callable[[Tensor, Tensor, Tensor, Tensor], PolicyLoss]
Aggregation = Callable[[Tensor, Tensor, AggregationContext], Tensor]
KLPlacement = KLInReward | KLInLoss


@dataclass
class ValueLoss:
    """The critic's clipped value loss, added to the policy loss (PPO).

    Attributes:
        coef: its weight in the total loss (TRL ``vf_coef``).
        clip: half-width of the clip around the rollout-time values (TRL ``cliprange_value``).
    """

    coef: float = 0.1
    clip: float = 0.2


@dataclass
class RLAlgorithm:
    """One online-RL algorithm (``algorithm.*`` in the config).

    Attributes:
        advantage / policy_loss / aggregation / kl: the four parts (see the module docstring).
        kl_coef: the KL coefficient (PPO's β, GRPO's β); 0 holds no reference model at all.
        adaptive_kl: steer the coefficient towards ``kl_target`` (Ziegler et al. 2019) over
            ``kl_horizon`` samples.
        group_size: samples per prompt (1 for PPO; GRPO's G, RLOO's k).
        epochs: optimisation passes over each rollout (PPO's ppo_epochs, GRPO's μ).
        num_minibatches: minibatches per pass; the rollout must split into them evenly.
        gradient_accumulation_steps: minibatches per optimizer step; divides num_minibatches.
        value_loss: the critic's loss; None for algorithms without a critic.
        shaping: what happens to the scores first.
        max_grad_norm: gradient clipping per optimizer step; None disables.
        ratio_threshold: skip a minibatch whose mean ratio exceeds this (a broken batch,
            classic TRL); None never skips.
        target_kl: stop the passes early when the policy KL exceeds 1.5 x this; None never.
        mask_truncated: leave responses that never stopped out of the loss (DAPO).
        dynamic_sampling: leave groups whose shaped scores are all equal out of the loss (DAPO's
            dynamic sampling, as a filter: the rollout is not topped up with new prompts). The
            minibatches are drawn from the whole batch, so every process takes the same steps,
            and then train on their kept rows only: each aggregation averages over the
            informative rows and tokens as a batch of only those would (with data parallelism
            per process, except ``global_token_mean``, which divides by the batch-wide count),
            and dropped rows cost no forward or backward. An iteration with no informative
            group makes no update. Logged: ``rollout/dropped_groups``.
        log_entropy: log the policy's entropy (``train/entropy``; one more pass over the
            logits per minibatch).
        importance_cap: when an inference engine sampled the rollout (``rollout=vllm``),
            weigh each token's loss by min(pi_old / pi_sampler, cap), truncated importance
            sampling (Yao et al. 2025); None trusts the sampler.
    """

    advantage: AdvantageEstimator
    policy_loss: PolicyLossFn
    aggregation: Aggregation
    kl: KLPlacement = field(default_factory=KLInReward)
    kl_coef: float = 0.0
    adaptive_kl: bool = False
    kl_target: float = 6.0
    kl_horizon: int = 10000
    group_size: int = 1
    epochs: int = 1
    num_minibatches: int = 1
    gradient_accumulation_steps: int = 1
    value_loss: ValueLoss | dict[str, Any] | None = None
    shaping: ScoreShaping | dict[str, Any] = field(default_factory=ScoreShaping)
    max_grad_norm: float | None = 1.0
    ratio_threshold: float | None = None
    target_kl: float | None = None
    mask_truncated: bool = False
    dynamic_sampling: bool = False
    log_entropy: bool = False
    importance_cap: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.value_loss, dict):
            self.value_loss = ValueLoss(**self.value_loss)
        if isinstance(self.shaping, dict):
            self.shaping = ScoreShaping(**self.shaping)
        if self.group_size < 1 or self.epochs < 1 or self.num_minibatches < 1:
            raise ConfigError(
                f"algorithm.group_size={self.group_size}, epochs={self.epochs}, "
                f"num_minibatches={self.num_minibatches}: each must be >= 1."
            )
        if self.num_minibatches % self.gradient_accumulation_steps:
            raise ConfigError(
                f"algorithm.gradient_accumulation_steps={self.gradient_accumulation_steps} does "
                f"not divide algorithm.num_minibatches={self.num_minibatches}. Fix: pick a divisor."
            )
        if self.dynamic_sampling and self.group_size < 2:
            raise ConfigError(
                f"algorithm.dynamic_sampling=true with group_size={self.group_size}: a group of "
                "one sample never differs from itself, so every row would be dropped. Fix: "
                "group_size >= 2 (GRPO, RLOO), or dynamic_sampling=false."
            )
        if self.kl_coef < 0:
            raise ConfigError(f"algorithm.kl_coef={self.kl_coef}: must be >= 0.")

    @property
    def needs_reference(self) -> bool:
        """Whether a reference model must be held (a KL penalty that can be non-zero)."""
        return self.kl_coef > 0 or self.adaptive_kl

    @property
    def optimizer_steps_per_iteration(self) -> int:
        return self.epochs * self.num_minibatches // self.gradient_accumulation_steps
