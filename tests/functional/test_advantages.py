"""GAE, RunningMoments, GRPO and RLOO advantages against ALGORITHMS.md and naive loops."""

import statistics

import pytest
import torch

from rlhf_lightning.functional import (
    RunningMoments,
    gae,
    group_advantages,
    kl_penalty,
    masked_whiten,
    rloo_advantages,
)


def close(actual, expected, atol=1e-6):
    torch.testing.assert_close(actual, torch.tensor(expected), atol=atol, rtol=0)


# --- GAE --------------------------------------------------------------------------------------


def test_gae_algorithms_1_4():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.full((1, 3), 0.5)
    mask = torch.ones(1, 3, dtype=torch.bool)
    # t=2: δ=.5, A=.5; t=1: δ=0, A=.95·.5; t=0: δ=0, A=.95·.475
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    close(adv, [[0.45125, 0.475, 0.5]])
    close(ret, [[0.95125, 0.975, 1.0]])
    adv, _ = gae(rewards, values, mask, gamma=0.99, lam=0.95)
    close(adv, [[0.43256763, 0.46525, 0.5]])


def test_new_ppo_pipeline_algorithms_2():
    # response [t0, t1, EOS, PAD, PAD]; policy mask idx 0..2, value mask idx 0..3 (padding_mask_p1)
    policy_mask = torch.tensor([[True, True, True, False, False]])
    value_mask = torch.tensor([[True, True, True, True, False]])
    logp = torch.tensor([[-1.0, -1.0, -1.0, 1.0, 1.0]])  # INVALID_LOGPROB = 1 on padding
    ref = torch.tensor([[-1.1, -0.9, -1.0, 1.0, 1.0]])
    rewards = -0.05 * kl_penalty(logp, ref, "k1")
    rewards[0, 3] += 1.0  # score on the first PAD after EOS (seq_len + 1)
    close(rewards, [[-0.005, 0.005, 0.0, 1.0, 0.0]])
    values = torch.full((1, 5), 0.5)  # the 0.5 at idx 4 lies outside the value mask -> 0
    adv, ret = gae(rewards, values, value_mask, gamma=1.0, lam=0.95)
    close(adv, [[0.4284375, 0.45625, 0.475, 0.5, 0.0]])
    close(ret, [[0.9284375, 0.95625, 0.975, 1.0, 0.0]])
    close(masked_whiten(adv, policy_mask), [[-1.05820719, 0.12894121, 0.92926598, 0.0, 0.0]])


def test_score_on_eos_variant_algorithms_2():
    # classic TRL / PR #5338: score on EOS, values zeroed after EOS
    rewards = torch.tensor([[-0.005, 0.005, 1.0, 0.0, 0.0]])
    values = torch.tensor([[0.5, 0.5, 0.5, 7.0, 7.0]])
    mask = torch.tensor([[True, True, True, False, False]])
    adv, _ = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    close(adv, [[0.451, 0.48, 0.5, 0.0, 0.0]])


def naive_gae(rewards, values, length, gamma, lam):
    """Per-row reference: the episode is the first `length` tokens, V after it is 0."""
    adv = [0.0] * length
    running = 0.0
    for t in reversed(range(length)):
        next_value = values[t + 1] if t + 1 < length else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        adv[t] = running
    return adv


def test_gae_matches_naive_loop_with_garbage_in_padding():
    gen = torch.Generator().manual_seed(0)
    lengths = [5, 2, 7, 1]
    rewards = torch.randn(4, 7, generator=gen, dtype=torch.float64)
    values = torch.randn(4, 7, generator=gen, dtype=torch.float64)
    mask = torch.arange(7) < torch.tensor(lengths).unsqueeze(1)
    rewards = torch.where(mask, rewards, 1e6)
    values = torch.where(mask, values, -1e6)
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    for b, length in enumerate(lengths):
        expected = naive_gae(rewards[b].tolist(), values[b].tolist(), length, 0.9, 0.8)
        assert adv[b, :length].tolist() == pytest.approx(expected, abs=1e-9)
        returns = [a + v for a, v in zip(expected, values[b, :length].tolist(), strict=True)]
        assert ret[b, :length].tolist() == pytest.approx(returns, abs=1e-9)
    assert (adv[~mask] == 0).all()
    assert (ret[~mask] == 0).all()


def test_gae_skips_positions_outside_the_mask():
    # A two-turn trajectory: policy tokens at 0, 1 and 4; 2, 3 are an environment message.
    # gamma 0.9, lam 0.5, values [.2, .4, _, _, .6], rewards [0, .5, _, _, 1] over the policy's
    # tokens alone, compacted to 3 steps (the environment's values/rewards are ignored):
    # t=4: delta = 1 - .6 = .4, A = .4
    # t=1: delta = .5 + .9 * .6 - .4 = .64, A = .64 + .45 * .4 = .82
    # t=0: delta = 0 + .9 * .4 - .2 = .16, A = .16 + .45 * .82 = .529
    mask = torch.tensor([[True, True, False, False, True]])
    rewards = torch.tensor([[0.0, 0.5, 9.0, 9.0, 1.0]])
    values = torch.tensor([[0.2, 0.4, 7.0, 7.0, 0.6]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    close(adv, [[0.529, 0.82, 0.0, 0.0, 0.4]])
    close(ret, [[0.729, 1.22, 0.0, 0.0, 1.0]])
    compact, _ = gae(rewards[:, [0, 1, 4]], values[:, [0, 1, 4]], mask[:, [0, 1, 4]], 0.9, 0.5)
    close(adv[:, [0, 1, 4]], compact.tolist())


def test_gae_rejects_bad_inputs():
    with pytest.raises(TypeError, match="bool"):
        gae(torch.zeros(1, 3), torch.zeros(1, 3), torch.ones(1, 3), 1.0, 0.95)
    with pytest.raises(ValueError, match="shape"):
        gae(torch.zeros(1, 3), torch.zeros(1, 2), torch.ones(1, 3, dtype=torch.bool), 1.0, 0.95)


# --- RunningMoments ---------------------------------------------------------------------------


def test_running_moments_first_batch_algorithms_1_2():
    rm = RunningMoments()
    assert (rm.mean, rm.var, rm.std, rm.count) == (0.0, 1.0, 1.0, 1e-24)
    scores = torch.tensor([1.0, 2.0, 3.0])
    batch_mean, batch_std = rm.update(scores)
    assert (batch_mean, batch_std) == (pytest.approx(2.0), pytest.approx(1.0))
    assert rm.mean == pytest.approx(2.0)
    assert rm.var == pytest.approx(2.0 / 3.0)
    assert rm.std == pytest.approx(1.0)
    eps = torch.finfo(torch.float32).eps
    close(scores / (rm.std + eps), [0.99999988, 1.99999976, 2.99999964])
    close((scores - rm.mean) / (rm.std + eps), [-0.99999988, 0.0, 0.99999988])


def test_running_moments_equal_statistics_of_all_data():
    batches = [[1.0, 2.0, 3.0], [10.0, -4.0], [0.5, 0.25, 8.0, 3.0]]
    rm = RunningMoments()
    for batch in batches:
        rm.update(torch.tensor(batch))
    everything = [x for batch in batches for x in batch]
    assert rm.mean == pytest.approx(statistics.fmean(everything), abs=1e-6)
    assert rm.var == pytest.approx(statistics.pvariance(everything), abs=1e-6)
    assert rm.std == pytest.approx(statistics.stdev(everything), abs=1e-6)
    assert rm.count == pytest.approx(len(everything))


def test_running_moments_state_round_trip_and_errors():
    rm = RunningMoments()
    rm.update(torch.tensor([1.0, 2.0, 3.0]))
    state = rm.state_dict()
    assert all(type(v) is float for v in state.values())
    other = RunningMoments()
    other.load_state_dict(state)
    assert other.state_dict() == state
    with pytest.raises(ValueError, match="at least 2"):
        rm.update(torch.tensor([1.0]))


# --- GRPO -------------------------------------------------------------------------------------


def test_group_advantages_algorithms_4():
    close(
        group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 4),
        [0.86587543, -0.86587543, -0.86587543, 0.86587543],
    )
    close(
        group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 4, scale="none"),
        [0.5, -0.5, -0.5, 0.5],
    )
    close(
        group_advantages(torch.tensor([0.9, 0.1, 0.5, 0.5]), 4),
        [1.22436999, -1.22436999, 0.0, 0.0],
    )


def test_group_advantages_two_prompts_prompt_major():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.9, 0.1, 0.5, 0.5])
    close(
        group_advantages(rewards, 4),
        [0.86587543, -0.86587543, -0.86587543, 0.86587543, 1.22436999, -1.22436999, 0.0, 0.0],
    )
    # "batch": group means (.5 and .5) but one unbiased std over all 8 rewards
    std = statistics.stdev(rewards.tolist())
    centred = [0.5, -0.5, -0.5, 0.5, 0.4, -0.4, 0.0, 0.0]
    close(group_advantages(rewards, 4, scale="batch"), [c / (std + 1e-4) for c in centred])


def test_group_advantages_errors():
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages(torch.zeros(4), 3)
    with pytest.raises(ValueError, match="group_size >= 2"):
        group_advantages(torch.zeros(4), 1)
    close(group_advantages(torch.tensor([1.0, 2.0]), 1, scale="none"), [0.0, 0.0])
    with pytest.raises(ValueError, match="unknown scale"):
        group_advantages(torch.zeros(4), 2, scale="global")


# --- RLOO -------------------------------------------------------------------------------------


def test_rloo_advantages_algorithms_4():
    # b = [1/3, 2/3, 2/3, 1/3]
    close(rloo_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 4), [2 / 3, -2 / 3, -2 / 3, 2 / 3])
    close(rloo_advantages(torch.tensor([0.9, 0.1, 0.5, 0.5]), 4), [0.5333333, -0.5333333, 0.0, 0.0])


def test_rloo_group_layout_pitfall_algorithms_5_10():
    # 2 prompts, k=2. Prompt-major [p0s0, p0s1, p1s0, p1s1] = [1, 2, 3, 4]:
    # groups (1, 2), (3, 4) -> A = [1-2, 2-1, 3-4, 4-3]
    prompt_major = torch.tensor([1.0, 2.0, 3.0, 4.0])
    close(rloo_advantages(prompt_major, 2), [-1.0, 1.0, -1.0, 1.0])
    # the same samples in k-major order [p0s0, p1s0, p0s1, p1s1]; a prompt-major reshape would
    # pair (1, 3) and (2, 4): A = [1-3, 3-1, 2-4, 4-2], baselines over the wrong samples
    k_major = torch.tensor([1.0, 3.0, 2.0, 4.0])
    close(rloo_advantages(k_major, 2), [-2.0, 2.0, -2.0, 2.0])
    # permuting k-major -> prompt-major first gives the right answer
    fixed = k_major.view(2, -1).T.reshape(-1)
    close(rloo_advantages(fixed, 2), [-1.0, 1.0, -1.0, 1.0])


def test_rloo_equals_scaled_centred_reward_and_normalises():
    rewards = [0.3, -1.2, 2.0, 0.7, 0.1, 0.4]
    k = 3
    expected = []
    for g in range(2):
        group = rewards[g * k : (g + 1) * k]
        mean = sum(group) / k
        expected += [k / (k - 1) * (r - mean) for r in group]
    close(rloo_advantages(torch.tensor(rewards), k), expected, atol=1e-6)
    mean, std = statistics.fmean(expected), statistics.stdev(expected)
    close(
        rloo_advantages(torch.tensor(rewards), k, normalize=True),
        [(a - mean) / (std + 1e-4) for a in expected],
    )
    with pytest.raises(ValueError, match="k >= 2"):
        rloo_advantages(torch.tensor(rewards), 1)
