"""PPOConfig: PPO's settings for ``PPOTrainer``, with classic TRL's (0.5) field names.

One config serves both uses of the trainer: the custom loop (``step``), which builds the
algorithm from it (:meth:`PPOConfig.algorithm`), and ``train()``, which runs ``stage=ppo`` with
the same settings as CLI overrides (:meth:`PPOConfig.stage_overrides`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

from rlhf_lightning.errors import ConfigError
from rlhf_lightning.functional import KLInReward, clipped_token_loss, gae_advantages, token_mean
from rlhf_lightning.modules.online import RLAlgorithm, ScoreShaping, ValueLoss
from rlhf_lightning.trainers.configs import override_value

# TRL's kl_penalty names -> this project's KL estimators (TRL's "kl" is k1).
_KL_PENALTIES = {"kl": "k1", "k1": "k1", "abs": "abs", "mse": "mse", "k3": "k3", "full": "full"}


@dataclass
class PPOConfig:
    """PPO hyper-parameters (classic TRL's names; defaults are this project's where noted).

    Attributes:
        learning_rate: Adam's learning rate (TRL 0.5's default).
        batch_size: samples per ``step`` (checked); None takes what ``step`` is given.
        mini_batch_size: samples per minibatch; None: ``num_minibatches`` minibatches.
        num_minibatches: minibatches per pass when ``mini_batch_size`` is None (at most one
            per sample).
        ppo_epochs: passes over each batch.
        gradient_accumulation_steps: minibatches per optimizer step.
        cliprange / cliprange_value: policy ratio clip, and value clip around the old values.
        vf_coef: weight of the value loss.
        gamma / lam: GAE discount and trace decay.
        kl_penalty: the per-token KL in the reward: ``kl`` (k1), ``abs``, ``mse``, ``full``
            (exact over the vocabulary) or ``k3``.
        init_kl_coef: the (initial) KL coefficient (TRL: 0.2).
        adap_kl_ctrl: Ziegler et al.'s controller toward ``target`` over ``horizon`` (TRL: on).
        whiten_rewards: whiten per-token rewards before GAE (keeps their mean).
        max_grad_norm: gradient clipping; None disables (TRL: None).
        ratio_threshold: skip a minibatch whose mean ratio exceeds this.
        early_stopping / target_kl: stop the epochs when the policy KL exceeds 1.5 x target_kl.
        use_score_scaling / use_score_norm / score_clip: running scaling, normalisation,
            clipping of the scores.
        missing_eos_penalty: subtracted from the score of responses that never stopped.
        temperature: sampling temperature; log-probs are computed at the same temperature.
        seed: seeds minibatch shuffling and ``train()``.
        output_dir: where ``save_pretrained``, ``log_stats`` and ``train()`` write; None:
            ``outputs/ppo/<date>_<time>``.
        log_with: trackers for ``log_stats`` besides metrics.csv: ``tensorboard``, ``wandb``.
        steps: ``train()``'s PPO iterations (one batch of prompts each); None: the stage's.
        max_new_tokens: ``train()``'s response budget; None: the stage's.
        overrides: further CLI overrides for ``train()``.
    """

    learning_rate: float = 1.41e-5
    batch_size: int | None = None
    mini_batch_size: int | None = None
    num_minibatches: int = 4
    ppo_epochs: int = 4
    gradient_accumulation_steps: int = 1
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    kl_penalty: Literal["kl", "k1", "abs", "mse", "k3", "full"] = "kl"
    init_kl_coef: float = 0.05
    adap_kl_ctrl: bool = False
    target: float = 6.0
    horizon: int = 10000
    whiten_rewards: bool = False
    max_grad_norm: float | None = 1.0
    ratio_threshold: float = 10.0
    early_stopping: bool = False
    target_kl: float = 1.0
    use_score_scaling: bool = False
    use_score_norm: bool = False
    score_clip: float | None = None
    missing_eos_penalty: float | None = None
    temperature: float = 1.0
    seed: int = 0
    output_dir: str | None = None
    log_with: str | Sequence[str] | None = None
    steps: int | None = None
    max_new_tokens: int | None = None
    overrides: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kl_penalty not in _KL_PENALTIES:
            raise ConfigError(
                f"PPOConfig(kl_penalty={self.kl_penalty!r}). Fix: one of "
                f"{sorted(_KL_PENALTIES)} (kl is the k1 estimator)."
            )
        if self.mini_batch_size is not None and self.batch_size is not None:
            self.minibatches_for(self.batch_size)  # a batch that does not split: said now

    def minibatches_for(self, batch: int) -> int:
        """Minibatches per pass over a batch of `batch` samples."""
        if self.mini_batch_size is None:
            return min(self.num_minibatches, batch)
        if batch % self.mini_batch_size:
            raise ConfigError(
                f"PPOConfig: a batch of {batch} does not split into minibatches of "
                f"mini_batch_size={self.mini_batch_size}. Fix: make batch_size a multiple of "
                "mini_batch_size."
            )
        return batch // self.mini_batch_size

    def algorithm(self, batch: int | None = None) -> RLAlgorithm:
        """The same composition as ``stage=ppo``: GAE, clipped token loss, token mean, KL in
        the reward, a value loss; minibatches for a batch of `batch` samples."""
        minibatches = self.num_minibatches if batch is None else self.minibatches_for(batch)
        return RLAlgorithm(
            advantage=partial(
                gae_advantages, gamma=self.gamma, lam=self.lam, whiten_rewards=self.whiten_rewards
            ),
            policy_loss=partial(clipped_token_loss, clip_low=self.cliprange),
            aggregation=token_mean,
            kl=KLInReward(_KL_PENALTIES[self.kl_penalty]),
            kl_coef=self.init_kl_coef,
            adaptive_kl=self.adap_kl_ctrl,
            kl_target=self.target,
            kl_horizon=self.horizon,
            epochs=self.ppo_epochs,
            num_minibatches=minibatches,
            gradient_accumulation_steps=min(self.gradient_accumulation_steps, minibatches),
            value_loss=ValueLoss(self.vf_coef, self.cliprange_value),
            shaping=ScoreShaping(
                self.missing_eos_penalty,
                self.use_score_scaling,
                self.use_score_norm,
                self.score_clip,
            ),
            max_grad_norm=self.max_grad_norm,
            ratio_threshold=self.ratio_threshold,
            target_kl=self.target_kl if self.early_stopping else None,
            log_entropy=True,
        )

    def stage_overrides(self) -> list[str]:
        """The CLI overrides of ``stage=ppo`` with these settings (``PPOTrainer.train``)."""
        algorithm = "stage.algorithm"
        named = {
            "optim.lr": self.learning_rate,
            "seed": self.seed,
            "data.batch_size": self.batch_size,
            f"{algorithm}.num_minibatches": (
                None if self.batch_size is None else self.minibatches_for(self.batch_size)
            ),
            f"{algorithm}.epochs": self.ppo_epochs,
            f"{algorithm}.gradient_accumulation_steps": self.gradient_accumulation_steps,
            f"{algorithm}.policy_loss.clip_low": self.cliprange,
            f"{algorithm}.policy_loss.clip_high": self.cliprange,
            f"{algorithm}.value_loss.clip": self.cliprange_value,
            f"{algorithm}.value_loss.coef": self.vf_coef,
            f"{algorithm}.advantage.gamma": self.gamma,
            f"{algorithm}.advantage.lam": self.lam,
            f"{algorithm}.advantage.whiten_rewards": self.whiten_rewards,
            f"{algorithm}.kl.estimator": _KL_PENALTIES[self.kl_penalty],
            f"{algorithm}.kl_coef": self.init_kl_coef,
            f"{algorithm}.adaptive_kl": self.adap_kl_ctrl,
            f"{algorithm}.kl_target": self.target,
            f"{algorithm}.kl_horizon": self.horizon,
            f"{algorithm}.max_grad_norm": self.max_grad_norm,
            f"{algorithm}.ratio_threshold": self.ratio_threshold,
            f"{algorithm}.target_kl": self.target_kl if self.early_stopping else None,
            f"{algorithm}.shaping.scale": self.use_score_scaling,
            f"{algorithm}.shaping.normalize": self.use_score_norm,
            f"{algorithm}.shaping.clip": self.score_clip,
            f"{algorithm}.shaping.missing_stop_penalty": self.missing_eos_penalty,
            "stage.sampling.temperature": self.temperature,
            "stage.sampling.max_new_tokens": self.max_new_tokens,
            "stage.iterations": self.steps,
        }
        # None means "off" for the algorithm's optional parts, so it is passed as null; the
        # data, sampling and iteration keys keep the stage's value instead.
        keep_stage = (
            "data.",
            "stage.sampling.max_new_tokens",
            "stage.iterations",
            f"{algorithm}.num_minibatches",
        )
        args = [
            f"{key}={override_value(value)}"
            for key, value in named.items()
            if value is not None or not key.startswith(keep_stage)
        ]
        return [*args, *self.overrides]
