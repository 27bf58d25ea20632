"""Errors that reach the user as one clear message (no traceback) and a non-zero exit."""

from __future__ import annotations


class RLHFError(Exception):
    """Base class: the message names the problem and the fix."""


class ConfigError(RLHFError):
    """A config value is missing, unknown or inconsistent."""


class DataError(RLHFError):
    """A dataset is missing, unreadable, or lacks the columns a stage needs."""


class ModelError(RLHFError):
    """A model or tokenizer cannot be found or loaded."""


class RewardError(RLHFError):
    """A reward source cannot be built, cannot be reached, or returned unusable scores."""


class RolloutError(RLHFError):
    """A rollout backend cannot be set up, started, reached, or gave an unusable answer.

    The message names the backend, what failed and the fix (and, for a server the project
    started, the tail of its log).
    """


class EnvError(RLHFError):
    """An environment (``env=``) cannot be built or reached, or answered something unusable.

    The message names the environment, what it returned or what failed, and the fix.
    """


class NumericalError(RLHFError):
    """Losses, gradients or weights stopped being finite and the run cannot go on."""


class StorageError(RLHFError):
    """The run directory cannot be written (a full disk, missing permissions)."""


class RunInterrupted(RLHFError):
    """SIGTERM or Ctrl+C stopped the run; a checkpoint to resume from was saved.

    ``exit_code`` follows the shell convention 128 + signal number (143 SIGTERM, 130 SIGINT).
    """

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
