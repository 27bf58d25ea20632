"""Write-a-function problems with tests (``data.path=code_tasks``), for the sandboxed code reward.

    prompt:      "Write a Python function `is_prime(n)` that returns True when the integer n is
                  a prime number, else False. Answer with the code in a ```python block."
    entry_point: "is_prime"
    tests:       ["assert is_prime(2) is True", "assert is_prime(1) is False", ...]
    solution:    a reference implementation that passes every test
    completion:  the solution in the asked format (a ```python block): SFT targets

48 small problems (strings, lists, number theory), each with 3-6 hand-written ``assert`` tests
whose expected values were worked out independently of the reference solutions (a test runs
every reference in the sandbox and checks that it passes). The problems are data, shipped in
the package as ``code_problems.json`` (``signature``, ``description``, ``solution``,
``tests``). 8 problems, chosen by a seeded shuffle, are held out as ``validation``. Score with
``reward=code`` (``rewards.CodeReward``).
"""

from __future__ import annotations

import json
import random
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import datasets

CODE_TASKS = "code_tasks"
NUM_VALIDATION = 8
SEED = 0
PROBLEMS_FILE = Path(__file__).with_name("code_problems.json")


class CodeProblem(NamedTuple):
    signature: str  # how the prompt names the function, e.g. "gcd(a, b)"
    description: str  # completes "Write a Python function `f(x)` that ..."
    solution: str
    tests: tuple[str, ...]

    @property
    def entry_point(self) -> str:
        return self.signature.split("(", 1)[0]


def load_problems(path: Path = PROBLEMS_FILE) -> tuple[CodeProblem, ...]:
    """The problems of ``path`` (a JSON list of objects with the fields of ``CodeProblem``)."""
    records = json.loads(path.read_text(encoding="utf-8"))
    return tuple(
        CodeProblem(r["signature"], r["description"], r["solution"], tuple(r["tests"]))
        for r in records
    )


PROBLEMS = load_problems()


def format_prompt(problem: CodeProblem) -> str:
    """The prompt for ``problem``."""
    return (
        f"Write a Python function `{problem.signature}` that {problem.description}. "
        "Answer with the code in a ```python block."
    )


def format_completion(problem: CodeProblem) -> str:
    """The reference solution as the prompt asks for it."""
    return f"```python\n{problem.solution}```"


@lru_cache(maxsize=1)
def build_code_tasks() -> datasets.DatasetDict:
    """The code problems (see the module docstring), built once per process.

    Returns:
        ``DatasetDict`` with ``train`` (40 problems) and ``validation`` (8); columns
        ``prompt``, ``entry_point``, ``tests`` (list of assert statements), ``solution``,
        ``completion``.
    """
    order = list(range(len(PROBLEMS)))
    random.Random(SEED).shuffle(order)
    features = datasets.Features(
        {
            "prompt": datasets.Value("string"),
            "entry_point": datasets.Value("string"),
            "tests": datasets.Sequence(datasets.Value("string")),
            "solution": datasets.Value("string"),
            "completion": datasets.Value("string"),
        }
    )

    def rows(indices: list[int]) -> datasets.Dataset:
        problems = [PROBLEMS[i] for i in indices]
        return datasets.Dataset.from_list(
            [
                {
                    "prompt": format_prompt(p),
                    "entry_point": p.entry_point,
                    "tests": list(p.tests),
                    "solution": p.solution,
                    "completion": format_completion(p),
                }
                for p in problems
            ],
            features=features,
        )

    return datasets.DatasetDict(
        {"train": rows(order[NUM_VALIDATION:]), "validation": rows(order[:NUM_VALIDATION])}
    )
