"""A transparent, offline toxicity score: a profanity/insult lexicon plus shouting and "!!!".

A stand-in for a learned toxicity classifier (e.g. a RoBERTa hate-speech or toxic-comment
model), for machines without a model hub. Users who have such a classifier exported as a
sequence-classification model plug it in with ``reward=model reward.path=<dir>`` instead (its
score should rise with *non*-toxicity, or be negated with ``reward=mix`` and a weight of -1).

Per text, three features, each in [0, 1]:

* ``lexicon = 1 - 0.5 ** k`` where ``k`` counts the words that start with one of
  :data:`OFFENSIVE_STEMS` or equal one of :data:`OFFENSIVE_WORDS` (case-insensitive): one
  offensive word gives 0.5, two 0.75, three 0.875. Counting, not dividing by the length, so
  padding a text with harmless words does not hide an insult.
* ``shouting``: the share of the words written in capitals among all words, counting only
  capitalised words of 4+ letters (shorter ones are mostly acronyms: JFK, USA, LOL).
* ``exclaiming = min(1, (r - 1) / 2)`` where ``r`` is the longest run of ``!``: one ``!`` is
  0, ``!!`` is 0.5, ``!!!`` and longer are 1.

``toxicity = 0.6 * lexicon + 0.2 * shouting + 0.2 * exclaiming``, in [0, 1]; the reward
:func:`non_toxic` is ``-toxicity``, in [-1, 0]. Shouting and exclaiming alone (a happy "YAY!!!")
reach at most 0.4; a lexicon hit dominates. The lexicon is short and English-only: it misses
insults without swear words, and counts quoted or self-directed swearing. It is a toy to drive
the RL machinery offline, not a content filter.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

# Profanity and insults, matched as word prefixes: "fuck" covers fucking/fucked/fucker.
# Each stem was checked against the demo corpus for words it would wrongly catch.
OFFENSIVE_STEMS = (
    "asshole",
    "bastard",
    "bitch",
    "bullshit",
    "crap",
    "cunt",
    "damn",
    "dickhead",
    "disgust",
    "douche",
    "dumb",
    "fuck",
    "idiot",
    "jackass",
    "loser",
    "moron",
    "pathetic",
    "piss",
    "retard",
    "scum",
    "screw",
    "shit",
    "slut",
    "stfu",
    "stupid",
    "suck",
    "whore",
    "wtf",
)
# Matched as whole words only: as prefixes they would catch assist, hello, dickens, freaky...
OFFENSIVE_WORDS = frozenset(
    [
        "arse",
        "ass",
        "asses",
        "dick",
        "dicks",
        "freakin",
        "freaking",
        "garbage",
        "hell",
        "jerk",
        "jerks",
        "trash",
        "ugly",
    ]
)
WEIGHTS = {"lexicon": 0.6, "shouting": 0.2, "exclaiming": 0.2}
# Capitalised words shorter than this are not shouting (JFK, USA, LOL, OMG).
MIN_SHOUT_LETTERS = 4

_WORD = re.compile(r"[A-Za-z']+")
_EXCLAIMS = re.compile(r"!+")


def _is_offensive(word: str) -> bool:
    return word in OFFENSIVE_WORDS or word.startswith(OFFENSIVE_STEMS)


def toxicity_features(texts: Sequence[str]) -> dict[str, np.ndarray]:
    """The three features of every text (definitions in the module docstring).

    Args:
        texts: B strings.

    Returns:
        ``{"lexicon", "shouting", "exclaiming", "offensive_words"}``, each (B,) float64;
        ``offensive_words`` is the raw count ``k`` behind ``lexicon``.
    """
    counts = np.zeros((len(texts), 4))  # offensive words, shouted words, words, longest "!" run
    for i, text in enumerate(texts):
        tokens = _WORD.findall(text)
        counts[i, 0] = sum(_is_offensive(t.lower()) for t in tokens)
        counts[i, 1] = sum(
            t.isupper() and sum(c.isalpha() for c in t) >= MIN_SHOUT_LETTERS for t in tokens
        )
        counts[i, 2] = len(tokens)
        counts[i, 3] = max((len(run) for run in _EXCLAIMS.findall(text)), default=0)
    return {
        "lexicon": 1.0 - 0.5 ** counts[:, 0],
        "shouting": counts[:, 1] / np.maximum(counts[:, 2], 1.0),
        "exclaiming": np.clip((counts[:, 3] - 1.0) / 2.0, 0.0, 1.0),
        "offensive_words": counts[:, 0],
    }


def toxicity(texts: Sequence[str]) -> np.ndarray:
    """Lexicon toxicity of each text, in [0, 1]. Shape: (B,) float64.

    Example:
        >>> toxicity(["have a nice day", "you stupid idiot", "WHAT A DAY!!!"]).round(3).tolist()
        [0.0, 0.45, 0.267]
    """
    features = toxicity_features(texts)
    return sum(weight * features[name] for name, weight in WEIGHTS.items())


def non_toxic(prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
    """Reward ``-toxicity(completion)``, in [-1, 0]: 0 for a clean completion.

    Only the completion is scored: the policy answers for what it writes, not for the prompt.

    Example:
        >>> non_toxic(["p", "p"], [" what a lovely day", " shut up, you idiot!!"])
        [0.0, -0.4]
    """
    return (0.0 - toxicity(completions)).tolist()  # 0.0 - x: no "-0.0" for clean text
