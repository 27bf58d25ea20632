"""Padding-free layout: the real tokens of padded rows packed end to end into fewer rows.

A rollout batch is (B, T) with left-padded queries and right-padded responses; with responses
that stop at EOS, much of it is padding that every forward pays for. Packing moves each row's
real tokens (in order) into a row of a (R, C) layout, several sequences per row, each with its
own positions ``0 .. L-1``. A causal LM that reads packed sequences from position ids (positions
restarting at 0 start a new sequence: transformers' ``find_packed_sequence_indices``, flash
varlen's ``cu_seqlens``) then computes, at each real token, what the padded forward computes:
the same token, the same position, attention over the same earlier tokens of its sequence.

The layout is index tensors only, so moving a tensor between the two layouts is one gather or
scatter, and gradients flow through it.

A group of rows with the same prompt (GRPO/RLOO's G completions of one prompt) can share more:
:func:`shared_prefix_layout` packs the group as one segment ``[prompt, completion_1, ...,
completion_k]``, each completion's positions continuing from the prompt length, with an
attention mask letting each completion see the prompt and, causally, itself only. Each real
token then still sees exactly the tokens it sees in its padded row, at the same positions, so
the numbers are the padded forward's, while the prompt is computed once instead of k times
(and its gradient is the sum of the k copies' gradients, as the padded batch's is).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from rlhf_lightning.functional.masked import position_ids_from_mask


class PackedLayout(NamedTuple):
    """Where each real token of a padded (B, T) batch sits in a packed (R, C) batch.

    N is the number of real tokens; flat indices are row-major (``b * T + t``, ``r * C + c``).
    """

    padded_index: Tensor
    """Flat index of each real token in the padded batch, in row-major order. Shape (N,)."""
    packed_index: Tensor
    """Flat index of the same token in the packed batch. Shape (N,)."""
    position_ids: Tensor
    """Per-sequence positions ``0 .. L-1`` (0 at packed padding). Shape (R, C)."""
    padded_shape: tuple[int, int]
    """(B, T)."""
    attention: Tensor | None = None
    """True where packed token ``i`` (dim 1) may attend to token ``j`` (dim 2) of its row;
    None: the positions restarting at 0 separate the sequences. Shape (R, C, C), bool."""


def first_fit_rows(lengths: list[int], capacity: int) -> list[tuple[int, int]]:
    """Assign sequences to rows of `capacity` tokens, longest first (first-fit decreasing).

    Args:
        lengths: Each sequence's token count, every one <= `capacity`. Length B.
        capacity: Tokens per packed row.

    Returns:
        ``(row, offset)`` of each sequence, in input order: its first token sits at column
        `offset` of packed row `row`.
    """
    if any(n > capacity for n in lengths):
        raise ValueError(f"a sequence of {max(lengths)} tokens does not fit rows of {capacity}")
    free: list[int] = []  # tokens left in each packed row
    placed = [(0, 0)] * len(lengths)
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r, left in enumerate(free) if left >= lengths[i]), len(free))
        if row == len(free):
            free.append(capacity)
        placed[i] = (row, capacity - free[row])
        free[row] -= lengths[i]
    return placed


def packing_width(lengths: list[int], max_width: int, step: int = 1) -> int:
    """The row width that packs `lengths` into the fewest rows of about `max_width` tokens with
    the least padding: R = ceil(total / max_width) rows, as narrow as first-fit decreasing
    allows (widened by `step` until the sequences fit in R rows).

    A packed batch costs R x C token slots; rows of the padded width T leave a minibatch of a
    few sequences as wide as it was (4 rows of 0.7 T each still need 4 rows), while one row
    of exactly their total has no padding at all.

    Args:
        lengths: Each sequence's token count. Length B.
        max_width: The widest row wanted (attention over a packed row costs C per token).
        step: Widening step while the sequences do not fit.

    Returns:
        C >= max(lengths).
    """
    total, longest = sum(lengths), max(lengths, default=1)
    rows = max(1, -(-total // max(max_width, longest)))
    width = max(longest, -(-total // rows), 1)
    while 1 + max(r for r, _ in first_fit_rows(lengths, width)) > rows:
        width += step
    return width


def default_width(lengths: list[int], t: int) -> int:
    """The packed row width of sequences from a batch padded to `t` columns: :func:`packing_width`
    with rows of at most max(T, min(4 T, 1024)) tokens (the sdpa path masks a C x C block per
    row, so attention costs C per token, small beside the MLP at these widths, while wider rows
    leave less padding)."""
    return packing_width(lengths, max(t, min(4 * t, 1024)), step=max(1, t // 32))


def pack_layout(attention_mask: Tensor, capacity: int | None = None) -> PackedLayout:
    """The packed layout of a padded batch (one host sync: the row lengths).

    Args:
        attention_mask: True at real tokens, anywhere in the row. Shape (B, T).
        capacity: Tokens per packed row; None: :func:`default_width`.

    Returns:
        :class:`PackedLayout` with C = `capacity` and R the rows first-fit decreasing needs.
    """
    mask = attention_mask.bool()
    b, t = mask.shape
    lengths = mask.sum(dim=1).tolist()
    if capacity is None:
        capacity = default_width(lengths, t)
    placed = first_fit_rows(lengths, capacity)
    rows = 1 + max((r for r, _ in placed), default=0)
    row_start = torch.tensor([r * capacity + o for r, o in placed], device=mask.device).long()
    positions = position_ids_from_mask(mask)  # (B, T): a real token's index in its sequence
    padded_index = mask.reshape(-1).nonzero().squeeze(-1)
    batch_row = padded_index // t
    packed_index = row_start[batch_row] + positions.reshape(-1)[padded_index]
    packed_positions = torch.zeros(rows * capacity, dtype=torch.long, device=mask.device)
    packed_positions[packed_index] = positions.reshape(-1)[padded_index]
    return PackedLayout(padded_index, packed_index, packed_positions.view(rows, capacity), (b, t))


def pack(x: Tensor, layout: PackedLayout, fill: float | int = 0) -> Tensor:
    """Move a padded tensor's real entries into the packed layout.

    Args:
        x: Shape (B, T, ...).
        layout: From :func:`pack_layout` on the batch's mask.
        fill: The value at packed padding.

    Returns:
        Shape (R, C, ...); differentiable in `x`.
    """
    r, c = layout.position_ids.shape
    flat = x.reshape(-1, *x.shape[2:])
    out = flat.new_full((r * c, *x.shape[2:]), fill)
    out = out.index_copy(0, layout.packed_index, flat[layout.padded_index])
    return out.view(r, c, *x.shape[2:])


def packed_positions_of(layout: PackedLayout, padded_mask: Tensor) -> Tensor:
    """Flat packed indices of chosen padded positions, in the padded row-major order.

    Args:
        layout: From :func:`pack_layout`.
        padded_mask: True at the padded positions wanted; each must be a real token (a padding
            position gets -1, unchecked: checking would cost a host sync). Shape (B, T).

    Returns:
        Long indices into the flattened (R * C) packed batch. Shape (number of True,).
    """
    b, t = layout.padded_shape
    to_packed = torch.full((b * t,), -1, dtype=torch.long, device=padded_mask.device)
    to_packed[layout.padded_index] = layout.packed_index
    return to_packed[padded_mask.reshape(-1).nonzero().squeeze(-1)]


def prompt_groups(input_ids: Tensor, attention_mask: Tensor, start: int) -> Tensor:
    """Which rows share their prompt: the real tokens of columns ``0 .. start-1`` (one host sync
    in :func:`torch.unique`).

    Args:
        input_ids: Token ids. Shape (B, T).
        attention_mask: True at real tokens. Shape (B, T).
        start: Width of the prompt columns (the query width Q of a rollout).

    Returns:
        A group index per row; equal indices, equal prompts. Shape (B,), long.
    """
    mask = attention_mask[:, :start].bool()
    prompts = torch.where(mask, input_ids[:, :start].long(), -1)  # padding differs from any id
    return torch.unique(prompts, dim=0, return_inverse=True)[1]


def repeated_prompt_tokens(input_ids: Tensor, attention_mask: Tensor, start: int) -> Tensor:
    """How many real prompt tokens repeat a prompt an earlier row holds: what
    :func:`shared_prefix_layout` packs once instead of once per row.

    Args:
        input_ids: Token ids. Shape (B, T).
        attention_mask: True at real tokens. Shape (B, T).
        start: Width of the prompt columns.

    Returns:
        The count: every row's prompt length, less each group's once. Shape (), long.
    """
    groups = prompt_groups(input_ids, attention_mask, start)
    lengths = attention_mask[:, :start].long().sum(dim=1)
    once = lengths.new_zeros(lengths.shape).scatter_reduce(0, groups, lengths, "amax")
    return lengths.sum() - once.sum()


def shared_prefix_layout(
    attention_mask: Tensor, start: int, groups: Tensor, capacity: int | None = None
) -> PackedLayout:
    """The packed layout that holds each group's shared prompt once (host syncs: the lengths and
    the groups).

    A group's segment is its prompt (the real tokens of columns ``< start``, the same in every
    row of the group) followed by each row's completion (the real tokens of columns
    ``>= start``), in row order; completion tokens keep their padded positions
    (prompt length + index). Segments are placed into rows first-fit decreasing; several
    prompt tokens of the padded batch map to the same packed token.

    Args:
        attention_mask: True at real tokens. Shape (B, T).
        start: Column of the first completion token.
        groups: Equal values for rows with equal prompts (:func:`prompt_groups`). Shape (B,).
        capacity: Tokens per packed row; None: :func:`default_width` of the segment lengths.

    Returns:
        :class:`PackedLayout` with ``attention`` set (each token sees its prompt and its own
        completion causally; packed padding sees the padding before it, so no row is empty).
    """
    mask = attention_mask.bool()
    b, t = mask.shape
    prompt_len = mask[:, :start].sum(dim=1).tolist()
    completion_len = mask[:, start:].sum(dim=1).tolist()
    members: dict[int, list[int]] = {}
    for row, group in enumerate(groups.tolist()):
        members.setdefault(group, []).append(row)
    segments = list(members.values())
    lengths = [prompt_len[rows[0]] + sum(completion_len[r] for r in rows) for rows in segments]
    if capacity is None:
        capacity = default_width(lengths, t)
    placed = first_fit_rows(lengths, capacity)
    # Packed flat index of each row's prompt start and of its completion's position 0.
    prompt_base, completion_base, segment_of = [0] * b, [0] * b, [0] * b
    for index, rows in enumerate(segments):
        begin = placed[index][0] * capacity + placed[index][1]
        offset = 0
        for row in rows:
            prompt_base[row], completion_base[row] = begin, begin + offset
            segment_of[row] = index
            offset += completion_len[row]
    device = mask.device
    n_rows = 1 + max((r for r, _ in placed), default=0)
    in_prompt = torch.arange(t, device=device) < start  # (T,)
    base = torch.where(
        in_prompt,
        torch.tensor(prompt_base, device=device)[:, None],
        torch.tensor(completion_base, device=device)[:, None],
    )  # (B, T)
    positions = position_ids_from_mask(mask)  # a completion token's continue from its prompt
    padded_index = mask.reshape(-1).nonzero().squeeze(-1)
    packed_index = (base + positions).reshape(-1)[padded_index]
    size = n_rows * capacity
    packed_positions = torch.zeros(size, dtype=torch.long, device=device)
    packed_positions[packed_index] = positions.reshape(-1)[padded_index]
    segment = torch.full((size,), -1, dtype=torch.long, device=device)
    segment[packed_index] = torch.tensor(segment_of, device=device)[padded_index // t]
    rows_of = torch.arange(1, b + 1, device=device)[:, None]
    branch = torch.zeros(size, dtype=torch.long, device=device)  # 0: a prompt, b + 1: row b's
    branch[packed_index] = torch.where(in_prompt, 0, rows_of).reshape(-1)[padded_index]
    segment, branch = segment.view(n_rows, 1, capacity), branch.view(n_rows, 1, capacity)
    columns = torch.arange(capacity, device=device)
    causal = columns[None, :] <= columns[:, None]  # (C, C): [i, j] is j <= i
    attention = (
        (segment.mT == segment) & causal & ((branch == 0) | (branch == branch.mT))
    )  # (R, C, C)
    return PackedLayout(
        padded_index, packed_index, packed_positions.view(n_rows, capacity), (b, t), attention
    )
