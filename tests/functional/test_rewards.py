"""Per-token PPO rewards against ALGORITHMS.md §1.4 and §2 (worked numbers)."""

from __future__ import annotations

import pytest
import torch

from rlhf_lightning.functional import (
    gae,
    last_token_index,
    masked_whiten,
    place_turn_rewards,
    ppo_token_rewards,
)

LOGP = torch.tensor([[-1.0, -2.0, -0.5]])
REF = torch.tensor([[-1.2, -1.5, -0.5]])
FULL = torch.ones(1, 3, dtype=torch.bool)


@pytest.mark.parametrize(
    ("estimator", "expected"),
    [
        # kl = logp - ref = [.2, -.5, 0]; r = -.2 * kl, score 1 on the last token.
        ("k1", [-0.04, 0.1, 1.0]),
        ("abs", [-0.04, -0.1, 1.0]),
        # mse: .5 * [.04, .25, 0] = [.02, .125, 0]
        ("mse", [-0.004, -0.025, 1.0]),
        # k3 of the same logp/ref = [0.01873075, 0.14872127, 0]
        ("k3", [-0.2 * 0.01873075, -0.2 * 0.14872127, 1.0]),
    ],
)
def test_per_token_rewards_match_the_worked_example(estimator, expected):
    out = ppo_token_rewards(LOGP, REF, FULL, torch.tensor([1.0]), kl_coef=0.2, estimator=estimator)
    torch.testing.assert_close(out.rewards, torch.tensor([expected]), atol=1e-6, rtol=0)


def test_score_goes_on_the_last_real_token_and_padding_gets_nothing():
    # §2 example layout: response [t0, t1, EOS, PAD, PAD], kl_coef .05, k1, score 1, V = .5.
    logp = torch.tensor([[-1.0, -1.0, -1.0, 1.0, 1.0]])
    ref = torch.tensor([[-1.1, -0.9, -1.0, 1.0, 1.0]])
    mask = torch.tensor([[True, True, True, False, False]])
    out = ppo_token_rewards(logp, ref, mask, torch.tensor([1.0]), kl_coef=0.05)
    # Score on EOS (classic TRL / PR #5338 variant of §2): rewards [-.005, .005, 1, 0, 0].
    torch.testing.assert_close(out.rewards, torch.tensor([[-0.005, 0.005, 1.0, 0.0, 0.0]]))
    torch.testing.assert_close(out.kl, torch.tensor([[0.1, -0.1, 0.0, 0.0, 0.0]]))
    values = torch.tensor([[0.5, 0.5, 0.5, 0.0, 0.0]])
    advantages, _ = gae(out.rewards, values, mask, gamma=1.0, lam=0.95)
    # §2: "values zeroed after EOS: A = [0.451, 0.48, 0.5, 0, 0]".
    torch.testing.assert_close(advantages, torch.tensor([[0.451, 0.48, 0.5, 0.0, 0.0]]))
    whitened = masked_whiten(advantages, mask)
    assert abs(whitened[mask].mean().item()) < 1e-6


def test_policy_equal_to_reference_leaves_only_the_score():
    logp = torch.randn(3, 4)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    for estimator in ("k1", "abs", "mse", "k3"):
        out = ppo_token_rewards(
            logp, logp.clone(), mask, torch.tensor([2.0, -1.0, 0.5]), 0.3, estimator
        )
        assert torch.equal(out.kl, torch.zeros(3, 4))
        expected = torch.zeros(3, 4)
        expected[0, 3], expected[1, 1], expected[2, 0] = 2.0, -1.0, 0.5
        assert torch.equal(out.rewards, expected)


def test_last_token_index():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 0, 0]], dtype=torch.bool)
    assert last_token_index(mask).tolist() == [1, 2, 0]


def test_a_precomputed_full_kl_replaces_the_estimator():
    # full KL with p=[.7,.2,.1], q=[.5,.3,.2] is 0.08512283 (ALGORITHMS.md §1.4)
    from rlhf_lightning.functional import full_kl

    p, q = torch.tensor([0.7, 0.2, 0.1]).log(), torch.tensor([0.5, 0.3, 0.2]).log()
    kl = full_kl(p[None, None], q[None, None])  # (1, 1)
    out = ppo_token_rewards(
        torch.zeros(1, 1),
        torch.zeros(1, 1),
        torch.ones(1, 1, dtype=torch.bool),
        torch.tensor([1.0]),
        kl_coef=0.2,
        kl=kl,
    )
    torch.testing.assert_close(out.kl, torch.tensor([[0.08512283]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(
        out.rewards, torch.tensor([[1.0 - 0.2 * 0.08512283]]), atol=1e-6, rtol=0
    )


def test_turn_rewards_move_to_the_turns_that_earned_them():
    # Turn 1 = tokens 0-1 (reward .5 on token 1), an environment token at 2, turn 2 = token 3
    # (reward 1). The KL placement put -.1 KL on every policy token and the shaped score 1.3
    # (1.5 of turn rewards, -.2 of a missing-stop penalty) on the last one.
    mask = torch.tensor([[True, True, False, True]])
    token = torch.tensor([[-0.1, -0.1, 0.0, -0.1 + 1.3]])
    turns = torch.tensor([[0.0, 0.5, 0.0, 1.0]])
    placed = place_turn_rewards(token, turns, mask)
    # The last token keeps -.1 + (1.3 - 1.5) + 1.0 = .7; token 1 gains .5.
    torch.testing.assert_close(placed, torch.tensor([[-0.1, 0.4, 0.0, 0.7]]))
    torch.testing.assert_close(placed.sum(1), token.sum(1))


def test_turn_rewards_on_the_last_token_change_nothing():
    mask = torch.tensor([[True, True, True, False]])
    token = torch.tensor([[0.0, 0.0, 2.0, 0.0]])
    turns = torch.tensor([[0.0, 0.0, 2.0, 0.0]])
    torch.testing.assert_close(place_turn_rewards(token, turns, mask), token)
