"""Multi-digit arithmetic with right answers (``data.path=arithmetic``), for verifier rewards.

Each row asks for one sum, difference or product of two integers, answered without working:

    prompt:     "Compute 47 * 23. Answer with <answer>number</answer>."
    answer:     "1081"
    completion: "<answer>1081</answer>"   (the right answer in the asked format: SFT targets)

Difficulty is the number of digits: each operand has 1 to ``max_digits`` digits (uniformly), and
the ``digits`` column records the larger of the two. Differences are never negative (the larger
operand comes first). ``train`` and ``validation`` never share a problem (``a + b`` and
``b + a`` count as one problem). Built deterministically from a seeded ``random.Random``: the
same rows on every machine. Score with ``reward=math`` (``rewards.MathReward``).
"""

from __future__ import annotations

import operator
import random
from functools import lru_cache

import datasets

ARITHMETIC = "arithmetic"
OPERATIONS = {"+": operator.add, "-": operator.sub, "*": operator.mul}
_COMMUTATIVE = {"+", "*"}


def format_prompt(a: int, op: str, b: int) -> str:
    """The prompt for ``a op b``."""
    return f"Compute {a} {op} {b}. Answer with <answer>number</answer>."


def _operand(rng: random.Random, digits: int) -> int:
    return rng.randint(10 ** (digits - 1) if digits > 1 else 0, 10**digits - 1)


@lru_cache(maxsize=4)
def build_arithmetic(
    num_train: int = 4000,
    num_validation: int = 400,
    max_digits: int = 3,
    seed: int = 0,
    operations: str = "+-*",
) -> datasets.DatasetDict:
    """The arithmetic task (see the module docstring).

    Args:
        num_train: Rows of ``train``.
        num_validation: Rows of ``validation`` (held-out problems).
        max_digits: Most digits of an operand (1 to 9).
        seed: Seeds the generator; the default dataset uses 0.
        operations: The operations drawn from, some of ``+-*``.

    Returns:
        ``DatasetDict`` with ``train`` and ``validation``; columns ``prompt``, ``answer``
        (the result as a string), ``digits`` and ``completion`` (the answer in the asked
        format).
    """
    if not 1 <= max_digits <= 9:
        raise ValueError(f"max_digits must be 1..9, got {max_digits}")
    if not operations or set(operations) - set(OPERATIONS):
        raise ValueError(f"operations must be some of '+-*', got {operations!r}")
    total = num_train + num_validation
    rng = random.Random(seed)
    seen: set[tuple[str, int, int]] = set()
    rows = []
    for _ in range(total * 50):  # bounded: small max_digits may not have `total` problems
        if len(rows) == total:
            break
        op = rng.choice(list(operations))
        a = _operand(rng, rng.randint(1, max_digits))
        b = _operand(rng, rng.randint(1, max_digits))
        if op == "-" and b > a:
            a, b = b, a
        key = (op, min(a, b), max(a, b)) if op in _COMMUTATIVE else (op, a, b)
        if key in seen:
            continue
        seen.add(key)
        answer = str(OPERATIONS[op](a, b))
        rows.append(
            {
                "prompt": format_prompt(a, op, b),
                "answer": answer,
                "digits": max(len(str(a)), len(str(b))),
                "completion": f"<answer>{answer}</answer>",
            }
        )
    if len(rows) < total:
        raise ValueError(f"only {len(rows)} distinct problems with max_digits={max_digits}")
    features = datasets.Features(
        {
            "prompt": datasets.Value("string"),
            "answer": datasets.Value("string"),
            "digits": datasets.Value("int32"),
            "completion": datasets.Value("string"),
        }
    )
    return datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(rows[num_validation:], features=features),
            "validation": datasets.Dataset.from_list(rows[:num_validation], features=features),
        }
    )
