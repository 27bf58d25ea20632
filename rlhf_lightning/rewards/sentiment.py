"""VADER sentiment of the completion as a reward, in [-1, 1] (PyPI `vaderSentiment`, offline).

VADER (Hutto & Gilbert, ICWSM 2014) scores English text with a human-rated lexicon of ~7,500
words, emoticons and slang plus rules for negation ("not good"), intensifiers ("very"), "but",
capitals and "!". Its `compound` score sums the valences of the words and squashes the sum into
[-1, 1] (`x / sqrt(x**2 + 15)`): about +-0.05 and beyond reads as positive / negative, 0 is
neutral or empty text. It suits short informal text (reviews, chat) and is a much stronger,
still transparent, signal than the toy lexicon of `rewards.examples.positive_words`.

A policy optimised against it learns its shortcuts like any fixed scorer's: strings of strong
positive words and "!" push the score towards 1; keep a KL penalty or a length term in a mix.

Use it with ``reward=sentiment``, or by name in a ``reward=mix`` source as
``rlhf_lightning.rewards.sentiment:vader_sentiment``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np


@cache
def _analyzer():
    # Imported on first use: the lexicon loads in ~0.05 s and only reward=sentiment needs it.
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def vader_compound(texts: list[str]) -> np.ndarray:
    """VADER's `compound` score of each text, in [-1, 1]. Shape: (B,) float64.

    Example:
        >>> vader_compound(["I love it!", "The sky is blue.", "This is awful."]).round(3).tolist()
        [0.67, 0.0, -0.459]
    """
    analyzer = _analyzer()
    return np.array([analyzer.polarity_scores(t)["compound"] for t in texts], dtype=np.float64)


def vader_sentiment(prompts: list[str], completions: list[str], **columns: Any) -> np.ndarray:
    """Reward = VADER `compound` of the completion, in [-1, 1]; the prompt is not scored.

    Example:
        >>> vader_sentiment(["Review:", "Review:"], [" Great fun, loved it", " Boring."]).round(3).tolist()
        [0.906, -0.318]
    """
    return vader_compound(completions)
