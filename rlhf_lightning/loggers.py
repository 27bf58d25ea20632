"""Experiment loggers: metrics.csv always, plus TensorBoard and W&B on request."""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from omegaconf import DictConfig

from rlhf_lightning.rundir import resolved_config

log = logging.getLogger(__name__)


def build_loggers(
    logger_cfg: DictConfig | dict | None, run_dir: Path, run_name: str
) -> list[Logger]:
    """Instantiate the selected loggers; the CSV logger writes `<run_dir>/metrics.csv` always.

    A W&B logger without a ``group`` inside a Hydra multirun joins the sweep's group (the
    sweep directory's name); the pipeline sets the group of its stages itself.
    """
    loggers: list[Logger] = [CSVLogger(save_dir=run_dir, name="", version="")]
    for name, spec in (logger_cfg or {}).items():
        if name == "csv":
            continue
        if name == "tensorboard":
            loggers.append(TensorBoardLogger(save_dir=run_dir, name="tensorboard", version=""))
            continue
        extra: dict[str, Any] = {}
        if name == "wandb" and spec.get("group") is None:
            group = default_group(run_dir)
            if group is not None:
                extra["group"] = group
        loggers.append(instantiate(spec, save_dir=str(run_dir), name=run_name, **extra))
    return loggers


def default_group(run_dir: Path) -> str | None:
    """The sweep a multirun job belongs to (its sweep directory's name); None otherwise."""
    return run_dir.parent.name if is_multirun() else None


def is_multirun() -> bool:
    """True inside a Hydra multirun job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def log_config(loggers: list[Logger], cfg: DictConfig) -> None:
    """Send the resolved config to the experiment trackers (W&B, TensorBoard) as hyperparameters.

    The CSV logger is skipped: the run directory already holds ``.hydra/config.yaml``.
    """
    trackers = [lg for lg in loggers if not isinstance(lg, CSVLogger)]
    if not trackers:
        return
    params = resolved_config(cfg)
    for tracker in trackers:
        tracker.log_hyperparams(params)


def wandb_credentials_present() -> bool:
    """True when W&B can authenticate without asking: an API key in the env or in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_logger(
    save_dir: str,
    name: str,
    project: str = "rlhf_lightning",
    mode: str = "auto",
    entity: str | None = None,
    group: str | None = None,
    tags: list[str] | None = None,
    **kwargs: Any,
) -> WandbLogger:
    """A W&B logger that never blocks: offline unless credentials exist (mode=auto).

    Offline runs land in `<save_dir>/wandb/offline-run-*` and upload later with
    `wandb sync <that dir>`.
    """
    if mode == "auto":
        mode = "online" if wandb_credentials_present() else "offline"
    if mode == "offline":
        log.info("W&B logging offline into %s/wandb (sync later with `wandb sync`).", save_dir)
    return WandbLogger(
        save_dir=save_dir,
        name=name,
        project=project,
        entity=entity,
        group=group,
        tags=list(tags or []),
        offline=mode == "offline",
        mode=mode,
        **kwargs,
    )
