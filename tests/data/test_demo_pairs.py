"""The embedded demo preference pairs: counts, held-out texts, labels and length matching."""

from __future__ import annotations

import statistics

import pytest

from rlhf_lightning.data import build_demo_pairs, load_demo_corpus
from rlhf_lightning.data.demo_pairs import match_by_length
from rlhf_lightning.errors import ConfigError


@pytest.fixture(scope="module")
def pairs():
    return build_demo_pairs(seed=0, val_fraction=0.1)


@pytest.fixture(scope="module")
def labels():
    corpus = load_demo_corpus()[:]
    return {
        text: (label, confidence)
        for text, label, confidence in zip(
            corpus["text"], corpus["label"], corpus["confidence"], strict=True
        )
    }


def test_counts_and_columns(pairs):
    # The numbers quoted in the demo_pairs module docstring.
    assert (len(pairs["train"]), len(pairs["validation"])) == (5288, 587)
    for split in pairs.values():
        assert split.column_names == ["prompt", "chosen", "rejected"]
        assert set(split["prompt"]) == {""}


def test_no_text_is_shared_between_splits_or_pairs(pairs):
    texts = {name: list(split["chosen"]) + list(split["rejected"]) for name, split in pairs.items()}
    assert not set(texts["train"]) & set(texts["validation"])
    for split_texts in texts.values():
        assert len(set(split_texts)) == len(split_texts)


def test_chosen_positive_rejected_negative_and_confident(pairs, labels):
    for split in pairs.values():
        for chosen, rejected in zip(split["chosen"], split["rejected"], strict=True):
            assert labels[chosen][0] == 2 and labels[rejected][0] == 0
            assert labels[chosen][1] >= 0.6 and labels[rejected][1] >= 0.6


def test_lengths_are_matched(pairs):
    for split in pairs.values():
        chosen = [len(t) for t in split["chosen"]]
        rejected = [len(t) for t in split["rejected"]]
        gaps = [abs(c - r) for c, r in zip(chosen, rejected, strict=True)]
        assert all(gap <= max(2, 0.1 * c) for gap, c in zip(gaps, chosen, strict=True))
        assert statistics.mean(gaps) < 0.5
        assert abs(statistics.mean(chosen) - statistics.mean(rejected)) < 0.5
        # Both are spread the same way, not only equal on average.
        assert abs(statistics.stdev(chosen) - statistics.stdev(rejected)) < 0.5
        chosen_words = statistics.mean(len(t.split()) for t in split["chosen"])
        rejected_words = statistics.mean(len(t.split()) for t in split["rejected"])
        assert abs(chosen_words - rejected_words) < 1.0


def test_deterministic_given_seed(pairs):
    again = build_demo_pairs.__wrapped__(seed=0, val_fraction=0.1)  # bypass the cache
    for name in pairs:
        assert again[name]["chosen"][:] == pairs[name]["chosen"][:]
        assert again[name]["rejected"][:] == pairs[name]["rejected"][:]
    other = build_demo_pairs(seed=1, val_fraction=0.1)
    assert set(other["validation"]["chosen"]) != set(pairs["validation"]["chosen"])


def test_val_fraction(pairs):
    none = build_demo_pairs(seed=0, val_fraction=0.0)
    assert len(none["validation"]) == 0 and len(none["train"]) == 5876
    with pytest.raises(ConfigError, match="val_fraction.*Fix"):
        build_demo_pairs(seed=0, val_fraction=1.0)


def test_match_by_length_takes_nearest_unused():
    chosen = ["aaaa", "aa", "aaaaaaaaaaaaaaaaaaaa"]
    rejected = ["bbb", "bb", "bbbb", "b" * 40]
    # Shortest chosen first: "aa" takes "bb", "aaaa" takes "bbbb"; nothing is within
    # max(2, 10%) of the 20-character text, so it is left unpaired.
    assert match_by_length(chosen, rejected) == [("aa", "bb"), ("aaaa", "bbbb")]
