"""Codebreaker (``env=codebreaker``, Mastermind with 3 digits of 1-4): after each guess the
environment says how many digits are right and in place, and how many are right but elsewhere.

Rows come from ``data.path=codebreaker`` (``code``). Reward 1 on the turn that finds the code
(``info["success"]``), 0 when the guesses run out; a reply without 3 digits of 1-4 is a wasted
guess, answered with the format.
"""

from __future__ import annotations

import re
from typing import Any

from rlhf_lightning.envs.base import Message, StepResult

_GUESS = re.compile(r"[1-4]{3}")


def feedback(code: str, guess: str) -> tuple[int, int]:
    """(right and in place, right but elsewhere), each digit counted once (Mastermind)."""
    in_place = sum(c == g for c, g in zip(code, guess, strict=True))
    common = sum(min(code.count(d), guess.count(d)) for d in set(guess))
    return in_place, common - in_place


class Codebreaker:
    """One game (see the module docstring).

    Args:
        max_guesses: Guesses before the code is told.
    """

    def __init__(self, max_guesses: int = 6) -> None:
        self.max_guesses = max_guesses
        self.code = ""
        self.guesses = 0

    def reset(self, row: dict[str, Any]) -> list[Message]:
        self.code, self.guesses = str(row["code"]), 0
        return [{"role": "user", "content": row["prompt"]}]

    def step(self, assistant_text: str) -> StepResult:
        self.guesses += 1
        found = _GUESS.search(assistant_text)
        info = {"success": False, "guesses": self.guesses}
        if found and found.group() == self.code:
            return StepResult(None, 1.0, True, {**info, "success": True})
        if self.guesses >= self.max_guesses:
            return StepResult(
                [{"role": "user", "content": f"No. It was {self.code}."}], 0.0, True, info
            )
        if found is None:
            reply = "Reply with 3 digits, each 1 to 4."
        else:
            right, elsewhere = feedback(self.code, found.group())
            reply = f"{right} in place, {elsewhere} elsewhere."
        return StepResult([{"role": "user", "content": reply}], 0.0, False, info)
