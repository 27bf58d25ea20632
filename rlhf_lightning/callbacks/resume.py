"""What exact resume needs beyond Lightning's own checkpoint: RNG streams and interruptions."""

from __future__ import annotations

import logging
import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from rlhf_lightning.errors import ConfigError

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
    3. A finished epoch is not replayed: an epoch-based fit (``max_steps=-1``, the RL stages)
       saved at the end of an epoch does not count as restarting for Lightning, which then
       never hands the data loader its saved state, and the next epoch would repeat the
       first epoch's order. The state is handed over here instead.
    4. Logged rows keep their steps: resumed from a checkpoint written after a validation
       step, Lightning finishes that already finished step once more and counts it again, so
       every later row of metrics.csv would carry the step after its own. The count is put
       back before the first resumed batch.
    5. A batch cut short is done again: when a stop request abandons a call stuck inside a
       batch (``rlhf_lightning.deadline``), the checkpoint holds the state from before that
       batch: the RNG states of its start and the data loader one batch back (Lightning's
       own counters already leave it undone).
    6. torch's thread count: results can differ in the last bits between counts, so a resumed
       run computes with the count the run it continues chose (``rlhf_lightning.threads``).
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None
        self._loader_states: list[dict[str, Any]] = []
        # (stepping batches, completed batches) at the start of a resumed fit; None otherwise.
        self._resumed_at: tuple[int, int] | None = None
        self._batch_start_rng: dict[str, Any] | None = None

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

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
        self._loader_states = fit_loop.get("state_dict", {}).get("combined_loader", [])

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is None:
            return
        restore_rng_states(self._pending)
        self._pending = None
        loop = trainer.fit_loop
        if self._loader_states and not loop.restarting and loop._combined_loader is not None:
            loop._combined_loader._load_state_dicts(self._loader_states)
        self._loader_states = []
        epoch_loop = loop.epoch_loop
        self._resumed_at = (
            epoch_loop._batches_that_stepped,
            epoch_loop.batch_progress.total.completed,
        )

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
    ) -> None:
        self._batch_start_rng = capture_rng_states()
        if self._resumed_at is None:
            return
        stepped, completed = self._resumed_at
        self._resumed_at = None
        epoch_loop = trainer.fit_loop.epoch_loop
        # Batches Lightning's restart counted as completed (a checkpoint taken inside
        # on_train_batch_end) are stepping batches too; anything beyond is the double count.
        expected = stepped + epoch_loop.batch_progress.total.completed - completed
        if epoch_loop._batches_that_stepped > expected:
            epoch_loop._batches_that_stepped = expected

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if return_unfinished_batch(checkpoint) and self._batch_start_rng is not None:
            checkpoint["callbacks"][self.state_key] = self._batch_start_rng
        reopen_unfinished_epoch(checkpoint, trainer.num_training_batches)


def return_unfinished_batch(checkpoint: dict[str, Any]) -> bool:
    """Hand a batch that was drawn but never processed back to the saved data loader state.

    Returns:
        Whether the checkpoint was written in the middle of a batch.
    """
    fit_loop = checkpoint.get("loops", {}).get("fit_loop")
    if not fit_loop:
        return False
    current = fit_loop["epoch_loop.batch_progress"]["current"]
    in_flight = current["ready"] - current["processed"]
    if in_flight <= 0:
        return False
    for state in fit_loop.get("state_dict", {}).get("combined_loader", []):
        if "batches" in state:  # a ResumableDataLoader's position
            state["batches"] = max(0, state["batches"] - in_flight)
    return True


def reopen_unfinished_epoch(checkpoint: dict[str, Any], batches_per_epoch: float) -> None:
    """Put the checkpoint's epoch counters where the data loader's saved position is.

    Lightning resumes "mid-epoch" when the epoch was started but not processed; a fit that
    ended early has already counted it processed and completed (and `epoch` one further), so
    an epoch that stopped before its last batch is marked as still running. One that ended
    with its last batch stays closed, and the next epoch starts with no batch done: Lightning
    would otherwise count the closed epoch's batches as the next one's, run that epoch empty
    and resume one epoch further on than a run that never stopped.
    """
    fit_loop = checkpoint.get("loops", {}).get("fit_loop")
    if not fit_loop:
        return
    epochs = fit_loop["epoch_progress"]
    batches = fit_loop["epoch_loop.batch_progress"]
    batches_done = batches["current"]["completed"]
    total = epochs["total"]
    closed = total["started"] == total["processed"] == total["completed"] > 0
    if not closed or batches_done == 0:
        return
    if batches_done >= batches_per_epoch:
        batches["current"] = dict.fromkeys(batches["current"], 0)
        batches["is_last_batch"] = False
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
            raise ConfigError(
                f"interrupt_at={step}: must be a positive number of steps (RL stages: "
                "iterations). Fix: interrupt_at=<steps> to stop there, or interrupt_at=null."
            )
        self.step = step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
    ) -> None:
        progress = getattr(pl_module, "iteration", None)
        if progress is None:
            progress = trainer.global_step
        if progress >= self.step:
            trainer.should_stop = True
