"""What exact resume needs beyond Lightning's own checkpoint: RNG streams and interruptions."""

from __future__ import annotations

import logging
import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


def capture_rng_states() -> dict[str, Any]:
    """Every global random stream: python `random`, numpy, torch CPU and, when present, CUDA."""
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _numpy_state() -> tuple:
    """numpy's legacy global state with plain Python values: Lightning loads checkpoints with
    `weights_only=True`, which refuses numpy arrays."""
    name, key, pos, has_gauss, cached = np.random.get_state()
    return (name, key.tolist(), int(pos), int(has_gauss), float(cached))


def restore_rng_states(states: dict[str, Any]) -> None:
    """Set the streams `capture_rng_states` recorded (CUDA only on as many devices as saved)."""
    random.setstate(states["python"])
    name, key, *rest = states["numpy"]
    np.random.set_state((name, np.asarray(key, dtype=np.uint32), *rest))
    torch.set_rng_state(states["torch"])
    cuda = states.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        for index, state in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, index)


class ResumeState(Callback):
    """What a checkpoint needs beyond Lightning's own state for a resume to be exact.

    1. The global RNG states, restored when a fit resumes: dropout, minibatch shuffles and
       anything else drawing from the global streams continue as if the run had never stopped.
       They are applied at `on_train_start`, the last moment before the first resumed batch,
       so nothing between loading the checkpoint and training can advance them. Rank 0's
       states are the ones saved.
    2. An unfinished epoch stays unfinished: a fit that stops mid-epoch (max_steps, an
       interruption, an RL stage's iteration count) closes the epoch in Lightning's counters,
       so a checkpoint taken afterwards would resume in the *next* epoch while the data loader
       (which saves its position) continues the old one. `on_save_checkpoint` reopens it.
    3. torch's thread count: results can differ in the last bits between counts, so a resumed
       run computes with the count the run it continues chose (``rlhf_lightning.threads``).
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {**capture_rng_states(), "torch_threads": torch.get_num_threads()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        threads = state_dict.get("torch_threads")
        if threads is not None and threads != torch.get_num_threads():
            log.info(
                "torch threads: %d (the resumed run's own count, from its checkpoint)", threads
            )
            torch.set_num_threads(threads)
        self._pending = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is not None:
            restore_rng_states(self._pending)
            self._pending = None

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        reopen_unfinished_epoch(checkpoint, trainer.num_training_batches)


def reopen_unfinished_epoch(checkpoint: dict[str, Any], batches_per_epoch: float) -> None:
    """Mark the checkpoint's last epoch as still running when it stopped before its last batch.

    Lightning resumes "mid-epoch" when the epoch was started but not processed; a fit that
    ended early has already counted it processed and completed (and `epoch` one further).
    """
    fit_loop = checkpoint.get("loops", {}).get("fit_loop")
    if not fit_loop:
        return
    epochs = fit_loop["epoch_progress"]
    batches_done = fit_loop["epoch_loop.batch_progress"]["current"]["completed"]
    total = epochs["total"]
    closed = total["started"] == total["processed"] == total["completed"] > 0
    if not closed or batches_done == 0 or batches_done >= batches_per_epoch:
        return
    for counts in (epochs["total"], epochs["current"]):
        counts["processed"] -= 1
        counts["completed"] -= 1
    checkpoint["epoch"] = max(0, checkpoint["epoch"] - 1)


class InterruptAt(Callback):
    """Stops a fit as if it were interrupted once `step` is reached; nothing else changes.

    The run keeps planning its full length (LR schedule, iteration count), so resuming from
    the checkpoint written at the stop continues the same run exactly. Progress is counted in
    optimizer steps, or in iterations for modules that count them (the online RL stages).

    Args:
        step: optimizer steps (RL stages: iterations) after which to stop.
    """

    def __init__(self, step: int) -> None:
        if step < 1:
            raise ValueError(f"interrupt_at={step}: must be a positive number of steps")
        self.step = step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
    ) -> None:
        progress = getattr(pl_module, "iteration", None)
        if progress is None:
            progress = trainer.global_step
        if progress >= self.step:
            trainer.should_stop = True
