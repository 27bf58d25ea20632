"""`run(cfg)`: one runner for every stage — instantiate, fit, finish, export — filling the run
directory and returning its metrics.

A stage config names everything by ``_target_``: ``cfg.model`` builds a ``ModelSpec``,
``cfg.data`` the DataModule, ``cfg.stage`` the LightningModule (with its typed sub-configs: the
optimizer factory, the algorithm, the reward source, ...; ``stage.name`` and
``stage.validate_at_start`` are the runner's). The runner loads the
model the module asks for (``model_head``), hands it and its tokenizer to the DataModule and the
module, fits, then lets the module finish (samples, calibration, before/after comparison) and
export itself. The config is saved once, resolved, before anything is built, and never edited.

Built-in model names (``demo:sft``, ...) must already be directories: the CLI and
``rlhf_lightning.api`` resolve them first (``rlhf_lightning.builtins``).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import datasets
import lightning as L
import transformers
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from rlhf_lightning.builders import (
    fit_and_checkpoint,
    stop_signals_name_the_checkpoint,
    validate_only,
)
from rlhf_lightning.errors import ConfigError, RLHFError
from rlhf_lightning.models import ModelSpec, load_model_and_tokenizer
from rlhf_lightning.models.loading import check_context_length
from rlhf_lightning.run_card import write_run_card
from rlhf_lightning.rundir import hold_run_dir, save_resolved_config, write_metrics_json
from rlhf_lightning.threads import apply_threads

log = logging.getLogger(__name__)

# `stage.*` keys the runner reads; every other key of `stage` is an argument of its module.
RUNNER_KEYS = ("name", "validate_at_start")


def run(cfg: DictConfig, dataset: Any = None) -> dict[str, Any]:
    """Run the stage `cfg` describes and return the `metrics.json` summary.

    Args:
        cfg: a composed root config (``rlhf_lightning.api.compose_config``), built-in names
            resolved.
        dataset: an in-memory ``datasets.Dataset`` / ``DatasetDict`` used instead of
            ``data.path``.
    """
    run_dir = Path(cfg.run_dir).expanduser().resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    # One run per directory; data-parallel ranks share their rank 0's.
    with hold_run_dir(run_dir) if _is_first_process() else nullcontext():
        return _run(cfg, run_dir, dataset)


def _is_first_process() -> bool:
    return rank_zero_only.rank == 0 and os.environ.get("NODE_RANK", "0") == "0"


def _run(cfg: DictConfig, run_dir: Path, dataset: Any) -> dict[str, Any]:
    start = time.perf_counter()
    _quiet_third_party_output()
    save_resolved_config(cfg, run_dir)
    stage = cfg.stage.name
    if "_target_" not in cfg.stage:
        raise ConfigError(
            f"stage={stage}: the stage config names no module to build (stage._target_). Fix: "
            "pick one of the stages in conf/stage/ (sft, reward, dpo, ppo, grpo, rloo, ...)."
        )
    if cfg.ckpt_path is not None and not Path(cfg.ckpt_path).is_file():
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path}: no such checkpoint file. Fix: give "
            "<run_dir>/checkpoints/last.ckpt of an earlier run, or drop ckpt_path."
        )
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    try:
        trainer = _fit_stage(cfg, run_dir, dataset)
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


def _fit_stage(cfg: DictConfig, run_dir: Path, dataset: Any) -> L.Trainer:
    """Instantiate -> fit (or validate, for a stage that does not train) -> (rank 0) finish
    and export."""
    module_class = get_class(cfg.stage._target_)
    spec = _build(cfg.model, "model", ModelSpec)
    model, tokenizer = load_model_and_tokenizer(spec, head=module_class.model_head)
    parameters = sum(p.numel() for p in model.parameters())
    apply_threads(cfg.get("threads", "auto"), parameters, processes=_local_processes(cfg))
    datamodule = _build(
        cfg.data, "data", module_class.datamodule_class, tokenizer=tokenizer, dataset=dataset
    )
    check_context_length(model, getattr(datamodule, "max_length", None), "data.max_length")
    module_cfg = {k: v for k, v in _plain(cfg.stage).items() if k not in RUNNER_KEYS}
    module = _build(module_cfg, "stage", module_class, model=model, tokenizer=tokenizer)
    # A module that does not train (stage=eval) gets one validation pass instead of a fit.
    fit = fit_and_checkpoint if getattr(module_class, "trains", True) else validate_only
    trainer = fit(cfg, run_dir, module, datamodule)
    if trainer.is_global_zero:  # one process writes the run's outputs
        with stop_signals_name_the_checkpoint(run_dir):
            finish = getattr(module, "finish", None)
            if finish is not None:
                finish()
            if cfg.export.enabled:
                module.export(run_dir / "model", merge_lora=cfg.export.merge_lora)
                # After the fit's last validation: the card has the final metrics.
                write_run_card(
                    cfg, run_dir, trainer.global_step, in_memory_data=dataset is not None
                )
    return trainer


def _local_processes(cfg: DictConfig) -> int:
    """Processes of this run on this machine that share its CPUs (CPU data parallelism)."""
    trainer = cfg.trainer
    on_cpu = str(trainer.get("accelerator", "auto")) == "cpu"
    devices = trainer.get("devices", 1)
    return int(devices) if on_cpu and isinstance(devices, int) else 1


def _plain(node: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]


# Hydra's message for a config key the target does not take, and the key's node.
_UNEXPECTED = re.compile(
    r"(\w+)\.__init__\(\) got an unexpected keyword argument '(\w+)'.*\nfull_key: (\S+)", re.S
)


def _build(node: DictConfig | dict[str, Any], key: str, expected: type, **kwargs: Any) -> Any:
    """``instantiate(node, **kwargs)``, with a project error naming `key` when it fails or
    builds something other than `expected`."""
    try:
        built = instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, RLHFError):
            raise cause from err
        stray = _UNEXPECTED.search(str(err))
        if isinstance(cause, TypeError) and stray:
            cls, arg, where = stray.groups()
            raise ConfigError(
                f"{where}: {cls} takes no argument '{arg}' ({where}.{arg} is left over from "
                f"another config, e.g. one an experiment set). Fix: drop it with "
                f"'~{where}.{arg}', or choose the config that takes it."
            ) from err
        raise ConfigError(
            f"{key}: could not be built ({_first_line(err)}). Fix: check {key}.*."
        ) from err
    if not isinstance(built, expected):
        raise ConfigError(
            f"{key}: builds a {type(built).__name__}, but this stage needs a {expected.__name__}. "
            f"Fix: pick a {key.split('.')[0]} config made for this stage."
        )
    return built


def _first_line(err: BaseException) -> str:
    text = str(err.__cause__ or err).strip()
    return text.splitlines()[0] if text else type(err).__name__


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


def _drop_advert(record: logging.LogRecord) -> bool:
    return "litlogger" not in record.getMessage()


def _quiet_third_party_output() -> None:
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()  # "Writing model shards" at each export
    # Lightning prints through its own handler; propagating too would print every line twice.
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).propagate = False
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_drop_advert)
    warnings.filterwarnings(
        "ignore", message=r".*Experiment logs directory .* exists and is not empty.*"
    )
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
    # RL checkpoints are taken after a whole iteration (rollout + all minibatch updates).
    warnings.filterwarnings("ignore", message=".*no pre-optimization state was saved.*")
    # Prompt data offers its evaluation split to stage=eval's validation pass; the RL stages
    # evaluate it with their own evaluator, not Lightning's loop.
    warnings.filterwarnings("ignore", message=".*`val_dataloader` but have no `validation_step`.*")
    # The frozen reference model stays in eval mode on purpose.
    warnings.filterwarnings(
        "ignore", message=r".*module\(s\) in eval mode at the start of training.*"
    )
