"""Batching tokenised examples: padding to a rectangle, and packing into fixed-size blocks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch


def pad_batch(
    features: Sequence[Mapping[str, Any]],
    pad_token_id: int,
    padding_side: str = "right",
    pad_to_multiple_of: int | None = None,
) -> dict[str, torch.Tensor]:
    """Pads tokenised examples to the longest one in the batch.

    The loss is meant to be taken as: logits at ``t - 1`` predict ``input_ids[:, t]`` wherever
    ``loss_mask[:, t]``; padding is never a target.

    Args:
        features: examples with ``input_ids`` (ints) and ``loss_mask`` (bools) of equal length;
            lists or 1-D tensors.
        pad_token_id: id written into padded positions.
        padding_side: ``"right"`` (training) or ``"left"`` (generation: prompts end together).
        pad_to_multiple_of: round the length up to a multiple of this (8 suits tensor cores).

    Returns:
        ``input_ids`` LongTensor, ``attention_mask`` LongTensor (1 = real token, the type Hugging
        Face models expect) and ``loss_mask`` BoolTensor, each of shape (B, T).
    """
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    lengths = [len(f["input_ids"]) for f in features]
    length = max(lengths, default=0)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    input_ids = torch.full((len(features), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(features), length), dtype=torch.long)
    loss_mask = torch.zeros((len(features), length), dtype=torch.bool)
    for row, (feature, n) in enumerate(zip(features, lengths, strict=True)):
        if len(feature["loss_mask"]) != n:
            raise ValueError(f"example {row}: input_ids and loss_mask lengths differ")
        cols = slice(0, n) if padding_side == "right" else slice(length - n, length)
        input_ids[row, cols] = torch.as_tensor(feature["input_ids"], dtype=torch.long)
        attention_mask[row, cols] = 1
        loss_mask[row, cols] = torch.as_tensor(feature["loss_mask"], dtype=torch.bool)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "loss_mask": loss_mask}


def pack_sequences(
    examples: Mapping[str, Sequence[Sequence[Any]]], block_size: int
) -> dict[str, list[list]]:
    """Concatenates examples end to end and cuts the stream into blocks of ``block_size``.

    As in classic LM pretraining, attention crosses example boundaries inside a block: an
    example can attend to the end of the previous one. Each example starts with a non-target
    token (its ``loss_mask[0]`` is False), so no token is trained to predict across a boundary;
    the first token of every block is also made a non-target, as nothing precedes it in the
    block. The last block keeps the leftover tokens and may be shorter (the collator pads it).

    Args:
        examples: columns ``input_ids`` and ``loss_mask``, one list per example.
        block_size: tokens per block.

    Returns:
        Columns ``input_ids`` and ``loss_mask``, one list per block.
    """
    if block_size < 2:
        raise ValueError(f"block_size must be at least 2, got {block_size}")
    stream_ids = [int(i) for ids in examples["input_ids"] for i in ids]
    stream_mask = [bool(m) for mask in examples["loss_mask"] for m in mask]
    blocks: dict[str, list[list]] = {"input_ids": [], "loss_mask": []}
    for start in range(0, len(stream_ids), block_size):
        block_mask = stream_mask[start : start + block_size]
        block_mask[0] = False
        if not any(block_mask):
            continue  # a lone non-target token left at the end: nothing to learn from it
        blocks["input_ids"].append(stream_ids[start : start + block_size])
        blocks["loss_mask"].append(block_mask)
    return blocks
