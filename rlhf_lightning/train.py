"""`run(cfg)`: run the stage the config names, fill the run directory, return its metrics.

Callable from tests and notebooks with a composed config (`rlhf_lightning.api.compose_config`);
`python -m rlhf_lightning` calls it through Hydra.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import lightning as L
from omegaconf import DictConfig, OmegaConf

from rlhf_lightning.builders import RunContext
from rlhf_lightning.errors import ConfigError
from rlhf_lightning.rundir import redact_secrets, write_metrics_json

log = logging.getLogger(__name__)


def _sft(ctx: RunContext) -> L.Trainer:
    from rlhf_lightning.stages.sft import run_sft

    return run_sft(ctx)


def _reward(ctx: RunContext) -> L.Trainer:
    from rlhf_lightning.stages.reward import run_reward

    return run_reward(ctx)


def _ppo(ctx: RunContext) -> L.Trainer:
    from rlhf_lightning.stages.ppo import run_ppo

    return run_ppo(ctx)


def _dpo(ctx: RunContext) -> L.Trainer:
    from rlhf_lightning.stages.dpo import run_dpo

    return run_dpo(ctx)


def _group_rl(ctx: RunContext) -> L.Trainer:
    from rlhf_lightning.stages.group_rl import run_group_rl

    return run_group_rl(ctx)


STAGES: dict[str, Callable[[RunContext], L.Trainer]] = {
    "grpo": _group_rl,
    "rloo": _group_rl,
    "sft": _sft,
    "reward": _reward,
    "ppo": _ppo,
    "dpo": _dpo,
}


def run(cfg: DictConfig, dataset: Any = None) -> dict[str, Any]:
    """Run the stage named by `cfg.stage.name` and return the `metrics.json` summary."""
    start = time.perf_counter()
    _quiet_third_party_output()
    run_dir = Path(cfg.run_dir).expanduser().resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    _save_resolved_config(cfg, run_dir)
    stage = cfg.stage.name
    if stage == "pipeline":
        from rlhf_lightning.stages.pipeline import run_pipeline

        return run_pipeline(cfg, run)
    if stage not in STAGES:
        names = ", ".join(sorted([*STAGES, "pipeline"]))
        raise ConfigError(f"stage={stage}: unknown stage. Fix: one of {names}.")
    if cfg.ckpt_path is not None and not Path(cfg.ckpt_path).is_file():
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path}: no such checkpoint file. Fix: give "
            "<run_dir>/checkpoints/last.ckpt of an earlier run, or drop ckpt_path."
        )
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    try:
        trainer = STAGES[stage](RunContext(cfg=cfg, run_dir=run_dir, dataset=dataset))
    finally:
        _finish_wandb_run()
    if not trainer.is_global_zero:
        # Other data-parallel ranks: rank 0 writes metrics.json and the report.
        return {"stage": stage, "global_step": trainer.global_step, "metrics": {}}
    summary = write_metrics_json(
        run_dir, stage, trainer.global_step, time.perf_counter() - start, {"run_dir": str(run_dir)}
    )
    if cfg.get("report", True):
        _write_report(run_dir)
    log.info("Run directory: %s", run_dir)
    return summary


def _write_report(run_dir: Path) -> None:
    try:
        from rlhf_lightning.report import write_report

        log.info("Report: %s", write_report(run_dir))
    except Exception as err:  # a finished run stays finished even if its plots fail
        log.warning(
            "The report could not be written (%s: %s); the run is complete.",
            type(err).__name__,
            err,
        )


def _finish_wandb_run() -> None:
    # WandbLogger reuses a run still open in the process, so the next stage run from the same
    # Python process (a notebook, the pipeline) would log into this run's directory.
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def _save_resolved_config(cfg: DictConfig, run_dir: Path) -> None:
    # Hydra's own copy keeps interpolations such as ${hydra:runtime.output_dir}; the contract
    # is the resolved config, and runs started from Python get the same file.
    path = run_dir / ".hydra" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(redact_secrets(resolved))))


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
    # PPO checkpoints are taken after a whole iteration (rollout + all minibatch updates).
    warnings.filterwarnings("ignore", message=".*no pre-optimization state was saved.*")
    # The frozen reference model stays in eval mode on purpose.
    warnings.filterwarnings(
        "ignore", message=r".*module\(s\) in eval mode at the start of training.*"
    )
