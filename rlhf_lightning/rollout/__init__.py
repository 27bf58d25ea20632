"""Generation and rollout data."""

from rlhf_lightning.rollout.generation import sample_completions

__all__ = ["sample_completions"]
