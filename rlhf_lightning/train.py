"""`run(cfg)`: build everything a stage needs from the config, fit, export, report metrics.

Callable from tests and notebooks with a composed config; `python -m rlhf_lightning` calls it
through Hydra.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from rlhf_lightning.errors import ConfigError
from rlhf_lightning.functional import unigram_perplexity
from rlhf_lightning.loggers import build_loggers
from rlhf_lightning.models import ModelSpec, export_model, load_model_and_tokenizer
from rlhf_lightning.rollout import sample_completions
from rlhf_lightning.rundir import append_samples, checkpoint_path, write_metrics_json

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    """What every stage runner receives."""

    cfg: DictConfig
    run_dir: Path
    dataset: Any = None  # an in-memory `datasets.Dataset` passed from Python instead of data.path


def run(cfg: DictConfig, dataset: Any = None) -> dict[str, Any]:
    """Run the stage named by `cfg.stage.name` and return the `metrics.json` summary."""
    start = time.perf_counter()
    _quiet_third_party_output()
    run_dir = Path(cfg.run_dir).expanduser().resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    _save_resolved_config(cfg, run_dir)
    stage = cfg.stage.name
    if stage not in STAGES:
        raise ConfigError(f"stage={stage}: unknown stage. Fix: one of {', '.join(sorted(STAGES))}.")
    if cfg.ckpt_path is not None and not Path(cfg.ckpt_path).is_file():
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path}: no such checkpoint file. Fix: give "
            "<run_dir>/checkpoints/last.ckpt of an earlier run, or drop ckpt_path."
        )
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    trainer = STAGES[stage](RunContext(cfg=cfg, run_dir=run_dir, dataset=dataset))
    summary = write_metrics_json(
        run_dir, stage, trainer.global_step, time.perf_counter() - start, {"run_dir": str(run_dir)}
    )
    log.info("Run directory: %s", run_dir)
    return summary


def run_sft(ctx: RunContext) -> L.Trainer:
    """SFT: tokenise the dataset, fit the SFTModule, export the model, print samples."""
    from rlhf_lightning.data import SFTDataModule
    from rlhf_lightning.modules.sft import SFTModule

    cfg = ctx.cfg
    model, tokenizer = load_model_and_tokenizer(build_model_spec(cfg))
    datamodule = SFTDataModule(tokenizer=tokenizer, dataset=ctx.dataset, **_plain(cfg.data))
    datamodule.setup("fit")
    baseline = unigram_perplexity(
        datamodule.target_tokens("train"), datamodule.target_tokens("validation"), len(tokenizer)
    )
    log.info("Validation unigram perplexity (train-split frequencies): %.1f", baseline)
    module = SFTModule(
        model=model,
        optimizer=instantiate(cfg.optim),
        scheduler=instantiate(cfg.scheduler),
        unigram_perplexity=baseline,
    )
    trainer = build_trainer(cfg, ctx.run_dir)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    trainer.save_checkpoint(checkpoint_path(ctx.run_dir))
    _validate_final_weights(trainer, module, datamodule)
    _write_samples(ctx, module.model, tokenizer, trainer.global_step)
    if cfg.export.enabled:
        export_model(
            module.model, tokenizer, ctx.run_dir / "model", merge_lora=cfg.export.merge_lora
        )
    return trainer


STAGES = {"sft": run_sft}


def build_model_spec(cfg: DictConfig) -> ModelSpec:
    spec = instantiate(cfg.model, _convert_="all")
    if not isinstance(spec, ModelSpec):
        raise ConfigError("model: the model config must build a ModelSpec (model=demo|tiny|...).")
    return spec


def build_trainer(cfg: DictConfig, run_dir: Path) -> L.Trainer:
    """A Lightning Trainer with the run-directory loggers and checkpointing wired in."""
    callbacks: list[Callback] = [
        instantiate(spec) for spec in (cfg.callbacks or {}).values() if spec is not None
    ]
    callbacks.append(
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            save_top_k=0,
            save_last=True,
            every_n_train_steps=cfg.checkpoint.every_n_steps,
        )
    )
    loggers = build_loggers(cfg.logger, run_dir, run_name=f"{cfg.stage.name}-{run_dir.name}")
    trainer_kwargs = _plain(cfg.trainer)
    return L.Trainer(
        **trainer_kwargs,
        default_root_dir=str(run_dir),
        logger=loggers,
        callbacks=callbacks,
    )


def _validate_final_weights(trainer: L.Trainer, module: L.LightningModule, datamodule) -> None:
    """Validate once more when the last scheduled validation did not see the final weights."""
    interval = trainer.val_check_interval
    if isinstance(interval, int) and trainer.global_step % interval != 0:
        trainer.validate(module, datamodule=datamodule, verbose=False)


def _write_samples(ctx: RunContext, model: torch.nn.Module, tokenizer, step: int) -> None:
    stage_cfg = ctx.cfg.stage
    prompts = list(stage_cfg.sample_prompts)
    prompts = (prompts * stage_cfg.num_samples)[: stage_cfg.num_samples]
    if not prompts:
        return
    completions = sample_completions(
        model,
        tokenizer,
        prompts,
        max_new_tokens=stage_cfg.sample_max_new_tokens,
        seed=ctx.cfg.seed,
    )
    append_samples(
        ctx.run_dir,
        [
            {"step": step, "prompt": p, "completion": c}
            for p, c in zip(prompts, completions, strict=True)
        ],
    )
    print("\nSamples from the trained model:")
    for prompt, completion in zip(prompts, completions, strict=True):
        print(f"  [{prompt}]{completion}")


def _save_resolved_config(cfg: DictConfig, run_dir: Path) -> None:
    # Hydra's own copy keeps interpolations such as ${hydra:runtime.output_dir}; the contract
    # is the resolved config, and runs started from Python get the same file.
    path = run_dir / ".hydra" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(cfg, resolve=True))


def _drop_advert(record: logging.LogRecord) -> bool:
    return "litlogger" not in record.getMessage()


def _quiet_third_party_output() -> None:
    datasets.disable_progress_bars()
    # Lightning prints through its own handler; propagating too would print every line twice.
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).propagate = False
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_drop_advert)
    warnings.filterwarnings(
        "ignore", message=r".*Experiment logs directory .* exists and is not empty.*"
    )
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")


def _plain(node: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
