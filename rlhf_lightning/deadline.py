"""Calls into user code that may never return, bounded by a deadline and abandoned on a stop.

A reward function (and any other piece of user code a run waits on, such as an environment
step) runs in a daemon worker thread while the calling thread waits for it in short slices.
Between slices the caller checks the deadline and whether the run has been asked to stop
(SIGTERM, Ctrl+C: the interrupt callback registers that question with `add_stop_check`), so a
stuck call can neither hold the run forever nor keep a stop request from saving a checkpoint.

Python cannot kill a thread: an abandoned call keeps its (daemon) thread until it returns or
the process exits, which is what happens next, since both outcomes end the run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from typing import Any

from rlhf_lightning.errors import ConfigError

# How often the waiting thread looks at the clock and at stop requests.
_POLL_S = 0.05
_stop_checks: list[Callable[[], bool]] = []


class DeadlineExceeded(TimeoutError):
    """The call did not return within its deadline (its thread is left behind)."""


class CallInterrupted(BaseException):
    """The run was asked to stop while a call was running; the call is abandoned.

    A ``BaseException``, like ``SystemExit`` and ``KeyboardInterrupt``, so that handlers of
    ordinary errors (``except Exception``) let it through to the run's interrupt handling.
    """


def checked_timeout(timeout_s: float | None, key: str) -> float | None:
    """`timeout_s` when it is a positive number of seconds or None (no deadline).

    Raises:
        ConfigError: naming `key`, for zero or a negative number.
    """
    if timeout_s is not None and not timeout_s > 0:
        raise ConfigError(
            f"{key}={timeout_s}: must be a positive number of seconds. Fix: e.g. {key}=300, "
            "or null to make the call in the training thread without a deadline."
        )
    return timeout_s


def add_stop_check(check: Callable[[], bool]) -> None:
    """Make `check()` (True: stop now) abandon calls waiting in `call_with_deadline`."""
    _stop_checks.append(check)


def remove_stop_check(check: Callable[[], bool]) -> None:
    with suppress(ValueError):
        _stop_checks.remove(check)


def stop_requested() -> bool:
    return any(check() for check in list(_stop_checks))


def call_with_deadline(
    function: Callable[..., Any],
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    timeout_s: float | None,
) -> Any:
    """``function(*args, **kwargs)`` in a worker thread; its result, or its exception re-raised.

    Args:
        function: the call to bound.
        args / kwargs: its arguments.
        timeout_s: seconds to wait; None waits as long as it takes (a stop still abandons it).

    Raises:
        DeadlineExceeded: the call has not returned after `timeout_s` seconds.
        CallInterrupted: a registered stop check became true while waiting.
    """
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            outcome["value"] = function(*args, **(kwargs or {}))
        except BaseException as err:  # handed to the waiting thread, which re-raises it
            outcome["error"] = err
        finally:
            done.set()

    name = getattr(function, "__name__", type(function).__name__)
    threading.Thread(target=target, name=f"deadline:{name}", daemon=True).start()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while not done.is_set():
        if stop_requested():
            raise CallInterrupted(f"{name}: abandoned, the run was asked to stop")
        left = _POLL_S if deadline is None else deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(f"{name}: no result within {timeout_s:g} s")
        done.wait(min(_POLL_S, left))
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
