"""How a reward model reads a prompt and its completion: token layout, truncation, padding.

Shared by the text path and the token fast path of :class:`~rlhf_lightning.rewards.ModelReward`
(see its module docstring for the layout rule).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from rlhf_lightning.data.pair_sides import special_affixes
from rlhf_lightning.errors import RewardError


def encode_for_reward(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    completions: Sequence[str],
    max_length: int,
) -> list[list[int]]:
    """Token ids of ``prompt + completion`` as a reward model reads them.

    ``prefix + prompt + completion + suffix``: prompt and completion are encoded separately
    without special tokens (no token straddles the boundary, as in the SFT and preference data);
    prefix/suffix come from the preference data's :func:`special_affixes`. The text is cut from the left to
    fit, so the end of the completion is always kept.

    Args:
        tokenizer: The reward model's tokenizer.
        prompts: Length B.
        completions: Length B.
        max_length: Tokens per row, special tokens included.

    Returns:
        B lists of token ids, none longer than ``max_length``.
    """
    # The layout the reward model was trained on (rlhf_lightning.data.preference).
    prefix, suffix = special_affixes(tokenizer)
    room = max_length - len(prefix) - len(suffix)
    if room < 1:
        raise RewardError(
            f"reward model tokenizer: max_length={max_length} leaves no room for text after "
            f"{len(prefix) + len(suffix)} special tokens. Fix: raise reward.max_length."
        )
    if len(prompts) != len(completions):
        raise RewardError(
            f"reward model: {len(prompts)} prompts but {len(completions)} completions."
        )
    if not prompts:
        return []
    prompt_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(list(completions), add_special_tokens=False)["input_ids"]
    encoded = [[*p, *c] for p, c in zip(prompt_ids, completion_ids, strict=True)]
    rows = []
    for ids in encoded:
        ids = list(ids)
        # A text that already spells out BOS/EOS (e.g. decoded with special tokens) gets one.
        if prefix and ids[:1] == prefix[:1]:
            ids = ids[1:]
        if suffix and ids[-1:] == suffix[-1:]:
            ids = ids[:-1]
        rows.append(prefix + ids[-room:] + suffix if ids else prefix + suffix)
    return rows


def left_align(input_ids: Tensor, mask: Tensor, pad_token_id: int) -> tuple[Tensor, Tensor]:
    """Move each row's real tokens to the left, in order; pad the rest with ``pad_token_id``.

    Args:
        input_ids: Shape (B, T).
        mask: Bool, True = real token. Shape (B, T).

    Returns:
        (input_ids, mask) right-padded. Shapes (B, T).
    """
    # A stable sort on "is padding" keeps the real tokens' order.
    order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices
    mask = mask.gather(1, order)
    input_ids = torch.where(mask, input_ids.gather(1, order), pad_token_id)
    return input_ids, mask


def right_pad(rows: list[list[int]], pad_token_id: int) -> tuple[Tensor, Tensor]:
    """Right-pad token id lists into a batch.

    Args:
        rows: B lists of token ids, at least one non-empty.
        pad_token_id: Written into padded positions.

    Returns:
        (input_ids, mask), True = real token. Shapes (B, T), T the longest row.
    """
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = True
    return input_ids, mask
