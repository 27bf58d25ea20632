"""Lightning callbacks the stages install."""

from rlhf_lightning.callbacks.interrupt import CheckpointOnInterrupt
from rlhf_lightning.callbacks.progress import RunProgressBar

__all__ = ["CheckpointOnInterrupt", "RunProgressBar"]
