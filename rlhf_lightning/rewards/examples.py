"""Small offline reward functions for demos and tests, usable in configs as ``module:function``.

They are deterministic and need no model, e.g.
``reward.function=rlhf_lightning.rewards.examples:positive_words``. They are toys: a policy
optimised against them learns their shortcuts (a lone "love" scores the maximum).

Each takes ``(prompts, completions, **columns)`` and returns one float per completion.
"""

from __future__ import annotations

import re
from typing import Any

_WORD = re.compile(r"[a-z']+")

# Small hand-picked lexicons for short informal English (tweets, reviews).
_POSITIVE = (
    "amazing awesome beautiful best better brilliant cool enjoy enjoyed excellent excited fun "
    "glad good great happy haha hope kind like liked love loved lovely lucky nice perfect "
    "pretty smile thank thanks welcome win wonderful wow yay yes"
)
_NEGATIVE = (
    "angry annoying awful bad boring broke broken cry crying dead disappointed fail hate hated "
    "hurt hurts ill lost miss missed no not poor sad sick sorry stupid sucks tired terrible "
    "ugh upset worse worst wrong"
)
POSITIVE_WORDS = frozenset(_POSITIVE.split())
NEGATIVE_WORDS = frozenset(_NEGATIVE.split())


def words(text: str) -> list[str]:
    """Lower-cased words: runs of letters and apostrophes (``"Don't!"`` -> ``["don't"]``)."""
    return _WORD.findall(text.lower())


def positive_words(prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
    """Lexicon sentiment: (#positive words - #negative words) / #words, in [-1, 1].

    Words are matched against :data:`POSITIVE_WORDS` and :data:`NEGATIVE_WORDS`; dividing by the
    number of words keeps long completions from winning by repetition. An empty completion
    scores 0. The prompt and extra columns are ignored.

    Example:
        >>> positive_words(["p"], ["I love it, not bad"])  # (1 - 2) / 5
        [-0.2]
    """
    scores = []
    for completion in completions:
        tokens = words(completion)
        score = sum((t in POSITIVE_WORDS) - (t in NEGATIVE_WORDS) for t in tokens)
        scores.append(score / len(tokens) if tokens else 0.0)
    return scores


def length_penalty(
    prompts: list[str], completions: list[str], target: int = 20, **columns: Any
) -> list[float]:
    """``-|#words - target| / target``: 0 at exactly ``target`` words, lower further away.

    Example:
        >>> length_penalty(["p", "p"], ["one two", "one two three four"], target=4)
        [-0.5, 0.0]
    """
    if target < 1:
        raise ValueError(f"length_penalty: target must be >= 1 word, got {target}")
    return [-abs(len(words(c)) - target) / target for c in completions]


def exact_match(
    prompts: list[str], completions: list[str], reference: list[str], **columns: Any
) -> list[float]:
    """1.0 when the completion's words equal the ``reference`` column's words, else 0.0.

    Shows a dataset column reaching a reward: a ``reference`` column (one answer per prompt)
    arrives as the ``reference`` keyword argument. Case and punctuation are ignored.

    Example:
        >>> exact_match(["2+2="], [" Four."], reference=["four"])
        [1.0]
    """
    return [
        float(words(completion) == words(str(answer)))
        for completion, answer in zip(completions, reference, strict=True)
    ]


def letter_rate(
    prompts: list[str], completions: list[str], letter: str = "e", **columns: Any
) -> list[float]:
    """Share of the completion's characters equal to ``letter`` (0 for an empty completion).

    A toy reward even a tiny random policy can improve in a few PPO iterations, for smoke runs
    and tests of the RL machinery.

    Example:
        >>> letter_rate(["p", "p"], ["eel", ""])
        [0.6666666666666666, 0.0]
    """
    return [c.count(letter) / len(c) if c else 0.0 for c in completions]
