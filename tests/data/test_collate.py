"""Padding and packing on literal examples."""

from __future__ import annotations

import pytest
import torch

from rlhf_lightning.data import pack_sequences, pad_batch

F, T = False, True
BATCH = [
    {"input_ids": [5, 6, 7], "loss_mask": [F, T, T]},
    {"input_ids": [8], "loss_mask": [F]},
]


def test_pad_batch_right():
    out = pad_batch(BATCH, pad_token_id=0)
    assert out["input_ids"].dtype == torch.long and out["attention_mask"].dtype == torch.long
    assert out["loss_mask"].dtype == torch.bool
    assert out["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert out["loss_mask"].tolist() == [[F, T, T], [F, F, F]]


def test_pad_batch_left_and_multiple_of():
    out = pad_batch(BATCH, pad_token_id=9, padding_side="left", pad_to_multiple_of=4)
    assert out["input_ids"].tolist() == [[9, 5, 6, 7], [9, 9, 9, 8]]
    assert out["attention_mask"].tolist() == [[0, 1, 1, 1], [0, 0, 0, 1]]
    assert out["loss_mask"].tolist() == [[F, F, T, T], [F, F, F, F]]


def test_pad_batch_accepts_tensors():
    batch = [{k: torch.tensor(v) for k, v in f.items()} for f in BATCH]
    assert pad_batch(batch, 0)["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]


def test_pack_sequences_blocks_and_masks():
    examples = {"input_ids": [[1, 2, 3], [4, 5, 6, 7]], "loss_mask": [[F, T, T], [F, T, T, T]]}
    out = pack_sequences(examples, block_size=4)
    # Stream 1..7 cut every 4; the first token of a block is never a target (5 was).
    assert out["input_ids"] == [[1, 2, 3, 4], [5, 6, 7]]
    assert out["loss_mask"] == [[F, T, T, F], [F, T, T]]


def test_pack_sequences_drops_a_trailing_block_without_targets():
    examples = {"input_ids": [[1, 2, 3], [4, 5, 6, 7]], "loss_mask": [[F, T, T], [F, T, T, T]]}
    out = pack_sequences(examples, block_size=3)
    assert out["input_ids"] == [[1, 2, 3], [4, 5, 6]]
    assert out["loss_mask"] == [[F, T, T], [F, T, T]]


def test_pack_sequences_rejects_tiny_blocks():
    with pytest.raises(ValueError, match="block_size"):
        pack_sequences({"input_ids": [[1]], "loss_mask": [[F]]}, block_size=1)
