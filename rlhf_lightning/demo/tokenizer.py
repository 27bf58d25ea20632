"""A byte-level BPE tokenizer trained locally on the demo corpus, cached after the first build."""

from __future__ import annotations

import logging
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from rlhf_lightning.demo.cache import ensure_entry, tokenizer_problem
from rlhf_lightning.paths import cache_dir
from rlhf_lightning.rundir import atomic_directory

log = logging.getLogger(__name__)

DEMO_VOCAB_SIZE = 4096
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
CHAT_TOKENS = ["<|im_start|>", "<|im_end|>"]
_VERSION = "v1"


def demo_tokenizer_dir() -> Path:
    return cache_dir() / f"demo-tokenizer-{_VERSION}-{DEMO_VOCAB_SIZE}"


def ensure_demo_tokenizer() -> Path:
    """The demo tokenizer's directory, training and caching it first if needed (a few seconds;
    a damaged cached copy is trained again, see ``demo/cache.py``)."""
    path = demo_tokenizer_dir()

    def build() -> None:
        log.info("Training the demo tokenizer on the demo corpus -> %s", path)
        from rlhf_lightning.data.demo_corpus import load_demo_corpus

        texts = load_demo_corpus()["text"]
        with atomic_directory(path) as tmp:
            train_bpe_tokenizer(texts, DEMO_VOCAB_SIZE).save_pretrained(tmp)

    ensure_entry(path, lambda: tokenizer_problem(path), build)
    return path


def digits_tokenizer_dir() -> Path:
    return cache_dir() / f"demo-tokenizer-digits-{_VERSION}-{DEMO_VOCAB_SIZE}"


def ensure_digits_tokenizer() -> Path:
    """The demo tokenizer with every digit its own token (``demo:digits_tokenizer``), built from
    it on first use: the same vocabulary and merges, with a split before each digit ahead of the
    byte-level step, so a number is its digits in every position. A small model learns
    arithmetic from these faster than from the corpus's merges ("1081" -> "10" "8" "1"): 0.14
    against 0.08 held-out accuracy after the same SFT on two-digit sums (docs/rlvr.md)."""
    path = digits_tokenizer_dir()
    if not (path / "tokenizer.json").is_file():
        log.info("Building the digit-splitting demo tokenizer (first use) -> %s", path)
        tokenizer = PreTrainedTokenizerFast.from_pretrained(ensure_demo_tokenizer())
        backend = tokenizer.backend_tokenizer
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), backend.pre_tokenizer]
        )
        tokenizer.save_pretrained(path)
    return path


def demo_tokenizer() -> PreTrainedTokenizerFast:
    """Load the demo tokenizer (built on first use)."""
    return PreTrainedTokenizerFast.from_pretrained(ensure_demo_tokenizer())


def train_bpe_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a GPT-2-style byte-level BPE tokenizer on `texts`.

    `<|endoftext|>` is both BOS and EOS (as in GPT-2); `<|pad|>` is a separate pad token;
    the ChatML markers are single tokens so chat templates tokenise compactly.
    """
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN, *CHAT_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=CHAT_TOKENS,
        model_max_length=1024,
    )
