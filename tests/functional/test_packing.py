"""The packed layout: literal placements, positions and the padded <-> packed moves."""

from __future__ import annotations

import pytest
import torch

from rlhf_lightning.functional import first_fit_rows, pack, pack_layout, packed_positions_of


def test_first_fit_decreasing_places_the_longest_first():
    # capacity 6, lengths [3, 5, 2, 4]: 5 opens row 0 (1 left), 4 opens row 1 (2 left),
    # 3 fits neither and opens row 2, 2 fills row 1 at column 4.
    assert first_fit_rows([3, 5, 2, 4], 6) == [(2, 0), (0, 0), (1, 4), (1, 0)]


def test_a_sequence_longer_than_a_row_is_refused():
    with pytest.raises(ValueError, match="does not fit"):
        first_fit_rows([7], 6)


def test_left_and_right_padded_rows_pack_end_to_end_with_their_own_positions():
    ids = torch.tensor([[9, 1, 2, 9], [3, 4, 5, 9], [9, 9, 6, 9]])
    mask = torch.tensor([[0, 1, 1, 0], [1, 1, 1, 0], [0, 0, 1, 0]], dtype=torch.bool)
    layout = pack_layout(mask)  # capacity T = 4; lengths [2, 3, 1]
    # 3 (row 1) opens packed row 0, 2 (row 0) opens packed row 1, 1 (row 2) fills row 0.
    assert pack(ids, layout, fill=-1).tolist() == [[3, 4, 5, 6], [1, 2, -1, -1]]
    assert layout.position_ids.tolist() == [[0, 1, 2, 0], [0, 1, 0, 0]]
    chosen = torch.zeros_like(mask)
    chosen[0, 2] = chosen[2, 2] = True  # token 2 and token 6
    assert packed_positions_of(layout, chosen).tolist() == [5, 3]


def test_pack_carries_gradients_and_trailing_dims():
    x = torch.arange(12.0).view(2, 3, 2).requires_grad_()
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]], dtype=torch.bool)
    packed = pack(x, pack_layout(mask, capacity=4))
    assert packed.tolist() == [[[0.0, 1.0], [2.0, 3.0], [8.0, 9.0], [10.0, 11.0]]]
    packed.sum().backward()
    assert x.grad[:, :, 0].tolist() == [[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]]
