"""Cut responses after their first stop token (the "EOS trick", ALGORITHMS.md §2)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor


class TruncatedResponses(NamedTuple):
    """Output of :func:`truncate_at_stop`.

    Attributes:
        response_ids: Ids with every position after the first stop token set to pad.
            Shape (B, A).
        response_mask: True up to and including the first stop token; the whole row when there
            is none. Shape (B, A), bool.
        contains_stop: Whether the row has a stop token. Shape (B,), bool.
    """

    response_ids: Tensor
    response_mask: Tensor
    contains_stop: Tensor


def truncate_at_stop(
    response_ids: Tensor, stop_token_ids: Sequence[int], pad_token_id: int
) -> TruncatedResponses:
    """Keep each response up to and including its first stop token; pad the rest.

    TRL ``truncate_response``: the stop token stays (the reward is read there and its log-prob
    is trained, so the policy learns to stop); what follows is pad. The mask comes from the
    stop position, never from ``ids != pad``, so it is right even when pad == EOS (§5.6).

    Args:
        response_ids: Generated ids, the query removed. Shape (B, A).
        stop_token_ids: Ids that end a response (usually ``[eos]``).
        pad_token_id: Filler for positions after the stop token.

    Returns:
        :class:`TruncatedResponses`.

    Example:
        stop 2, pad 0: ``[[5, 2, 7, 2], [5, 6, 7, 8]]`` → ids ``[[5, 2, 0, 0], [5, 6, 7, 8]]``,
        mask ``[[T, T, F, F], [T, T, T, T]]``, contains_stop ``[True, False]``.
    """
    stops = torch.as_tensor(list(stop_token_ids), dtype=response_ids.dtype)
    is_stop = torch.isin(response_ids, stops.to(response_ids.device))  # (B, A)
    # Stops strictly before t: 0 up to and including the first stop, > 0 after it.
    stops_before = is_stop.long().cumsum(dim=1) - is_stop.long()
    response_mask = stops_before == 0
    return TruncatedResponses(
        response_ids=torch.where(response_mask, response_ids, pad_token_id),
        response_mask=response_mask,
        contains_stop=is_stop.any(dim=1),
    )
