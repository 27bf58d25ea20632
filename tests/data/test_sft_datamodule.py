"""SFTDataModule end to end on small local files."""

from __future__ import annotations

import json

import datasets
import pytest
import torch

from rlhf_lightning.data import SFTDataModule
from rlhf_lightning.errors import DataError


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture
def pc_file(tmp_path):
    rows = [{"prompt": f"Question {i}?", "completion": f" Answer {i}."} for i in range(40)]
    return write_jsonl(tmp_path / "train.jsonl", rows)


def first_batches(dm, n=3):
    loader = iter(dm.train_dataloader())
    return [next(loader)["input_ids"] for _ in range(n)]


def test_end_to_end_prompt_completion(tokenizer, pc_file):
    dm = SFTDataModule(tokenizer, path=pc_file, val_fraction=0.1, max_length=32, batch_size=8)
    dm.setup("fit")
    assert dm.format == "prompt_completion"
    assert (dm.num_train_examples, dm.num_val_examples) == (36, 4)
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "loss_mask"}
    assert batch["input_ids"].dtype == torch.long and batch["attention_mask"].dtype == torch.long
    assert batch["loss_mask"].dtype == torch.bool
    assert batch["input_ids"].shape == batch["loss_mask"].shape
    assert batch["input_ids"].shape[0] == 8 and batch["input_ids"].shape[1] <= 32
    # Targets only where there are real tokens, never at position 0.
    assert not (batch["loss_mask"] & (batch["attention_mask"] == 0)).any()
    assert not batch["loss_mask"][:, 0].any()
    val = next(iter(dm.val_dataloader()))
    assert val["input_ids"].shape[0] == 4


def test_setup_is_idempotent(tokenizer, pc_file):
    dm = SFTDataModule(tokenizer, path=pc_file)
    dm.setup("fit")
    train = dm.train_dataset
    dm.setup("validate")
    assert dm.train_dataset is train


def test_order_is_reproducible_from_seed(tokenizer, pc_file):
    def batches(seed):
        dm = SFTDataModule(tokenizer, path=pc_file, batch_size=4, seed=seed)
        dm.setup()
        return first_batches(dm)

    same = [torch.equal(a, b) for a, b in zip(batches(3), batches(3), strict=True)]
    assert all(same)
    assert not all(torch.equal(a, b) for a, b in zip(batches(3), batches(4), strict=True))


def test_validation_is_in_order(tokenizer, pc_file):
    dm = SFTDataModule(tokenizer, path=pc_file, val_fraction=0.25, eval_batch_size=100)
    dm.setup()
    first, second = next(iter(dm.val_dataloader())), next(iter(dm.val_dataloader()))
    assert torch.equal(first["input_ids"], second["input_ids"])


def test_column_mapping_and_target_tokens(tokenizer, tmp_path):
    rows = [{"body": "Hello world"}, {"body": "The quick brown fox"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    dm = SFTDataModule(tokenizer, path=path, columns={"text": "body"}, val_fraction=0.0)
    dm.setup()
    assert dm.format == "text" and dm.num_val_examples == 0 and dm.val_dataloader() == []
    expected = []
    for example in dm.train_dataset:
        expected += [
            t for t, m in zip(example["input_ids"], example["loss_mask"], strict=True) if m
        ]
    tokens = dm.target_tokens("train")
    assert tokens.dtype == torch.long and tokens.tolist() == expected
    # Every token of both texts but the BOS, plus one EOS each.
    texts = sum(len(tokenizer(r["body"], add_special_tokens=False)["input_ids"]) for r in rows)
    assert tokens.numel() == texts + 2
    assert dm.target_tokens("validation").numel() == 0


def test_existing_validation_split_is_used(tokenizer, tmp_path):
    rows = [{"text": f"line number {i}"} for i in range(6)]
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "validation.jsonl", rows[:2])
    dm = SFTDataModule(tokenizer, path=str(tmp_path))
    dm.setup()
    assert (dm.num_train_examples, dm.num_val_examples) == (6, 2)


def test_in_memory_messages_dataset(tokenizer):
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    dm = SFTDataModule(
        tokenizer, dataset=datasets.Dataset.from_list([{"messages": chat}] * 5), val_fraction=0.2
    )
    dm.setup()
    assert dm.format == "messages" and (dm.num_train_examples, dm.num_val_examples) == (4, 1)
    assert tokenizer.decode(dm.target_tokens("validation")) == "Hello!<|im_end|>\n"


def test_packing(tokenizer, pc_file):
    dm = SFTDataModule(tokenizer, path=pc_file, packing=True, max_length=16, val_fraction=0.0)
    dm.setup()
    lengths = [len(ids) for ids in dm.train_dataset["input_ids"]]
    assert set(lengths[:-1]) == {16} and 0 < lengths[-1] <= 16
    assert not any(mask[0] for mask in dm.train_dataset["loss_mask"])
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[1] == 16


def test_max_samples(tokenizer, pc_file):
    dm = SFTDataModule(tokenizer, path=pc_file, max_samples=10, val_fraction=0.2)
    dm.setup()
    assert (dm.num_train_examples, dm.num_val_examples) == (8, 2)


def test_long_prompts_are_dropped_with_one_warning(tokenizer, tmp_path):
    rows = [{"prompt": "Hi", "completion": " ok"}] * 3 + [
        {"prompt": "word " * 50, "completion": "x"}
    ]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    dm = SFTDataModule(tokenizer, path=path, max_length=16, val_fraction=0.0)
    with pytest.warns(UserWarning, match="1 of 4 train examples.*Fix: raise data.max_length"):
        dm.setup()
    assert dm.num_train_examples == 3


def test_errors_name_the_file_and_the_fix(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "answer": "b"}] * 3)
    with pytest.raises(DataError) as err:
        SFTDataModule(tokenizer, path=path, format="prompt_completion").setup()
    assert path in str(err.value) and "'completion'" in str(err.value) and "Fix" in str(err.value)

    path = write_jsonl(tmp_path / "e.jsonl", [{"text": "fine"}, {"text": ""}, {"text": "ok"}])
    with pytest.raises(DataError) as err:
        SFTDataModule(tokenizer, path=path, val_fraction=0.0).setup()
    message = str(err.value)
    assert path in message and "row 1" in message and "'text'" in message and "Fix" in message


def test_demo_is_the_default(tokenizer):
    dm = SFTDataModule(tokenizer, max_samples=50)
    dm.setup()
    assert dm.format == "text" and dm.num_train_examples + dm.num_val_examples == 50
