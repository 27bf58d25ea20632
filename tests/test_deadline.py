"""`call_with_deadline`: the result or the exception of the call, a deadline, and a stop
request that abandons a call which never returns."""

from __future__ import annotations

import threading
import time

import pytest

from rlhf_lightning.deadline import (
    CallInterrupted,
    DeadlineExceeded,
    add_stop_check,
    call_with_deadline,
    remove_stop_check,
)

NEVER = threading.Event()  # set at the end of the module's tests, so stuck threads finish


@pytest.fixture(autouse=True, scope="module")
def _release_stuck_calls():
    yield
    NEVER.set()


def test_the_result_and_the_exception_of_the_call_come_back():
    assert call_with_deadline(lambda a, b=0: a + b, (2,), {"b": 3}, timeout_s=5) == 5
    with pytest.raises(KeyError, match="missing"):
        call_with_deadline(lambda: {}["missing"], timeout_s=5)


def test_a_call_past_its_deadline_is_abandoned():
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded, match=r"no result within 0.3 s"):
        call_with_deadline(NEVER.wait, timeout_s=0.3)
    assert 0.3 <= time.monotonic() - start < 3


def test_a_stop_request_abandons_a_call_without_a_deadline():
    asked = threading.Event()
    threading.Timer(0.2, asked.set).start()
    add_stop_check(asked.is_set)
    try:
        start = time.monotonic()
        with pytest.raises(CallInterrupted):
            call_with_deadline(NEVER.wait, timeout_s=None)
        assert time.monotonic() - start < 3
    finally:
        remove_stop_check(asked.is_set)
    # CallInterrupted is no ordinary error: `except Exception` lets it through.
    assert not issubclass(CallInterrupted, Exception)
