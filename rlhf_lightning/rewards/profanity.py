"""A learned toxicity score as a reward: PyPI `alt-profanity-check`, negated, in [-1, 0].

`alt-profanity-check` (MIT) ships a linear SVM over a bag-of-words (TF-IDF) vectoriser, trained
on about 200k human-labelled clean and offensive/profane comments and calibrated to a
probability; `predict_prob(texts)` is that probability, one sparse matrix product for the whole
batch (microseconds per text, offline). Unlike the hand-written lexicon of `rewards.toxicity`
it weighs every word it saw in training, so insults without swear words move it too, but it is
still a bag of words: it does not read negation, context or quotation.

The reward is ``-p(offensive | completion)``: 0 (clean) is the best score, -1 the worst, so a
detoxification run maximises it. Neutral text scores a few hundredths below 0.

Each alt-profanity-check release pins the scikit-learn it pickled its model with (1.9.1 pins
scikit-learn==1.9.1); pip installs that pair together.

Use it with ``reward=toxicity``, or by name in a ``reward=mix`` source as
``rlhf_lightning.rewards.profanity:non_offensive``.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def offensive_probability(texts: list[str]) -> np.ndarray:
    """The classifier's probability that each text is offensive, in [0, 1]. Shape: (B,) float64.

    Example:
        >>> p = offensive_probability(["have a lovely day", "shut up you stupid idiot"])
        >>> bool(p[0] < 0.1 < 0.9 < p[1])
        True
    """
    if not texts:
        return np.zeros(0)
    # Imported on first use: loading scikit-learn and the pickled model takes a few seconds.
    from profanity_check import predict_prob

    return np.asarray(predict_prob(list(texts)), dtype=np.float64)


def non_offensive(prompts: list[str], completions: list[str], **columns: Any) -> np.ndarray:
    """Reward = ``-offensive_probability(completion)``, in [-1, 0]; the prompt is not scored.

    Only the completion is scored: the policy answers for what it writes, not for the prompt.
    """
    return 0.0 - offensive_probability(completions)  # 0.0 - p: no "-0.0"
