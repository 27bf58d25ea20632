"""Checks one dataset row's values, failing with a message that names the row, column and fix."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlhf_lightning.errors import DataError

_FIX_ROWS = "Fix: drop or repair such rows (e.g. with Dataset.filter) before training."


def describe(value: Any, limit: int = 60) -> str:
    """A short, readable rendering of a bad value for an error message."""
    text = repr(value)
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(value).__name__} {text}"


def require_text(value: Any, *, index: int, column: str, source: str) -> str:
    """Returns ``value`` if it is a string with some non-space character.

    Raises:
        DataError: naming ``source``, the row ``index`` and the ``column``.
    """
    if isinstance(value, str) and value.strip():
        return value
    raise DataError(
        f"{source}: row {index}, column '{column}': expected a non-empty string, "
        f"got {describe(value)}. {_FIX_ROWS}"
    )


def require_messages(value: Any, *, index: int, column: str, source: str) -> list[dict[str, str]]:
    """Returns ``value`` as a list of ``{"role", "content"}`` dicts with an assistant turn.

    Other keys of a message (``name``, ...) are kept and reach the chat template.

    Raises:
        DataError: not a non-empty list, a message without string ``role``/``content``, or no
            message with role ``assistant``.
    """
    where = f"{source}: row {index}, column '{column}'"
    if not isinstance(value, list | tuple) or not value:
        raise DataError(
            f"{where}: expected a non-empty list of {{'role': ..., 'content': ...}} messages, "
            f"got {describe(value)}. {_FIX_ROWS}"
        )
    for position, message in enumerate(value):
        if not (
            isinstance(message, Mapping)
            and isinstance(message.get("role"), str)
            and isinstance(message.get("content"), str)
        ):
            raise DataError(
                f"{where}: message {position} must be a dict with string 'role' and 'content', "
                f"got {describe(message)}. Fix: convert the column to [{{'role': 'user', "
                f"'content': '...'}}, {{'role': 'assistant', 'content': '...'}}] (ShareGPT "
                f"'from'/'value' keys must be renamed)."
            )
    if not any(message["role"] == "assistant" for message in value):
        roles = ", ".join(message["role"] for message in value)
        raise DataError(
            f"{where}: no message has role 'assistant' (roles: {roles}), so nothing would be "
            f"trained on. Fix: add the assistant reply, or drop such rows."
        )
    return [dict(message) for message in value]
