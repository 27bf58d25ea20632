"""KTO, ORPO and SimPO against hand arithmetic, invariants and gradient signs."""

import math

import pytest
import torch

from rlhf_lightning.functional.preference import (
    kto_loss,
    kto_reference_point,
    orpo_loss,
    rank_pairs,
    simpo_loss,
)

LOG2 = math.log(2.0)


def approx(value, abs=1e-6):
    return pytest.approx(value, abs=abs)


def t(*values):
    return torch.tensor(values)


# --- KTO --------------------------------------------------------------------------------------

# r = policy - ref = [2, -1, 0, 0]; desirable [T, F, T, F]; β = .1, z0 = .5
KTO_POLICY = t(-10.0, -12.0, -11.0, -9.0)
KTO_REF = t(-12.0, -11.0, -11.0, -9.0)
KTO_DESIRABLE = t(True, False, True, False)
# row 0 (desirable):   1 - σ(.1·(2 - .5))    = 1 - σ(.15)  = 1 - 0.53742985 = 0.46257015
# row 1 (undesirable): 1 - σ(.1·(.5 - (-1))) = 1 - σ(.15)  = 0.46257015
# row 2 (desirable):   1 - σ(.1·(0 - .5))    = 1 - σ(-.05) = 0.51249740
# row 3 (undesirable): 1 - σ(.1·(.5 - 0))    = 1 - σ(.05)  = 0.48750260
KTO_ROWS = [0.46257015, 0.46257015, 0.51249740, 0.48750260]


def test_kto_loss_worked_numbers():
    out = kto_loss(KTO_POLICY, KTO_REF, KTO_DESIRABLE, 0.5, beta=0.1)
    assert out.loss.item() == approx(sum(KTO_ROWS) / 4)  # 0.48128508: mean over all rows
    torch.testing.assert_close(out.rewards, t(0.2, -0.1, 0.0, 0.0))  # β·r
    assert out.kl_reference_point.item() == 0.5
    # desirable weight 2: (2·.46257015 + .46257015 + 2·.51249740 + .48750260) / 4
    out = kto_loss(KTO_POLICY, KTO_REF, KTO_DESIRABLE, t(0.5), 0.1, desirable_weight=2.0)
    assert out.loss.item() == approx(0.72505197)
    # undesirable weight 3 on rows 1 and 3 only
    out = kto_loss(KTO_POLICY, KTO_REF, KTO_DESIRABLE, 0.5, 0.1, undesirable_weight=3.0)
    assert out.loss.item() == approx(
        (0.46257015 + 3 * 0.46257015 + 0.51249740 + 3 * 0.48750260) / 4
    )


def test_kto_loss_at_the_reference_point_is_half_the_weight():
    # r = z0 on every row -> σ(0) = .5 -> w·.5 per row
    z0 = 0.7
    policy = t(-3.0, -4.0, -5.0)
    ref = policy - z0
    out = kto_loss(policy, ref, t(True, False, True), z0, 0.1, 2.0, 6.0)
    assert out.loss.item() == approx((2 * 0.5 + 6 * 0.5 + 2 * 0.5) / 3)
    # single-class batches work (TRL's empty-class branch)
    assert kto_loss(policy, ref, t(False, False, False), z0).loss.item() == approx(0.5)


def test_kto_loss_gradient_signs_and_detached_reference_point():
    policy = KTO_POLICY.clone().requires_grad_()
    z0 = torch.tensor(0.5, requires_grad=True)
    ref = KTO_REF.clone().requires_grad_()
    out = kto_loss(policy, ref, KTO_DESIRABLE, z0, beta=0.1)
    out.loss.backward()
    # desirable rows are pushed up, undesirable rows down
    assert (policy.grad[KTO_DESIRABLE] < 0).all() and (policy.grad[~KTO_DESIRABLE] > 0).all()
    # row 0: d/dπ (1 - σ(β(r - z0))) / 4 = -β σ(.15)(1 - σ(.15)) / 4 = -.1·.53742985·.46257015 / 4
    assert policy.grad[0].item() == approx(-0.1 * 0.53742985 * 0.46257015 / 4)
    assert z0.grad is None and ref.grad is None
    assert not out.rewards.requires_grad and not out.kl_reference_point.requires_grad


def test_kto_reference_point():
    # policy - ref on the mismatched pairs = [1, 0, 2, -1] -> mean .5
    policy = t(-5.0, -6.0, -7.0, -8.0).requires_grad_()
    z0 = kto_reference_point(policy, t(-6.0, -6.0, -9.0, -7.0))
    assert z0.item() == approx(0.5)
    assert not z0.requires_grad
    # negative mean [-1, -2] -> -1.5, clamped at 0
    assert kto_reference_point(t(-3.0, -4.0), t(-2.0, -2.0)).item() == 0.0


def test_kto_loss_validation():
    with pytest.raises(TypeError, match="bool"):
        kto_loss(KTO_POLICY, KTO_REF, KTO_DESIRABLE.float(), 0.0)
    with pytest.raises(ValueError, match="shape"):
        kto_loss(KTO_POLICY, KTO_REF[:3], KTO_DESIRABLE, 0.0)


# --- ORPO -------------------------------------------------------------------------------------


def test_orpo_loss_worked_numbers():
    # pair 0: p_c = 1/2 -> odds 1, log odds 0; p_r = 1/4 -> odds 1/3, log odds -log 3
    #   log odds ratio = log 3; σ(log 3) = 3/4 -> L_OR = -log(3/4) = log(4/3) = 0.28768207
    # pair 1: p_c = 1/5 -> odds 1/4; p_r = 4/5 -> odds 4; ratio log(1/16); σ = 1/17 -> log 17
    chosen = t(math.log(0.5), math.log(0.2))
    rejected = t(math.log(0.25), math.log(0.8))
    nll = torch.tensor(2.0)
    out = orpo_loss(chosen[:1], rejected[:1], nll, lam=0.1)
    assert out.loss.item() == approx(2.0 + 0.1 * 0.28768207)
    assert out.log_odds_ratio.item() == approx(1.09861229)  # log 3
    out = orpo_loss(chosen, rejected, nll, lam=0.1)
    # mean L_OR = (log(4/3) + log 17) / 2 = (0.28768207 + 2.83321334) / 2 = 1.56044771
    assert out.odds_ratio_loss.item() == approx(1.56044771)
    assert out.loss.item() == approx(2.0 + 0.1 * 1.56044771)
    assert out.log_odds_ratio.item() == approx(math.log(3 / 16) / 2)  # (log 3 + log 1/16) / 2
    assert out.accuracy.item() == 0.5
    assert out.nll.item() == 2.0


def test_orpo_equal_probabilities_give_log2():
    avg = t(-0.3, -2.0, -7.5)
    out = orpo_loss(avg, avg.clone(), torch.tensor(1.25), lam=0.5)
    assert out.odds_ratio_loss.item() == approx(LOG2)
    assert out.loss.item() == approx(1.25 + 0.5 * LOG2)
    assert (out.log_odds_ratio.item(), out.accuracy.item()) == (0.0, 0.0)


def test_orpo_log1mexp_is_stable_at_both_ends():
    # avg logp -1e-6 (p ~ 1): log(1 - p) = log(-expm1(-1e-6)) = -13.81551106 in float64;
    # float32 1 - exp(-1e-6) keeps only a couple of digits. avg -50: log(1 - e^-50) ~ -2e-22.
    chosen = t(-1e-6)
    rejected = t(-50.0)
    out = orpo_loss(chosen, rejected, torch.tensor(0.0), lam=1.0)
    log_odds_c = -1e-6 - math.log(-math.expm1(-1e-6))  # 13.81551006
    log_odds_r = -50.0 - math.log1p(-math.exp(-50.0))  # -50
    assert out.log_odds_ratio.item() == pytest.approx(log_odds_c - log_odds_r, rel=1e-6)
    # the loss and its gradient stay finite for averages on both sides of -log 2
    avg = t(-1e-4, -0.5, -0.7, -0.9, -30.0).requires_grad_()
    orpo_loss(avg, t(-1.0, -1.0, -1.0, -1.0, -1.0), torch.tensor(0.0)).loss.backward()
    assert torch.isfinite(avg.grad).all()


def test_orpo_gradients():
    chosen = t(math.log(0.5)).requires_grad_()
    rejected = t(math.log(0.25)).requires_grad_()
    nll = torch.tensor(2.0, requires_grad=True)
    orpo_loss(chosen, rejected, nll, lam=0.1).loss.backward()
    # d log odds / d avg = 1 / (1 - p); at p_c = 1/2 that is 2, at p_r = 1/4 it is 4/3.
    # d(-log σ(L)) / dL = -σ(-L) = -1/4 at L = log 3. So dλ·L_OR / d avg_c = .1·(-1/4)·2
    assert chosen.grad.item() == approx(-0.05)
    assert rejected.grad.item() == approx(0.1 * 0.25 * 4 / 3)
    assert nll.grad.item() == 1.0


# --- SimPO ------------------------------------------------------------------------------------


def test_simpo_loss_worked_numbers():
    # β = 2, γ = 1. pair 0: z = 2(-.5) - 2(-1.5) - 1 = 1 -> log(1 + e^-1) = 0.31326169
    #               pair 1: z = 2(-2) - 2(-1) - 1 = -3 -> log(1 + e^3)  = 3.04858735
    chosen, rejected = t(-0.5, -2.0), t(-1.5, -1.0)
    out = simpo_loss(chosen, rejected, beta=2.0, gamma=1.0)
    assert out.loss.item() == approx((0.31326169 + 3.04858735) / 2)
    torch.testing.assert_close(out.chosen_rewards, t(-1.0, -4.0))
    torch.testing.assert_close(out.rejected_rewards, t(-3.0, -2.0))
    assert out.accuracy.item() == 0.5
    assert out.margin.item() == approx(0.0)  # (2 + -2) / 2
    # label smoothing .1 at z = 1: .9·log(1 + e^-1) + .1·log(1 + e) = .9·.31326169 + .1·1.31326169
    out = simpo_loss(chosen[:1], rejected[:1], 2.0, 1.0, label_smoothing=0.1)
    assert out.loss.item() == approx(0.41326169)


def test_simpo_invariants_and_gamma_parametrisations():
    avg = t(-0.4, -1.7, -3.0)
    assert simpo_loss(avg, avg.clone(), beta=2.0, gamma=0.0).loss.item() == approx(LOG2)
    # the margin γ is met exactly: β(avg_c - avg_r) = γ -> log 2 again
    assert simpo_loss(t(-1.0), t(-1.25), beta=2.0, gamma=0.5).loss.item() == approx(LOG2)
    # authors' code: β·(Δ - gamma_beta_ratio); TRL CPO: β·(Δ - simpo_gamma/β). Same z for
    # gamma = β·ratio = simpo_gamma. β = 2.5, ratio .4 -> γ = 1; Δ = .8 -> z = 2.5·.8 - 1 = 1
    out = simpo_loss(t(-1.0), t(-1.8), beta=2.5, gamma=2.5 * 0.4)
    assert out.loss.item() == approx(0.31326169)
    with pytest.raises(ValueError, match="label_smoothing"):
        simpo_loss(avg, avg, label_smoothing=0.5)


def test_simpo_gradient_signs():
    chosen = t(-0.5).requires_grad_()
    rejected = t(-1.5).requires_grad_()
    out = simpo_loss(chosen, rejected, beta=2.0, gamma=1.0)
    out.loss.backward()
    # d/d avg_c -log σ(z) = -β σ(-z) = -2·σ(-1) = -2·0.26894142
    assert chosen.grad.item() == approx(-0.53788284)
    assert rejected.grad.item() == approx(0.53788284)
    assert not out.chosen_rewards.requires_grad and not out.margin.requires_grad


# --- online DPO: ranking sampled pairs ----------------------------------------------------------


def test_rank_pairs_picks_the_higher_score_and_keeps_the_first_on_ties():
    # prompts: rows (0, 1), (2, 3), (4, 5); scores 1 < 2 -> row 1 chosen; 3 == 3 -> row 2
    # (TRL: first >= second); 5 > -1 -> row 4
    scores = t(1.0, 2.0, 3.0, 3.0, 5.0, -1.0)
    logps = t(-10.0, -11.0, -12.0, -13.0, -14.0, -15.0)
    chosen, rejected = rank_pairs(logps, scores)
    torch.testing.assert_close(chosen, t(-11.0, -12.0, -14.0))
    torch.testing.assert_close(rejected, t(-10.0, -13.0, -15.0))
    # rows of any shape follow their score; gradients reach the chosen and rejected rows
    rows = torch.arange(12.0).view(6, 2).requires_grad_()
    chosen, rejected = rank_pairs(rows, scores)
    torch.testing.assert_close(chosen, t([2.0, 3.0], [4.0, 5.0], [8.0, 9.0]))
    (chosen.sum() - rejected.sum()).backward()
    torch.testing.assert_close(rows.grad[:, 0], t(-1.0, 1.0, 1.0, -1.0, 1.0, -1.0))
    with pytest.raises(ValueError, match="even number"):
        rank_pairs(logps[:5], scores[:5])
