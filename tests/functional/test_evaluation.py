"""pass@k against the binomial formula of Chen et al. 2021 and hand arithmetic."""

import math

import pytest
import torch

from rlhf_lightning.functional.evaluation import pass_at_k


def binomial_pass_at_k(n, c, k):
    """The paper's definition, 1 - C(n-c, k) / C(n, k), with exact integers."""
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def test_pass_at_k_worked_numbers():
    # n=5, c=2, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(5, 2, 2).item() == pytest.approx(0.7, abs=1e-12)
    # k=1 is the fraction correct: 3/10
    assert pass_at_k(10, 3, 1).item() == pytest.approx(0.3, abs=1e-12)
    # n=10, c=1, k=5: 1 - C(9,5)/C(10,5) = 1 - 126/252
    assert pass_at_k(10, 1, 5).item() == pytest.approx(0.5, abs=1e-12)
    # n=4, c=2, k=3: n - c = 2 < k, every draw of 3 holds a correct one
    assert pass_at_k(4, 2, 3).item() == 1.0
    assert pass_at_k(8, 0, 4).item() == 0.0
    assert pass_at_k(6, 6, 6).item() == 1.0


def test_pass_at_k_vectorised_matches_binomial_loop():
    n_list, c_list = [], []
    for n in range(1, 13):
        for c in range(0, n + 1):
            n_list.append(n)
            c_list.append(c)
    n_t, c_t = torch.tensor(n_list), torch.tensor(c_list)
    for k in (1, 2, 3):
        rows = [i for i, n in enumerate(n_list) if n >= k]
        expected = [binomial_pass_at_k(n_list[i], c_list[i], k) for i in rows]
        actual = pass_at_k(n_t[rows], c_t[rows], k)
        assert actual.dtype == torch.float64
        torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float64))


def test_pass_at_k_large_n_is_stable():
    # C(200, 100) ~ 9e58: the binomial ratio in float would be fragile, the product is not.
    n, c, k = 200, 7, 100
    expected = binomial_pass_at_k(n, c, k)  # exact integers, then one division
    assert pass_at_k(n, c, k).item() == pytest.approx(expected, rel=1e-12)
    assert pass_at_k(torch.tensor([1000]), torch.tensor([1]), 10).item() == pytest.approx(
        0.01, abs=1e-12
    )  # c=1: k/n


def test_pass_at_k_invariants():
    n = torch.full((6,), 16)
    c = torch.tensor([0, 1, 2, 4, 8, 16])
    by_k = torch.stack([pass_at_k(n, c, k) for k in range(1, 17)])  # (16, 6)
    assert bool((by_k[1:] >= by_k[:-1] - 1e-12).all())  # non-decreasing in k
    assert bool((by_k[:, 1:] >= by_k[:, :-1] - 1e-12).all())  # non-decreasing in c
    assert bool(((by_k >= 0) & (by_k <= 1)).all())
    torch.testing.assert_close(by_k[0], c / 16.0, check_dtype=False)  # pass@1 = c/n
    # broadcasting a scalar n against a tensor of c
    torch.testing.assert_close(pass_at_k(16, c, 3), by_k[2])
    assert pass_at_k(torch.tensor([], dtype=torch.long), torch.tensor([]), 1).shape == (0,)


def test_pass_at_k_validation():
    with pytest.raises(ValueError, match="exceeds"):
        pass_at_k(torch.tensor([5, 2]), torch.tensor([1, 1]), 3)
    with pytest.raises(ValueError, match="k must be"):
        pass_at_k(5, 1, 0)
    with pytest.raises(ValueError, match="num_correct"):
        pass_at_k(5, 6, 1)
    with pytest.raises(ValueError, match="num_correct"):
        pass_at_k(5, -1, 1)
    with pytest.raises(ValueError, match="whole numbers"):
        pass_at_k(torch.tensor([5.5]), torch.tensor([1]), 1)
    with pytest.raises(TypeError, match="bool"):
        pass_at_k(torch.tensor([5]), torch.tensor([True]), 1)
    # whole-number floats are accepted
    assert pass_at_k(torch.tensor([5.0]), torch.tensor([2.0]), 2).item() == pytest.approx(0.7)
