"""The environment interface of multi-turn online RL (``env=``), and the checks on what an
environment answers.

An environment plays one episode per trajectory::

    messages = env.reset(row)                   # the conversation's first messages
    messages, reward, done, info = env.step(assistant_text)

``reset`` gets one dataset row (its ``prompt`` and any other columns: a secret number, the
right answer, ...) and returns the first chat messages (``{"role", "content"}``). ``step`` gets
the text of the assistant's latest turn and returns a :class:`StepResult`: the messages that
follow it (an environment's answer, a tool's result; None or ``[]`` when nothing follows), the
reward of that turn, whether the episode is over, and an ``info`` dict (``info["success"]``,
a bool, is what ``eval/success_rate`` counts).

Each trajectory gets its own copy of the configured environment (``copy.deepcopy`` before
``reset``), so an environment keeps its episode's state on ``self``.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol, runtime_checkable

from rlhf_lightning.errors import EnvError

Message = dict[str, Any]


class StepResult(NamedTuple):
    """What :meth:`Environment.step` returns."""

    messages: list[Message] | None
    """The messages that follow the assistant's turn (``user``, ``tool``, ...); None or []
    ends the episode."""
    reward: float
    """This turn's reward (placed on the turn's last token)."""
    done: bool
    """Whether the episode is over (no further assistant turn)."""
    info: dict[str, Any] = {}
    """Anything else; ``success`` (bool) is counted by ``eval/success_rate``."""


@runtime_checkable
class Environment(Protocol):
    """One episode of a multi-turn task: ``reset(row)``, then ``step(text)`` per assistant turn."""

    def reset(self, row: dict[str, Any]) -> list[Message]:
        """Start an episode for a dataset row; returns the conversation's first messages."""
        ...

    def step(self, assistant_text: str) -> StepResult | tuple:
        """React to the assistant's turn: ``(messages | None, reward, done, info)``."""
        ...


def spawn(prototype: Environment) -> Environment:
    """A fresh copy of the configured environment for one trajectory."""
    return copy.deepcopy(prototype)


def name_of(env: Any) -> str:
    """How messages name an environment: ``env <class>``."""
    return f"env {type(env).__name__}"


def checked_messages(messages: Any, env: Any, what: str) -> list[Message]:
    """``messages`` as a list of ``{"role": str, "content": str, ...}`` dicts, or an EnvError."""
    if messages is None:
        return []
    ok = isinstance(messages, list) and all(
        isinstance(m, Mapping)
        and isinstance(m.get("role"), str)
        and isinstance(m.get("content"), str)
        for m in messages
    )
    if not ok:
        raise EnvError(
            f"{name_of(env)}: {what} returned {str(messages)[:120]!r}, not a list of "
            '{"role": ..., "content": ...} messages. Fix: return e.g. '
            '[{"role": "user", "content": "Higher."}].'
        )
    return [dict(m) for m in messages]


def checked_step(result: Any, env: Any) -> StepResult:
    """``step``'s answer as a :class:`StepResult` with a finite float reward, or an EnvError."""
    if isinstance(result, tuple) and len(result) in (3, 4):
        messages, reward, done, *rest = result
        info = rest[0] if rest else {}
        number = isinstance(reward, numbers.Real) and not isinstance(reward, bool)
        if number and math.isfinite(float(reward)) and isinstance(info, Mapping):
            return StepResult(
                checked_messages(messages, env, "step") or None,
                float(reward),
                bool(done),
                dict(info),
            )
    raise EnvError(
        f"{name_of(env)}: step returned {str(result)[:120]!r}. Fix: return (messages or None, "
        "reward as a finite number, done, info dict), e.g. StepResult(None, 1.0, True, {}) "
        "from rlhf_lightning.envs."
    )
