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


def pack_layout(attention_mask: Tensor, capacity: int | None = None) -> PackedLayout:
    """The packed layout of a padded batch (one host sync: the row lengths).

    Args:
        attention_mask: True at real tokens, anywhere in the row. Shape (B, T).
        capacity: Tokens per packed row; None picks :func:`packing_width` with rows of at
            most max(T, min(4 T, 1024)) tokens: the sdpa path masks a C x C block per row, so
            attention costs C per token, small beside the MLP at these widths, while wider
            rows leave less padding.

    Returns:
        :class:`PackedLayout` with C = `capacity` and R the rows first-fit decreasing needs.
    """
    mask = attention_mask.bool()
    b, t = mask.shape
    lengths = mask.sum(dim=1).tolist()
    if capacity is None:
        capacity = packing_width(lengths, max(t, min(4 * t, 1024)), step=max(1, t // 32))
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
