"""Reward sources handed over in this Python process, named so that a config can hold them.

A config names a reward function by import path (``package.module:function``), which a lambda,
a function defined inside another one, or a reward object built in a notebook does not have.
:func:`register` keeps such a source under a generated name, and ``reward=inprocess
reward.name=<name>`` (:func:`lookup`) builds the stage's reward from it, in this process only:
the saved config records the name, and a later process running that config is told where the
name came from.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from rlhf_lightning.errors import RewardError
from rlhf_lightning.rewards.base import RewardSource

_registered: dict[str, RewardSource] = {}
_counter = itertools.count()


def register(source: RewardSource, label: str = "reward") -> str:
    """Keep `source` for this process; returns its name for ``reward.name``."""
    word = re.sub(r"\W+", "_", label).strip("_") or "reward"
    name = f"r{next(_counter)}_{word}"
    _registered[name] = source
    return name


def lookup(name: str) -> Any:
    """The source registered as `name` (the ``_target_`` of ``conf/reward/inprocess.yaml``)."""
    if name not in _registered:
        raise RewardError(
            f"reward.name={name}: a reward handed over in the Python process that ran this "
            "config (a trainer's reward_funcs); it exists there only. Fix: define the function "
            "at the top level of a module and use reward=callable "
            "reward.function=package.module:function."
        )
    return _registered[name]
