"""masked_sum / masked_mean / masked_var / masked_whiten against literals and naive loops."""

import pytest
import torch

from rlhf_lightning.functional import masked_mean, masked_sum, masked_var, masked_whiten

GARBAGE = 1e6  # under a False mask; must never reach a result


def test_sum_and_mean_ignore_values_under_false_mask():
    x = torch.tensor([[1.0, 2.0, GARBAGE], [4.0, GARBAGE, GARBAGE]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    # 1 + 2 + 4 = 7 over 3 elements
    assert masked_sum(x, mask).item() == pytest.approx(7.0, abs=1e-6)
    assert masked_mean(x, mask).item() == pytest.approx(7.0 / 3.0, abs=1e-6)
    # per row: (1 + 2) / 2 = 1.5 and 4 / 1 = 4
    torch.testing.assert_close(masked_mean(x, mask, dim=1), torch.tensor([1.5, 4.0]))
    torch.testing.assert_close(masked_sum(x, mask, dim=1), torch.tensor([3.0, 4.0]))


def test_nan_and_inf_under_false_mask_do_not_leak():
    x = torch.tensor([1.0, float("nan"), float("inf"), 3.0], requires_grad=True)
    mask = torch.tensor([True, False, False, True])
    out = masked_mean(x, mask)
    assert out.item() == pytest.approx(2.0, abs=1e-6)
    out.backward()
    torch.testing.assert_close(x.grad, torch.tensor([0.5, 0.0, 0.0, 0.5]))


def test_mean_matches_naive_loop():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 7, generator=gen)
    mask = torch.rand(4, 7, generator=gen) > 0.4
    mask[:, 0] = True  # no empty row
    for b in range(4):
        picked = [x[b, t].item() for t in range(7) if mask[b, t]]
        expected = sum(picked) / len(picked)
        assert masked_mean(x, mask, dim=1)[b].item() == pytest.approx(expected, abs=1e-6)


def test_mask_broadcasts_over_batch():
    x = torch.tensor([[1.0, 2.0, 3.0], [5.0, 6.0, 7.0]])
    mask = torch.tensor([True, False, True])  # (A,) broadcast to (B, A)
    # (1 + 3 + 5 + 7) / 4 = 4
    assert masked_mean(x, mask).item() == pytest.approx(4.0, abs=1e-6)


def test_empty_mask_sum_is_zero_and_mean_raises():
    x = torch.tensor([1.0, 2.0])
    empty = torch.tensor([False, False])
    assert masked_sum(x, empty).item() == 0.0
    with pytest.raises(ValueError, match="selects no element"):
        masked_mean(x, empty)
    with pytest.raises(ValueError, match="dim=1"):
        masked_mean(torch.ones(2, 2), torch.tensor([[True, False], [False, False]]), dim=1)


def test_non_bool_mask_is_rejected():
    with pytest.raises(TypeError, match="bool"):
        masked_mean(torch.ones(3), torch.ones(3))


def test_var_unbiased_and_biased():
    x = torch.tensor([1.0, 2.0, 3.0, GARBAGE])
    mask = torch.tensor([True, True, True, False])
    # mean 2, squared deviations 1 + 0 + 1 = 2: unbiased 2/2 = 1, biased 2/3
    assert masked_var(x, mask).item() == pytest.approx(1.0, abs=1e-6)
    assert masked_var(x, mask, unbiased=False).item() == pytest.approx(2.0 / 3.0, abs=1e-6)


def test_var_single_element():
    # One real token (a one-token response beside an empty one): no spread, variance 0 with or
    # without Bessel's n/(n-1), which would divide by zero; it whitens to 0, padding stays 0.
    x = torch.tensor([5.0, GARBAGE])
    mask = torch.tensor([True, False])
    assert masked_var(x, mask).item() == 0.0
    assert masked_var(x, mask, unbiased=False).item() == 0.0
    assert masked_whiten(x, mask).tolist() == [0.0, 0.0]
    assert masked_whiten(x, mask, keep_mean=True).tolist() == [5.0, 0.0]
    with pytest.raises(ValueError, match="selects no element"):
        masked_var(x, torch.tensor([False, False]), unbiased=False)


def test_whiten_matches_algorithms_1_4():
    # ALGORITHMS.md §1.4: A = [0.45125, 0.475, 0.5]
    adv = torch.tensor([[0.45125, 0.475, 0.5]])
    mask = torch.ones_like(adv, dtype=torch.bool)
    torch.testing.assert_close(
        masked_whiten(adv, mask),
        torch.tensor([[-0.99133603, -0.01709200, 1.00842803]]),
        atol=1e-6,
        rtol=0,
    )
    torch.testing.assert_close(
        masked_whiten(adv, mask, keep_mean=True),
        torch.tensor([[-0.51591936, 0.45832467, 1.48384470]]),
        atol=1e-6,
        rtol=0,
    )
    torch.testing.assert_close(
        masked_whiten(adv, mask, unbiased=False),
        torch.tensor([[-1.21412861, -0.02093325, 1.23506186]]),
        atol=1e-6,
        rtol=0,
    )


def test_whiten_invariants_and_zero_outside_mask():
    gen = torch.Generator().manual_seed(1)
    x = 3.0 * torch.randn(3, 9, generator=gen, dtype=torch.float64) + 7.0
    mask = torch.rand(3, 9, generator=gen) > 0.3
    x = torch.where(mask, x, GARBAGE)
    out = masked_whiten(x, mask)
    picked = out[mask]
    assert picked.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert picked.var(correction=1).item() == pytest.approx(1.0, abs=1e-6)
    assert (out[~mask] == 0).all()
    biased = masked_whiten(x, mask, unbiased=False)[mask]
    assert biased.var(correction=0).item() == pytest.approx(1.0, abs=1e-6)
    # keep_mean: the masked mean of x survives, the scale is still normalised
    kept = masked_whiten(x, mask, keep_mean=True)[mask]
    assert kept.mean().item() == pytest.approx(x[mask].mean().item(), abs=1e-6)
    assert kept.var(correction=1).item() == pytest.approx(1.0, abs=1e-6)
