"""Built-in tasks with right answers, for rewards that verify (``rewards.verifiers``).

Each is a ``datasets.DatasetDict`` with ``train`` and ``validation`` splits that never share a
problem, generated offline and deterministically, and named as ``data.path``:

* ``arithmetic``: ``Compute 47 * 23. ...`` with an ``answer`` column (``reward=math``);
* ``countdown``: reach ``target`` with ``numbers`` (``reward=countdown``);
* ``code_tasks``: write a function that passes ``tests`` (``reward=code``);
* ``guess_number``, ``tool_arithmetic``, ``codebreaker``: games for the multi-turn
  environments of the same names (``env=...``, :mod:`rlhf_lightning.envs`).
"""

from __future__ import annotations

from collections.abc import Callable

import datasets

from rlhf_lightning.data.tasks.arithmetic import ARITHMETIC, build_arithmetic
from rlhf_lightning.data.tasks.code_tasks import CODE_TASKS, PROBLEMS, build_code_tasks
from rlhf_lightning.data.tasks.countdown import COUNTDOWN, build_countdown
from rlhf_lightning.data.tasks.games import (
    CODEBREAKER,
    GUESS_NUMBER,
    TOOL_ARITHMETIC,
    build_codebreaker,
    build_guess_number,
    build_tool_arithmetic,
)

# data.path name -> builder (default arguments; each builds once per process).
TASKS: dict[str, Callable[[], datasets.DatasetDict]] = {
    ARITHMETIC: build_arithmetic,
    COUNTDOWN: build_countdown,
    CODE_TASKS: build_code_tasks,
    GUESS_NUMBER: build_guess_number,
    TOOL_ARITHMETIC: build_tool_arithmetic,
    CODEBREAKER: build_codebreaker,
}

__all__ = [
    "ARITHMETIC",
    "CODEBREAKER",
    "CODE_TASKS",
    "COUNTDOWN",
    "GUESS_NUMBER",
    "PROBLEMS",
    "TASKS",
    "TOOL_ARITHMETIC",
    "build_arithmetic",
    "build_code_tasks",
    "build_codebreaker",
    "build_countdown",
    "build_guess_number",
    "build_tool_arithmetic",
]
