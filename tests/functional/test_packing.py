"""The packed layout: literal placements, positions and the padded <-> packed moves."""

from __future__ import annotations

import pytest
import torch

from rlhf_lightning.functional import (
    first_fit_rows,
    pack,
    pack_layout,
    packed_positions_of,
    packing_width,
    prompt_groups,
    repeated_prompt_tokens,
    shared_prefix_layout,
)


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
    layout = pack_layout(mask, capacity=4)  # lengths [2, 3, 1]
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


def test_packing_width_is_the_narrowest_that_fits_the_fewest_rows():
    # 4 sequences of 0.7 T (T = 10): rows of T would still need 4 rows; one row of 28 has
    # no padding (max width 40).
    assert packing_width([7, 7, 7, 7], max_width=40) == 28
    # max width 20: 2 rows of 14 (7 + 7 each).
    assert packing_width([7, 7, 7, 7], max_width=20) == 14
    # [9, 5, 4] in 2 rows: width 9 fits 9 | 5 + 4.
    assert packing_width([9, 5, 4], max_width=10) == 9
    # [6, 6, 6] in 2 rows (total 18, max 10): width 9 puts 6 | 6 | 6 in 3 rows, so it widens
    # to 12 (6 + 6 | 6).
    assert packing_width([6, 6, 6], max_width=10) == 12


def test_default_layout_packs_a_few_long_rows_into_one():
    mask = torch.ones(4, 10, dtype=torch.bool)
    mask[:, 7:] = False  # 4 rows of 7 real tokens in T = 10
    assert pack_layout(mask).position_ids.shape == (1, 28)


def test_rows_with_the_same_prompt_tokens_are_one_group():
    # start 2: rows 0 and 1 hold prompt [7] (left-padded, different pad ids), row 2 [3, 4];
    # row 3 has [7] too but in column 0, with column 1 real: prompt [7, 4], another group.
    ids = torch.tensor([[0, 7, 8, 9], [5, 7, 5, 0], [3, 4, 6, 0], [7, 4, 1, 0]])
    mask = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 0]])
    groups = prompt_groups(ids, mask, 2).tolist()
    assert groups[0] == groups[1]
    assert len({groups[0], groups[2], groups[3]}) == 3
    assert repeated_prompt_tokens(ids, mask, 2).item() == 1  # row 1's [7]


def test_a_shared_prompt_is_packed_once_with_each_completion_after_it():
    # Rows 0 and 1 share prompt [7] (1 token), completions [8, 9] and [5]; row 2 has prompt
    # [3, 4] and completion [6]. Segments: [7 | 8 9 | 5] (4 tokens) and [3 4 | 6] (3 tokens),
    # one row of 7: packed [7, 8, 9, 5, 3, 4, 6].
    ids = torch.tensor([[0, 7, 8, 9], [0, 7, 5, 0], [3, 4, 6, 0]])
    mask = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 0], [1, 1, 1, 0]], dtype=torch.bool)
    layout = shared_prefix_layout(mask, 2, torch.tensor([0, 0, 1]))
    assert pack(ids, layout).tolist() == [[7, 8, 9, 5, 3, 4, 6]]
    # Row 1's completion token continues from its prompt: position 1, like in its padded row.
    assert layout.position_ids.tolist() == [[0, 1, 2, 1, 0, 1, 2]]
    assert layout.padded_index.tolist() == [1, 2, 3, 5, 6, 8, 9, 10]
    assert layout.packed_index.tolist() == [0, 1, 2, 0, 3, 4, 5, 6]  # row 1's 7 is row 0's
    # Each token sees its prompt and its own completion before it, nothing of another one.
    assert layout.attention.int().tolist() == [
        [
            [1, 0, 0, 0, 0, 0, 0],  # 7
            [1, 1, 0, 0, 0, 0, 0],  # 8 (row 0)
            [1, 1, 1, 0, 0, 0, 0],  # 9 (row 0)
            [1, 0, 0, 1, 0, 0, 0],  # 5 (row 1): the prompt and itself
            [0, 0, 0, 0, 1, 0, 0],  # 3
            [0, 0, 0, 0, 1, 1, 0],  # 4
            [0, 0, 0, 0, 1, 1, 1],  # 6 (row 2)
        ]
    ]
    # The token scoring each row's first completion token is the shared prompt's last one.
    before = torch.zeros_like(mask)
    before[:, 1] = True
    assert packed_positions_of(layout, before).tolist() == [0, 0, 5]


def test_shared_layout_padding_attends_only_padding():
    # Capacity 4 leaves one padding slot after segment [7 | 8 | 5]; it must attend something
    # (an all-blocked row is NaN in sdpa), and no real token attends it.
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]], dtype=torch.bool)
    layout = shared_prefix_layout(mask, 1, torch.tensor([0, 0]), capacity=4)
    assert layout.position_ids.tolist() == [[0, 1, 1, 0]]
    assert layout.attention.int().tolist() == [
        [[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]]
    ]
