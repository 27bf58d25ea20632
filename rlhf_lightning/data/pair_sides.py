"""One preference row -> the token sequences of its chosen and rejected sides.

Text rows are ``lead + prompt + completion + end``; message rows render through the chat
template. The layout and why: ``rlhf_lightning.data.pairs``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from rlhf_lightning.data.chat import assistant_spans
from rlhf_lightning.data.formats import _encode, document_bos, eos_token_id
from rlhf_lightning.data.validation import _FIX_ROWS, describe, require_messages, require_text
from rlhf_lightning.errors import DataError

SIDES = ("chosen", "rejected")


class Side(NamedTuple):
    """One tokenised side of a pair, before truncation: ``lead prompt completion end``."""

    lead: list[int]
    prompt: list[int]
    completion: list[int]
    completion_mask: list[bool]  # per completion token (messages: False between assistant turns)
    end: list[int]


# --- columns and format -------------------------------------------------------------------


def special_affixes(tokenizer: Any) -> tuple[list[int], list[int]]:
    """``(lead, end)``: the tokens that start and end every text side (see module docstring).

    Found by encoding a probe with and without special tokens, so any post-processor works
    (BERT ``[CLS] $A [SEP]``, Llama ``<s> $A``, GPT-2 nothing).
    """
    probe = "a"
    with_specials = _encode([probe], tokenizer, special=True)[0]
    plain = _encode([probe], tokenizer, special=False)[0]
    lead: list[int] = []
    tail: list[int] = []
    for start in range(len(with_specials) - len(plain) + 1):
        if with_specials[start : start + len(plain)] == plain:
            lead, tail = with_specials[:start], with_specials[start + len(plain) :]
            break
    bos = document_bos(tokenizer)
    if not lead and bos is not None:
        lead = [bos]
    end = tail or [eos_token_id(tokenizer)]
    return lead, end


def _text_sides(
    rows: Sequence[Mapping[str, Any]],
    names: Mapping[str, str],
    has: Mapping[str, bool],
    tokenizer: Any,
    indices: Sequence[int],
    source: str,
) -> list[tuple[Side, Side]]:
    prompts, chosen, rejected = [], [], []
    for row, index in zip(rows, indices, strict=True):
        prompt = _text_prompt(row, names, has, index, source)
        texts = [
            require_text(row[names[side]], index=index, column=names[side], source=source)
            for side in SIDES
        ]
        if texts[0].strip() == texts[1].strip():
            raise DataError(_identical(source, index, names, texts[0]))
        prompts.append(prompt)
        chosen.append(texts[0])
        rejected.append(texts[1])
    return encode_text_sides(tokenizer, prompts, chosen, rejected)  # type: ignore[return-value]


def _text_prompt(
    row: Mapping[str, Any],
    names: Mapping[str, str],
    has: Mapping[str, bool],
    index: int,
    source: str,
) -> str:
    """The row's prompt string (``""`` without a prompt column)."""
    prompt = row[names["prompt"]] if has["prompt"] else ""
    if not isinstance(prompt, str):
        raise DataError(
            f"{source}: row {index}, column '{names['prompt']}': expected a string (\"\" "
            f"for no prompt), got {describe(prompt)}. {_FIX_ROWS}"
        )
    return prompt


def encode_text_sides(
    tokenizer: Any, prompts: list[str], *completions: list[str]
) -> list[tuple[Side, ...]]:
    """Per row, one text ``Side`` for each completion column, all sharing the row's prompt."""
    lead, end = special_affixes(tokenizer)
    # One batched call per column: the fast tokenizer's batch path is ~10x faster.
    prompt_ids = _encode(prompts, tokenizer, special=False)
    columns = [_encode(texts, tokenizer, special=False) for texts in completions]
    return [
        tuple(Side(lead, prompt, ids, [True] * len(ids), end) for ids in row_completions)
        for prompt, *row_completions in zip(prompt_ids, *columns, strict=True)
    ]


def _message_sides(
    rows: Sequence[Mapping[str, Any]],
    names: Mapping[str, str],
    has: Mapping[str, bool],
    tokenizer: Any,
    indices: Sequence[int],
    source: str,
) -> list[tuple[Side, Side]]:
    if not getattr(tokenizer, "is_fast", False):
        raise DataError(
            f"{source}: format 'messages' needs a fast tokenizer (for character offsets), got "
            f"{type(tokenizer).__name__}. Fix: load the tokenizer with use_fast=True."
        )
    _, end = special_affixes(tokenizer)
    sides = []
    for row, index in zip(rows, indices, strict=True):
        chats = [
            require_messages(row[names[side]], index=index, column=names[side], source=source)
            for side in SIDES
        ]
        if chats[0] == chats[1]:
            raise DataError(_identical(source, index, names, chats[0]))
        prompt, completions = _split_prompt(row, chats, names, has, index, source)
        sides.append(
            tuple(
                _message_side(prompt, completion, tokenizer, end, index, source)
                for completion in completions
            )
        )
    return sides


def _split_prompt(
    row: Mapping[str, Any],
    chats: list[list[dict[str, Any]]],
    names: Mapping[str, str],
    has: Mapping[str, bool],
    index: int,
    source: str,
) -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]]]:
    """``(prompt messages, [chosen completion, rejected completion])`` of one chat row."""
    if has["prompt"]:
        prompt = _prompt_messages(row[names["prompt"]], index, names["prompt"], source)
        completions = [
            chat[len(prompt) :] if chat[: len(prompt)] == prompt else chat for chat in chats
        ]
    else:
        shared = 0
        while shared < min(map(len, chats)) and chats[0][shared] == chats[1][shared]:
            shared += 1
        prompt, completions = chats[0][:shared], [chat[shared:] for chat in chats]
    for side, completion in zip(SIDES, completions, strict=True):
        replies = [m for m in completion if m["role"] == "assistant"]
        if not replies or not all(m["content"].strip() for m in replies):
            raise DataError(
                f"{source}: row {index}, column '{names[side]}': no non-empty assistant turn "
                f"after the prompt (the turns shared by chosen and rejected, or column "
                f"'{names['prompt']}'), so there is nothing to compare. {_FIX_ROWS}"
            )
    return prompt, completions


def _prompt_messages(value: Any, index: int, column: str, source: str) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}] if value.strip() else []
    ok = isinstance(value, list | tuple) and all(
        isinstance(m, Mapping)
        and isinstance(m.get("role"), str)
        and isinstance(m.get("content"), str)
        for m in value
    )
    if not ok:
        raise DataError(
            f"{source}: row {index}, column '{column}': expected a list of {{'role': ..., "
            f"'content': ...}} messages or a string, got {describe(value)}. {_FIX_ROWS}"
        )
    return [dict(message) for message in value]


def _message_side(
    prompt: list[dict[str, Any]],
    completion: list[dict[str, Any]],
    tokenizer: Any,
    end: list[int],
    index: int,
    source: str,
) -> Side:
    """Renders ``prompt + completion``; the completion starts at its first assistant span."""
    text, spans = assistant_spans(prompt + completion, tokenizer, index=index, source=source)
    spans = spans[sum(m["role"] == "assistant" for m in prompt) :]
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoded["input_ids"])
    mask = [
        any(start < span_end and stop > span_start for span_start, span_end in spans)
        for start, stop in encoded["offset_mapping"]
    ]
    if not any(mask):
        raise DataError(
            f"{source}: row {index}: the chat template renders nothing for the completion's "
            "assistant turns. Fix: check the template (model.chat_template) writes message content."
        )
    first = mask.index(True)
    bos = tokenizer.bos_token_id
    lead = input_ids[:1] if first > 0 and bos is not None and input_ids[0] == bos else []
    # A turn closed by the end token itself (SmolLM2's EOS is its <|im_end|>) is not closed a
    # second time; whitespace the template writes after the turn does not count.
    closed = list(input_ids)
    while closed and not tokenizer.decode(closed[-1:]).strip():
        closed.pop()
    ends_already = len(closed) >= len(end) and closed[len(closed) - len(end) :] == end
    return Side(
        lead,
        input_ids[len(lead) : first],
        input_ids[first:],
        mask[first:],
        [] if ends_already else end,
    )


def _identical(source: str, index: int, names: Mapping[str, str], value: Any) -> str:
    return (
        f"{source}: row {index}: columns '{names['chosen']}' and '{names['rejected']}' are "
        f"identical ({describe(value)}), so the pair prefers nothing. {_FIX_ROWS}"
    )
