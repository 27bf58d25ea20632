"""The critic an online-RL stage trains: a value head on the policy, a separate model, or none."""

from __future__ import annotations

from typing import Literal

from torch import nn

from rlhf_lightning.errors import ConfigError
from rlhf_lightning.models import CausalLMWithValueHead, ValueModel, disable_dropout

Critic = Literal["none", "shared", "separate"]


def with_critic(
    model: nn.Module, critic: Critic, critic_init: str | None = None
) -> tuple[nn.Module, nn.Module | None]:
    """``(policy, separate critic or None)`` for `model` and the stage's `critic` choice.

    Args:
        model: the causal LM being trained.
        critic: ``shared`` (a value head on the policy's trunk), ``separate`` (a value model
            initialised from `critic_init`, a reward model: Huang et al. 2024; its head scores
            every position) or ``none``.
        critic_init: the reward model a separate critic starts from.
    """
    if critic == "shared":
        policy = model if isinstance(model, CausalLMWithValueHead) else CausalLMWithValueHead(model)
        return policy, None
    if critic == "separate":
        if critic_init is None:
            raise ConfigError(
                "stage.critic=separate needs stage.critic_init (a reward model directory, e.g. "
                "demo:reward or <reward run>/model)."
            )
        return model, disable_dropout(ValueModel.from_pretrained(critic_init))
    if critic != "none":
        raise ConfigError(f"stage.critic={critic}: unknown. Fix: none, shared or separate.")
    return model, None
