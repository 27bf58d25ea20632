"""Configs of the online-RL trainer classes (GRPO, RLOO), with TRL's field names."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from rlhf_lightning.errors import ConfigError
from rlhf_lightning.trainers.configs import _STEP_KEYS, TrainingConfig, override_value

# Online RL counts iterations (a rollout and its updates), and clips in the algorithm: the
# Lightning Trainer's step counters and gradient clipping do not apply.
_ONLINE_KEYS = {
    **{
        k: v for k, v in _STEP_KEYS.items() if k not in ("per_device_eval_batch_size", "eval_steps")
    },
    "max_steps": "stage.iterations",
    "gradient_accumulation_steps": "stage.algorithm.gradient_accumulation_steps",
    "max_grad_norm": "stage.algorithm.max_grad_norm",
}
del _ONLINE_KEYS["per_device_train_batch_size"]  # completions, converted to prompts below
# TRL's GRPO loss_type -> the aggregation that computes the same normalisation.
_LOSS_TYPES = {
    "grpo": "sequence_mean",
    "bnpo": "token_mean",
    "dapo": "global_token_mean",
    "dr_grpo": "constant_normalizer",
}


@dataclass
class OnlineConfig(TrainingConfig):
    """What the online-RL trainers share (TRL's GRPO/RLOO names).

    Attributes:
        per_device_train_batch_size: completions per iteration, as in TRL; it must divide by
            ``num_generations`` (the prompts per iteration are the quotient).
        num_generations: completions sampled per prompt (G); TRL's default is 8.
        beta: the KL coefficient; 0 holds no reference model.
        num_iterations: passes over each rollout (GRPO's mu).
        num_mini_batches: minibatches per pass.
        epsilon / epsilon_high: the clip range below / above 1 (epsilon_high: DAPO's
            clip-higher; None: epsilon).
        max_completion_length / max_prompt_length: response budget and prompt cut, in tokens.
        temperature / top_p / top_k: sampling (log-probs are computed at the temperature).
        mask_truncated_completions: leave responses that never stopped out of the loss.
        reward_weights: one weight per reward function (default 1 each).
    """

    _keys: ClassVar[dict[str, str]] = _ONLINE_KEYS

    num_generations: int = 4
    beta: float | None = None
    num_iterations: int | None = None
    num_mini_batches: int | None = None
    epsilon: float | None = None
    epsilon_high: float | None = None
    max_completion_length: int | None = None
    max_prompt_length: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    mask_truncated_completions: bool | None = None
    reward_weights: Sequence[float] | None = None

    def _stage_overrides(self) -> list[str]:
        named = {
            "stage.algorithm.group_size": self.num_generations,
            "data.batch_size": self._prompts_per_iteration(),
            "stage.algorithm.kl_coef": self.beta,
            "stage.algorithm.epochs": self.num_iterations,
            "stage.algorithm.num_minibatches": self.num_mini_batches,
            "stage.algorithm.policy_loss.clip_low": self.epsilon,
            "stage.algorithm.policy_loss.clip_high": (
                self.epsilon if self.epsilon_high is None else self.epsilon_high
            ),
            "stage.sampling.max_new_tokens": self.max_completion_length,
            "data.max_prompt_tokens": self.max_prompt_length,
            "stage.sampling.temperature": self.temperature,
            "stage.sampling.top_p": self.top_p,
            "stage.sampling.top_k": self.top_k,
            "stage.algorithm.mask_truncated": self.mask_truncated_completions,
        }
        return [f"{k}={override_value(v)}" for k, v in named.items() if v is not None]

    def _prompts_per_iteration(self) -> int | None:
        size = self.per_device_train_batch_size
        if size is None:
            return None
        if size % self.num_generations:
            raise ConfigError(
                f"per_device_train_batch_size={size} completions do not split into groups of "
                f"num_generations={self.num_generations}. Fix: make it a multiple of "
                "num_generations (the prompts per iteration are the quotient)."
            )
        return size // self.num_generations


@dataclass
class GRPOConfig(OnlineConfig):
    """GRPO (``GRPOTrainer``).

    Attributes:
        loss_type: ``grpo`` (mean per sequence), ``bnpo`` (token mean per minibatch), ``dapo``
            (token mean over the whole batch; this stage's default) or ``dr_grpo`` (a constant
            normaliser).
        scale_rewards: ``group`` / True (divide by the group's std), ``batch``, or ``none`` /
            False (Dr. GRPO).
    """

    loss_type: str | None = None
    scale_rewards: str | bool | None = None

    def _stage_overrides(self) -> list[str]:
        args = super()._stage_overrides()
        if self.loss_type is not None:
            if self.loss_type not in _LOSS_TYPES:
                raise ConfigError(
                    f"loss_type={self.loss_type!r}: not a GRPO loss here. Fix: one of "
                    f"{sorted(_LOSS_TYPES)}."
                )
            args.append(f"aggregation={_LOSS_TYPES[self.loss_type]}")
        if self.scale_rewards is not None:
            scale = self.scale_rewards
            if isinstance(scale, bool):
                scale = "group" if scale else "none"
            if scale not in ("group", "batch", "none"):
                raise ConfigError(
                    f"scale_rewards={self.scale_rewards!r}. Fix: group, batch or none "
                    "(True / False for group / none)."
                )
            args.append(f"stage.algorithm.advantage.scale={scale}")
        return args


@dataclass
class RLOOConfig(OnlineConfig):
    """RLOO (``RLOOTrainer``): the leave-one-out baseline over ``num_generations`` samples."""
