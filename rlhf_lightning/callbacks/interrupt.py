"""SIGTERM and Ctrl+C stop a run at the next batch boundary with a checkpoint saved.

Lightning already turns SIGTERM into an orderly stop after the running batch (its
``SIGTERMException``); Ctrl+C is routed the same way here (a second Ctrl+C interrupts at once).
At that stop the full training state is written to ``checkpoints/last.ckpt`` so that
``ckpt_path=`` continues the run.

A batch stuck in a call that never returns (a reward function that hangs) would never reach
that stop: the call runs under ``rlhf_lightning.deadline``, which is told here to abandon it
when a stop is requested (``CallInterrupted``). The checkpoint then holds the state before that
batch (``ResumeState``), and the resumed run does the batch again.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from rlhf_lightning.deadline import CallInterrupted, add_stop_check, remove_stop_check

log = logging.getLogger(__name__)


class CheckpointOnInterrupt(Callback):
    """Save `path` when the run is stopped by SIGTERM or SIGINT.

    Args:
        path: the checkpoint to write (the run's ``checkpoints/last.ckpt``).

    Attributes:
        saved: whether an interrupt checkpoint was written.
        signal_name: ``SIGTERM`` or ``SIGINT`` once one arrived.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.saved = False
        self.signal_name: str | None = None
        self._previous_sigint: Any = None
        self._stop_check: Any = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.signal_name = None
        self._stop_check = lambda: trainer.received_sigterm
        add_stop_check(self._stop_check)
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be installed from the main thread

        def on_sigint(signum: int, frame: FrameType | None) -> None:
            # The first Ctrl+C asks for the same orderly stop as SIGTERM; the second is final.
            signal.signal(signal.SIGINT, self._previous_sigint or signal.default_int_handler)
            self.signal_name = "SIGINT"
            log.warning(
                "Ctrl+C: stopping after this batch and saving a checkpoint "
                "(press again to abort at once)."
            )
            trainer._signal_connector.received_sigterm = True

        self._previous_sigint = signal.signal(signal.SIGINT, on_sigint)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_sigint()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore_sigint()
        stopped = isinstance(exception, SIGTERMException | CallInterrupted)
        if not stopped or trainer.state.fn != "fit":
            return
        self.signal_name = self.signal_name or "SIGTERM"
        trainer.save_checkpoint(self.path)
        self.saved = True

    def _restore_sigint(self) -> None:
        remove_stop_check(self._stop_check)
        if (
            self._previous_sigint is not None
            and threading.current_thread() is threading.main_thread()
        ):
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None
