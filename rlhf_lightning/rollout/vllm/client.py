"""JSON over HTTP to a ``server_main.py`` vLLM server: one request, a timeout, a clear error.

No retries: a retried generate would queue behind a hung one.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from rlhf_lightning.errors import RolloutError

_UNREACHABLE = (urllib.error.URLError, ConnectionError, http.client.HTTPException)


def request_json(
    url: str,
    method: str,
    route: str,
    payload: dict | None,
    *,
    timeout: float,
    what: str,
    log_hint: Callable[[], str] = lambda: "",
) -> dict[str, Any]:
    """``method url+route`` with a JSON body; the JSON answer, or a RolloutError naming the fix.

    Args:
        url: The server's base URL.
        method / route / payload: The request.
        timeout: Seconds before the server counts as hung.
        what: How messages name the call ("generate", "weight sync", ...).
        log_hint: Text appended to errors (the tail of the server log).
    """
    data = None if payload is None else json.dumps(payload).encode("utf-8")
    request = urllib.request.Request(
        f"{url}{route}", data=data, headers={"Content-Type": "application/json"}, method=method
    )
    start = time.monotonic()
    hung = (
        f"vLLM server {url}: no answer to {what} within {timeout:.0f} s (hung or overloaded). "
        "Fix: check the server log and the machine's load, raise the timeout, or restart the "
        "server."
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as err:
        text = _read_body(err)
        if err.code == 503 and route == "/health":  # loading or failed: the caller decides
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                return {"status": "unknown", "error": text}
        fix = (
            "Fix: check the request (ids within the vocabulary, paths readable by the server)."
            if err.code < 500
            else "Fix: read the server log; restart the server if the engine is broken."
        )
        raise RolloutError(
            f"vLLM server {url}: {what} answered {err.code} ({_error_text(text)}). {fix}"
            f"{log_hint()}"
        ) from None
    except TimeoutError:
        raise RolloutError(hung + log_hint()) from None
    except _UNREACHABLE as err:
        reason = getattr(err, "reason", err)
        if isinstance(reason, TimeoutError):
            raise RolloutError(hung + log_hint()) from None
        raise RolloutError(
            f"vLLM server {url}: cannot reach it for {what} after "
            f"{time.monotonic() - start:.1f} s ({type(err).__name__}: {reason}). Fix: start "
            "the server (or check the URL); a server that died says why in its log."
            f"{log_hint()}"
        ) from None
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        raise RolloutError(
            f"vLLM server {url}: {what} answered non-JSON {body[:200]!r}. Fix: point the "
            "backend at a server_main.py server (not vLLM's OpenAI server)."
        ) from None


def _read_body(err: urllib.error.HTTPError) -> str:
    try:
        return err.read()[:2000].decode("utf-8", errors="replace")
    except Exception:  # the body is only a hint for the message
        return ""


def _error_text(text: str) -> str:
    """The ``error`` field of a JSON error body, else the body itself."""
    try:
        return str(json.loads(text).get("error", text))
    except (json.JSONDecodeError, AttributeError):
        return text or "empty body"
