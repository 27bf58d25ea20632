"""SFT, reward-model and DPO losses against ALGORITHMS.md §1.4, §3, §4 and hand arithmetic."""

import math

import pytest
import torch

from rlhf_lightning.functional import (
    dpo_loss,
    masked_mean,
    pairwise_loss,
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
