"""Advantage estimators behind one signature (GAE, group, leave-one-out, REINFORCE++) against hand
arithmetic, and KL placements (in the reward, in the loss)."""

import math

import pytest
import torch

from rlhf_lightning.functional import (
    AdvantageInputs,
    KLInLoss,
    KLInReward,
    gae_advantages,
    group_normalized_advantages,
    leave_one_out_advantages,
    reinforce_pp_advantages,
    score_only,
    turn_group_advantages,
)


def t(*rows):
    return torch.tensor(rows)


def inputs(sequence=None, token=None, values=None, mask=None, group_size=1):
    mask = mask if mask is not None else torch.ones_like(token, dtype=torch.bool)
    return AdvantageInputs(sequence, token, values, mask, group_size)


def test_gae_advantages_hand_numbers():
    # gamma = lam = 1: delta_1 = 1 + 0 - 0.5 = 0.5, delta_0 = 0 + 0.5 - 0.5 = 0
    # A = [0 + 0.5, 0.5], returns = A + V = [1, 1]
    out = gae_advantages(
        inputs(token=t([0.0, 1.0]), values=t([0.5, 0.5])), gamma=1.0, lam=1.0, whiten=False
    )
    torch.testing.assert_close(out.advantages, t([0.5, 0.5]))
    torch.testing.assert_close(out.returns, t([1.0, 1.0]))


def test_gae_advantages_whitened_over_real_tokens():
    mask = t([True, True, True], [True, True, False])
    out = gae_advantages(
        inputs(token=t([0.0, 0.0, 1.0], [0.0, 2.0, 9.0]), values=torch.zeros(2, 3), mask=mask)
    )
    real = out.advantages[mask]
    assert real.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert real.std().item() == pytest.approx(1.0, abs=1e-4)  # unbiased, as classic TRL
    assert out.advantages[1, 2].item() == 0.0


def test_gae_without_a_critic_is_a_clear_error():
    with pytest.raises(ValueError, match="critic"):
        gae_advantages(inputs(token=t([0.0, 1.0])))


def test_group_normalized_hand_numbers():
    # groups [1, 0] and [0, 0]: means 0.5 and 0; unbiased stds 0.70710678 and 0
    out = group_normalized_advantages(
        inputs(sequence=t(1.0, 0.0, 0.0, 0.0), token=torch.zeros(4, 1), group_size=2)
    )
    expected = 0.5 / (0.70710678 + 1e-4)
    torch.testing.assert_close(out.advantages, t(expected, -expected, 0.0, 0.0))
    assert out.returns is None
    none = group_normalized_advantages(
        inputs(sequence=t(1.0, 0.0, 3.0, 1.0), token=torch.zeros(4, 1), group_size=2), scale="none"
    )
    torch.testing.assert_close(none.advantages, t(0.5, -0.5, 1.0, -1.0))  # Dr. GRPO: no std


def test_leave_one_out_hand_numbers():
    # baselines (2+3)/2 = 2.5, (1+3)/2 = 2, (1+2)/2 = 1.5
    out = leave_one_out_advantages(
        inputs(sequence=t(1.0, 2.0, 3.0), token=torch.zeros(3, 1), group_size=3)
    )
    torch.testing.assert_close(out.advantages, t(-1.5, 0.0, 1.5))


def test_reinforce_pp_returns_normalised_over_the_batch():
    # returns: row 0 [1, 1, 1]; row 1 [2, 2, pad]; real tokens [1, 1, 1, 2, 2]: mean 1.4,
    # unbiased var (3 * 0.16 + 2 * 0.36) / 4 = 0.3
    mask = t([True, True, True], [True, True, False])
    out = reinforce_pp_advantages(inputs(token=t([0.0, 0.0, 1.0], [0.0, 2.0, 5.0]), mask=mask))
    lo, hi = -0.4 / math.sqrt(0.3), 0.6 / math.sqrt(0.3)
    torch.testing.assert_close(out.advantages, t([lo, lo, lo], [hi, hi, 0.0]), atol=1e-5, rtol=0)


def test_reinforce_pp_discounts():
    # gamma 0.5, rewards [1, 0, 4]: returns [1 + 0 + 1, 0 + 2, 4] = [2, 2, 4]
    # -> mean 8/3, deviations [-2/3, -2/3, 4/3], unbiased var (4/9 + 4/9 + 16/9) / 2 = 4/3
    out = reinforce_pp_advantages(inputs(token=t([1.0, 0.0, 4.0])), gamma=0.5)
    scale = 1 / math.sqrt(4 / 3)
    torch.testing.assert_close(out.advantages, t([-2 / 3 * scale, -2 / 3 * scale, 4 / 3 * scale]))


def test_kl_in_reward_places_the_penalty_on_every_token_and_the_score_last():
    logp, ref = t([-1.0, -2.0]), t([-1.5, -1.5])  # k1 = [0.5, -0.5]
    mask = torch.ones(1, 2, dtype=torch.bool)
    out = KLInReward("k1").rewards(t(1.0), logp, ref, mask, coef=0.1)
    torch.testing.assert_close(out.token_rewards, t([-0.05, 0.05 + 1.0]))
    torch.testing.assert_close(out.sequence_rewards, t(1.0))  # 1 - 0.1 * (0.5 - 0.5)
    torch.testing.assert_close(out.token_kl, t([0.5, -0.5]))
    assert KLInReward("k1").loss(logp, ref, mask, 0.1) is None
    # without a reference there is nothing to penalise
    assert KLInReward().rewards(t(1.0), logp, None, mask, 0.1).token_kl.abs().sum() == 0


def test_kl_in_loss_rewards_are_the_scores_and_the_term_is_k3_with_gradient():
    logp = t([-1.0, -2.0, 0.0]).requires_grad_()
    ref = t([-1.5, -1.5, 1e6])
    mask = t([True, True, False])
    shaped = KLInLoss().rewards(t(2.0), logp.detach(), ref, mask, coef=0.1)
    torch.testing.assert_close(shaped.token_rewards, t([0.0, 2.0, 0.0]))
    torch.testing.assert_close(shaped.sequence_rewards, t(2.0))
    term = KLInLoss().loss(logp, ref, mask, coef=0.1)
    # k3(d) = exp(-d) - 1 + d: d = 0.5 -> 0.10653066; d = -0.5 -> 0.14872127; padding 0
    torch.testing.assert_close(term, t([0.010653066, 0.014872127, 0.0]), atol=1e-7, rtol=0)
    term.sum().backward()
    # d k3 / d logp = 1 - exp(-d): 1 - e^-0.5 and 1 - e^0.5, times 0.1
    torch.testing.assert_close(
        logp.grad, t([0.1 * (1 - math.exp(-0.5)), 0.1 * (1 - math.exp(0.5)), 0.0])
    )
    assert KLInLoss().loss(logp, ref, mask, coef=0.0) is None


def test_score_only_puts_each_score_on_its_last_real_token():
    mask = t([True, True, False], [True, False, False])
    out = score_only(t(3.0, -1.0), mask)
    torch.testing.assert_close(out.token_rewards, t([0.0, 3.0, 0.0], [-1.0, 0.0, 0.0]))


def test_reinforce_pp_discounts_over_the_masked_tokens_only():
    # gamma 0.5, rewards [1, _, 0, 4] with position 1 an environment token: the same returns
    # as [1, 0, 4] compacted, [2, 2, 4] (the test above), whitened over the three tokens.
    mask = t([True, False, True, True])
    out = reinforce_pp_advantages(inputs(token=t([1.0, 9.0, 0.0, 4.0]), mask=mask), gamma=0.5)
    scale = 1 / math.sqrt(4 / 3)
    expected = t([-2 / 3 * scale, 0.0, -2 / 3 * scale, 4 / 3 * scale])
    torch.testing.assert_close(out.advantages, expected)


def test_turn_group_compares_each_turn_with_the_same_turn_of_the_group():
    # One game, G=2, two turns of two tokens each with an environment token between them.
    # Turn rewards [0.5, 1] and [0, 0]: returns from turn 0 are 1.5 and 0, from turn 1 1 and 0;
    # baselines 0.75 and 0.5; group std of (1.5, 0) = 1.06066 (+1e-4):
    # turn 0 +-0.75 / 1.06076 = +-0.70704, turn 1 +-0.5 / 1.06076 = +-0.47136.
    mask = t([True, True, False, True, True], [True, True, False, True, True])
    token = t([0.0, 0.5, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0])
    out = turn_group_advantages(inputs(token.sum(1), token, mask=mask, group_size=2))
    a, b = 0.75 / (1.5 / math.sqrt(2) + 1e-4), 0.5 / (1.5 / math.sqrt(2) + 1e-4)
    torch.testing.assert_close(out.advantages, t([a, a, 0.0, b, b], [-a, -a, 0.0, -b, -b]))
    assert out.returns is None


def test_turn_group_baseline_counts_only_the_episodes_that_reached_the_turn():
    # G=2: episode 0 plays two turns (rewards 0 then 1), episode 1 ends after one (reward 2).
    # Turn 0: returns 1 and 2, baseline 1.5; turn 1: only episode 0, baseline 1 -> advantage 0.
    mask = t([True, False, True], [True, False, False])
    token = t([0.0, 0.0, 1.0], [2.0, 0.0, 0.0])
    out = turn_group_advantages(inputs(token.sum(1), token, mask=mask, group_size=2), "none")
    torch.testing.assert_close(out.advantages, t([-0.5, 0.0, 0.0], [0.5, 0.0, 0.0]))


def test_turn_group_on_single_turn_rollouts_is_grpo_on_every_token():
    mask = t(
        [True, True, True, False], [True, True, False, False], [True] * 4, [True] + [False] * 3
    )
    token = torch.zeros(4, 4)
    token[0, 2], token[1, 1], token[2, 3], token[3, 0] = 1.0, 0.3, 0.7, 0.1
    args = inputs(token.sum(1), token, mask=mask, group_size=2)
    grpo = group_normalized_advantages(args).advantages
    out = turn_group_advantages(args).advantages
    torch.testing.assert_close(out, torch.where(mask, grpo[:, None], 0.0))
    with pytest.raises(ValueError, match="scale"):
        turn_group_advantages(args, "bogus")
