"""Preference pairs on literal examples: which tokens are completion tokens, truncation, chat,
margins, batches and every validation error. The oracle is the tokenizer applied to each piece
(or the whole rendering) independently, never the function under test."""

from __future__ import annotations

import math

import pytest
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from rlhf_lightning.data.formats import tokenize_prompt_completion
from rlhf_lightning.data.pair_sides import special_affixes
from rlhf_lightning.data.pairs import (
    collate_pairs,
    detect_pair_format,
    tokenize_pair,
    tokenize_pairs,
)
from rlhf_lightning.errors import DataError

SRC = "data.path=/x/pairs.jsonl"
# One token per word: truncation arithmetic can be checked by hand.
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "<s>", "</s>"] + [
    f"{kind}{i}" for kind in "pcr" for i in range(1, 9)
]
VOCAB = {word: i for i, word in enumerate(WORDS)}


def word_tokenizer(template: str | None, **specials) -> transformers.PreTrainedTokenizerFast:
    """A word-level tokenizer whose post-processor adds ``template``'s special tokens."""
    backend = Tokenizer(models.WordLevel(VOCAB, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if template:
        specials_used = [(w, VOCAB[w]) for w in ("[CLS]", "[SEP]", "<s>", "</s>") if w in template]
        backend.post_processor = processors.TemplateProcessing(
            single=template, special_tokens=specials_used
        )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", **specials
    )


@pytest.fixture(scope="module")
def bert_like():
    return word_tokenizer("[CLS] $A [SEP]", cls_token="[CLS]", sep_token="[SEP]")


@pytest.fixture(scope="module")
def llama_like():
    """Adds BOS itself, not EOS (as Llama tokenizers do)."""
    return word_tokenizer("<s> $A", bos_token="<s>", eos_token="</s>")


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def words(tokenizer, token_ids):
    return tokenizer.convert_ids_to_tokens(token_ids)


def completion(tokenizer, pair, side):
    token_ids, mask = pair[f"{side}_input_ids"], pair[f"{side}_completion_mask"]
    return [t for t, m in zip(token_ids, mask, strict=True) if m]


def prompt_part(pair, side):
    token_ids, mask = pair[f"{side}_input_ids"], pair[f"{side}_completion_mask"]
    return [t for t, m in zip(token_ids, mask, strict=True) if not m]


# --- text pairs ------------------------------------------------------------------------------


def test_text_pair_completion_tokens(tokenizer):
    pair = tokenize_pair("Hello", " world", " there", tokenizer, max_length=None)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    prompt = ids(tokenizer, "Hello")
    for side, text in [("chosen", " world"), ("rejected", " there")]:
        assert pair[f"{side}_input_ids"] == [bos, *prompt, *ids(tokenizer, text), eos]
        expected = [False] * (1 + len(prompt)) + [True] * (len(ids(tokenizer, text)) + 1)
        assert pair[f"{side}_completion_mask"] == expected
        assert tokenizer.decode(completion(tokenizer, pair, side)) == text + "<|endoftext|>"
        assert prompt_part(pair, side) == [bos, *prompt]


@pytest.mark.parametrize(
    ("prompt", "answer"), [("Hello", " world"), ("", "Thanks a lot"), ("Be brief.", " Great.")]
)
def test_text_side_is_exactly_the_sft_prompt_completion_example(tokenizer, prompt, answer):
    pair = tokenize_pair(prompt, answer, answer + " x", tokenizer, max_length=None)
    sft = tokenize_prompt_completion(prompt, answer, tokenizer, max_length=None)
    assert pair["chosen_input_ids"] == sft["input_ids"]
    assert pair["chosen_completion_mask"] == sft["loss_mask"]


def test_pair_without_prompt_column(tokenizer):
    rows = [{"chosen": "I love it", "rejected": "I hate it"}]
    pair = tokenize_pairs(rows, "text", {}, tokenizer, None)[0]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    assert pair["chosen_input_ids"] == [bos, *ids(tokenizer, "I love it"), eos]
    # Every token but the first (nothing predicts it) is a completion token.
    assert pair["rejected_completion_mask"] == [False] + [True] * (
        len(ids(tokenizer, "I hate it")) + 1
    )
    assert "margin" not in pair


def test_encoder_tokenizer_gets_cls_and_sep_once(bert_like):
    assert special_affixes(bert_like) == ([VOCAB["[CLS]"]], [VOCAB["[SEP]"]])
    pair = tokenize_pair("p1 p2", "c1 c2", "r1", bert_like, max_length=None)
    assert words(bert_like, pair["chosen_input_ids"]) == ["[CLS]", "p1", "p2", "c1", "c2", "[SEP]"]
    assert pair["chosen_completion_mask"] == [False, False, False, True, True, True]
    assert words(bert_like, pair["rejected_input_ids"]) == ["[CLS]", "p1", "p2", "r1", "[SEP]"]
    no_prompt = tokenize_pair("", "c1", "r1", bert_like, max_length=None)
    assert words(bert_like, no_prompt["chosen_input_ids"]) == ["[CLS]", "c1", "[SEP]"]


def test_bos_adding_tokenizer_is_not_doubled_and_ends_with_eos(llama_like):
    pair = tokenize_pair("p1", "c1 c2", "r1", llama_like, max_length=None)
    assert words(llama_like, pair["chosen_input_ids"]) == ["<s>", "p1", "c1", "c2", "</s>"]
    assert words(llama_like, pair["rejected_input_ids"]) == ["<s>", "p1", "r1", "</s>"]
    # A tokenizer that also appends EOS itself: still exactly one, at the end.
    both = word_tokenizer("<s> $A </s>", bos_token="<s>", eos_token="</s>")
    pair = tokenize_pair("p1", "c1", "r1", both, max_length=None)
    assert words(both, pair["chosen_input_ids"]) == ["<s>", "p1", "c1", "</s>"]


def test_truncation_keeps_prompt_end_and_completion_start(llama_like):
    # budget = 8 - <s> - </s> = 6; longest completion 4 -> prompt keeps max(6 - 4, 6 // 2) = 3
    # tokens (its end), completions the remaining 3 (their start).
    pair = tokenize_pair("p1 p2 p3 p4 p5 p6", "c1 c2 c3 c4", "r1 r2", llama_like, max_length=8)
    assert words(llama_like, pair["chosen_input_ids"]) == [
        "<s>", "p4", "p5", "p6", "c1", "c2", "c3", "</s>"
    ]  # fmt: skip
    assert words(llama_like, pair["rejected_input_ids"]) == [
        "<s>",
        "p4",
        "p5",
        "p6",
        "r1",
        "r2",
        "</s>",
    ]
    assert pair["chosen_completion_mask"] == [False] * 4 + [True] * 4
    # Short completions: the prompt keeps 6 - 2 = 4 tokens and both completions fit whole.
    pair = tokenize_pair("p1 p2 p3 p4 p5 p6", "c1", "r1 r2", llama_like, max_length=8)
    assert words(llama_like, pair["chosen_input_ids"]) == [
        "<s>",
        "p3",
        "p4",
        "p5",
        "p6",
        "c1",
        "</s>",
    ]
    assert words(llama_like, pair["rejected_input_ids"])[-3:] == ["r1", "r2", "</s>"]


def test_pair_without_completion_room_is_dropped(llama_like):
    assert tokenize_pair("p1", "c1", "r1", llama_like, max_length=3) is not None
    assert tokenize_pair("p1", "c1", "r1", llama_like, max_length=2) is None


# --- chat pairs ------------------------------------------------------------------------------

USER = {"role": "user", "content": "Hi there"}
GOOD = {"role": "assistant", "content": "Hello! How can I help?"}
BAD = {"role": "assistant", "content": "Go away."}


def test_chat_pair_completion_is_the_last_reply(tokenizer):
    rows = [{"chosen": [USER, GOOD], "rejected": [USER, BAD]}]
    pair = tokenize_pairs(rows, "messages", {}, tokenizer, None)[0]
    prompt = tokenizer.apply_chat_template([USER], tokenize=False, add_generation_prompt=True)
    eos = tokenizer.eos_token_id
    for side, reply in [("chosen", GOOD), ("rejected", BAD)]:
        rendered = tokenizer.apply_chat_template([USER, reply], tokenize=False)
        assert pair[f"{side}_input_ids"] == [*ids(tokenizer, rendered), eos]
        expected = reply["content"] + "<|im_end|>\n<|endoftext|>"
        assert tokenizer.decode(completion(tokenizer, pair, side)) == expected
        assert tokenizer.decode(prompt_part(pair, side)) == prompt


def test_chat_shared_turns_are_prompt_even_assistant_ones(tokenizer):
    earlier = [
        USER,
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Thanks a lot"},
    ]
    rows = [{"chosen": [*earlier, GOOD], "rejected": [*earlier, BAD]}]
    pair = tokenize_pairs(rows, "messages", {}, tokenizer, None)[0]
    assert tokenizer.decode(completion(tokenizer, pair, "chosen")) == (
        "Hello! How can I help?<|im_end|>\n<|endoftext|>"
    )


@pytest.mark.parametrize(
    "prompt",
    [[USER], "Hi there"],
    ids=["message-list", "string"],
)
@pytest.mark.parametrize("repeated", [False, True], ids=["replies-only", "full-chats"])
def test_chat_explicit_prompt_column_matches_implicit(tokenizer, prompt, repeated):
    implicit = tokenize_pairs(
        [{"chosen": [USER, GOOD], "rejected": [USER, BAD]}], "messages", {}, tokenizer, None
    )[0]
    chosen, rejected = ([USER, GOOD], [USER, BAD]) if repeated else ([GOOD], [BAD])
    rows = [{"prompt": prompt, "chosen": chosen, "rejected": rejected}]
    assert tokenize_pairs(rows, "messages", {}, tokenizer, None)[0] == implicit


# --- margins, mapping, format detection -------------------------------------------------------


def test_margin_is_carried_as_float(tokenizer):
    rows = [
        {"prompt": "Hi", "chosen": " a", "rejected": " b", "margin": 1.5},
        {"prompt": "Hi", "chosen": " c", "rejected": " d", "margin": 2},
    ]
    pairs = tokenize_pairs(rows, "text", {}, tokenizer, None)
    assert [p["margin"] for p in pairs] == [1.5, 2.0]
    assert isinstance(pairs[1]["margin"], float)


def test_column_mapping(tokenizer):
    canonical = [{"prompt": "Hi", "chosen": " yes", "rejected": " no", "margin": 0.5}]
    renamed = [{"q": "Hi", "better": " yes", "worse": " no", "gap": 0.5}]
    columns = {"prompt": "q", "chosen": "better", "rejected": "worse", "margin": "gap"}
    assert tokenize_pairs(renamed, "text", columns, tokenizer, None) == tokenize_pairs(
        canonical, "text", {}, tokenizer, None
    )


def test_detect_pair_format():
    import datasets

    text = datasets.Dataset.from_list([{"chosen": "a", "rejected": "b"}])
    chat = datasets.Dataset.from_list([{"chosen": [USER, GOOD], "rejected": [USER, BAD]}])
    renamed = datasets.Dataset.from_list([{"good": "a", "bad": "b"}])
    assert detect_pair_format(text) == "text"
    assert detect_pair_format(chat) == "messages"
    assert detect_pair_format(renamed, {"chosen": "good", "rejected": "bad"}) == "text"
    with pytest.raises(DataError, match="unknown data.format=chat.*Fix"):
        detect_pair_format(text, format="chat")
    with pytest.raises(DataError, match="data.columns.answer.*Fix"):
        detect_pair_format(text, {"answer": "chosen"})
    with pytest.raises(DataError, match=r"column 'best' \(data.columns.chosen\) not found.*Fix"):
        detect_pair_format(text, {"chosen": "best"})


def test_missing_column_names_it_and_the_fix():
    import datasets

    sft_like = datasets.Dataset.from_list([{"prompt": "a", "completion": "b", "worse": "c"}])
    with pytest.raises(DataError) as err:
        detect_pair_format(sft_like, {"rejected": "worse"}, source=SRC)
    message = str(err.value)
    assert SRC in message and "column 'chosen' not found" in message
    assert "(columns: prompt, completion, worse)" in message and "SFT data" in message
    assert "Fix: map it with data.columns.chosen=completion" in message


# --- validation errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "column", "expected"),
    [
        ({"chosen": ""}, "chosen", "non-empty string"),
        ({"rejected": "   "}, "rejected", "non-empty string"),
        ({"chosen": None}, "chosen", "non-empty string"),
        ({"rejected": 3}, "rejected", "non-empty string"),
        ({"prompt": None}, "prompt", "expected a string"),
        ({"margin": "1.0"}, "margin", "finite number"),
        ({"margin": None}, "margin", "finite number"),
        ({"margin": True}, "margin", "finite number"),
        ({"margin": math.nan}, "margin", "finite number"),
    ],
)
def test_bad_values_name_row_column_and_fix(tokenizer, bad, column, expected):
    good = {"prompt": "Hi", "chosen": " yes", "rejected": " no", "margin": 1.0}
    rows = [good, {**good, **bad}]
    with pytest.raises(DataError) as err:
        tokenize_pairs(rows, "text", {}, tokenizer, 32, indices=[4, 9], source=SRC)
    message = str(err.value)
    assert SRC in message and "row 9" in message and f"column '{column}'" in message
    assert expected in message and "Fix" in message


@pytest.mark.parametrize(
    ("row", "fmt"),
    [
        ({"prompt": "Hi", "chosen": " same", "rejected": " same"}, "text"),
        ({"prompt": "", "chosen": "same ", "rejected": " same"}, "text"),
        ({"chosen": [USER, GOOD], "rejected": [USER, GOOD]}, "messages"),
    ],
)
def test_identical_chosen_and_rejected(tokenizer, row, fmt):
    columns = {"chosen": "better"}
    row = {("better" if k == "chosen" else k): v for k, v in row.items()}
    with pytest.raises(DataError) as err:
        tokenize_pairs([row], fmt, columns, tokenizer, 32, indices=[3], source=SRC)
    message = str(err.value)
    assert SRC in message and "row 3" in message and "identical" in message
    assert "'better' and 'rejected'" in message and "Fix" in message


@pytest.mark.parametrize(
    ("row", "column", "expected"),
    [
        ({"chosen": [USER, GOOD], "rejected": [USER]}, "rejected", "no message has role 'assistant'"),
        ({"chosen": [USER, GOOD], "rejected": [USER, GOOD, USER]}, "chosen", "no non-empty assistant turn"),
        ({"chosen": [USER, {"role": "assistant", "content": " "}], "rejected": [USER, BAD]}, "chosen", "no non-empty assistant turn"),
        ({"chosen": "hello", "rejected": [USER, BAD]}, "chosen", "non-empty list"),
        ({"prompt": 3, "chosen": [GOOD], "rejected": [BAD]}, "prompt", "list of"),
    ],
)  # fmt: skip
def test_malformed_chat_pairs(tokenizer, row, column, expected):
    with pytest.raises(DataError) as err:
        tokenize_pairs([row], "messages", {}, tokenizer, 64, indices=[5], source=SRC)
    message = str(err.value)
    assert SRC in message and "row 5" in message and f"column '{column}'" in message
    assert expected in message and "Fix" in message


# --- batches -----------------------------------------------------------------------------------


def test_collate_pads_both_sides_to_one_length(tokenizer):
    rows = [
        {"prompt": "Hi", "chosen": " a longer answer here", "rejected": " no", "margin": 1.0},
        {"prompt": "Hello world", "chosen": " ok", "rejected": " fine", "margin": -0.5},
    ]
    features = tokenize_pairs(rows, "text", {}, tokenizer, None)
    pad = tokenizer.pad_token_id
    batch = collate_pairs(features, pad_token_id=pad)
    sides = ("chosen", "rejected")
    expected_keys = {
        f"{s}_{k}" for s in sides for k in ("input_ids", "attention_mask", "completion_mask")
    }
    assert set(batch) == expected_keys | {"margin"}
    longest = max(len(f[f"{s}_input_ids"]) for f in features for s in sides)
    for side in sides:
        input_ids = batch[f"{side}_input_ids"]
        attention = batch[f"{side}_attention_mask"]
        mask = batch[f"{side}_completion_mask"]
        assert input_ids.shape == attention.shape == mask.shape == (2, longest)
        assert input_ids.dtype == torch.long and attention.dtype == torch.long
        assert mask.dtype == torch.bool
        for row, feature in enumerate(features):
            n = len(feature[f"{side}_input_ids"])
            assert input_ids[row, :n].tolist() == feature[f"{side}_input_ids"]
            assert (input_ids[row, n:] == pad).all()  # right padding
            assert attention[row].tolist() == [1] * n + [0] * (longest - n)
            assert mask[row].tolist() == feature[f"{side}_completion_mask"] + [False] * (
                longest - n
            )
    assert batch["margin"].dtype == torch.float32 and batch["margin"].tolist() == [1.0, -0.5]
    no_margin = collate_pairs(
        [{k: v for k, v in f.items() if k != "margin"} for f in features], pad
    )
    assert "margin" not in no_margin
