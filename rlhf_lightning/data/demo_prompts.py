"""Prompts for the demo's RL stages and reward calibration: openings of demo corpus texts."""

from __future__ import annotations

import random

from rlhf_lightning.data.demo_corpus import load_demo_corpus


def demo_prompts(n: int, words: int = 3, seed: int = 0) -> list[str]:
    """`n` distinct openings (the first `words` words) of demo texts, sampled with `seed`.

    The policy continues each opening; the sentiment of the continuation is what the demo
    reward model scores.
    """
    texts = load_demo_corpus()["text"]
    openings = sorted({" ".join(t.split()[:words]) for t in texts if len(t.split()) > words})
    random.Random(seed).shuffle(openings)
    return openings[:n]
