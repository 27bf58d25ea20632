"""The embedded default preference pairs: a positive demo text is preferred to a negative one.

Built from the demo corpus (``rlhf_lightning.data.demo_corpus``), so the reward model learns
"more positive sentiment is better", which is what the demo RL stages then optimise. Recipe,
all deterministic given ``seed``:

1. **Confident labels only.** Keep ``positive`` (label 2) and ``negative`` (label 0) texts with
   ``confidence >= 0.6``. Annotator agreement over the corpus: 62.5% of rows at exactly 1.0
   (including the sources published without it), 29.7% in [0.6, 0.75) peaking at 0.66-0.68
   (two of three annotators agreed), 2.3% in [0.75, 1), and 5.5% below 0.6, mostly
   disagreement. The cut drops that last group: 481 of 6,357 positives and 474 of 15,162
   negatives, leaving **5,876 positive and 14,688 negative** texts. Neutral texts are unused.
2. **Held out by text.** Each class is shuffled with ``seed`` and ``round(n * val_fraction)``
   of its texts are set aside for validation *before* pairing; pairs are then built within
   each part and every text is used at most once, so no text appears in both a training and
   a validation pair (nor in two pairs).
3. **Length-matched pairs.** Positives are on average shorter than negatives (80.6 vs 96.4
   characters), which a reward model would pick up as a shortcut. Within each part, the
   positives are taken from shortest to longest and each is paired with the unused negative
   whose character length is nearest (ties broken by the seeded shuffle); a pair whose lengths
   differ by more than ``max(2, 10%)`` characters is not made (with the defaults this
   happens to 1 validation positive, whose part has only 1,469 negatives to choose from). The
   surplus negatives stay unused.
4. **Order.** The pairs of each part are shuffled with ``seed``.

With ``seed=0, val_fraction=0.1``: **5,288 training and 587 validation pairs** (5,875 in all,
about one per confident positive). Means over all pairs: chosen 80.57 characters / 13.31 words,
rejected 80.66 characters / 13.91 words (23.2 vs 22.5 tokens of the demo tokenizer); the
absolute length gap is 0.1 characters on average and at most 12.

Columns: ``prompt`` (always ``""``: the whole text is the completion), ``chosen``, ``rejected``.
A shared-opening variant (``prompt`` = the first words of a text, chosen/rejected = two
continuations of it) is not offered: negative and positive texts rarely share an opening, so
the pairs would either be few or read unnaturally.
"""

from __future__ import annotations

import bisect
import random
from functools import lru_cache

import datasets

from rlhf_lightning.data.demo_corpus import load_demo_corpus
from rlhf_lightning.errors import ConfigError

MIN_CONFIDENCE = 0.6
POSITIVE, NEGATIVE = 2, 0
# A pair is kept when |len(chosen) - len(rejected)| <= max(MIN_GAP, MAX_RELATIVE_GAP * len(chosen)).
MAX_RELATIVE_GAP = 0.1
MIN_GAP = 2


@lru_cache(maxsize=8)
def build_demo_pairs(seed: int = 0, val_fraction: float = 0.1) -> datasets.DatasetDict:
    """Builds the demo preference pairs (recipe and counts in the module docstring).

    Cached per ``(seed, val_fraction)``: ``datasets`` objects are immutable, so sharing is safe.

    Args:
        seed: seeds the held-out split, tie breaks between equally long negatives, and the
            order of the pairs.
        val_fraction: share of the texts of each class held out for validation, in [0, 1);
            0 gives an empty ``validation`` split.

    Returns:
        ``DatasetDict`` with ``train`` and ``validation`` splits, columns ``prompt`` (``""``),
        ``chosen`` (a positive text) and ``rejected`` (a negative text of similar length).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(
            f"data.val_fraction={val_fraction}: must be in [0, 1). Fix: e.g. 0.1, or 0."
        )
    corpus = load_demo_corpus()[:]  # plain lists: ~50x faster to walk than Column objects
    confident = [
        (text, label)
        for text, label, confidence in zip(
            corpus["text"], corpus["label"], corpus["confidence"], strict=True
        )
        if confidence >= MIN_CONFIDENCE
    ]
    rng = random.Random(seed)
    positives = [text for text, label in confident if label == POSITIVE]
    negatives = [text for text, label in confident if label == NEGATIVE]
    rng.shuffle(positives)
    rng.shuffle(negatives)
    n_val_pos = round(len(positives) * val_fraction)
    n_val_neg = round(len(negatives) * val_fraction)
    parts = {
        "train": (positives[n_val_pos:], negatives[n_val_neg:]),
        "validation": (positives[:n_val_pos], negatives[:n_val_neg]),
    }
    splits = {}
    for name, (part_pos, part_neg) in parts.items():
        pairs = match_by_length(part_pos, part_neg)
        rng.shuffle(pairs)
        splits[name] = datasets.Dataset.from_dict(
            {
                "prompt": [""] * len(pairs),
                "chosen": [chosen for chosen, _ in pairs],
                "rejected": [rejected for _, rejected in pairs],
            },
            features=datasets.Features(
                {name: datasets.Value("string") for name in ("prompt", "chosen", "rejected")}
            ),
        )
    return datasets.DatasetDict(splits)


def match_by_length(chosen: list[str], rejected: list[str]) -> list[tuple[str, str]]:
    """Pairs each ``chosen`` text with a distinct ``rejected`` text of nearest length.

    ``chosen`` is walked from shortest to longest (so short texts get first pick of the short
    candidates, the scarce ones here); among equally near candidates the one earlier in
    ``rejected`` wins, so shuffling ``rejected`` randomises ties. A pair whose lengths differ by
    more than ``max(MIN_GAP, MAX_RELATIVE_GAP * len(chosen))`` characters is not made.

    Args:
        chosen: texts to pair, each used once.
        rejected: candidates, each used at most once.

    Returns:
        ``(chosen, rejected)`` pairs, in order of increasing chosen length.
    """
    pool = sorted(range(len(rejected)), key=lambda i: (len(rejected[i]), i))
    lengths = [len(rejected[i]) for i in pool]
    pairs = []
    for text in sorted(chosen, key=len):
        n = len(text)
        at = bisect.bisect_left(lengths, n)
        # The nearest available lengths are at ``at - 1`` and ``at``; prefer the shorter on ties.
        candidates = [k for k in (at - 1, at) if 0 <= k < len(pool)]
        if not candidates:
            break
        best = min(candidates, key=lambda k: abs(lengths[k] - n))
        if abs(lengths[best] - n) > max(MIN_GAP, MAX_RELATIVE_GAP * n):
            continue
        pairs.append((text, rejected[pool[best]]))
        del pool[best], lengths[best]
    return pairs
