"""Compose the config `python -m rlhf_lightning stage=<stage> <overrides>` would get, from Python.

Built-in model names (``demo:sft``, ...) are left as they are here; ``rlhf_lightning.api``
resolves them (``rlhf_lightning.builtins``) before a run starts.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from rlhf_lightning.paths import config_dir

# What a run that runs other stages (stage=pipeline, a chain) hands each of them.
PLACEMENT_KEYS = ("accelerator", "devices", "strategy", "precision", "num_nodes")
SHARED_NODES = ("seed", "threads", "logger", "callbacks")


def compose_stage(
    stage: str, overrides: Sequence[str] = (), run_dir: str | Path | None = None
) -> DictConfig:
    """The composed config of `stage` with `overrides`, writing into `run_dir` (when None,
    ``outputs/<stage>/<date>_<time>`` under the current directory, as the CLI's)."""
    overrides = [f"stage={stage}", *overrides]
    if GlobalHydra.instance().is_initialized():
        # Inside a running Hydra app (e.g. a stage building the demo policy it starts from).
        cfg = compose("config", overrides=overrides)
    else:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose("config", overrides=overrides)
    with open_dict(cfg):
        cfg.run_dir = str(run_dir or default_run_dir(stage))
    return cfg


def share_run_settings(sub: DictConfig, cfg: DictConfig, group: str) -> DictConfig:
    """`sub` (a stage run inside the run `cfg`) with `cfg`'s seed, torch threads, loggers,
    callbacks and trainer placement, and W&B runs grouped under `group`; changed in place, before it runs."""
    with open_dict(sub):
        for name in SHARED_NODES:
            sub[name] = cfg[name]
        for key in PLACEMENT_KEYS:
            if key in cfg.trainer:
                sub.trainer[key] = cfg.trainer[key]
        if "wandb" in (sub.logger or {}) and sub.logger.wandb.get("group") is None:
            sub.logger.wandb.group = group  # one W&B group per outer run
    return sub


def default_run_dir(stage: str, root: str | Path = "outputs") -> Path:
    """``<root>/<stage>/<date>_<time>`` (the CLI's layout), absolute; a suffix ``-2``, ``-3``,
    ... when two runs start within the same second."""
    base = Path(root).resolve() / stage / time.strftime("%Y-%m-%d_%H-%M-%S")
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path
