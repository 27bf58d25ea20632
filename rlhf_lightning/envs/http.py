"""An environment served over HTTP (``stage.env._target_=rlhf_lightning.envs.HTTPEnv``): JSON
in, JSON out, with the HTTP reward's timeouts, retries, bounded answers and secret-free
messages (``rewards/http.py``).

Each call is a POST to ``url``::

    {"action": "reset", "row": {...the dataset row}}
        -> {"episode": "<id>", "messages": [{"role": "user", "content": "..."}]}
    {"action": "step", "episode": "<id>", "assistant_text": "..."}
        -> {"messages": [...] or null, "reward": 0.5, "done": false, "info": {"success": false}}

The server keeps each episode's state under the id it returned from ``reset`` (any JSON value;
omitted: null). Steps are sent one trajectory at a time, in turn order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlhf_lightning.envs.base import Message, StepResult, checked_messages, checked_step
from rlhf_lightning.errors import EnvError, RewardError
from rlhf_lightning.rewards.http import HTTPReward, _display_url


class _Client(HTTPReward):
    """The HTTP reward's transport, naming itself an environment."""

    @property
    def source(self) -> str:
        return f"HTTP environment {_display_url(self.url)}"


class HTTPEnv:
    """An environment whose ``reset`` and ``step`` are answered by a server (see above).

    Args:
        url: ``http://`` or ``https://`` endpoint.
        timeout: Seconds one attempt may take, from connecting to the answer's last byte.
        retries: Further attempts after a connection error, timeout or 5xx answer.
        backoff: Seconds before the first retry; doubled for each later one.
        headers: Extra request headers (authentication), kept out of every message.
        max_response_bytes: Largest answer read.
    """

    def __init__(
        self,
        url: str,
        timeout: float = 10.0,
        retries: int = 2,
        backoff: float = 0.5,
        headers: Mapping[str, str] | None = None,
        max_response_bytes: int = 1_000_000,
    ) -> None:
        try:
            self.client = _Client(
                url, timeout, retries, backoff, headers, max_response_bytes=max_response_bytes
            )
        except RewardError as err:
            raise EnvError(_for_env(str(err))) from None
        self.episode: Any = None

    def __deepcopy__(self, memo: dict) -> HTTPEnv:
        copy = object.__new__(HTTPEnv)
        copy.client, copy.episode = self.client, None  # one client; a fresh episode
        return copy

    def reset(self, row: dict[str, Any]) -> list[Message]:
        answer = self._call({"action": "reset", "row": row})
        self.episode = answer.get("episode")
        return checked_messages(answer.get("messages"), self, "reset")

    def step(self, assistant_text: str) -> StepResult:
        request = {"action": "step", "episode": self.episode, "assistant_text": assistant_text}
        answer = self._call(request)
        keys = ("messages", "reward", "done", "info")
        return checked_step(tuple(answer.get(k, {} if k == "info" else None) for k in keys), self)

    def _call(self, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            answer = self.client._post(payload)
        except RewardError as err:
            raise EnvError(_for_env(str(err))) from None
        if not isinstance(answer, dict):
            raise EnvError(
                f"{self.client.source}: {payload['action']} answered "
                f"{self.client._redact(str(answer))[:120]!r}, not a JSON object. Fix: answer "
                '{"messages": [...], "reward": 0.0, "done": false, "info": {}} (docs/environments.md).'
            )
        return answer

    def __repr__(self) -> str:
        return f"HTTPEnv({self.client!r})"


def _for_env(message: str) -> str:
    """The HTTP reward's message, its settings named as the environment's."""
    return message.replace("reward.", "stage.env.").replace("reward server", "environment server")
