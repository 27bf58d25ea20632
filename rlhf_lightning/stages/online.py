"""What the online RL stage runners (PPO, GRPO, RLOO) share after building their module."""

from __future__ import annotations

import lightning as L

from rlhf_lightning.builders import RunContext, fit_and_checkpoint, plain
from rlhf_lightning.data.prompts import PromptDataModule
from rlhf_lightning.modules.online_rl import OnlineRLModule


def fit_online_rl(ctx: RunContext, module: OnlineRLModule) -> L.Trainer:
    """Fit `module` on the configured prompts, then write the before/after comparison rows."""
    datamodule = PromptDataModule(
        dataset=ctx.dataset, tokenizer=module.tokenizer, **plain(ctx.cfg.data)
    )
    trainer = fit_and_checkpoint(ctx, module, datamodule)
    compare_prompts = ctx.cfg.stage.compare_prompts
    if compare_prompts and trainer.is_global_zero:
        module.write_comparison(datamodule.first_batch(compare_prompts), seed=ctx.cfg.seed)
    return trainer
