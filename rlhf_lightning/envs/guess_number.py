"""Guess the number (``env=guess_number``): the environment answers higher or lower.

Rows come from ``data.path=guess_number`` (``secret``, ``high``, ``max_guesses``). Each turn the
assistant names a number; the environment answers ``Higher.`` or ``Lower.`` until the number
is found (reward ``1``, ``info["success"]``) or the guesses run out (reward 0, the number is
told). A reply without a number counts as a guess and is answered ``Reply with one number.``.
Each guess costs ``guess_cost`` (a per-turn reward, placed on that turn), so finding the number
sooner is better than later; a guess the answers so far already rule out (or no number at
all) costs ``wasted_cost`` more: a dense signal that reaches the turn that wasted the guess.

``information_reward`` pays each guess for what its answer is expected to tell: the entropy in
bits of the answer (found, higher, lower) over the secrets still open, as a share of the
``log2(high)`` bits the game starts with. It is largest for a guess that halves the open range,
0 for a wasted one, and does not depend on the secret: success alone is mostly luck (guessing
anywhere in the open range finds the number 59% of the time, halving it 86%, on the held-out
games), the information of a guess is not.

:func:`demonstrations` plays the game with a scripted player that guesses within the range the
answers so far leave open, sometimes in its middle and otherwise anywhere in it: conversations
for an SFT warm-up that teaches the format, the bookkeeping and both ways of guessing; RL then
learns which one wins.
"""

from __future__ import annotations

import math
import random
import re
from typing import Any

from rlhf_lightning.envs.base import Message, StepResult

_NUMBER = re.compile(r"-?\d+")


class GuessNumber:
    """One game of guess-the-number (see the module docstring).

    Args:
        success_reward: The reward of the turn that names the secret.
        guess_cost: Subtracted from every turn's reward (0: only success counts).
        wasted_cost: Subtracted from the reward of a guess outside the range the answers so
            far leave open, or of a reply without a number.
        information_reward: Paid per guess for the expected information of its answer, as a
            share of the game's ``log2(high)`` bits (0: off; see the module docstring).
        max_guesses: Guesses when the row does not say (its ``max_guesses`` column).
    """

    def __init__(
        self,
        success_reward: float = 1.0,
        guess_cost: float = 0.0,
        wasted_cost: float = 0.0,
        information_reward: float = 0.0,
        max_guesses: int = 4,
    ) -> None:
        self.success_reward = success_reward
        self.guess_cost = guess_cost
        self.wasted_cost = wasted_cost
        self.information_reward = information_reward
        self.max_guesses = max_guesses
        self.secret = self.guesses = self.low = self.high = self.start_high = 0
        self.limit = max_guesses

    def reset(self, row: dict[str, Any]) -> list[Message]:
        self.secret = int(row["secret"])
        self.limit = int(row.get("max_guesses") or self.max_guesses)
        self.guesses, self.low, self.high = 0, 1, int(row.get("high") or self.secret)
        self.start_high = self.high
        return [{"role": "user", "content": row["prompt"]}]

    def step(self, assistant_text: str) -> StepResult:
        self.guesses += 1
        found = _NUMBER.search(assistant_text)
        guess = int(found.group()) if found else None
        informed = self.information_reward * self.information(guess)  # before the answer
        if guess == self.secret:
            reward = self.success_reward - self.guess_cost + informed
            return StepResult(None, reward, True, {"success": True, "guesses": self.guesses})
        wasted = guess is None or not self.low <= guess <= self.high
        reward = -self.guess_cost - self.wasted_cost * wasted + informed
        if guess is not None and guess < self.secret:
            self.low = max(self.low, guess + 1)
        elif guess is not None:
            self.high = min(self.high, guess - 1)
        over = self.guesses >= self.limit
        if over:
            reply = f"No. It was {self.secret}."
        elif guess is None:
            reply = "Reply with one number."
        else:
            reply = "Higher." if guess < self.secret else "Lower."
        info = {"success": False, "guesses": self.guesses}
        return StepResult([{"role": "user", "content": reply}], reward, over, info)

    def information(self, guess: int | None) -> float:
        """The entropy of the answer to `guess` over the secrets still open, as a share of the
        game's ``log2(high)`` bits: each open secret equally likely, the answer is "found"
        for one, "higher" for those above the guess, "lower" for those below. 0 for a guess
        outside the open range (its answer is known) or no guess."""
        start = math.log2(self.start_high) if self.start_high > 1 else 0.0
        if guess is None or not self.low <= guess <= self.high or start == 0.0:
            return 0.0
        open_ = self.high - self.low + 1
        answers = (1, guess - self.low, self.high - guess)  # found, higher, lower
        bits = sum(k / open_ * math.log2(open_ / k) for k in answers if k > 0)
        return bits / start


def demonstrations(
    rows: list[dict[str, Any]], seed: int = 0, halving_share: float = 0.0
) -> list[list[Message]]:
    """One conversation per row, played by a scripted player who guesses within the range still
    open: the middle of it with probability ``halving_share`` (per guess), else anywhere in it
    uniformly (see the module docstring)."""
    rng = random.Random(seed)
    conversations = []
    for row in rows:
        env = GuessNumber()
        messages = env.reset(row)
        low, high = 1, int(row["high"])
        while True:
            halve = rng.random() < halving_share
            guess = (low + high + rng.randint(0, 1)) // 2 if halve else rng.randint(low, high)
            messages.append({"role": "assistant", "content": str(guess)})
            result = env.step(str(guess))
            if result.done:
                break
            messages += result.messages or []
            low, high = (guess + 1, high) if guess < env.secret else (low, guess - 1)
        conversations.append(messages)
    return conversations
