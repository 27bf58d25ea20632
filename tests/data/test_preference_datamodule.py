"""PreferenceDataModule end to end on small local files and in-memory datasets."""

from __future__ import annotations

import json

import datasets
import pytest
import torch

from rlhf_lightning.data import PreferenceDataModule, build_demo_pairs
from rlhf_lightning.errors import ConfigError, DataError

KEYS = {
    f"{side}_{part}"
    for side in ("chosen", "rejected")
    for part in ("input_ids", "attention_mask", "completion_mask")
}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def pair_rows(n, **extra):
    return [
        {"prompt": f"Question {i}?", "chosen": f" Good answer {i}.", "rejected": " Bad.", **extra}
        for i in range(n)
    ]


def check_batch(batch, batch_size, max_length):
    assert set(batch) >= KEYS
    shape = batch["chosen_input_ids"].shape
    assert shape[0] == batch_size and shape[1] <= max_length
    for key in KEYS:
        assert batch[key].shape == shape  # one T for both sides
    for side in ("chosen", "rejected"):
        assert batch[f"{side}_input_ids"].dtype == torch.long
        assert batch[f"{side}_attention_mask"].dtype == torch.long
        mask = batch[f"{side}_completion_mask"]
        assert mask.dtype == torch.bool and mask.any(dim=1).all()
        assert not (mask & (batch[f"{side}_attention_mask"] == 0)).any()
        assert not mask[:, 0].any()


def test_end_to_end_with_margin(tokenizer, tmp_path):
    rows = [{**r, "margin": float(i % 3)} for i, r in enumerate(pair_rows(40))]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    dm = PreferenceDataModule(tokenizer, path=path, max_length=32, batch_size=8)
    dm.setup("fit")
    assert dm.format == "text" and dm.has_margin
    assert (dm.num_train_examples, dm.num_val_examples) == (36, 4)
    batch = next(iter(dm.train_dataloader()))
    check_batch(batch, 8, 32)
    assert set(batch) == KEYS | {"margin"}
    assert batch["margin"].shape == (8,) and batch["margin"].dtype == torch.float32
    assert set(batch["margin"].tolist()) <= {0.0, 1.0, 2.0}
    # Every sequence ends with EOS: the last real token of each row.
    lengths = batch["chosen_attention_mask"].sum(1)
    last = batch["chosen_input_ids"].gather(1, (lengths - 1)[:, None])
    assert (last == tokenizer.eos_token_id).all()
    val = next(iter(dm.val_dataloader()))
    check_batch(val, 4, 32)


def test_chosen_rejected_only_and_column_mapping(tokenizer, tmp_path):
    rows = [{"better": f"I love item {i}", "worse": f"I hate item {i}"} for i in range(10)]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    dm = PreferenceDataModule(
        tokenizer, path=path, columns={"chosen": "better", "rejected": "worse"}, val_fraction=0.0
    )
    dm.setup()
    assert not dm.has_margin and dm.num_val_examples == 0 and dm.val_dataloader() == []
    example = dm.train_dataset[0]
    text = tokenizer.decode(example["chosen_input_ids"])
    assert text.startswith("<|endoftext|>I love item") and text.endswith("<|endoftext|>")
    assert "margin" not in next(iter(dm.train_dataloader()))


def test_chat_dataset_in_memory(tokenizer):
    user = {"role": "user", "content": "Hi there"}
    rows = [
        {
            "chosen": [user, {"role": "assistant", "content": f"Hello {i}!"}],
            "rejected": [user, {"role": "assistant", "content": "Go away."}],
        }
        for i in range(6)
    ]
    dm = PreferenceDataModule(tokenizer, dataset=datasets.Dataset.from_list(rows), batch_size=3)
    dm.setup()
    assert dm.format == "messages" and dm.num_train_examples + dm.num_val_examples == 6
    batch = next(iter(dm.train_dataloader()))
    check_batch(batch, 3, 128)
    rejected = batch["rejected_input_ids"][0][batch["rejected_completion_mask"][0]]
    assert tokenizer.decode(rejected) == "Go away.<|im_end|>\n<|endoftext|>"


def test_setup_is_idempotent_and_order_follows_seed(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(40))

    def first_batches(seed):
        dm = PreferenceDataModule(tokenizer, path=path, batch_size=4, seed=seed)
        dm.setup()
        train = dm.train_dataset
        dm.setup("validate")
        assert dm.train_dataset is train
        loader = iter(dm.train_dataloader())
        return [next(loader)["chosen_input_ids"] for _ in range(3)]

    same = [torch.equal(a, b) for a, b in zip(first_batches(3), first_batches(3), strict=True)]
    assert all(same)
    other = zip(first_batches(3), first_batches(4), strict=True)
    assert not all(a.shape == b.shape and torch.equal(a, b) for a, b in other)


def test_errors_name_the_file_the_original_row_and_the_fix(tokenizer, tmp_path):
    rows = pair_rows(10)
    rows[7]["rejected"] = rows[7]["chosen"]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    # Rows are shuffled into train/validation; the message still gives the file's row number.
    with pytest.raises(DataError) as err:
        PreferenceDataModule(tokenizer, path=path, val_fraction=0.3).setup()
    message = str(err.value)
    assert path in message and "row 7" in message and "identical" in message and "Fix" in message

    rows = pair_rows(4, margin=1.0)
    rows[2]["margin"] = "high"
    path = write_jsonl(tmp_path / "margin.jsonl", rows)
    with pytest.raises(DataError) as err:
        PreferenceDataModule(tokenizer, path=path, val_fraction=0.0).setup()
    message = str(err.value)
    assert "row 2" in message and "column 'margin'" in message and "Fix" in message

    path = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": "a", "completion": "b"}] * 3)
    with pytest.raises(DataError, match="column 'chosen' not found.*Fix"):
        PreferenceDataModule(tokenizer, path=path).setup()


def test_max_length_too_small_for_any_completion(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(4))
    dm = PreferenceDataModule(tokenizer, path=path, max_length=2, val_fraction=0.0)
    with pytest.raises(DataError, match="4 of 4 train pairs.*none is left. Fix: raise"):
        dm.setup()


def test_bad_config_values(tokenizer):
    with pytest.raises(ConfigError, match="val_fraction.*Fix"):
        PreferenceDataModule(tokenizer, val_fraction=1.0)
    with pytest.raises(ConfigError, match="batch_size.*Fix"):
        PreferenceDataModule(tokenizer, batch_size=0)
    with pytest.raises(DataError, match="data.columns.text.*Fix"):
        PreferenceDataModule(tokenizer, columns={"text": "body"})


def test_demo_pairs_are_the_default(tokenizer):
    dm = PreferenceDataModule(tokenizer, max_samples=64, batch_size=16)
    dm.setup()
    assert dm.format == "text" and not dm.has_margin
    # max_samples caps the training split and the demo's own validation split.
    assert (dm.num_train_examples, dm.num_val_examples) == (64, 64)
    batch = next(iter(dm.train_dataloader()))
    check_batch(batch, 16, 128)
    assert set(batch) == KEYS
    validation = build_demo_pairs(seed=0, val_fraction=0.1)["validation"]
    first = tokenizer.decode(dm.val_dataset[0]["chosen_input_ids"], skip_special_tokens=True)
    assert first in set(validation["chosen"])


def test_demo_without_validation(tokenizer):
    dm = PreferenceDataModule(tokenizer, val_fraction=0.0, max_samples=8)
    dm.setup()
    assert dm.num_val_examples == 0 and dm.val_dataloader() == []
