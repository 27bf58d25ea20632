"""The reward-model stage runner: fit on preference pairs, calibrate, export."""

from __future__ import annotations

import logging

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn
from transformers import PreTrainedTokenizerBase

from rlhf_lightning.builders import RunContext, build_model_spec, fit_and_checkpoint, plain
from rlhf_lightning.data import PreferenceDataModule
from rlhf_lightning.data.demo_prompts import demo_prompts
from rlhf_lightning.models import ModelSpec, export_model, load_model_and_tokenizer
from rlhf_lightning.models.dropout import disable_dropout
from rlhf_lightning.modules.reward import RewardModule
from rlhf_lightning.rewards import ModelReward
from rlhf_lightning.rollout import sample_completions

log = logging.getLogger(__name__)


def run_reward(ctx: RunContext) -> L.Trainer:
    """Fit a RewardModule; optionally calibrate it on the starting policy; export."""
    cfg = ctx.cfg
    model, tokenizer = load_model_and_tokenizer(build_model_spec(cfg), head="reward")
    disable_dropout(model)  # scores must not depend on a dropout draw
    datamodule = PreferenceDataModule(tokenizer=tokenizer, dataset=ctx.dataset, **plain(cfg.data))
    module = RewardModule(
        max_consecutive_bad_steps=cfg.max_consecutive_bad_steps,
        model=model,
        optimizer=instantiate(cfg.optim),
        scheduler=instantiate(cfg.scheduler),
        center_coef=cfg.stage.center_coef,
        use_margin=cfg.stage.use_margin,
    )
    trainer = fit_and_checkpoint(ctx, module, datamodule)
    if not trainer.is_global_zero:
        return trainer  # one process writes the run's outputs
    if cfg.stage.calibration.enabled:
        mean, std = calibrate(module.model, tokenizer, cfg.stage.calibration, seed=cfg.seed)
        # Stored with the model: ModelReward returns (score - mean) / std.
        module.model.config.reward_calibration = {"mean": mean, "std": std}
        log.info("Reward calibration on the starting policy: mean %.4f, std %.4f", mean, std)
    if cfg.export.enabled:
        export_model(
            module.model, tokenizer, ctx.run_dir / "model", merge_lora=cfg.export.merge_lora
        )
    return trainer


def calibrate(
    reward_model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    calibration: DictConfig,
    seed: int = 0,
) -> tuple[float, float]:
    """Mean and std of the raw reward of completions the starting policy samples.

    The prompts are openings of demo corpus texts (the demo RL stages' prompts).
    """
    policy, policy_tokenizer = load_model_and_tokenizer(ModelSpec(name_or_path=calibration.policy))
    prompts = demo_prompts(calibration.num_samples, seed=seed)
    completions: list[str] = []
    for start in range(0, len(prompts), calibration.batch_size):
        batch = prompts[start : start + calibration.batch_size]
        completions += sample_completions(
            policy,
            policy_tokenizer,
            batch,
            max_new_tokens=calibration.max_new_tokens,
            seed=seed + start,
        )
    scores = ModelReward(reward_model, tokenizer)(prompts, completions)
    return float(scores.mean()), float(scores.std().clamp_min(1e-6))
