"""Built-in tasks with right answers, for rewards that verify (``rewards.verifiers``).

Each is a ``datasets.DatasetDict`` with ``train`` and ``validation`` splits that never share a
problem, generated offline and deterministically, and named as ``data.path``:

* ``arithmetic``: ``Compute 47 * 23. ...`` with an ``answer`` column (``reward=math``);
* ``countdown``: reach ``target`` with ``numbers`` (``reward=countdown``);
* ``code_tasks``: write a function that passes ``tests`` (``reward=code``).
"""

from __future__ import annotations

from collections.abc import Callable

import datasets

from rlhf_lightning.data.tasks.arithmetic import ARITHMETIC, build_arithmetic
from rlhf_lightning.data.tasks.code_tasks import CODE_TASKS, PROBLEMS, build_code_tasks
from rlhf_lightning.data.tasks.countdown import COUNTDOWN, build_countdown

# data.path name -> builder (default arguments; each builds once per process).
TASKS: dict[str, Callable[[], datasets.DatasetDict]] = {
    ARITHMETIC: build_arithmetic,
    COUNTDOWN: build_countdown,
    CODE_TASKS: build_code_tasks,
}

__all__ = [
    "ARITHMETIC",
    "CODE_TASKS",
    "COUNTDOWN",
    "PROBLEMS",
    "TASKS",
    "build_arithmetic",
    "build_code_tasks",
    "build_countdown",
]
