"""Tokenizer loading and the fixes every stage relies on.

* A pad token distinct from EOS (ALGORITHMS.md §5.6): when pad == eos, masks derived from
  `ids != pad` drop the real EOS and sequence classifiers pool at the token before it.
* A chat template: a ChatML-like default for tokenizers that have none, so chat datasets work
  with any tokenizer.
* Padding side is chosen per use: right for training batches, left for generation queries.
"""

from __future__ import annotations

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from rlhf_lightning.errors import ModelError

PAD_TOKEN = "<|pad|>"

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
) -> PreTrainedTokenizerBase:
    """Load a tokenizer by hub id or local directory.

    The result has a pad token distinct from EOS where possible and a chat template.
    """
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise ModelError(
            f"model.tokenizer={name_or_path}: cannot load a tokenizer ({err.__class__.__name__}: "
            f"{str(err).splitlines()[0]}). Fix: point model.name_or_path (or model.tokenizer) "
            "at a local directory written by save_pretrained, or at a hub id that is cached "
            "on this machine."
        ) from err
    return prepare_tokenizer(tokenizer, chat_template=chat_template)


def prepare_tokenizer(
    tokenizer: PreTrainedTokenizerBase, *, chat_template: str | None = None
) -> PreTrainedTokenizerBase:
    """Give `tokenizer` a distinct pad token, right padding, and a chat template (in place)."""
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        # A new special token grows the vocabulary by one; callers resize the embeddings
        # (see `rlhf_lightning.models.loading.align_embeddings`).
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    tokenizer.padding_side = "right"
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    elif getattr(tokenizer, "chat_template", None) is None:
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return tokenizer
