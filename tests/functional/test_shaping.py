"""Reward shaping (DAPO overlong punishment and dynamic sampling, Kimi length reward)."""

import pytest
import torch

from rlhf_lightning.functional.shaping import (
    expand_group_mask,
    informative_groups,
    length_penalty,
    overlong_penalty,
)


def close(actual, expected, atol=1e-6):
    torch.testing.assert_close(actual, torch.tensor(expected), atol=atol, rtol=0)


# --- DAPO soft overlong punishment ------------------------------------------------------------


def _overlong_by_cases(length, max_length, cache_length):
    """DAPO eq. 13 written as its three cases."""
    expected = max_length - cache_length
    if length <= expected:
        return 0.0
    if length <= max_length:
        return (expected - length) / cache_length
    return -1.0


def test_overlong_penalty_worked_numbers():
    # L_max 20, L_cache 4 -> free up to 16; 17 -> (16-17)/4, 18 -> -2/4, 20 -> -4/4; beyond -> -1
    lengths = torch.tensor([10, 16, 17, 18, 20, 21, 25])
    close(overlong_penalty(lengths, 20, 4), [0.0, 0.0, -0.25, -0.5, -1.0, -1.0, -1.0])
    close(
        overlong_penalty(lengths, 20, 4, penalty=0.5), [0.0, 0.0, -0.125, -0.25, -0.5, -0.5, -0.5]
    )


def test_overlong_penalty_matches_the_three_cases_and_is_continuous():
    lengths = list(range(0, 40))
    expected = [_overlong_by_cases(n, 30, 7) for n in lengths]
    close(overlong_penalty(torch.tensor(lengths), 30, 7), expected)
    # float lengths, and the whole budget as the window (cache_length == max_length)
    close(overlong_penalty(torch.tensor([0.0, 5.0, 10.0]), 10, 10), [0.0, -0.5, -1.0])
    assert overlong_penalty(torch.tensor([3]), 10, 2).dtype == torch.get_default_dtype()


@pytest.mark.parametrize(("max_length", "cache_length"), [(10, 0), (10, 11), (10, -1)])
def test_overlong_penalty_rejects_bad_window(max_length, cache_length):
    with pytest.raises(ValueError, match="cache_length"):
        overlong_penalty(torch.tensor([1]), max_length, cache_length)


# --- Kimi k1.5 length reward ------------------------------------------------------------------


def test_length_penalty_worked_numbers_per_group():
    # group 0: min 10, max 50, span 40 -> λ = .5 - (len-10)/40 = [.5, .25, 0, -.5]
    #   correct [T, F, T, F] -> [λ0, min(0, λ1), λ2, min(0, λ3)] = [.5, 0, 0, -.5]
    # group 1: min 60, max 100, span 40 -> λ = [.5 - 1, .5, .5 - .5, .5] = [-.5, .5, 0, .5]
    #   correct [F, F, T, T] -> [-.5, 0, 0, .5]
    lengths = torch.tensor([10, 20, 30, 50, 100, 60, 80, 60])
    correct = torch.tensor([True, False, True, False, False, False, True, True])
    out = length_penalty(lengths, correct, group_size=4)
    close(out, [0.5, 0.0, 0.0, -0.5, -0.5, 0.0, 0.0, 0.5])


def test_length_penalty_flat_group_is_zero_and_matches_a_loop():
    lengths = torch.tensor([7, 7, 7, 3, 9, 5])
    correct = torch.tensor([True, False, True, False, True, True])
    expected = []
    for g in range(2):
        group = lengths[3 * g : 3 * g + 3].tolist()
        lo, hi = min(group), max(group)
        for j, n in enumerate(group):
            lam = 0.0 if hi == lo else 0.5 - (n - lo) / (hi - lo)
            expected.append(lam if correct[3 * g + j] else min(0.0, lam))
    # group 1: min 3, max 9 -> λ = [.5, -.5, .5 - 2/6]; all correct but the first
    assert expected == [0.0, 0.0, 0.0, 0.0, -0.5, pytest.approx(0.5 - 2 / 6)]
    close(length_penalty(lengths, correct, group_size=3), expected)


def test_length_penalty_validation():
    with pytest.raises(TypeError, match="bool"):
        length_penalty(torch.tensor([1, 2]), torch.tensor([1, 0]), 2)
    with pytest.raises(ValueError, match="groups"):
        length_penalty(torch.tensor([1, 2, 3]), torch.tensor([True, False, True]), 2)
    with pytest.raises(ValueError, match="shape"):
        length_penalty(torch.tensor([1, 2]), torch.tensor([True]), 2)


# --- DAPO dynamic sampling --------------------------------------------------------------------


def test_informative_groups_and_expand():
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.5, 0.5, 0.5, 0.2, 0.2005, 0.2])
    # groups: all 1 (flat), mixed, all .5 (flat), spread 5e-4
    keep = informative_groups(rewards, group_size=3)
    assert keep.tolist() == [False, True, False, True]
    assert informative_groups(rewards, 3, atol=1e-3).tolist() == [False, True, False, False]
    rows = expand_group_mask(keep, 3)
    assert rows.tolist() == [False] * 3 + [True] * 3 + [False] * 3 + [True] * 3
    assert rows.dtype == torch.bool


def test_informative_groups_binary_rewards_is_some_but_not_all_correct():
    # DAPO: keep a group iff 0 < #correct < G
    correct = torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]])
    expected = [0 < int(row.sum()) < 4 for row in correct]
    assert informative_groups(correct.flatten().float(), 4).tolist() == expected
    # G = 1: a single sample never has a group-relative signal
    assert informative_groups(torch.tensor([0.0, 1.0]), 1).tolist() == [False, False]


def test_informative_groups_validation():
    with pytest.raises(ValueError, match="groups"):
        informative_groups(torch.zeros(5), 2)
    with pytest.raises(ValueError, match="1-D"):
        informative_groups(torch.zeros(2, 2), 2)
    with pytest.raises(ValueError, match="atol"):
        informative_groups(torch.zeros(4), 2, atol=-1.0)
    with pytest.raises(ValueError, match="1-D"):
        expand_group_mask(torch.ones(2, 2, dtype=torch.bool), 2)
