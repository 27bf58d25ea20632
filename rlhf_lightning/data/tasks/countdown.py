"""The Countdown numbers game (``data.path=countdown``): reach a target with 3-4 numbers.

Smaller games for small models: ``countdown?max_numbers=3&max_number=15&max_target=60``.

    prompt:   "Using the numbers [19, 3, 44, 7], create an equation that equals 82. ..."
    numbers:  [19, 3, 44, 7]
    target:   82
    solution: "(44 - 19) * 3 + 7"   (one way to reach it)
    completion: "<answer>(44 - 19) * 3 + 7</answer>"   (it in the asked format: SFT targets)

Every problem is solvable: it is made by combining the numbers in a random order with random
operations (differences stay positive, divisions exact), and the result becomes the target.
The rules follow TinyZero: use each number exactly once, with ``+ - * /`` and parentheses;
``rewards.CountdownReward`` checks them. ``train`` and ``validation`` never share a problem
(the same numbers and target). Deterministic (seeded ``random.Random``).
"""

from __future__ import annotations

import random
from functools import lru_cache

import datasets

COUNTDOWN = "countdown"


def format_prompt(numbers: list[int], target: int) -> str:
    """The prompt for reaching ``target`` with ``numbers``."""
    return (
        f"Using the numbers {numbers}, create an equation that equals {target}. Use each number "
        "exactly once, with + - * / and parentheses. Answer with <answer>equation</answer>, "
        "for example <answer>(1 + 2) * 3</answer>."
    )


def _combine(rng: random.Random, numbers: list[int]) -> tuple[int, str] | None:
    """Combine ``numbers`` in a random order with random operations: (value, expression).

    None when a step would make zero or a fraction (the caller draws again).
    """
    pool = [(n, str(n), False) for n in numbers]  # (value, text, is compound)
    while len(pool) > 1:
        i, j = rng.sample(range(len(pool)), 2)
        (a, a_text, a_compound), (b, b_text, b_compound) = pool[i], pool[j]
        pool = [item for k, item in enumerate(pool) if k not in (i, j)]
        op = rng.choice("+-*/")
        if op in "-/" and b > a:
            a, a_text, a_compound, b, b_text, b_compound = (
                b,
                b_text,
                b_compound,
                a,
                a_text,
                a_compound,
            )
        if (op == "-" and a == b) or (op == "/" and a % b):
            return None
        value = {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]
        left = f"({a_text})" if a_compound else a_text
        right = f"({b_text})" if b_compound else b_text
        pool.append((value, f"{left} {op} {right}", True))
    return pool[0][0], pool[0][1]


@lru_cache(maxsize=4)
def build_countdown(
    num_train: int = 4000,
    num_validation: int = 400,
    max_number: int = 50,
    max_target: int = 200,
    seed: int = 0,
    min_numbers: int = 3,
    max_numbers: int = 4,
) -> datasets.DatasetDict:
    """The countdown task (see the module docstring).

    Args:
        num_train: Rows of ``train``.
        num_validation: Rows of ``validation`` (held-out problems).
        max_number: Numbers are drawn from 1..max_number.
        max_target: Targets lie in 1..max_target.
        seed: Seeds the generator; the default dataset uses 0.
        min_numbers: Fewest numbers a problem gives (at least 2).
        max_numbers: Most numbers a problem gives.

    Returns:
        ``DatasetDict`` with ``train`` and ``validation``; columns ``prompt``, ``numbers``
        (``min_numbers`` to ``max_numbers`` ints, shuffled), ``target`` (int), ``solution``
        (an expression reaching it) and ``completion`` (the solution in the asked format).
    """
    if not 2 <= min_numbers <= max_numbers:
        raise ValueError(
            f"countdown needs 2 <= min_numbers <= max_numbers (got {min_numbers}, {max_numbers})"
        )
    total = num_train + num_validation
    sizes = range(min_numbers, max_numbers + 1)
    rng = random.Random(seed)
    seen: set[tuple[tuple[int, ...], int]] = set()
    rows = []
    for _ in range(total * 100):
        if len(rows) == total:
            break
        numbers = [rng.randint(1, max_number) for _ in range(rng.choice(sizes))]
        combined = _combine(rng, numbers)
        if combined is None or not 1 <= combined[0] <= max_target:
            continue
        target, solution = combined
        key = (tuple(sorted(numbers)), target)
        if key in seen:
            continue
        seen.add(key)
        rng.shuffle(numbers)  # the order must not give the solution away
        rows.append(
            {
                "prompt": format_prompt(numbers, target),
                "numbers": numbers,
                "target": target,
                "solution": solution,
                "completion": f"<answer>{solution}</answer>",
            }
        )
    if len(rows) < total:
        raise ValueError(f"only {len(rows)} distinct countdown problems could be drawn")
    features = datasets.Features(
        {
            "prompt": datasets.Value("string"),
            "numbers": datasets.Sequence(datasets.Value("int64")),
            "target": datasets.Value("int64"),
            "solution": datasets.Value("string"),
            "completion": datasets.Value("string"),
        }
    )
    return datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(rows[num_validation:], features=features),
            "validation": datasets.Dataset.from_list(rows[:num_validation], features=features),
        }
    )
