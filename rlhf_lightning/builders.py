"""The Lightning Trainer of a run (loggers, checkpoints, strategy) and the fit around it."""

from __future__ import annotations

import logging
import pickle
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf
from torch import nn

from rlhf_lightning.callbacks import CheckpointOnInterrupt, RunProgressBar
from rlhf_lightning.callbacks.ranks import RanksAgree
from rlhf_lightning.callbacks.resume import InterruptAt, ResumeState
from rlhf_lightning.callbacks.run_config import RunConfigInCheckpoint, check_resume
from rlhf_lightning.checkpoint_io import AtomicCheckpointIO
from rlhf_lightning.deadline import CallInterrupted
from rlhf_lightning.errors import ConfigError, RunInterrupted
from rlhf_lightning.loggers import build_loggers, log_config
from rlhf_lightning.rundir import checkpoint_path, resolved_config
from rlhf_lightning.strategies import build_strategy, strategy_name

log = logging.getLogger(__name__)


def build_trainer(cfg: DictConfig, run_dir: Path, module: nn.Module | None = None) -> L.Trainer:
    """A Lightning Trainer with the run-directory loggers and checkpointing wired in.

    `module` lets an FSDP preset (`wrap: decoder_layers`) find the model's decoder layer classes.

    Checkpoints also carry the RNG states and the position in an unfinished epoch
    (`ResumeState`); with `interrupt_at` set the fit stops there as if interrupted, to be
    continued with `ckpt_path`.
    """
    callbacks: list[Callback] = [
        instantiate(spec) for spec in (cfg.callbacks or {}).values() if spec is not None
    ]
    callbacks.append(CheckpointOnInterrupt(checkpoint_path(run_dir)))
    callbacks.append(
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            save_top_k=0,
            save_last=True,
            every_n_train_steps=cfg.checkpoint.every_n_steps,
        )
    )
    callbacks.append(ResumeState())
    callbacks.append(RunConfigInCheckpoint(resolved_config(cfg)))
    callbacks.append(RanksAgree())
    if cfg.get("interrupt_at") is not None:
        callbacks.append(InterruptAt(int(cfg.interrupt_at)))
    if cfg.trainer.get("enable_progress_bar", True) and not any(
        isinstance(c, ProgressBar) for c in callbacks
    ):
        callbacks.append(RunProgressBar())
    loggers = build_loggers(cfg.logger, run_dir, run_name=f"{cfg.stage.name}-{run_dir.name}")
    log_config(loggers, cfg)
    trainer_args: dict[str, Any] = OmegaConf.to_container(cfg.trainer, resolve=True)  # type: ignore[assignment]
    # A name passes through; a mapping (trainer=fsdp|deepspeed_zero2|deepspeed_zero3) becomes
    # Lightning's FSDPStrategy / DeepSpeedStrategy (rlhf_lightning/strategies.py).
    trainer_args["strategy"] = build_strategy(
        cfg.trainer.strategy, model=module, accelerator=cfg.trainer.get("accelerator")
    )
    if strategy_name(cfg.trainer.strategy).startswith(("auto", "ddp", "single")):
        # One full checkpoint file: written beside its target and renamed into place. (FSDP and
        # DeepSpeed write sharded checkpoints with their own IO.)
        trainer_args["plugins"] = [*(trainer_args.get("plugins") or []), AtomicCheckpointIO()]
    return L.Trainer(
        **trainer_args,
        default_root_dir=str(run_dir),
        logger=loggers,
        callbacks=callbacks,
    )


def fit_and_checkpoint(
    cfg: DictConfig,
    run_dir: Path,
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
) -> L.Trainer:
    """Fit (resuming from `ckpt_path` when set), write last.ckpt, validate the final weights.

    With ``stage.validate_at_start`` a fresh run validates the initial weights first, so the
    metrics start at step 0 (the starting point every curve and summary table compares with).
    """
    trainer = build_trainer(cfg, run_dir, module)
    if cfg.stage.get("validate_at_start") and cfg.ckpt_path is None:
        trainer.validate(module, datamodule=datamodule, verbose=False)
    try:
        if cfg.ckpt_path is not None:
            check_resume(cfg.ckpt_path, resolved_config(cfg))
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    except (SIGTERMException, CallInterrupted) as err:
        raise _interrupted(trainer, run_dir) from err
    except pickle.UnpicklingError as err:
        # torch.load(weights_only=True) refused a Python object: nothing from the file ran.
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path}: not loaded, the file holds Python objects other "
            "than tensors and plain values, and unpickling them could run code from it "
            f"({_refused_global(err)}). Fix: resume from a last.ckpt "
            "written by rlhf_lightning, or re-save the checkpoint's state dicts with plain "
            "values."
        ) from err
    except RuntimeError as err:
        if cfg.ckpt_path is None or "PytorchStreamReader" not in str(err):
            raise
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path}: not a readable checkpoint (the file is cut short "
            "or is not a torch checkpoint). Fix: resume from another checkpoint, e.g. the "
            "previous periodic one in <run_dir>/checkpoints/."
        ) from err
    trainer.save_checkpoint(checkpoint_path(run_dir))
    interval = trainer.val_check_interval
    # Validate once more when the last scheduled validation did not see the final weights.
    if isinstance(interval, int) and trainer.global_step % interval != 0:
        trainer.validate(module, datamodule=datamodule, verbose=False)
    return trainer


def validate_only(
    cfg: DictConfig,
    run_dir: Path,
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
) -> L.Trainer:
    """One validation pass for a stage that does not train (``stage=eval``): no checkpoint."""
    trainer = build_trainer(cfg, run_dir, module)
    trainer.validate(module, datamodule=datamodule, verbose=False)
    return trainer


def _refused_global(err: pickle.UnpicklingError) -> str:
    """The line of torch's refusal naming the Python object it would not load."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return next((line for line in lines if "GLOBAL" in line), lines[0] if lines else "")[:200]


@contextmanager
def stop_signals_name_the_checkpoint(run_dir: Path) -> Iterator[None]:
    """While a trained run writes its results (samples, the export): SIGTERM or Ctrl+C end it
    with the message naming the checkpoint from which the same command writes them (an export
    is whole or absent, `rundir.atomic_directory`). Lightning's own handling ends with fit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    where = checkpoint_path(run_dir)

    def stop(signum: int, frame: Any) -> None:
        raise RunInterrupted(
            f"{signal.Signals(signum).name} stopped the run while it wrote its results; the "
            f"training is complete and saved in {where}. Fix: run the same command again with "
            f"ckpt_path={where} to write them.",
            exit_code=128 + signum,
        )

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interrupted(trainer: L.Trainer, run_dir: Path) -> RunInterrupted:
    """The error for a fit stopped by SIGTERM/Ctrl+C, naming the checkpoint to resume from."""
    callback = next(c for c in trainer.callbacks if isinstance(c, CheckpointOnInterrupt))
    name = callback.signal_name or "SIGTERM"
    where = checkpoint_path(run_dir)
    saved = f"checkpoint saved to {where}" if callback.saved else "no checkpoint could be saved"
    return RunInterrupted(
        f"{name} stopped the run at step {trainer.global_step}; {saved}. Fix: run the same "
        f"command again with ckpt_path={where} to continue.",
        exit_code=128 + int(getattr(signal, name)),
    )
