"""Truncated importance weights and the sampler/trainer log-prob gap, by hand arithmetic."""

import math

import pytest
import torch

from rlhf_lightning.functional.importance import logprob_gap, truncated_importance_weights

# Row 0: three real tokens; row 1: two real tokens and padding that would overflow exp().
TRAINER = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -3.0, 9.0]])
SAMPLER = torch.tensor([[-1.5, -1.0, -0.5], [-1.3, -2.0, -9.0]])
MASK = torch.tensor([[True, True, True], [True, True, False]])
# trainer - sampler on real tokens: [.5, -1, 0], [1, -1]


def test_truncated_importance_weights_worked_numbers():
    out = truncated_importance_weights(TRAINER, SAMPLER, MASK, cap=2.0)
    # ratios e^.5 = 1.64872127, e^-1 = 0.36787944, 1, e^1 = 2.71828183 -> capped at 2, e^-1
    expected = torch.tensor([[1.64872127, 0.36787944, 1.0], [2.0, 0.36787944, 0.0]])
    torch.testing.assert_close(out.weights, expected, atol=1e-6, rtol=0)
    assert out.logprob_gap.item() == pytest.approx((0.5 + 1 + 0 + 1 + 1) / 5, abs=1e-6)
    assert out.clipfrac.item() == pytest.approx(1 / 5, abs=1e-6)  # only e^1 > 2
    assert out.max_ratio.item() == pytest.approx(math.e, abs=1e-6)  # the padding's e^18 ignored
    # a larger cap truncates nothing
    out = truncated_importance_weights(TRAINER, SAMPLER, MASK, cap=3.0)
    assert out.weights[1, 0].item() == pytest.approx(math.e, abs=1e-6)
    assert out.clipfrac.item() == 0.0


def test_truncated_importance_weights_are_detached_and_one_on_policy():
    logp = torch.tensor([[-0.7, -1.2], [-2.0, -0.1]], requires_grad=True)
    mask = torch.tensor([[True, True], [True, False]])
    out = truncated_importance_weights(logp, logp.detach().clone(), mask)
    torch.testing.assert_close(out.weights, mask.float())  # ratio exactly 1 on real tokens
    assert (out.logprob_gap.item(), out.clipfrac.item(), out.max_ratio.item()) == (0.0, 0.0, 1.0)
    for field in out:
        assert not field.requires_grad


def test_truncated_importance_weights_padding_and_overflow():
    # inf / NaN on padding never reach the result; an overflowing real gap is capped, not NaN
    trainer = torch.tensor([[0.0, -1.0, 0.0]])
    sampler = torch.tensor([[-200.0, -1.0, -torch.inf]])
    sampler_nan = torch.tensor([[-200.0, -1.0, torch.nan]])
    mask = torch.tensor([[True, True, False]])
    for s in (sampler, sampler_nan):
        out = truncated_importance_weights(trainer, s, mask, cap=2.0)
        torch.testing.assert_close(out.weights, torch.tensor([[2.0, 1.0, 0.0]]))
        assert out.clipfrac.item() == pytest.approx(0.5)
        assert out.logprob_gap.item() == pytest.approx(100.0)  # (200 + 0) / 2
        assert out.max_ratio.item() == math.inf  # e^200 overflows float32, and says so


def test_truncated_importance_weights_validation():
    with pytest.raises(ValueError, match="cap"):
        truncated_importance_weights(TRAINER, SAMPLER, MASK, cap=0.0)
    with pytest.raises(TypeError, match="bool"):
        truncated_importance_weights(TRAINER, SAMPLER, MASK.float())
    with pytest.raises(ValueError, match="no element"):
        truncated_importance_weights(TRAINER, SAMPLER, torch.zeros_like(MASK))


def test_logprob_gap_worked_numbers():
    # |Δ| on real tokens: .5, 1, 0, 1, 1 -> 3.5 / 5
    gap = logprob_gap(TRAINER.clone().requires_grad_(), SAMPLER, MASK)
    assert gap.item() == pytest.approx(0.7, abs=1e-6)
    assert not gap.requires_grad
    assert logprob_gap(SAMPLER, TRAINER, MASK).item() == pytest.approx(0.7, abs=1e-6)  # symmetric
    assert logprob_gap(TRAINER, TRAINER, MASK).item() == 0.0
