"""Queries for generation: token ids per row, then one left-padded batch.

Left padding puts the last query token of every row in the same column, so ``generate``
continues all rows from there and every response starts at column Q (ALGORITHMS.md §2).
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from rlhf_lightning.data.formats import document_bos


def start_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The token an empty query starts from: BOS, else EOS (GPT-2 style "document start")."""
    token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if token is None:
        raise ValueError("the tokenizer has neither a BOS nor an EOS token to start an empty query")
    return int(token)


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The pad id; without one, EOS (harmless here: masks come from lengths, never ``!= pad``)."""
    token = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if token is None:
        raise ValueError("the tokenizer has neither a pad nor an EOS token to pad queries with")
    return int(token)


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: list[str], prepend_bos: bool = True
) -> list[list[int]]:
    """Token ids of each prompt, without padding.

    Args:
        tokenizer: Any HF tokenizer; its own special-token post-processing is not applied.
        prompts: B strings; an empty prompt becomes ``[BOS]`` so generation has a context.
        prepend_bos: Put BOS first when the tokenizer has a document BOS
            (``data.formats.document_bos``: not a chat-turn marker) and the prompt does not
            already start with it. The SFT data does the same (``data/formats.py::_with_bos``),
            so the policy sees queries shaped like its training examples.

    Returns:
        B lists of ids.
    """
    encoded = tokenizer(list(prompts), add_special_tokens=False)["input_ids"] if prompts else []
    start = start_token_id(tokenizer)
    bos = document_bos(tokenizer) if prepend_bos else None
    rows = []
    for ids in encoded:
        ids = list(ids)
        if bos is not None and (not ids or ids[0] != bos):
            ids = [int(bos), *ids]
        rows.append(ids or [start])
    return rows


def rows_from_tensor(query_ids: Tensor, query_mask: Tensor | None, pad_id: int) -> list[list[int]]:
    """The real tokens of each row of an already padded query tensor.

    Args:
        query_ids: Padded on either side. Shape (B, Q).
        query_mask: True at real tokens. Shape (B, Q), bool. None: every token that is not
            ``pad_id`` is real (TRL's ``ids != pad``, safe because pad is distinct from EOS,
            ALGORITHMS.md §5.6).
        pad_id: The pad id, used only when ``query_mask`` is None.

    Returns:
        B lists of ids.
    """
    mask = query_ids != pad_id if query_mask is None else query_mask.bool()
    return [row[keep].tolist() for row, keep in zip(query_ids.cpu(), mask.cpu(), strict=True)]


def left_pad(
    rows: list[list[int]], pad_id: int, device: torch.device | str | None = None
) -> tuple[Tensor, Tensor]:
    """Stack rows into one left-padded batch.

    Args:
        rows: B non-empty lists of ids.
        pad_id: Filler for the left of shorter rows.
        device: Where the tensors go.

    Returns:
        ``(query_ids, query_mask)``: long ids and a bool mask (True = real token), each (B, Q),
        Q = the longest row.
    """
    if not rows:
        raise ValueError("no queries to generate from")
    if any(not row for row in rows):
        raise ValueError("every query needs at least one token (an empty prompt starts at BOS)")
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = True
    return ids.to(device), mask.to(device)
