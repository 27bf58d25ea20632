"""The DPO stage runner: policy + frozen reference on preference pairs."""

from __future__ import annotations

import functools
import logging

import lightning as L
import torch
from hydra.utils import instantiate

from rlhf_lightning.builders import RunContext, build_model_spec, fit_and_checkpoint, plain
from rlhf_lightning.data import PreferenceDataModule
from rlhf_lightning.models import disable_dropout, export_model, load_model_and_tokenizer
from rlhf_lightning.models.reference import build_reference, initial_reference
from rlhf_lightning.modules.dpo import DPOModule, reference_logps

log = logging.getLogger(__name__)


def _precompute_device(cfg) -> str:
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    return "cuda" if torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda") else "cpu"


def run_dpo(ctx: RunContext) -> L.Trainer:
    """Fit a DPOModule; with LoRA the reference is the same base with the adapter off.

    With ``stage.precompute_reference=true`` the reference scores every pair once before
    training (the untrained policy, or its adapter-off base with LoRA: no copy is made), the
    scores become dataset columns, and no reference forward runs during training.
    """
    cfg = ctx.cfg
    policy, tokenizer = load_model_and_tokenizer(build_model_spec(cfg))
    disable_dropout(policy)  # the policy's and the reference's log-probs must be comparable
    datamodule = PreferenceDataModule(tokenizer=tokenizer, dataset=ctx.dataset, **plain(cfg.data))
    if cfg.stage.precompute_reference:
        # Before training the policy is its own reference: no copy is made at all.
        device = _precompute_device(cfg)
        policy.to(device)
        datamodule.add_reference_logps(
            functools.partial(
                reference_logps,
                initial_reference(policy, mode=cfg.stage.reference),
                length_normalize=cfg.stage.loss_type == "ipo",
                device=device,
            )
        )
        policy.to("cpu")
        log.info(
            "Precomputed reference log-probs for %d training and %d validation pairs; "
            "no reference model is held during training.",
            datamodule.num_train_examples,
            datamodule.num_val_examples,
        )
        reference = None
    else:
        reference = build_reference(policy, mode=cfg.stage.reference)
    module = DPOModule(
        max_consecutive_bad_steps=cfg.max_consecutive_bad_steps,
        policy=policy,
        reference=reference,
        optimizer=instantiate(cfg.optim),
        scheduler=instantiate(cfg.scheduler),
        beta=cfg.stage.beta,
        loss_type=cfg.stage.loss_type,
        label_smoothing=cfg.stage.label_smoothing,
    )
    trainer = fit_and_checkpoint(ctx, module, datamodule)
    if not trainer.is_global_zero:
        return trainer  # one process writes the run's outputs
    if cfg.export.enabled:
        export_model(policy, tokenizer, ctx.run_dir / "model", merge_lora=cfg.export.merge_lora)
    return trainer
