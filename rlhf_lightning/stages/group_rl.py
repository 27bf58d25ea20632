"""The GRPO and RLOO stage runner."""

from __future__ import annotations

import lightning as L
from hydra.utils import instantiate
from omegaconf import OmegaConf

from rlhf_lightning.builders import RunContext, build_model_spec, plain
from rlhf_lightning.errors import ConfigError
from rlhf_lightning.models import disable_dropout, export_model, load_model_and_tokenizer
from rlhf_lightning.models.reference import build_reference
from rlhf_lightning.modules.group_core import GroupRLConfig
from rlhf_lightning.modules.group_rl import GroupRLModule
from rlhf_lightning.rollout import SamplingConfig
from rlhf_lightning.stages.online import fit_online_rl


def run_group_rl(ctx: RunContext) -> L.Trainer:
    """Fit GRPO or RLOO (`stage.name`) for `stage.iterations` rollouts; export the policy."""
    cfg = ctx.cfg
    if cfg.reward is None:
        raise ConfigError(
            f"stage={cfg.stage.name} needs a reward source. Fix: reward=demo|callable|..."
        )
    stage = cfg.stage
    policy, tokenizer = load_model_and_tokenizer(build_model_spec(cfg))
    disable_dropout(policy)
    config = GroupRLConfig(algorithm=stage.name, **plain(stage.algorithm))
    # GRPO with beta 0 needs no reference at all (nothing is held in memory for it).
    needs_reference = config.beta > 0
    reference = build_reference(policy, mode=stage.reference) if needs_reference else None
    OmegaConf.update(cfg, "trainer.max_steps", -1, force_add=True)
    module = GroupRLModule(
        policy=policy,
        reference=reference,
        reward=instantiate(cfg.reward),
        tokenizer=tokenizer,
        config=config,
        sampling=SamplingConfig(
            **plain(stage.sampling),
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
        ),
        optimizer=instantiate(cfg.optim),
        scheduler=instantiate(cfg.scheduler),
        total_iterations=stage.iterations,
        samples_path=ctx.run_dir / "samples.jsonl",
        sample_every=stage.sample_every,
        max_consecutive_bad_steps=cfg.max_consecutive_bad_steps,
        seed=cfg.seed,
    )
    trainer = fit_online_rl(ctx, module)
    if not trainer.is_global_zero:
        return trainer  # one process writes the run's outputs
    if cfg.export.enabled:
        export_model(policy, tokenizer, ctx.run_dir / "model", merge_lora=cfg.export.merge_lora)
    return trainer
