"""A rollout batch from experience someone else sampled: queries, responses (text or ids)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from rlhf_lightning.errors import ConfigError
from rlhf_lightning.rollout import RolloutBatch, encode_prompts, left_pad

Tokens = Sequence[int] | Tensor


def experience_rollout(tokenizer: Any, queries: list, responses: list) -> RolloutBatch:
    """Queries left-padded, responses right-padded, as a sampled rollout would be.

    Text is tokenised as the rollouts tokenise it (queries with BOS first, responses without
    special tokens); token ids (lists or 1-D tensors) are used as given.
    """
    if len(queries) != len(responses):
        raise ConfigError(f"step: {len(queries)} queries but {len(responses)} responses.")
    pad = tokenizer.pad_token_id
    query_rows = [
        encode_prompts(tokenizer, [q])[0] if isinstance(q, str) else _ids(q) for q in queries
    ]
    query_ids, query_mask = left_pad(query_rows, pad)
    response_rows = [
        tokenizer(r, add_special_tokens=False).input_ids if isinstance(r, str) else _ids(r)
        for r in responses
    ]
    # An empty response is a row of padding (its mask all False): a batch may hold one.
    width = max(1, max(len(r) for r in response_rows))
    response_ids = torch.full((len(response_rows), width), pad, dtype=torch.long)
    response_mask = torch.zeros_like(response_ids, dtype=torch.bool)
    for i, row in enumerate(response_rows):
        response_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        response_mask[i, : len(row)] = True
    contains_stop = torch.tensor(
        [bool(r) and r[-1] == tokenizer.eos_token_id for r in response_rows]
    )
    return RolloutBatch(
        query_ids=query_ids,
        query_mask=query_mask,
        response_ids=response_ids,
        response_mask=response_mask,
        contains_stop=contains_stop,
        prompts=[_text(tokenizer, q) for q in queries],
        completions=[_text(tokenizer, r) for r in responses],
    )


def scores_tensor(scores: Any) -> Tensor:
    """(B,) float32 from a tensor, or a list of floats or 0-d tensors (TRL's form)."""
    if isinstance(scores, Tensor):
        return scores.detach().float().reshape(-1).cpu()
    return torch.tensor([float(torch.as_tensor(s).reshape(())) for s in scores])


def _ids(tokens: Tokens) -> list[int]:
    if isinstance(tokens, Tensor):
        return [int(t) for t in tokens.reshape(-1).tolist()]
    return [int(t) for t in tokens]


def _text(tokenizer: Any, item: str | Tokens) -> str:
    return item if isinstance(item, str) else tokenizer.decode(_ids(item), skip_special_tokens=True)
