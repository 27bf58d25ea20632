"""Format detection and tokenisation on literal examples; the oracle is the tokenizer applied
to each piece separately, never the function under test."""

from __future__ import annotations

import pytest

from rlhf_lightning.data import detect_format
from rlhf_lightning.data.chat import tokenize_messages
from rlhf_lightning.data.formats import (
    tokenize_prompt_completion,
    tokenize_rows,
    tokenize_text,
)
from rlhf_lightning.errors import DataError

SRC = "data.path=/x/train.jsonl"


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def targets(example):
    return [t for t, m in zip(example["input_ids"], example["loss_mask"], strict=True) if m]


# --- detection ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (["messages", "text"], "messages"),
        (["prompt", "completion", "text"], "prompt_completion"),
        (["text", "label"], "text"),
    ],
)
def test_detect_format_auto(columns, expected):
    assert detect_format(columns, None) == expected


def test_detect_format_with_mapping():
    assert detect_format(["content", "label"], {"text": "content"}) == "text"
    assert detect_format(["q", "a"], {"prompt": "q", "completion": "a"}) == "prompt_completion"


def test_detect_format_errors_name_columns_and_fix():
    with pytest.raises(DataError) as err:
        detect_format(["content", "label"], None, source=SRC)
    assert SRC in str(err.value) and "content, label" in str(err.value)
    assert "Fix" in str(err.value) and "data.columns.text=content" in str(err.value)

    with pytest.raises(DataError) as err:
        detect_format(["prompt", "answer", "text"], None, format="prompt_completion", source=SRC)
    message = str(err.value)
    assert "column 'completion' not found (columns: prompt, answer, text)" in message
    assert "Fix: map it with data.columns.completion=answer, or set data.format=text" in message

    with pytest.raises(DataError, match=r"column 'body' \(data.columns.text\) not found.*Fix"):
        detect_format(["text"], {"text": "body"}, source=SRC)
    with pytest.raises(DataError, match="data.columns.txt.*Fix"):
        detect_format(["text"], {"txt": "text"})
    with pytest.raises(DataError, match="unknown data.format=chat.*Fix"):
        detect_format(["text"], None, format="chat")


# --- text ----------------------------------------------------------------------------------


def test_text_every_token_after_the_first_is_a_target(tokenizer):
    example = tokenize_text("Hello world", tokenizer, max_length=None)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    assert example["input_ids"] == [bos, *ids(tokenizer, "Hello world"), eos]
    assert example["loss_mask"] == [False] + [True] * (len(example["input_ids"]) - 1)


def test_text_truncation_keeps_the_start(tokenizer):
    example = tokenize_text("Hello world", tokenizer, max_length=3)
    assert example["input_ids"] == [tokenizer.bos_token_id, *ids(tokenizer, "Hello world")[:2]]
    assert example["loss_mask"] == [False, True, True]


# --- prompt / completion --------------------------------------------------------------------


def test_prompt_completion_targets_are_completion_and_eos(tokenizer):
    example = tokenize_prompt_completion("Hello", " world", tokenizer, max_length=None)
    prompt, completion = ids(tokenizer, "Hello"), ids(tokenizer, " world")
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    assert example["input_ids"] == [bos, *prompt, *completion, eos]
    n_prompt = 1 + len(prompt)
    expected = [False] * n_prompt + [True] * (len(completion) + 1)
    assert example["loss_mask"] == expected
    assert tokenizer.decode(targets(example)) == " world<|endoftext|>"


def test_prompt_completion_truncates_completion_and_drops_long_prompts(tokenizer):
    prompt = ids(tokenizer, "Hello")
    max_length = len(prompt) + 2  # BOS + prompt + one completion token
    example = tokenize_prompt_completion("Hello", " world", tokenizer, max_length=max_length)
    assert len(example["input_ids"]) == max_length
    assert example["loss_mask"] == [False] * (len(prompt) + 1) + [True]
    assert example["input_ids"][-1] == ids(tokenizer, " world")[0]
    assert tokenize_prompt_completion("Hello", " world", tokenizer, len(prompt) + 1) is None


# --- messages --------------------------------------------------------------------------------

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "Thanks a lot"},
    {"role": "assistant", "content": "Great."},
]


def test_messages_targets_are_the_assistant_turns(tokenizer):
    example = tokenize_messages(CHAT, tokenizer, max_length=None)
    rendered = tokenizer.apply_chat_template(CHAT, tokenize=False)
    assert tokenizer.decode(example["input_ids"]) == rendered
    target_runs, current = [], []
    for token, is_target in zip(example["input_ids"], example["loss_mask"], strict=True):
        if is_target:
            current.append(token)
        elif current:
            target_runs.append(tokenizer.decode(current))
            current = []
    if current:
        target_runs.append(tokenizer.decode(current))
    # Content plus the end-of-turn marker the model must learn to emit; nothing else.
    assert target_runs == ["Hello! How can I help?<|im_end|>\n", "Great.<|im_end|>\n"]
    non_targets = tokenizer.decode(
        [t for t, m in zip(example["input_ids"], example["loss_mask"], strict=True) if not m]
    )
    assert "Be brief." in non_targets and "Hi there" in non_targets
    assert "Thanks a lot" in non_targets and "Hello!" not in non_targets


def test_messages_truncated_before_any_reply_is_dropped(tokenizer):
    assert tokenize_messages(CHAT, tokenizer, max_length=4) is None


def test_messages_need_a_chat_template(tokenizer):
    plain = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer)
    plain.chat_template = None
    with pytest.raises(DataError, match="chat template.*Fix: set model.chat_template"):
        tokenize_messages(CHAT, plain, None, source=SRC)


def test_messages_template_must_be_prefix_stable(tokenizer, monkeypatch):
    # Marks the last message: rendering a prefix then differs from the full rendering.
    unstable = (
        "{% for m in messages %}{% if loop.last %}[last]{% endif %}{{ m['role'] }}: "
        "{{ m['content'] }}\n{% endfor %}"
    )
    monkeypatch.setattr(tokenizer, "chat_template", unstable)
    with pytest.raises(DataError, match="not prefix-stable.*Fix"):
        tokenize_messages(CHAT, tokenizer, None, source=SRC)


# --- row validation --------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [None, "", "   ", 3])
def test_empty_or_non_string_text_names_row_and_column(tokenizer, bad):
    rows = [{"body": "fine text"}, {"body": bad}]
    with pytest.raises(DataError) as err:
        tokenize_rows(rows, "text", {"text": "body"}, tokenizer, 16, indices=[7, 8], source=SRC)
    message = str(err.value)
    assert SRC in message and "row 8" in message and "column 'body'" in message
    assert "Fix" in message


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ("hello", "non-empty list"),
        ([], "non-empty list"),
        ([{"from": "human", "value": "hi"}], "message 0 must be a dict"),
        ([{"role": "user", "content": None}], "message 0 must be a dict"),
        ([{"role": "user", "content": "hi"}], "no message has role 'assistant'"),
    ],
)
def test_malformed_messages(tokenizer, messages, expected):
    rows = [{"chat": messages}]
    with pytest.raises(DataError) as err:
        tokenize_rows(rows, "messages", {"messages": "chat"}, tokenizer, 64, source=SRC)
    message = str(err.value)
    assert expected in message and SRC in message and "column 'chat'" in message
    assert "row 0" in message and "Fix" in message


def test_tokenize_rows_matches_single_example_functions(tokenizer):
    rows = [{"prompt": "Hello", "completion": " world"}, {"prompt": "Hi", "completion": " there"}]
    batch = tokenize_rows(rows, "prompt_completion", {}, tokenizer, 32)
    singles = [
        tokenize_prompt_completion(r["prompt"], r["completion"], tokenizer, 32) for r in rows
    ]
    assert batch == singles
