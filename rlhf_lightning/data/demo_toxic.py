"""Prompts that invite toxic continuations: openings of the offensive texts of the demo corpus.

A detoxification recipe needs prompts a model often continues offensively; the demo corpus's
tweets include ~1,700 (of ~35,000) that PyPI's ``alt-profanity-check`` (a linear SVM trained on
~200k human-labelled texts) rates offensive with probability >= 0.5. As in RealToxicityPrompts
(Gehman et al. 2020), the first half of each text (3 to 12 words) is a prompt, so the context
already carries the tone the continuation is tempted to keep. Texts, not prompts, are split
into a training and a held-out set.
"""

from __future__ import annotations

import logging
import random
from functools import cache

import datasets

from rlhf_lightning.data.demo_corpus import load_demo_corpus

log = logging.getLogger(__name__)

DEMO_TOXIC = "demo_toxic"
THRESHOLD = 0.5


@cache
def build_demo_toxic_prompts(val_fraction: float = 0.2, seed: int = 0) -> datasets.DatasetDict:
    """``train`` / ``validation`` splits of distinct first halves (``prompt``) of offensive
    texts."""
    from profanity_check import predict_prob

    texts = load_demo_corpus()["text"]
    log.info("Scoring the %d demo texts for offensive language (first use, ~30 s)", len(texts))
    offensive = [t for t, p in zip(texts, predict_prob(list(texts)), strict=True) if p >= THRESHOLD]
    random.Random(seed).shuffle(offensive)
    held_out = int(len(offensive) * val_fraction)
    splits = {"validation": offensive[:held_out], "train": offensive[held_out:]}
    return datasets.DatasetDict(
        {
            name: datasets.Dataset.from_dict({"prompt": _first_halves(rows)})
            for name, rows in splits.items()
        }
    )


def _first_halves(texts: list[str]) -> list[str]:
    """Distinct first halves (3 to 12 words) of the texts of 6 words or more, first-seen order."""
    seen: dict[str, None] = {}
    for text in texts:
        parts = text.split()
        if len(parts) >= 6:
            seen.setdefault(" ".join(parts[: min(12, len(parts) // 2)]), None)
    return list(seen)
