"""Messages -> token ids through the tokenizer's chat template, without ever re-tokenising what
the policy generated.

A multi-turn trajectory is built from three kinds of token ids:

1. the first prompt: the environment's first messages rendered with the generation prompt
   (``<|im_start|>assistant\\n``), tokenised once;
2. each assistant turn: the ids the policy sampled, exactly, up to and including the
   template's end-of-turn token (the turn's stop token, :func:`turn_end_ids`);
3. what follows an assistant turn (an environment's or a tool's messages, then the next
   generation prompt): the *delta* the template adds after the turn, tokenised once
   (:func:`delta_after_turn`).

The delta is read off a rendering in which the last assistant turn's content is a sentinel
word, so the generated text is never rendered, let alone tokenised, again: the delta is what
the template writes after that content, minus the end-of-turn marker the policy already
sampled. A template that renders earlier turns differently once later messages follow (one
that strips earlier ``<think>`` blocks, say) would change tokens the policy already conditioned
on; :func:`delta_after_turn` reports that (``prefix_stable`` False), and the trajectory keeps
its sampled tokens, with the delta appended after them, or is dropped
(``TurnLimits.on_template_rewrite``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from transformers import PreTrainedTokenizerBase

from rlhf_lightning.envs.base import Message
from rlhf_lightning.errors import EnvError

# A word no template rewrites and no tokenizer merges with its surroundings' special tokens.
SENTINEL = "QXZSENTINELQXZ"


def render(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[Message],
    generation_prompt: bool,
    tools: list[dict[str, Any]] | None = None,
) -> str:
    """The chat template's text for ``messages`` (tool schemas passed on when given)."""
    extra = {"tools": tools} if tools else {}
    try:
        text = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt, **extra
        )
    # Jinja templates raise anything (TemplateError, IndexError on unexpected roles, ...).
    except Exception as err:
        roles = [m.get("role") for m in messages]
        raise EnvError(
            f"the chat template failed on an environment's conversation (roles {roles}: "
            f"{type(err).__name__}: {err}). Fix: make the environment use roles the template "
            "accepts (user/assistant, and tool where it knows tools), or set "
            "model.chat_template."
        ) from err
    return text if isinstance(text, str) else str(text)


def encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Template text -> ids; the text already holds every special token the template writes."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def prompt_ids(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[Message],
    tools: list[dict[str, Any]] | None = None,
) -> list[int]:
    """The first prompt: ``messages`` and the generation prompt, as token ids."""
    return encode(tokenizer, render(tokenizer, messages, True, tools))


def turn_end_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The token that ends an assistant turn in this template (``<|im_end|>``, ``<|eot_id|>``,
    ``<end_of_turn>``, ``</s>``): the first special token the template writes after an
    assistant message's content. The policy's turns stop there.

    Raises:
        EnvError: when the template writes no special token after an assistant message.
    """
    probe = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": SENTINEL}]
    tail = render(tokenizer, probe, False).split(SENTINEL)[-1]
    ids = encode(tokenizer, tail)
    # Named special tokens, and added tokens marked special (Llama 3's <|eot_id|> is only that).
    added = getattr(tokenizer, "added_tokens_decoder", {})
    special = set(tokenizer.all_special_ids) | {i for i, t in added.items() if t.special}
    for token in ids:
        if token in special:
            return [int(token)]
    raise EnvError(
        f"the chat template ends an assistant turn with {tail!r}, which holds no special "
        "token, so a turn's end cannot be sampled as one token. Fix: set "
        "stage.sampling.stop_token_ids to the ids that end a turn, or use a template with an "
        "end-of-turn token (model.chat_template)."
    )


class TurnDelta(NamedTuple):
    """The tokens that follow an assistant turn (see :func:`delta_after_turn`)."""

    ids: list[int] | None
    """The delta's token ids; None when the template does not end the turn with the token
    the policy stopped on (the trajectory cannot continue token-exactly)."""
    prefix_stable: bool
    """Whether rendering the conversation with the new messages keeps the rendering of the
    conversation so far as its prefix (False: the template rewrites earlier turns)."""


def delta_after_turn(
    tokenizer: PreTrainedTokenizerBase,
    history: list[Message],
    new: list[Message],
    stop_text: str,
    tools: list[dict[str, Any]] | None = None,
) -> TurnDelta:
    """The token ids to append after an assistant turn the policy ended with ``stop_text``.

    Args:
        tokenizer: The policy's tokenizer (its chat template).
        history: The conversation so far; its last message is the assistant turn just
            sampled (its content the decoded text: only compared, never tokenised).
        new: The messages that follow (environment, tool).
        stop_text: The text of the token the turn stopped on (``<|im_end|>``).
        tools: Tool schemas for templates that list them.

    Returns:
        :class:`TurnDelta`: the ids of everything after ``stop_text`` up to and including the
        next generation prompt, and whether the template is prefix-stable here.
    """
    probe = [*history[:-1], {**history[-1], "content": SENTINEL}, *new]
    text = render(tokenizer, probe, True, tools)
    at = text.rfind(SENTINEL)
    if at < 0:
        raise EnvError(
            "the chat template does not write the last assistant turn's content, so the turn "
            "cannot be followed token-exactly. Fix: use a template that renders assistant "
            "messages (model.chat_template)."
        )
    tail = text[at + len(SENTINEL) :]
    before = render(tokenizer, history, False, tools)
    stable = render(tokenizer, [*history, *new], True, tools).startswith(before)
    # Whitespace the template puts between the content and its end-of-turn marker is the
    # policy's to sample (or not): only what follows the marker is appended.
    end = tail.find(stop_text)
    if end < 0 or tail[:end].strip():
        return TurnDelta(None, stable)
    return TurnDelta(encode(tokenizer, tail[end + len(stop_text) :]), stable)
