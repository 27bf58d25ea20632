"""Losses against ALGORITHMS.md §1.4, §3, §4 and hand arithmetic."""

import math

import pytest
import torch

from rlhf_lightning.functional import (
    aggregate_loss,
    dpo_loss,
    grpo_token_loss,
    masked_mean,
    pairwise_loss,
    ppo_policy_loss,
    ppo_value_loss,
    rloo_sequence_loss,
    sft_loss,
    shifted_token_logprobs,
)

LOG2 = math.log(2.0)


def approx(value, abs=1e-6):
    return pytest.approx(value, abs=abs)


def t(*rows):
    return torch.tensor(rows)


# --- SFT --------------------------------------------------------------------------------------


def test_sft_loss_is_token_weighted_next_token_nll():
    # V=2. Row 0 targets ids 1..2; row 1 targets ids 1..3 (4 tokens in total).
    logits = torch.zeros(2, 4, 2)
    logits[0, 0] = torch.tensor([0.0, math.log(3.0)])  # p(id=1) = 3/4
    logits[1, 2] = torch.tensor([math.log(4.0), 0.0])  # p(id=0) = 4/5
    ids = torch.tensor([[0, 1, 0, 0], [1, 1, 1, 0]])
    loss_mask = torch.tensor([[False, True, True, False], [True, True, True, True]])
    # targets: row 0 t=1 (p=3/4), t=2 (p=1/2); row 1 t=1,2 (1/2 each), t=3 (p=4/5)
    # mask at t=0 of row 1 is ignored (no prefix)
    expected = -(math.log(3 / 4) + 3 * math.log(1 / 2) + math.log(4 / 5)) / 5
    out = sft_loss(logits, ids, loss_mask)
    assert out.loss.item() == approx(expected)
    assert out.num_tokens.item() == 5
    assert not out.num_tokens.requires_grad


def test_sft_loss_fused_path_equals_log_softmax_gather_in_value_and_gradient():
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 11, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 11, (3, 7))
    mask = torch.rand(3, 7) > 0.3
    mask[0, 1] = True
    fused = sft_loss(logits, ids, mask).loss
    (fused_grad,) = torch.autograd.grad(fused, logits)
    reference = masked_mean(-shifted_token_logprobs(logits, ids), mask[:, 1:])
    (reference_grad,) = torch.autograd.grad(reference, logits)
    torch.testing.assert_close(fused, reference)
    torch.testing.assert_close(fused_grad, reference_grad)
    half = sft_loss(logits.detach().bfloat16(), ids, mask).loss  # the row-wise upcast path
    assert half.dtype == torch.float32 and abs(half.item() - fused.item()) < 0.05


def test_sft_loss_empty_mask_raises():
    with pytest.raises(ValueError, match="no element"):
        sft_loss(
            torch.zeros(1, 3, 2), torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3).bool()
        )


# --- Reward model -----------------------------------------------------------------------------


def test_pairwise_loss_algorithms_3():
    rc, rr = torch.tensor([2.0]), torch.tensor([0.5])
    assert pairwise_loss(rc, rr).loss.item() == approx(0.20141328)
    assert pairwise_loss(rc, rr, margin=torch.tensor([1.0])).loss.item() == approx(0.47407698)
    # + 0.01 * (2 + 0.5)^2
    assert pairwise_loss(rc, rr, center_coef=0.01).loss.item() == approx(0.26391328)


def test_pairwise_loss_is_log2_at_equal_scores_and_stats():
    scores = torch.tensor([0.3, -1.0, 4.0])
    out = pairwise_loss(scores, scores.clone())
    assert out.loss.item() == approx(LOG2)
    assert (out.accuracy.item(), out.tie_rate.item(), out.margin_mean.item()) == (0.0, 1.0, 0.0)
    out = pairwise_loss(torch.tensor([1.0, 0.0, 2.0, 1.0]), torch.tensor([0.0, 1.0, 2.0, -1.0]))
    # gaps [1, -1, 0, 2]
    assert out.accuracy.item() == approx(0.5)
    assert out.tie_rate.item() == approx(0.25)
    assert out.margin_mean.item() == approx(0.5)


# --- PPO --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("new", "loss", "clipfrac"),
    [
        (-0.5, 0.22436064, 0.5),  # ratio 1.6487: per-token [-1.2, 1.64872127]
        (-1.5, 0.09673467, 0.5),  # ratio 0.6065: per-token [-0.60653066, 0.8]
    ],
)
def test_ppo_policy_loss_algorithms_1_4(new, loss, clipfrac):
    logp = torch.full((1, 2), new)
    old = torch.full((1, 2), -1.0)
    adv = t([1.0, -1.0])
    out = ppo_policy_loss(logp, old, adv, torch.ones(1, 2, dtype=torch.bool), clip_eps=0.2)
    assert out.loss.item() == approx(loss)
    assert out.clipfrac.item() == approx(clipfrac)
    # approx_kl = 0.5 * 0.5^2, policy_kl = old - new
    assert out.approx_kl.item() == approx(0.125)
    assert out.policy_kl.item() == approx(-1.0 - new)
    assert out.ratio_mean.item() == approx(math.exp(new + 1.0))


def test_ppo_first_minibatch_invariants_algorithms_5_3():
    logp = t([-1.3, -0.2, -4.0], [-2.0, -0.7, 1e6]).requires_grad_()
    adv = t([0.5, -1.0, 2.0], [1.5, 0.25, 1e6])
    mask = t([True, True, True], [True, True, False])
    out = ppo_policy_loss(logp, logp.detach().clone(), adv, mask)
    assert out.ratio_mean.item() == 1.0
    assert out.approx_kl.item() == 0.0
    assert out.policy_kl.item() == 0.0
    assert out.clipfrac.item() == 0.0
    # ratio 1 -> loss = -mean(A) over the 5 real tokens = -(0.5 - 1 + 2 + 1.5 + 0.25) / 5
    assert out.loss.item() == approx(-3.25 / 5)
    out.loss.backward()
    # d loss / d logp = -A / 5 on real tokens, 0 on padding (no overflow from the 1e6)
    torch.testing.assert_close(logp.grad, torch.where(mask, -adv / 5, 0.0))
    for stat in out[1:]:
        assert not stat.requires_grad


def test_ppo_value_loss_algorithms_1_4():
    # vclip = [.7, .3]; vf1 = [.01, .09], vf2 = [.09, .09] -> 0.5 * mean([.09, .09])
    values = t([0.9, 0.3, 123.0]).requires_grad_()
    out = ppo_value_loss(
        values, t([0.5, 0.5, 0.0]), t([1.0, 0.0, -5.0]), t([True, True, False]), clip=0.2
    )
    assert out.loss.item() == approx(0.045)
    assert out.clipfrac.item() == approx(0.5)
    assert out.loss.item() * 0.1 == approx(0.0045)  # vf_coef 0.1 applied by the caller


# --- DPO --------------------------------------------------------------------------------------

PI_C, PI_R, REF_C, REF_R = t(-10.0), t(-12.0), t(-11.0), t(-11.0)  # logits = 2


@pytest.mark.parametrize(
    ("loss_type", "label_smoothing", "expected"),
    [
        ("sigmoid", 0.0, 0.59813887),
        ("hinge", 0.0, 0.8),
        ("ipo", 0.0, 9.0),
        ("sigmoid", 0.1, 0.61813887),
    ],
)
def test_dpo_loss_algorithms_4(loss_type, label_smoothing, expected):
    out = dpo_loss(
        PI_C, PI_R, REF_C, REF_R, beta=0.1, loss_type=loss_type, label_smoothing=label_smoothing
    )
    assert out.loss.item() == approx(expected)
    assert out.chosen_rewards.item() == approx(0.1)
    assert out.rejected_rewards.item() == approx(-0.1)
    assert out.accuracy.item() == 1.0
    assert out.margin.item() == approx(0.2)


def test_dpo_ipo_length_normalised_algorithms_4():
    # |c| = 4, |r| = 2: logits = 1/4 - (-1/2) = 0.75; (0.75 - 5)^2
    out = dpo_loss(PI_C / 4, PI_R / 2, REF_C / 4, REF_R / 2, beta=0.1, loss_type="ipo")
    assert out.loss.item() == approx(18.0625)


def test_dpo_is_log2_when_policy_equals_ref_and_validates():
    logps = torch.tensor([-3.0, -7.5])
    out = dpo_loss(logps, logps - 1, logps, logps - 1, beta=0.5)
    assert out.loss.item() == approx(LOG2)
    assert out.accuracy.item() == 0.0
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(PI_C, PI_R, REF_C, REF_R, beta=0.1, loss_type="hinge", label_smoothing=0.1)
    with pytest.raises(ValueError, match="unknown loss_type"):
        dpo_loss(PI_C, PI_R, REF_C, REF_R, beta=0.1, loss_type="kto")


# --- GRPO -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("adv", "ratio", "eps_high", "expected"),
    [
        (1.0, 1.5, 0.2, -1.2),
        (1.0, 1.5, 0.28, -1.28),
        (-1.0, 0.5, 0.2, 0.8),
        (1.0, 0.5, 0.2, -0.5),
        (-1.0, 1.5, 0.2, 1.5),
    ],
)
def test_grpo_clip_cases_algorithms_4(adv, ratio, eps_high, expected):
    old = torch.tensor([[-2.0]])
    logp = old + math.log(ratio)
    out = grpo_token_loss(
        logp, old, torch.tensor([adv]), None, torch.ones(1, 1, dtype=torch.bool), 0.2, eps_high, 0.0
    )
    assert out.item() == approx(expected)


def test_grpo_kl_term_and_mask():
    # ratio 1 (old = logp), A = 2 -> -2 + beta * k3; k3(logp=-1, ref=-1.2) = 0.01873075 (§1.4)
    logp = t([-1.0, -2.0, 5.0])
    ref = t([-1.2, -1.5, 1e6])
    mask = t([True, True, False])
    out = grpo_token_loss(logp, logp, torch.tensor([2.0]), ref, mask, 0.2, 0.2, beta=0.04)
    expected = t([-2.0 + 0.04 * 0.01873075, -2.0 + 0.04 * 0.14872127, 0.0])
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="ref_logp"):
        grpo_token_loss(logp, logp, torch.tensor([2.0]), None, mask, 0.2, 0.2, beta=0.04)
    with pytest.raises(ValueError, match="one advantage per row"):
        grpo_token_loss(logp, logp, torch.tensor([[2.0]]), ref, mask, 0.2, 0.2, beta=0.04)


def test_grpo_gradient_with_ratio_one_is_minus_advantage():
    # num_iterations == 1: old = logp.detach(), gradient of per-token loss = -A
    logp = t([-1.0, -0.5], [-3.0, -2.0]).requires_grad_()
    mask = torch.ones(2, 2, dtype=torch.bool)
    grpo_token_loss(logp, logp.detach(), t(0.5, -2.0), None, mask).sum().backward()
    torch.testing.assert_close(logp.grad, t([-0.5, -0.5], [2.0, 2.0]))


PER_TOKEN = t([1.0, 1.0, 99.0, 99.0], [2.0, 2.0, 2.0, 2.0])  # 99 under the mask
MASK = t([True, True, False, False], [True, True, True, True])


@pytest.mark.parametrize(
    ("kind", "kwargs", "expected"),
    [
        ("grpo", {}, 1.5),  # mean(2/2, 8/4)
        ("bnpo", {}, 10 / 6),
        ("dr_grpo", {"max_completion_length": 4}, 1.25),  # 10 / (2 * 4)
        ("dapo", {"num_items": 6}, 10 / 6),
    ],
)
def test_aggregate_loss_algorithms_4(kind, kwargs, expected):
    assert aggregate_loss(PER_TOKEN, MASK, kind, **kwargs).item() == approx(expected)


def test_aggregate_loss_empty_row_and_errors():
    mask = t([False, False, False, False], [True, True, True, True])
    # fully masked row contributes 0: mean(0, 8/4)
    assert aggregate_loss(PER_TOKEN, mask, "grpo").item() == approx(1.0)
    with pytest.raises(ValueError, match="max_completion_length"):
        aggregate_loss(PER_TOKEN, MASK, "dr_grpo")
    with pytest.raises(ValueError, match="num_items"):
        aggregate_loss(PER_TOKEN, MASK, "dapo")
    with pytest.raises(ValueError, match="unknown kind"):
        aggregate_loss(PER_TOKEN, MASK, "sum")


# --- RLOO -------------------------------------------------------------------------------------


def test_rloo_sequence_loss():
    # same numbers as the §1.4 PPO example at sequence level: ratio e^0.5, A = [1, -1]
    old = t(-10.0, -10.0)
    out = rloo_sequence_loss(old + 0.5, old, t(1.0, -1.0), clip_eps=0.2)
    assert out.loss.item() == approx(0.22436064)
    assert out.clipfrac.item() == approx(0.5)
    assert out.ratio_mean.item() == approx(math.exp(0.5))
    seq = t(-4.0, -9.0).requires_grad_()
    out = rloo_sequence_loss(seq, seq.detach(), t(0.6, -0.2))
    assert out.ratio_mean.item() == 1.0
    assert out.loss.item() == approx(-0.2)  # -mean([0.6, -0.2])
