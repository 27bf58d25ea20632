"""Errors of rollout backends (an inference server that is missing, dead, hung or refusing)."""

from __future__ import annotations

from rlhf_lightning.errors import RLHFError


class RolloutError(RLHFError):
    """A rollout backend cannot be set up, started, reached, or gave an unusable answer.

    The message names the backend, what failed and the fix (and, for a server the project
    started, the tail of its log).
    """
