"""SFT data formats: which one a dataset is in, and how one row becomes training tokens.

Three formats, told apart by their (canonical) columns:

* ``text``: one string per row; every token after the first is a target.
* ``prompt_completion``: only the completion (and the EOS after it) are targets.
* ``messages``: a chat, rendered with the tokenizer's chat template; only assistant turns are
  targets (see ``rlhf_lightning.data.chat``).

A row becomes ``{"input_ids": list[int], "loss_mask": list[bool]}`` where ``loss_mask[t]`` means
token ``t`` is a training target, predicted from tokens ``< t``; ``loss_mask[0]`` is always False.
``columns`` maps a canonical name to the dataset's column, e.g. ``{"text": "content"}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rlhf_lightning.data.chat import tokenize_messages
from rlhf_lightning.data.validation import require_messages, require_text
from rlhf_lightning.errors import DataError

AUTO = "auto"
# Checked in this order by auto-detection: the most specific format first.
FORMAT_COLUMNS: dict[str, tuple[str, ...]] = {
    "messages": ("messages",),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
}
# Canonical names a mapping may rename (chosen/rejected belong to preference data).
CANONICAL_COLUMNS = ("text", "prompt", "completion", "messages", "chosen", "rejected")

Tokenized = dict[str, list]


def resolve_columns(columns: Mapping[str, str] | None) -> dict[str, str]:
    """Checks a ``canonical -> dataset column`` mapping and returns it as a plain dict."""
    columns = dict(columns or {})
    for canonical in columns:
        if canonical not in CANONICAL_COLUMNS:
            raise DataError(
                f"data.columns.{canonical}: unknown column name '{canonical}'. "
                f"Fix: map one of {', '.join(CANONICAL_COLUMNS)} (data.columns.text=my_column)."
            )
    return columns


def detect_format(
    column_names: Sequence[str],
    columns_map: Mapping[str, str] | None = None,
    *,
    format: str = AUTO,
    source: str = "data",
) -> str:
    """Resolves the SFT format of a dataset from its columns.

    Args:
        column_names: the dataset's columns.
        columns_map: canonical name -> dataset column.
        format: ``"auto"`` (``messages`` if that column exists, else ``prompt_completion`` if
            both exist, else ``text``) or a format to check the columns of.
        source: what the data is (``data.path=...``), for error messages.

    Returns:
        ``"text"``, ``"prompt_completion"`` or ``"messages"``.

    Raises:
        DataError: unknown format, or the columns it needs are missing.
    """
    columns = resolve_columns(columns_map)
    available = list(column_names)
    listing = ", ".join(available)
    for canonical, column in columns.items():
        if column not in available:
            raise DataError(
                f"{source}: column '{column}' (data.columns.{canonical}) not found "
                f"(columns: {listing}). Fix: set data.columns.{canonical} to one of the columns."
            )

    def has(canonical: str) -> bool:
        return columns.get(canonical, canonical) in available

    if format == AUTO:
        for name, needed in FORMAT_COLUMNS.items():
            if all(has(canonical) for canonical in needed):
                return name
        guess = available[0] if available else "<column>"
        raise DataError(
            f"{source}: cannot tell the data format from the columns ({listing}); expected "
            f"'messages', 'prompt' and 'completion', or 'text'. Fix: map a column, e.g. "
            f"data.columns.text={guess}, or set data.format with the data.columns it needs."
        )
    if format not in FORMAT_COLUMNS:
        raise DataError(
            f"{source}: unknown data.format={format}. "
            f"Fix: use one of {AUTO}, {', '.join(FORMAT_COLUMNS)}."
        )
    for canonical in FORMAT_COLUMNS[format]:
        if not has(canonical):
            raise DataError(_missing_column(source, canonical, available, columns))
    return format


def _missing_column(
    source: str, canonical: str, available: list[str], columns: Mapping[str, str]
) -> str:
    used = set(columns.values()) | set(CANONICAL_COLUMNS)
    candidate = next((c for c in available if c not in used), "<column>")
    fix = f"map it with data.columns.{canonical}={candidate}"
    others = [
        name
        for name, needed in FORMAT_COLUMNS.items()
        if all(columns.get(c, c) in available for c in needed)
    ]
    if others:
        fix += f", or set data.format={others[0]}"
    return (
        f"{source}: column '{canonical}' not found (columns: {', '.join(available)}). Fix: {fix}."
    )


def tokenize_rows(
    rows: Sequence[Mapping[str, Any]],
    format: str,
    columns: Mapping[str, str],
    tokenizer: Any,
    max_length: int | None,
    *,
    indices: Sequence[int] | None = None,
    source: str = "data",
) -> list[Tokenized | None]:
    """Validates and tokenises rows of a dataset in ``format``.

    Text is encoded one batch per call: the fast tokenizer's batch path is ~10x faster than a
    call per row.

    Args:
        rows: dataset rows (dicts of column -> value).
        format: ``"text"``, ``"prompt_completion"`` or ``"messages"``.
        columns: canonical name -> dataset column.
        tokenizer: a Hugging Face tokenizer.
        max_length: maximum tokens per example, or None.
        indices: the rows' indices in their split, for error messages (default 0, 1, ...).
        source: what the data is (``data.path=...``), for error messages.

    Returns:
        Per row ``{"input_ids", "loss_mask"}``, or None when the row must be dropped because
        truncation to ``max_length`` leaves it no target token.
    """
    indices = list(range(len(rows))) if indices is None else list(indices)

    def values(canonical: str) -> list[Any]:
        column = columns.get(canonical, canonical)
        return [row[column] for row in rows]

    def texts(canonical: str) -> list[str]:
        column = columns.get(canonical, canonical)
        return [
            require_text(value, index=index, column=column, source=source)
            for value, index in zip(values(canonical), indices, strict=True)
        ]

    if format == "text":
        encoded = _encode(texts("text"), tokenizer, special=True)
        ends = _ends(tokenizer)
        return [_text_example(ids, *ends, max_length) for ids in encoded]
    if format == "prompt_completion":
        prompts, completions = texts("prompt"), texts("completion")
        ends = _ends(tokenizer)
        return [
            _prompt_completion_example(prompt_ids, completion_ids, *ends, max_length)
            for prompt_ids, completion_ids in zip(
                _encode(prompts, tokenizer, special=True),
                _encode(completions, tokenizer, special=False),
                strict=True,
            )
        ]
    if format == "messages":
        column = columns.get("messages", "messages")
        return [
            tokenize_messages(
                require_messages(value, index=index, column=column, source=source),
                tokenizer,
                max_length,
                index=index,
                source=source,
            )
            for value, index in zip(values("messages"), indices, strict=True)
        ]
    raise DataError(
        f"{source}: unknown data.format={format}. Fix: use one of {', '.join(FORMAT_COLUMNS)}."
    )


def tokenize_text(text: str, tokenizer: Any, max_length: int | None) -> Tokenized | None:
    """``[BOS] text EOS``, every token but the first a target; truncation keeps the start.

    Returns:
        None when fewer than 2 tokens fit (no target).
    """
    ids = _encode([text], tokenizer, special=True)[0]
    return _text_example(ids, *_ends(tokenizer), max_length)


def tokenize_prompt_completion(
    prompt: str, completion: str, tokenizer: Any, max_length: int | None
) -> Tokenized | None:
    """``[BOS] prompt completion EOS`` with targets on ``completion EOS`` only.

    The pieces are tokenised separately (special tokens on the prompt only) so that no token
    straddles the prompt/completion boundary. Truncation cuts the end of the completion.

    Returns:
        None when the prompt alone fills ``max_length`` (no room for a target).
    """
    prompt_ids = _encode([prompt], tokenizer, special=True)[0]
    completion_ids = _encode([completion], tokenizer, special=False)[0]
    return _prompt_completion_example(prompt_ids, completion_ids, *_ends(tokenizer), max_length)


def _text_example(
    ids: list[int], bos: int | None, eos: int, max_length: int | None
) -> Tokenized | None:
    input_ids = _with_bos(ids, bos)
    if not input_ids or input_ids[-1] != eos:
        input_ids.append(eos)
    input_ids = input_ids[:max_length]
    if len(input_ids) < 2:
        return None
    return {"input_ids": input_ids, "loss_mask": [False] + [True] * (len(input_ids) - 1)}


def _prompt_completion_example(
    prompt_ids: list[int],
    completion_ids: list[int],
    bos: int | None,
    eos: int,
    max_length: int | None,
) -> Tokenized | None:
    prompt_ids = _with_bos(prompt_ids, bos)
    if max_length is not None and len(prompt_ids) >= max_length:
        return None
    completion_ids = [*completion_ids, eos]
    input_ids = (prompt_ids + completion_ids)[:max_length]
    loss_mask = ([False] * len(prompt_ids) + [True] * len(completion_ids))[:max_length]
    # An empty prompt without BOS would make the first completion token position 0.
    loss_mask[0] = False
    return {"input_ids": input_ids, "loss_mask": loss_mask}


def _encode(texts: list[str], tokenizer: Any, *, special: bool) -> list[list[int]]:
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=special)["input_ids"]]


def _ends(tokenizer: Any) -> tuple[int | None, int]:
    """``(bos, eos)`` ids, read once per batch (tokenizer attribute access is slow)."""
    return document_bos(tokenizer), eos_token_id(tokenizer)


def document_bos(tokenizer: Any) -> int | None:
    """The BOS id to put in front of plain text, or None.

    The tokenizer's BOS, unless that token marks a chat turn (it appears in the chat template,
    e.g. SmolLM2's ``<|im_start|>``): plain text after a turn marker reads as a malformed chat
    turn and the model degenerates, so such text starts without it, as the model saw it in
    pretraining.
    """
    bos = tokenizer.bos_token_id
    if bos is None:
        return None
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str) and tokenizer.bos_token and tokenizer.bos_token in template:
        return None
    return int(bos)


def _with_bos(input_ids: list[int], bos: int | None) -> list[int]:
    """``input_ids`` with BOS first, when the tokenizer has one and did not put it there.

    Many tokenizers (GPT-2 style) add no BOS themselves; a leading BOS gives the first real token
    a context to be predicted from.
    """
    if bos is not None and (not input_ids or input_ids[0] != bos):
        return [bos, *input_ids]
    return input_ids


def eos_token_id(tokenizer: Any) -> int:
    """The tokenizer's EOS id; SFT needs it to teach the model to stop."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DataError(
            f"tokenizer '{getattr(tokenizer, 'name_or_path', '')}' has no eos_token, so examples "
            "cannot be terminated. Fix: use a tokenizer with an eos_token (or set one on it)."
        )
    return int(eos)
