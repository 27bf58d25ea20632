"""Episodes of the built-in multi-turn environments (``rlhf_lightning.envs``), as data.

Each row is one game to play: its ``prompt`` (the first user message) and what the
environment needs to play it. ``train`` and ``validation`` never share a game.

* ``guess_number``: "I picked a number from 1 to 16. ..." with the ``secret``, the range
  ``high`` and ``max_guesses`` (``env=guess_number``: the environment answers higher or
  lower);
* ``tool_arithmetic``: "What is 347 * 89? ..." with the ``answer`` (``env=tool_arithmetic``:
  the model may call a calculator before answering);
* ``codebreaker``: find a 3-digit code of digits 1-4 (``code``); the environment tells how
  many digits are right and in place, and how many are right but elsewhere.

Built deterministically from a seeded ``random.Random``: the same rows on every machine.
"""

from __future__ import annotations

import itertools
import random
from functools import lru_cache

import datasets

GUESS_NUMBER = "guess_number"
TOOL_ARITHMETIC = "tool_arithmetic"
CODEBREAKER = "codebreaker"


def guess_number_prompt(high: int, max_guesses: int) -> str:
    return (
        f"I picked a number from 1 to {high}. You have {max_guesses} guesses; after each I say "
        "higher or lower. Reply with one number."
    )


def _split(rows: list[dict], num_validation: int, seed: int) -> datasets.DatasetDict:
    """Shuffled rows, the first `num_validation` held out."""
    random.Random(seed).shuffle(rows)
    return datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(rows[num_validation:]),
            "validation": datasets.Dataset.from_list(rows[:num_validation]),
        }
    )


@lru_cache(maxsize=4)
def build_guess_number(
    min_high: int = 8,
    max_high: int = 24,
    max_guesses: int = 4,
    num_validation: int = 64,
    seed: int = 0,
) -> datasets.DatasetDict:
    """Every game (the range 1..high for each high in [min_high, max_high], every secret in
    it), `num_validation` of them held out. Columns ``prompt``, ``secret``, ``high``,
    ``max_guesses``."""
    rows = [
        {
            "prompt": guess_number_prompt(high, max_guesses),
            "secret": secret,
            "high": high,
            "max_guesses": max_guesses,
        }
        for high in range(min_high, max_high + 1)
        for secret in range(1, high + 1)
    ]
    return _split(rows, num_validation, seed)


@lru_cache(maxsize=4)
def build_tool_arithmetic(
    num_train: int = 2000, num_validation: int = 200, seed: int = 0
) -> datasets.DatasetDict:
    """Products of a 2-4 digit and a 2-3 digit number, hard to do in one's head. Columns
    ``prompt``, ``answer`` (the product as a string)."""
    rng = random.Random(seed)
    seen: set[tuple[int, int]] = set()
    rows = []
    while len(rows) < num_train + num_validation:
        a, b = rng.randint(10, 9999), rng.randint(10, 999)
        if (a, b) in seen:
            continue
        seen.add((a, b))
        prompt = f"What is {a} * {b}? You may use the calculator. Answer with the number."
        rows.append({"prompt": prompt, "answer": str(a * b)})
    return _split(rows, num_validation, seed)


@lru_cache(maxsize=4)
def build_codebreaker(num_validation: int = 16, seed: int = 0) -> datasets.DatasetDict:
    """Every 3-digit code of digits 1-4, `num_validation` held out. Columns ``prompt``,
    ``code``."""
    prompt = (
        "Find my code: 3 digits, each 1 to 4. After each guess I say how many digits are right "
        "and in place, and how many are right but elsewhere. Reply with 3 digits."
    )
    codes = ["".join(c) for c in itertools.product("1234", repeat=3)]
    return _split([{"prompt": prompt, "code": code} for code in codes], num_validation, seed)
