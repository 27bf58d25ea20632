"""The SFT stage runner."""

from __future__ import annotations

import logging

import lightning as L
from hydra.utils import instantiate
from torch import nn
from transformers import PreTrainedTokenizerBase

from rlhf_lightning.builders import RunContext, build_model_spec, fit_and_checkpoint, plain
from rlhf_lightning.data import SFTDataModule
from rlhf_lightning.functional import unigram_perplexity
from rlhf_lightning.models import export_model, load_model_and_tokenizer
from rlhf_lightning.modules.sft import SFTModule
from rlhf_lightning.rollout import sample_completions
from rlhf_lightning.rundir import append_samples

log = logging.getLogger(__name__)


def run_sft(ctx: RunContext) -> L.Trainer:
    """Tokenise the dataset, fit the SFTModule, export the model, print samples."""
    cfg = ctx.cfg
    model, tokenizer = load_model_and_tokenizer(build_model_spec(cfg))
    datamodule = SFTDataModule(tokenizer=tokenizer, dataset=ctx.dataset, **plain(cfg.data))
    datamodule.setup("fit")
    baseline = unigram_perplexity(
        datamodule.target_tokens("train"), datamodule.target_tokens("validation"), len(tokenizer)
    )
    log.info("Validation unigram perplexity (train-split frequencies): %.1f", baseline)
    module = SFTModule(
        max_consecutive_bad_steps=cfg.max_consecutive_bad_steps,
        model=model,
        optimizer=instantiate(cfg.optim),
        scheduler=instantiate(cfg.scheduler),
        unigram_perplexity=baseline,
    )
    trainer = fit_and_checkpoint(ctx, module, datamodule)
    if not trainer.is_global_zero:
        return trainer  # one process writes the run's outputs
    write_samples(ctx, module.model, tokenizer, trainer.global_step)
    if cfg.export.enabled:
        export_model(
            module.model, tokenizer, ctx.run_dir / "model", merge_lora=cfg.export.merge_lora
        )
    return trainer


def write_samples(
    ctx: RunContext, model: nn.Module, tokenizer: PreTrainedTokenizerBase, step: int
) -> None:
    """Sample `stage.num_samples` completions of `stage.sample_prompts`; print and save them."""
    stage_cfg = ctx.cfg.stage
    prompts = list(stage_cfg.sample_prompts)
    prompts = (prompts * stage_cfg.num_samples)[: stage_cfg.num_samples]
    if not prompts:
        return
    completions = sample_completions(
        model, tokenizer, prompts, max_new_tokens=stage_cfg.sample_max_new_tokens, seed=ctx.cfg.seed
    )
    rows = [
        {"step": step, "prompt": p, "completion": c}
        for p, c in zip(prompts, completions, strict=True)
    ]
    append_samples(ctx.run_dir, rows)
    print("\nSamples from the trained model:")
    for row in rows:
        print(f"  [{row['prompt']}]{row['completion']}")
