"""The PPO stage runner: policy with a value head, reference, reward source, rollouts."""

from __future__ import annotations

import logging

import lightning as L
from hydra.utils import instantiate
from omegaconf import OmegaConf

from rlhf_lightning.builders import RunContext, build_model_spec, plain
from rlhf_lightning.errors import ConfigError
from rlhf_lightning.models import disable_dropout, export_model, load_model_and_tokenizer
from rlhf_lightning.models.reference import build_reference
from rlhf_lightning.models.value_head import CausalLMWithValueHead, ValueModel
from rlhf_lightning.modules.ppo import PPOModule
from rlhf_lightning.modules.ppo_core import PPOConfig
from rlhf_lightning.rollout import SamplingConfig
from rlhf_lightning.stages.online import fit_online_rl

log = logging.getLogger(__name__)


def run_ppo(ctx: RunContext) -> L.Trainer:
    """Fit a PPOModule for `stage.iterations` rollouts and export policy + value head."""
    cfg = ctx.cfg
    if cfg.reward is None:
        raise ConfigError(
            "stage=ppo needs a reward source. Fix: reward=demo|model|callable|http|mix."
        )
    stage = cfg.stage
    lm, tokenizer = load_model_and_tokenizer(build_model_spec(cfg))
    disable_dropout(lm)  # rollout and training forwards must compute the same function
    policy = CausalLMWithValueHead(lm)
    reference = build_reference(policy, mode=stage.reference)
    critic = None
    if stage.critic == "separate":
        # Initialised from a reward model (Huang et al. 2024); its head scores every position.
        critic = disable_dropout(ValueModel.from_pretrained(stage.critic_init))
    elif stage.critic != "shared":
        raise ConfigError(f"stage.critic={stage.critic}: unknown. Fix: shared or separate.")
    config = PPOConfig(**plain(stage.ppo))
    # The module stops after stage.iterations; global_step counts optimizer steps.
    OmegaConf.update(cfg, "trainer.max_steps", -1, force_add=True)
    module = PPOModule(
        policy=policy,
        reference=reference,
        reward=instantiate(cfg.reward),
        tokenizer=tokenizer,
        config=config,
        sampling=SamplingConfig(**plain(stage.sampling), temperature=config.temperature),
        optimizer=instantiate(cfg.optim),
        scheduler=instantiate(cfg.scheduler),
        samples_path=ctx.run_dir / "samples.jsonl",
        sample_every=stage.sample_every,
        max_consecutive_bad_steps=cfg.max_consecutive_bad_steps,
        seed=cfg.seed,
        critic=critic,
        total_iterations=stage.iterations,
    )
    trainer = fit_online_rl(ctx, module)
    if not trainer.is_global_zero:
        return trainer  # one process writes the run's outputs
    if cfg.export.enabled:
        policy_dir = ctx.run_dir / "model"
        policy.save_pretrained(policy_dir)  # the LM (or adapter) plus value_head.safetensors
        tokenizer.save_pretrained(policy_dir)
        if critic is not None:  # the trained critic beside the policy
            critic.save_pretrained(policy_dir / "critic")
        if cfg.export.merge_lora and policy.is_peft:
            export_model(policy.pretrained_model, tokenizer, policy_dir, merge_lora=True)
    return trainer
