"""A reward served over HTTP: JSON in, JSON out, standard library only.

Request (POST, ``Content-Type: application/json``)::

    {"prompts": [...B strings], "completions": [...B strings], "<column>": [...B values], ...}

Response: ``{"rewards": [...B numbers]}`` or a bare JSON list of B numbers.

Connection errors, timeouts and 5xx answers are retried ``retries`` times, waiting
``backoff * 2**attempt`` seconds before each retry; a 4xx answer is not retried. Header values
(authentication) are never shown: not in ``repr``, not in error messages, not in logs; the URL is
shown without credentials or query string.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rlhf_lightning.deadline import DeadlineExceeded, call_with_deadline
from rlhf_lightning.errors import RewardError
from rlhf_lightning.rewards.base import check_inputs, check_scores, is_batch_column

log = logging.getLogger(__name__)

_BODY_PREVIEW = 200
# Errors worth another attempt: refused/reset connections, timeouts, truncated answers.
_TRANSIENT = (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException)


class HTTPReward:
    """Scores by POSTing the batch as JSON to ``url``.

    Args:
        url: ``http://`` or ``https://`` endpoint.
        timeout: Seconds one attempt may take, from connecting to the answer's last byte.
        retries: Further attempts after a connection error, timeout or 5xx answer.
        backoff: Seconds before the first retry; doubled for each later one.
        headers: Extra request headers, e.g. ``{"Authorization": "Bearer ..."}``; their values
            are kept out of every message and ``repr``.
        batch_size: Send at most this many completions per request; None sends the whole batch.
        max_response_bytes: Largest answer read; a larger one is refused (not retried).
    """

    def __init__(
        self,
        url: str,
        timeout: float = 10.0,
        retries: int = 2,
        backoff: float = 0.5,
        headers: Mapping[str, str] | None = None,
        batch_size: int | None = None,
        max_response_bytes: int = 10_000_000,
    ) -> None:
        parsed = urllib.parse.urlsplit(str(url))
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise RewardError(
                f"HTTP reward: url {_display_url(str(url))!r} is not an http(s) URL. "
                "Fix: set reward.url=http://host:port/path."
            )
        if parsed.username is not None or parsed.password is not None:
            raise RewardError(
                f"HTTP reward {_display_url(str(url))}: credentials in the URL are not sent. "
                "Fix: drop them from reward.url and pass them as a header, e.g. "
                "+reward.headers.Authorization='Bearer ${oc.env:REWARD_API_TOKEN}'."
            )
        if (
            timeout <= 0
            or retries < 0
            or backoff < 0
            or (batch_size is not None and batch_size < 1)
            or max_response_bytes < 1
        ):
            raise RewardError(
                f"HTTP reward {_display_url(url)}: timeout={timeout}, retries={retries}, "
                f"backoff={backoff}, batch_size={batch_size}, max_response_bytes="
                f"{max_response_bytes}. Fix: timeout > 0, retries >= 0, backoff >= 0, "
                "batch_size >= 1 or null, max_response_bytes >= 1."
            )
        self.url = str(url)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.batch_size = batch_size
        self.max_response_bytes = int(max_response_bytes)
        self._headers = {str(k): str(v) for k, v in (headers or {}).items()}

    @property
    def source(self) -> str:
        """How error messages name this source (no credentials)."""
        return f"HTTP reward {_display_url(self.url)}"

    def __call__(self, prompts: list[str], completions: list[str], **columns: Any) -> Tensor:
        """Score the batch. Shapes: ``prompts``/``completions`` length B; returns (B,) float32."""
        batch = check_inputs(prompts, completions, columns, self.source)
        step = self.batch_size or max(batch, 1)
        chunks = []
        for start in range(0, batch, step):
            part = slice(start, start + step)
            payload = {
                "prompts": list(prompts[part]),
                "completions": list(completions[part]),
                **{k: _jsonable(v[part] if is_batch_column(v) else v) for k, v in columns.items()},
            }
            rewards = self._rewards(self._post(payload))
            chunks.append(
                check_scores(
                    rewards,
                    len(payload["prompts"]),
                    self.source,
                    prompts=prompts[part],
                    offset=start,
                )
            )
        scores = torch.cat(chunks) if chunks else torch.zeros(0)
        return check_scores(scores, batch, self.source, prompts=prompts)

    def _post(self, payload: dict[str, Any]) -> Any:
        """POST ``payload`` with retries; returns the decoded JSON answer."""
        try:
            data = json.dumps(payload).encode("utf-8")
        except (TypeError, ValueError) as err:
            raise RewardError(
                f"{self.source}: the batch cannot be sent as JSON ({err}). Fix: give extra "
                "columns JSON values (strings, numbers, lists)."
            ) from err
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        request = urllib.request.Request(
            self.url, data=data, headers={**headers, **self._headers}, method="POST"
        )
        last_error = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                # The socket timeout bounds each read; this bounds the whole attempt, so a
                # server trickling its answer (or its headers) cannot hold the run.
                body = call_with_deadline(self._exchange, (request,), timeout_s=self.timeout)
            except DeadlineExceeded:
                last_error = f"timed out: no complete answer within {self.timeout:g} s"
            except urllib.error.HTTPError as err:
                if err.code < 500:
                    raise RewardError(
                        f"{self.source}: the server answered {err.code} {err.reason} "
                        f"({self._redact(_read_preview(err))}). Fix: check the URL, the request "
                        "format ({'prompts': [...], 'completions': [...]}) and the credentials."
                    ) from None
                err.close()
                last_error = f"HTTP {err.code} {err.reason}"
            except _TRANSIENT as err:
                last_error = self._redact(f"{type(err).__name__}: {getattr(err, 'reason', err)}")
            else:
                return self._decode(body)
            log.warning(
                "%s: attempt %d/%d failed (%s)",
                self.source,
                attempt + 1,
                self.retries + 1,
                last_error,
            )
        raise RewardError(
            f"{self.source}: no answer after {self.retries + 1} attempt(s) (last error: "
            f"{last_error}). Fix: check that the reward server is running and reachable at that "
            "URL, or raise reward.timeout / reward.retries."
        )

    def _exchange(self, request: urllib.request.Request) -> bytes:
        """One attempt: the answer's body, at most ``max_response_bytes`` of it."""
        deadline = time.monotonic() + self.timeout
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            length = response.headers.get("Content-Length", "")
            size = int(length) if length.isdigit() else 0
            chunks: list[bytes] = []
            while size <= self.max_response_bytes and (chunk := response.read1(1 << 16)):
                if time.monotonic() > deadline:  # abandoned by the caller: stop reading
                    raise TimeoutError("the attempt's deadline passed")
                chunks.append(chunk)
                size = max(size, sum(map(len, chunks)))
        if size > self.max_response_bytes:
            raise RewardError(
                f"{self.source}: the answer is larger than reward.max_response_bytes="
                f"{self.max_response_bytes} ({size} bytes or more). Fix: make the server answer "
                'only {"rewards": [...]}, or raise reward.max_response_bytes.'
            )
        return b"".join(chunks)

    def _decode(self, body: bytes) -> Any:
        try:
            return json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            text = self._redact(body[:_BODY_PREVIEW].decode("utf-8", errors="replace"))
            raise RewardError(
                f"{self.source}: the answer is not JSON: {text!r}. Fix: make the server answer "
                '{"rewards": [...]} or a JSON list with one number per completion.'
            ) from None

    def _rewards(self, answer: Any) -> Any:
        if isinstance(answer, list):
            return answer
        if isinstance(answer, dict) and "rewards" in answer:
            return answer["rewards"]
        keys = sorted(answer) if isinstance(answer, dict) else type(answer).__name__
        raise RewardError(
            f"{self.source}: the JSON answer has no 'rewards' (got {self._redact(str(keys))}). "
            'Fix: make the server answer {"rewards": [...]} or a bare JSON list.'
        )

    def _redact(self, text: str) -> str:
        """``text`` with every header value and URL secret replaced by ``***``."""
        secrets = [v for v in self._headers.values() if v]
        # A server may echo the token alone, without its scheme ("Bearer <token>").
        secrets += [part for v in self._headers.values() for part in v.split() if len(part) >= 8]
        parsed = urllib.parse.urlsplit(self.url)
        secrets += [s for s in (parsed.password, parsed.username, parsed.query) if s]
        for secret in sorted(secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def __repr__(self) -> str:
        headers = {key: "***" for key in self._headers}
        return (
            f"{type(self).__name__}(url={_display_url(self.url)!r}, timeout={self.timeout}, "
            f"retries={self.retries}, backoff={self.backoff}, headers={headers}, "
            f"batch_size={self.batch_size})"
        )

    __str__ = __repr__


def _display_url(url: str) -> str:
    """``url`` without user/password and with the query string masked."""
    try:
        parsed = urllib.parse.urlsplit(url)
        netloc = parsed.hostname or ""
        if parsed.port is not None:
            netloc = f"{netloc}:{parsed.port}"
    except ValueError:
        return "<invalid url>"
    query = "?***" if parsed.query else ""
    return f"{parsed.scheme}://{netloc}{parsed.path}{query}"


def _read_preview(err: urllib.error.HTTPError) -> str:
    try:
        return err.read()[:_BODY_PREVIEW].decode("utf-8", errors="replace") or "empty body"
    except Exception:  # the body is only a hint for the message
        return "no body"


def _jsonable(values: Any) -> Any:
    """Tensors and numpy arrays as lists, so extra columns can travel as JSON."""
    if isinstance(values, (Tensor, np.ndarray, np.generic)):
        return values.tolist()
    if isinstance(values, tuple):
        return list(values)
    return values
