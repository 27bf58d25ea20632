"""Chat messages -> tokens with a loss mask on the assistant turns only.

The assistant spans are found in characters, by rendering prefixes of the conversation with the
tokenizer's own chat template, then mapped to tokens through the fast tokenizer's offsets. This
needs no knowledge of any particular template, only that it is *prefix-stable*: rendering the
first messages gives a prefix of rendering them all. A span runs from the end of the generation
prompt (``<|im_start|>assistant\\n``) to the end of the assistant turn, so it includes the
end-of-turn tokens (``<|im_end|>\\n``) the model must learn to emit.
"""

from __future__ import annotations

from typing import Any

from rlhf_lightning.errors import DataError


def assistant_spans(
    messages: list[dict[str, Any]], tokenizer: Any, *, index: int = 0, source: str = "data"
) -> tuple[str, list[tuple[int, int]]]:
    """Renders a conversation and locates its assistant turns.

    Args:
        messages: validated ``{"role", "content"}`` dicts.
        tokenizer: a Hugging Face tokenizer with a ``chat_template``.
        index: row index, for error messages.
        source: what the data is (``data.path=...``), for error messages.

    Returns:
        ``(text, spans)``: the full rendering and, per assistant message, the ``[start, end)``
        character span of what the model must produce for it.

    Raises:
        DataError: no chat template, the template fails, or it is not prefix-stable.
    """
    if getattr(tokenizer, "chat_template", None) is None:
        raise DataError(
            f"{source}: format 'messages' needs a chat template, but tokenizer "
            f"'{getattr(tokenizer, 'name_or_path', '')}' has none. Fix: set model.chat_template, "
            "or use a tokenizer that ships one (an instruct/chat model's)."
        )
    full = _render(tokenizer, messages, False, index, source)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], True, index, source)
        through = _render(tokenizer, messages[: i + 1], False, index, source)
        if not (full.startswith(through) and through.startswith(before)):
            raise DataError(
                f"{source}: row {index}: the chat template is not prefix-stable (rendering the "
                f"first {i} messages plus the generation prompt is not a prefix of rendering "
                f"the whole conversation), so assistant turns cannot be located. Fix: use a "
                f"template that renders earlier turns the same way whatever follows them (set "
                f"model.chat_template), or convert the data to format prompt_completion."
            )
        spans.append((len(before), len(through)))
    return full, spans


def tokenize_messages(
    messages: list[dict[str, Any]],
    tokenizer: Any,
    max_length: int | None,
    *,
    index: int = 0,
    source: str = "data",
) -> dict[str, list] | None:
    """Tokenises a conversation with targets on the assistant turns.

    The rendered text already holds whatever special tokens the template writes (BOS included),
    so it is tokenised with ``add_special_tokens=False``. A token is a target iff its characters
    overlap an assistant span; the first token is never a target (nothing predicts it).

    Returns:
        ``{"input_ids": list[int], "loss_mask": list[bool]}`` truncated to ``max_length`` (the
        start is kept), or None when truncation leaves no target token.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise DataError(
            f"{source}: format 'messages' needs a fast tokenizer (for character offsets), got "
            f"{type(tokenizer).__name__}. Fix: load the tokenizer with use_fast=True."
        )
    text, spans = assistant_spans(messages, tokenizer, index=index, source=source)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoded["input_ids"])
    loss_mask = [
        any(start < span_end and end > span_start for span_start, span_end in spans)
        for start, end in encoded["offset_mapping"]
    ]
    if max_length is not None:
        input_ids, loss_mask = input_ids[:max_length], loss_mask[:max_length]
    if loss_mask:
        loss_mask[0] = False
    if not any(loss_mask):
        return None
    return {"input_ids": input_ids, "loss_mask": loss_mask}


def _render(
    tokenizer: Any, messages: list[dict[str, Any]], generation_prompt: bool, index: int, source: str
) -> str:
    try:
        text = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )
    # Jinja templates raise anything (TemplateError, IndexError on empty lists, ...).
    except Exception as err:
        if not messages:
            # Some templates cannot render an empty conversation: the first turn starts at 0.
            return ""
        raise DataError(
            f"{source}: row {index}: the chat template failed on this conversation "
            f"({type(err).__name__}: {err}). Fix: check the roles and their order are ones the "
            "template accepts, or set model.chat_template."
        ) from err
    return text if isinstance(text, str) else str(text)


def as_chat_turns(splits: Any, columns: dict[str, str], sides: tuple[str, ...]) -> Any:
    """Plain-text rows as chat turns, for an instruct model's chat template.

    The ``prompt`` column becomes a user turn; each column of `sides` (``completion`` for SFT,
    ``chosen``/``rejected`` for preference pairs) becomes the assistant's answer to it. SFT rows
    turn into one ``messages`` column (trained on the assistant turn only); pairs keep their
    columns as message lists (``prompt`` the user turn, each side an assistant turn).

    Args:
        splits: a ``datasets.DatasetDict``.
        columns: canonical name -> dataset column (``data.columns``).
        sides: the canonical answer columns.

    Returns:
        The converted ``DatasetDict``; SFT rows under ``messages``, pairs under their own names.
    """
    prompt = columns.get("prompt", "prompt")

    def user(text: Any) -> list[dict[str, Any]]:
        return [{"role": "user", "content": text}] if text else []

    def convert(row: dict[str, Any]) -> dict[str, Any]:
        answers = {side: columns.get(side, side) for side in sides}
        if sides == ("completion",):
            turn = {"role": "assistant", "content": row[answers["completion"]]}
            return {"messages": [*user(row.get(prompt)), turn]}
        converted = {
            name: [{"role": "assistant", "content": row[name]}] for name in answers.values()
        }
        return {**converted, prompt: user(row.get(prompt))}

    return splits.map(convert)
