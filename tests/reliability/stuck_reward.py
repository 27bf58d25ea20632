"""A reward function that gets stuck on one chosen call, for the stuck-reward tests.

Imported by name (``reward.function=stuck_reward:score``) once its folder is on sys.path.
"""

from __future__ import annotations

import os
import signal
import threading

from rlhf_lightning.rewards.examples import letter_rate

# Set by a test: the call (counted from 1) that hangs until RELEASE is set (or 60 s pass, so
# that a run that cannot abandon it still ends), first sending SIGTERM to this process when
# SEND_SIGTERM is set.
STUCK_CALL: int | None = None
SEND_SIGTERM = True
RELEASE = threading.Event()
calls = 0


def score(prompts, completions):
    global calls
    calls += 1
    if calls == STUCK_CALL:
        if SEND_SIGTERM:
            os.kill(os.getpid(), signal.SIGTERM)
        RELEASE.wait(60)
    return letter_rate(prompts, completions)
