"""KTO rows: native prompt/completion/label rows, paired data converted, mismatched KL sequences."""

from __future__ import annotations

import datasets
import pytest
import torch

from rlhf_lightning.data import KTODataModule, PreferenceDataModule
from rlhf_lightning.data.kto import add_kl_sequences, collate_kto, kl_partners
from rlhf_lightning.errors import DataError


def kto_module(tokenizer, rows: dict, **kwargs) -> KTODataModule:
    kwargs = {"val_fraction": 0.0, "max_length": 48, "batch_size": 4, **kwargs}
    dm = KTODataModule(tokenizer, dataset=datasets.Dataset.from_dict(rows), **kwargs)
    dm.setup("fit")
    return dm


def test_kl_partner_is_the_next_row_with_another_prompt():
    # runs of equal prompts: a a b b b c -> a's partner is the first b, b's the c, c wraps to a
    assert kl_partners(list("aabbbc")) == [2, 2, 5, 5, 5, 0]
    # the last run wraps to the first row with another prompt, not to its own run
    assert kl_partners(list("abaa")) == [1, 2, 1, 1]
    # all prompts equal (the demo rows): simply the next row, cyclically
    assert kl_partners([""] * 4) == [1, 2, 3, 0]
    assert kl_partners(["x"]) == [0] and kl_partners([]) == []


def test_kl_sequence_is_own_prompt_and_partner_completion_cut_to_max_length():
    rows = datasets.Dataset.from_dict(
        {
            # prompt lengths 2, 3, 2: row 0 = [1, 2 | 10, 11, 12], ...
            "input_ids": [[1, 2, 10, 11, 12], [1, 3, 4, 20, 21], [1, 5, 30]],
            "completion_mask": [[False, False, True, True, True], [False] * 3 + [True] * 2,
                                [False, False, True]],
            "prompt_length": [2, 3, 2],
        }
    )  # fmt: skip
    out = add_kl_sequences(rows, max_length=4)
    # row 0 + row 1's completion [20, 21]; row 1 + row 2's [30]; row 2 + row 0's [10, 11, 12],
    # cut to 4 tokens
    assert out["kl_input_ids"] == [[1, 2, 20, 21], [1, 3, 4, 30], [1, 5, 10, 11]]
    assert out["kl_completion_mask"] == [
        [False, False, True, True],
        [False, False, False, True],
        [False, False, True, True],
    ]


def test_native_text_rows(tokenizer):
    dm = kto_module(
        tokenizer,
        {
            "prompt": ["Question 1?", "Question 1?", "Question 2?", "Question 3?"],
            "completion": [" Good answer.", " Bad.", " Great.", " Awful."],
            "label": [1, 0, 1, 0],  # 0/1 integers are read as False/True
        },
    )
    assert dm.format == "text" and dm.num_train_examples == 4
    train = dm.train_dataset
    assert [bool(x) for x in train["label"]] == [True, False, True, False]
    # row 0's partner is row 2 (row 1 shares its prompt): its prompt + " Great." + EOS
    prompt = train["input_ids"][0][: train["prompt_length"][0]]
    completion = train["input_ids"][2][train["prompt_length"][2] :]
    assert train["kl_input_ids"][0] == prompt + completion
    assert completion[-1] == tokenizer.eos_token_id and prompt[0] == tokenizer.bos_token_id

    batch = collate_kto([train[i] for i in range(4)], pad_token_id=tokenizer.pad_token_id)
    for prefix in ("", "kl_"):
        mask = batch[f"{prefix}completion_mask"]
        assert mask.shape == batch["input_ids"].shape and mask.dtype == torch.bool
        assert not mask[:, 0].any() and mask.any(dim=1).all()
        assert not (mask & (batch[f"{prefix}attention_mask"] == 0)).any()
    assert batch["label"].tolist() == [True, False, True, False]


def test_paired_rows_become_one_desirable_and_one_undesirable_row(tokenizer):
    pairs = {
        "prompt": [f"Question {i}?" for i in range(10)],
        "chosen": [f" Good answer {i}." for i in range(10)],
        "rejected": [" Bad."] * 10,
    }
    as_pairs = PreferenceDataModule(
        tokenizer, dataset=datasets.Dataset.from_dict(pairs), val_fraction=0.2, max_length=48
    )
    as_pairs.setup("fit")
    dm = kto_module(tokenizer, pairs, val_fraction=0.2)
    assert (dm.num_train_examples, dm.num_val_examples) == (16, 4)  # 8 + 2 pairs, split first
    train = dm.train_dataset
    # the chosen rows first, then the rejected rows, each tokenised as DPO tokenises the pair
    assert [bool(x) for x in train["label"]] == [True] * 8 + [False] * 8
    assert train["input_ids"][:8] == as_pairs.train_dataset["chosen_input_ids"]
    assert train["input_ids"][8:] == as_pairs.train_dataset["rejected_input_ids"]
    # a chosen row's mismatched completion comes from another pair
    assert train["kl_input_ids"][0][-3:] == train["input_ids"][1][-3:]


def test_message_rows_split_the_prompt_at_the_first_assistant_turn(tokenizer):
    chat = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}]
    with_prompt = {
        "prompt": ["Hi there"] * 2,
        "completion": [chat[1:], [{"role": "assistant", "content": "Go away."}]],
        "label": [True, False],
    }
    without_prompt = {
        **with_prompt,
        "completion": [chat, [chat[0], with_prompt["completion"][1][0]]],
    }
    del without_prompt["prompt"]
    a, b = kto_module(tokenizer, with_prompt), kto_module(tokenizer, without_prompt)
    assert a.format == b.format == "messages"
    assert a.train_dataset["input_ids"] == b.train_dataset["input_ids"]
    assert a.train_dataset["prompt_length"] == b.train_dataset["prompt_length"]


def test_clear_errors(tokenizer):
    with pytest.raises(DataError, match="column 'label'.*expected a bool.*Fix"):
        kto_module(tokenizer, {"completion": [" a", " b"], "label": ["yes", "no"]})
    with pytest.raises(DataError, match="'completion' not found.*chosen/rejected"):
        kto_module(tokenizer, {"text": [" a", " b"]})
    with pytest.raises(DataError, match="'label'.*not found.*Fix"):
        kto_module(tokenizer, {"completion": [" a", " b"]})
    with pytest.raises(DataError, match="unknown column name 'margin'.*Fix"):
        KTODataModule(tokenizer, columns={"margin": "m"})
