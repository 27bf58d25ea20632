"""Tokenizer loading and the fixes every stage relies on.

* A pad token distinct from EOS (ALGORITHMS.md §5.6): when pad == eos, masks derived from
  `ids != pad` drop the real EOS and sequence classifiers pool at the token before it. A
  pretrained vocabulary is not grown for it: an existing special token that no text, chat
  turn or stop uses is reused (see `choose_pad_token`), because a new row makes peft save the
  whole embedding matrix and LM head in every LoRA adapter (hundreds of MB for a 49k vocabulary).
* A chat template: a ChatML-like default for tokenizers that have none, so chat datasets work
  with any tokenizer.
* Padding side is chosen per use: right for training batches, left for generation queries.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from rlhf_lightning.errors import ConfigError, ModelError

PAD_TOKEN = "<|pad|>"

# Tokens that models reserve for padding or that mark documents in pretraining only, tried in
# this order after the unknown token: Llama 3's right-pad, StarCoder-style FIM pad, common
# `<pad>` spellings, and `<|endoftext|>` where a chat model ends turns with another token.
REUSABLE_PAD_TOKENS = (
    "<|finetune_right_pad_id|>",
    "<fim_pad>",
    "<|fim_pad|>",
    "<pad>",
    "[PAD]",
    PAD_TOKEN,
    "<|endoftext|>",
)

DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def load_tokenizer(
    name_or_path: str,
    *,
    trust_remote_code: bool = False,
    chat_template: str | None = None,
    pad_token: str | None = None,
) -> PreTrainedTokenizerBase:
    """Load a tokenizer by hub id or local directory.

    The result has a pad token distinct from EOS and a chat template (see `prepare_tokenizer`).
    """
    _refuse_model_dir_without_tokenizer(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise ModelError(
            f"model.tokenizer={name_or_path}: cannot load a tokenizer ({err.__class__.__name__}: "
            f"{str(err).splitlines()[0]}). Fix: point model.name_or_path (or model.tokenizer) "
            "at a local directory written by save_pretrained, or at a hub id that is cached "
            "on this machine."
        ) from err
    return prepare_tokenizer(tokenizer, chat_template=chat_template, pad_token=pad_token)


# Files one of which every saved tokenizer has (fast, sentencepiece, BPE or WordPiece ones).
_TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "spiece.model", "vocab.json",
    "vocab.txt", "merges.txt", "special_tokens_map.json",
)  # fmt: skip


def _refuse_model_dir_without_tokenizer(name_or_path: str) -> None:
    """A model directory without tokenizer files loads as a one-token tokenizer that encodes
    every text to nothing; refuse it by name instead."""
    directory = Path(name_or_path)
    if not (directory / "config.json").is_file():
        return
    if any((directory / name).is_file() for name in _TOKENIZER_FILES):
        return
    raise ModelError(
        f"{name_or_path}: model files but no tokenizer files ({', '.join(_TOKENIZER_FILES[:2])}, "
        "...): an export that was cut short, or a model saved without its tokenizer. Fix: "
        "export it again (the run's command with ckpt_path=<run>/checkpoints/last.ckpt), save "
        "the tokenizer beside it, or set model.tokenizer to the tokenizer to use."
    )


def prepare_tokenizer(
    tokenizer: PreTrainedTokenizerBase,
    *,
    chat_template: str | None = None,
    pad_token: str | None = None,
) -> PreTrainedTokenizerBase:
    """Give `tokenizer` a distinct pad token, right padding, and a chat template (in place).

    Args:
        tokenizer: Changed in place and returned.
        chat_template: A Jinja template overriding the tokenizer's; without one and without
            a template of its own, the tokenizer gets `DEFAULT_CHAT_TEMPLATE`.
        pad_token: None keeps a pad that differs from EOS, else reuses an existing token
            (`choose_pad_token`), and adds `PAD_TOKEN` only when none qualifies. A string makes
            that token the pad, added to the vocabulary when it is not in it: the way to ask
            for a new, separately trained pad row.

    When a token is added the vocabulary grows by one; callers resize the embeddings (see
    `rlhf_lightning.models.loading.align_embeddings`).
    """
    tokenizer.padding_side = "right"
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    elif getattr(tokenizer, "chat_template", None) is None:
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    if pad_token is not None:
        if pad_token in (tokenizer.eos_token, tokenizer.bos_token):
            raise ConfigError(
                f"model.pad_token={pad_token} is the tokenizer's EOS or BOS token, which must "
                "stay distinct from padding. Fix: name another token, or null to choose one."
            )
        _set_pad(tokenizer, pad_token)
    elif tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        _set_pad(tokenizer, choose_pad_token(tokenizer) or PAD_TOKEN)
    return tokenizer


def choose_pad_token(tokenizer: PreTrainedTokenizerBase) -> str | None:
    """An existing token that can pad without growing the vocabulary, or None.

    Candidates, in order: the unknown token (a byte-level BPE never produces it), then
    `REUSABLE_PAD_TOKENS`. A candidate qualifies when it is a single token already in the
    vocabulary and is not BOS or EOS, and its text does not occur in the chat template (so it
    never marks a turn, which the model is trained to emit). The rollout sampler bans the pad
    id, so a reused token is never sampled as part of a response either.

    For SmolLM2 this picks `<|endoftext|>` (id 0, its unknown token): BOS `<|im_start|>` and EOS
    `<|im_end|>` open and close chat turns; it has no `<fim_pad>`. GPT-2-style tokenizers whose
    only special token is `<|endoftext|>` (BOS = EOS = unk) have no candidate.
    """
    vocab = tokenizer.get_vocab()
    template = tokenizer.chat_template or ""
    if isinstance(template, dict):  # named templates (e.g. "default", "tool_use")
        template = "\n".join(template.values())
    taken = {tokenizer.eos_token, tokenizer.bos_token}
    for token in (tokenizer.unk_token, *REUSABLE_PAD_TOKENS):
        if token and token in vocab and token not in taken and token not in template:
            return token
    return None


def _set_pad(tokenizer: PreTrainedTokenizerBase, token: str) -> None:
    if token in tokenizer.get_vocab():
        tokenizer.pad_token = token
    else:
        tokenizer.add_special_tokens({"pad_token": token})
