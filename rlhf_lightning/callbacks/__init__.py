"""Lightning callbacks the stages install."""

from rlhf_lightning.callbacks.progress import RunProgressBar

__all__ = ["RunProgressBar"]
