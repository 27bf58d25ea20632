"""Built-in tasks with right answers, for rewards that verify (``rewards.verifiers``).

Each is a ``datasets.DatasetDict`` with ``train`` and ``validation`` splits that never share a
problem, generated offline and deterministically, and named as ``data.path``:

* ``arithmetic``: ``Compute 47 * 23. ...`` with an ``answer`` column (``reward=math``);
* ``countdown``: reach ``target`` with ``numbers`` (``reward=countdown``);
* ``code_tasks``: write a function that passes ``tests`` (``reward=code``);
* ``guess_number``, ``tool_arithmetic``, ``codebreaker``: games for the multi-turn
  environments of the same names (``env=...``, :mod:`rlhf_lightning.envs`).

A name takes its builder's arguments after a ``?``, as in a URL query:
``arithmetic?max_digits=2&operations=+-`` (``build_task``).
"""

from __future__ import annotations

import inspect
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


def task_name(path: str) -> str:
    """The built-in task ``path`` names (its part before ``?``)."""
    return path.split("?", 1)[0]


def build_task(path: str) -> datasets.DatasetDict:
    """The built-in task named by ``path``: ``name`` or ``name?key=value&key=value``.

    Values that read as integers are passed as integers, others as text.

    Raises:
        ValueError: an unknown task, an argument its builder does not take, or a bad value.
    """
    name, _, query = path.partition("?")
    builder = TASKS[name]
    accepted = inspect.signature(builder).parameters
    kwargs: dict[str, int | str] = {}
    for pair in filter(None, query.split("&")):
        key, sep, value = pair.partition("=")
        if not sep or key not in accepted:
            raise ValueError(
                f"'{pair}' is not an argument of the {name} task (it takes: "
                f"{', '.join(accepted) or 'none'})"
            )
        kwargs[key] = int(value) if value.lstrip("-").isdigit() else value
    return builder(**kwargs)


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
    "build_task",
    "build_code_tasks",
    "build_codebreaker",
    "build_countdown",
    "build_guess_number",
    "build_tool_arithmetic",
    "task_name",
]
