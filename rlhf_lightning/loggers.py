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

log = logging.getLogger(__name__)


def build_loggers(
    logger_cfg: DictConfig | dict | None, run_dir: Path, run_name: str
) -> list[Logger]:
    """Instantiate the selected loggers; the CSV logger writes `<run_dir>/metrics.csv` always."""
    loggers: list[Logger] = [CSVLogger(save_dir=run_dir, name="", version="")]
    for name, spec in (logger_cfg or {}).items():
        if name == "csv":
            continue
        if name == "tensorboard":
            loggers.append(TensorBoardLogger(save_dir=run_dir, name="tensorboard", version=""))
        else:
            loggers.append(instantiate(spec, save_dir=str(run_dir), name=run_name))
    return loggers


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
