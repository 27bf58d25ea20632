"""Policy and value losses of online RL against ALGORITHMS.md §1.4, §4 and hand arithmetic."""

import math

import pytest
import torch

from rlhf_lightning.functional import (
    AggregationContext,
    clipped_sequence_loss,
    clipped_token_loss,
    ppo_value_loss,
    token_mean,
)

CTX = AggregationContext(num_items=1.0, max_completion_length=1)


def approx(value, abs=1e-6):
    return pytest.approx(value, abs=abs)


def t(*rows):
    return torch.tensor(rows)


# --- the clipped token loss (PPO, GRPO) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("new", "loss", "clipfrac"),
    [
        (-0.5, 0.22436064, 0.5),  # ratio 1.6487: per-token [-1.2, 1.64872127]
        (-1.5, 0.09673467, 0.5),  # ratio 0.6065: per-token [-0.60653066, 0.8]
    ],
)
def test_ppo_clipped_loss_algorithms_1_4(new, loss, clipfrac):
    logp = torch.full((1, 2), new)
    old = torch.full((1, 2), -1.0)
    adv = t([1.0, -1.0])
    mask = torch.ones(1, 2, dtype=torch.bool)
    out = clipped_token_loss(logp, old, adv, mask, clip_low=0.2)
    assert token_mean(out.losses, mask, CTX).item() == approx(loss)
    assert out.clipfrac.item() == approx(clipfrac)
    # approx_kl = 0.5 * 0.5^2, policy_kl = old - new
    assert out.approx_kl.item() == approx(0.125)
    assert out.policy_kl.item() == approx(-1.0 - new)
    assert out.ratio_mean.item() == approx(math.exp(new + 1.0))


def test_ppo_first_minibatch_invariants_algorithms_5_3():
    logp = t([-1.3, -0.2, -4.0], [-2.0, -0.7, 1e6]).requires_grad_()
    adv = t([0.5, -1.0, 2.0], [1.5, 0.25, 1e6])
    mask = t([True, True, True], [True, True, False])
    out = clipped_token_loss(logp, logp.detach().clone(), adv, mask)
    assert out.ratio_mean.item() == 1.0
    assert out.approx_kl.item() == 0.0
    assert out.policy_kl.item() == 0.0
    assert out.clipfrac.item() == 0.0
    loss = token_mean(out.losses, mask, CTX)
    # ratio 1 -> loss = -mean(A) over the 5 real tokens = -(0.5 - 1 + 2 + 1.5 + 0.25) / 5
    assert loss.item() == approx(-3.25 / 5)
    loss.backward()
    # d loss / d logp = -A / 5 on real tokens, 0 on padding (no overflow from the 1e6)
    torch.testing.assert_close(logp.grad, torch.where(mask, -adv / 5, 0.0))
    assert out.losses[1, 2].item() == 0.0
    for stat in out[1:]:
        assert not stat.requires_grad


@pytest.mark.parametrize(
    ("adv", "ratio", "clip_high", "expected"),
    [
        (1.0, 1.5, 0.2, -1.2),  # clipped above at 1.2
        (1.0, 1.5, 0.28, -1.28),  # DAPO's clip-higher
        (-1.0, 0.5, 0.2, 0.8),  # clipped below at 0.8
        (1.0, 0.5, 0.2, -0.5),  # below the range with A > 0: the unclipped term is smaller
        (-1.0, 1.5, 0.2, 1.5),  # above the range with A < 0: unclipped, the gradient stays
    ],
)
def test_grpo_clip_cases_algorithms_4(adv, ratio, clip_high, expected):
    old = torch.tensor([[-2.0]])
    logp = old + math.log(ratio)
    out = clipped_token_loss(
        logp, old, torch.tensor([adv]), torch.ones(1, 1, dtype=torch.bool), 0.2, clip_high
    )
    assert out.losses.item() == approx(expected)
    # the clip fraction counts only tokens whose clipped branch is active (the first three)
    assert out.clipfrac.item() == (1.0 if expected in (-1.2, -1.28, 0.8) else 0.0)


def test_sequence_advantages_broadcast_and_gradient_is_minus_advantage():
    # one advantage per sequence, ratio 1: the gradient of each token's loss is -A of its row
    logp = t([-1.0, -0.5], [-3.0, -2.0]).requires_grad_()
    mask = torch.ones(2, 2, dtype=torch.bool)
    clipped_token_loss(logp, logp.detach(), t(0.5, -2.0), mask).losses.sum().backward()
    torch.testing.assert_close(logp.grad, t([-0.5, -0.5], [2.0, 2.0]))


def test_clipped_token_loss_with_an_empty_mask_is_zero_not_an_error():
    logp = t([-1.0, -2.0])
    out = clipped_token_loss(logp, logp - 0.3, t([1.0, 1.0]), t([False, False]))
    assert out.losses.abs().sum().item() == 0.0
    assert out.ratio_mean.item() == 1.0 and out.clipfrac.item() == 0.0


# --- the clipped sequence loss (RLOO, GSPO) -----------------------------------------------------


def test_rloo_sequence_loss_same_numbers_as_the_ppo_example():
    # §1.4 PPO example at sequence level: ratio e^0.5, A = [1, -1]; one token per sequence
    old = t([-10.0], [-10.0])
    mask = torch.ones(2, 1, dtype=torch.bool)
    out = clipped_sequence_loss(old + 0.5, old, t(1.0, -1.0), mask, clip_low=0.2)
    assert out.losses.mean().item() == approx(0.22436064)
    assert out.clipfrac.item() == approx(0.5)
    assert out.ratio_mean.item() == approx(math.exp(0.5))


def test_rloo_ratio_is_the_ratio_of_sequence_probabilities():
    # row 0: log-ratios 0.2 and 0.3 -> ratio e^0.5 (the padded token's 7.0 is ignored)
    logp = t([-1.0, -2.0, 0.0], [-4.0, -9.0, 0.0]).requires_grad_()
    old = t([-1.2, -2.3, -7.0], [-4.0, -9.0, 0.0])
    mask = t([True, True, False], [True, True, True])
    out = clipped_sequence_loss(logp, old, t(0.6, -0.2), mask, clip_low=0.2)
    # row 0: min(e^.5 * .6, 1.2 * .6) = 0.72 -> loss -0.72; row 1: ratio 1 -> loss 0.2
    torch.testing.assert_close(out.losses, t(-0.72, 0.2))
    assert out.clipfrac.item() == 0.5
    out.losses.mean().backward()
    # row 0 is clipped (no gradient); row 1: d(-A ratio)/d logp_t = -A * ratio / 2 = 0.1
    torch.testing.assert_close(logp.grad, t([0.0, 0.0, 0.0], [0.1, 0.1, 0.1]))


def test_gspo_ratio_is_the_geometric_mean_of_the_token_ratios():
    # log-ratios 0.2 and 0.4 -> s = exp(0.3); with a wide clip the loss is -A * s
    logp = t([-0.8, -1.6])
    old = t([-1.0, -2.0])
    mask = torch.ones(1, 2, dtype=torch.bool)
    out = clipped_sequence_loss(logp, old, t(1.0), mask, 10.0, length_normalize=True)
    assert out.losses.item() == approx(-math.exp(0.3))
    # with GSPO's narrow clip (4e-4 above) the ratio is capped at 1.0004
    narrow = clipped_sequence_loss(logp, old, t(1.0), mask, 3e-4, 4e-4, length_normalize=True)
    assert narrow.losses.item() == approx(-1.0004)
    assert narrow.clipfrac.item() == 1.0


def test_sequence_loss_needs_one_advantage_per_sequence():
    logp = t([-1.0, -2.0])
    with pytest.raises(ValueError, match="one advantage per sequence"):
        clipped_sequence_loss(logp, logp, t([1.0, 1.0]), torch.ones(1, 2, dtype=torch.bool))


# --- the value loss (PPO) ---------------------------------------------------------------------


def test_ppo_value_loss_algorithms_1_4():
    # vclip = [.7, .3]; vf1 = [.01, .09], vf2 = [.09, .09] -> 0.5 * mean([.09, .09])
    values = t([0.9, 0.3, 123.0]).requires_grad_()
    out = ppo_value_loss(
        values, t([0.5, 0.5, 0.0]), t([1.0, 0.0, -5.0]), t([True, True, False]), clip=0.2
    )
    assert out.loss.item() == approx(0.045)
    assert out.clipfrac.item() == approx(0.5)
    assert out.loss.item() * 0.1 == approx(
        0.0045
    )  # the value coefficient 0.1 applied by the caller


def test_ppo_value_loss_of_a_minibatch_without_tokens_is_zero():
    # A minibatch of empty responses (one empty response beside another, split in two): no
    # value target, loss 0 and no gradient, as token_mean gives the policy loss.
    values = t([0.9, 0.3]).requires_grad_()
    out = ppo_value_loss(values, t([0.5, 0.5]), t([1.0, 0.0]), t([False, False]))
    out.loss.backward()
    assert out.loss.item() == 0.0 and out.clipfrac.item() == 0.0
    assert values.grad.flatten().tolist() == [0.0, 0.0]
