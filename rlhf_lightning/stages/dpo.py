"""The DPO stage runner: policy + frozen reference on preference pairs."""

from __future__ import annotations

import lightning as L
from hydra.utils import instantiate

from rlhf_lightning.builders import RunContext, build_model_spec, fit_and_checkpoint, plain
from rlhf_lightning.data import PreferenceDataModule
from rlhf_lightning.models import disable_dropout, export_model, load_model_and_tokenizer
from rlhf_lightning.models.reference import build_reference
from rlhf_lightning.modules.dpo import DPOModule


def run_dpo(ctx: RunContext) -> L.Trainer:
    """Fit a DPOModule; with LoRA the reference is the same base with the adapter off."""
    cfg = ctx.cfg
    policy, tokenizer = load_model_and_tokenizer(build_model_spec(cfg))
    disable_dropout(policy)  # the policy's and the reference's log-probs must be comparable
    module = DPOModule(
        policy=policy,
        reference=build_reference(policy, mode=cfg.stage.reference),
        optimizer=instantiate(cfg.optim),
        scheduler=instantiate(cfg.scheduler),
        beta=cfg.stage.beta,
        loss_type=cfg.stage.loss_type,
        label_smoothing=cfg.stage.label_smoothing,
    )
    datamodule = PreferenceDataModule(tokenizer=tokenizer, dataset=ctx.dataset, **plain(cfg.data))
    trainer = fit_and_checkpoint(ctx, module, datamodule)
    if cfg.export.enabled:
        export_model(policy, tokenizer, ctx.run_dir / "model", merge_lora=cfg.export.merge_lora)
    return trainer
