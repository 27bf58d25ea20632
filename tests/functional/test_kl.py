"""KL estimators and KL controllers against ALGORITHMS.md §1.4, §2 and python-math loops."""

import math

import pytest
import torch

from rlhf_lightning.functional import (
    AdaptiveKLController,
    FixedKLController,
    full_kl,
    kl_penalty,
)

# ALGORITHMS.md §1.4 "Per-token rewards"
LOGP = torch.tensor([-1.0, -2.0, -0.5])
REF = torch.tensor([-1.2, -1.5, -0.5])


@pytest.mark.parametrize(
    ("estimator", "expected_rewards"),
    [
        ("k1", [-0.04, 0.1, 1.0]),  # k = [.2, -.5, 0]
        ("abs", [-0.04, -0.1, 1.0]),  # k = [.2, .5, 0]
        ("mse", [-0.004, -0.025, 1.0]),  # k = [.02, .125, 0]
    ],
)
def test_per_token_rewards_algorithms_1_4(estimator, expected_rewards):
    rewards = -0.2 * kl_penalty(LOGP, REF, estimator)
    rewards[-1] += 1.0  # score on the last response token (classic TRL)
    torch.testing.assert_close(rewards, torch.tensor(expected_rewards), atol=1e-6, rtol=0)


def test_k3_numbers_algorithms_1_4():
    torch.testing.assert_close(
        kl_penalty(LOGP, REF, "k3"),
        torch.tensor([0.01873075, 0.14872127, 0.0]),
        atol=1e-6,
        rtol=0,
    )


def test_k1_and_k3_algorithms_2_example():
    # ALGORITHMS.md §2: logp=[-1,-1,-1,1,1], ref=[-1.1,-.9,-1,1,1] -> k1 kl=[.1,-.1,0,0,0]
    logp = torch.tensor([[-1.0, -1.0, -1.0, 1.0, 1.0]])
    ref = torch.tensor([[-1.1, -0.9, -1.0, 1.0, 1.0]])
    torch.testing.assert_close(
        kl_penalty(logp, ref, "k1"), torch.tensor([[0.1, -0.1, 0.0, 0.0, 0.0]]), atol=1e-6, rtol=0
    )
    # k3 = exp(r) - 1 - r with r = ref - logp, by python math
    expected = [math.exp(r) - 1 - r for r in (-0.1, 0.1, 0.0, 0.0, 0.0)]
    torch.testing.assert_close(
        kl_penalty(logp, ref, "k3"), torch.tensor([expected]), atol=1e-6, rtol=0
    )


@pytest.mark.parametrize("estimator", ["k1", "abs", "mse", "k3"])
def test_every_estimator_is_exactly_zero_when_policy_equals_ref(estimator):
    logp = torch.tensor([[-0.3, -7.0, -12.5], [-1e-3, -2.0, -50.0]])
    assert (kl_penalty(logp, logp.clone(), estimator) == 0).all()


def test_k3_is_non_negative_while_k1_can_be_negative():
    gen = torch.Generator().manual_seed(0)
    logp = -5 * torch.rand(64, generator=gen)
    ref = -5 * torch.rand(64, generator=gen)
    assert (kl_penalty(logp, ref, "k3") >= 0).all()
    assert (kl_penalty(logp, ref, "k1") < 0).any()


def test_unknown_estimator_raises():
    with pytest.raises(ValueError, match="unknown KL estimator"):
        kl_penalty(LOGP, REF, "kl")


def test_full_kl_algorithms_1_4():
    # p=[.7,.2,.1], q=[.5,.3,.2] -> 0.08512283; logits are log-probs up to a constant
    logits = torch.log(torch.tensor([0.7, 0.2, 0.1])) + 2.0
    ref_logits = torch.log(torch.tensor([0.5, 0.3, 0.2])) - 1.0
    assert full_kl(logits, ref_logits).item() == pytest.approx(0.08512283, abs=1e-6)


def test_full_kl_matches_naive_loop_and_is_zero_on_equal_logits():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 5, generator=gen)
    ref_logits = torch.randn(2, 3, 5, generator=gen)
    out = full_kl(logits, ref_logits)
    assert out.shape == (2, 3)
    for b in range(2):
        for t in range(3):
            p = torch.softmax(logits[b, t].double(), -1).tolist()
            q = torch.softmax(ref_logits[b, t].double(), -1).tolist()
            expected = sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True))
            assert out[b, t].item() == pytest.approx(expected, abs=1e-6)
    assert full_kl(logits, logits).abs().max().item() < 1e-6


def test_full_kl_with_banned_tokens_has_finite_value_and_gradient():
    logits = torch.tensor([0.0, 0.0, -math.inf], requires_grad=True)
    ref_logits = torch.tensor([0.0, math.log(3.0), 0.0])
    # p = [.5, .5, 0], q = [.2, .6, .2]: .5 log(.5/.2) + .5 log(.5/.6)
    expected = 0.5 * math.log(2.5) + 0.5 * math.log(5 / 6)
    out = full_kl(logits, ref_logits)
    assert out.item() == pytest.approx(expected, abs=1e-6)
    out.backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize(
    ("current_kl", "expected"),
    [
        (8.0, 0.201024),  # e = +0.2 (clipped), x (1 + 0.2 * 256 / 10000)
        (3.0, 0.198976),  # e = -0.2 (clipped)
        (6.6, 0.200512),  # e = 0.1
        (torch.tensor(6.6), 0.200512),  # a logged tensor works too
    ],
)
def test_adaptive_kl_controller_algorithms_1_4(current_kl, expected):
    ctl = AdaptiveKLController(init_kl_coef=0.2, target=6, horizon=10000)
    ctl.update(current_kl, n_steps=256)
    assert ctl.value == pytest.approx(expected, abs=1e-9)


def test_adaptive_kl_controller_state_round_trip():
    ctl = AdaptiveKLController(0.2, target=6, horizon=10000)
    ctl.update(8.0, 256)
    state = ctl.state_dict()
    assert state == {"value": pytest.approx(0.201024)}
    assert all(type(v) is float for v in state.values())
    restored = AdaptiveKLController(0.2, target=6, horizon=10000)
    restored.load_state_dict(state)
    assert restored.value == ctl.value
    with pytest.raises(ValueError, match="> 0"):
        AdaptiveKLController(0.2, target=0, horizon=10000)


def test_fixed_kl_controller_never_moves():
    ctl = FixedKLController(0.05)
    ctl.update(100.0, n_steps=256)
    assert ctl.value == 0.05
    state = ctl.state_dict()
    assert state == {"value": 0.05}
    other = FixedKLController(1.0)
    other.load_state_dict(state)
    assert other.value == 0.05
