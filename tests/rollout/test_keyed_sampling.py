"""Row-keyed sampling: exact draws from the policy, independent of how the batch is split."""

from __future__ import annotations

import torch

from rlhf_lightning.rollout import SamplingConfig, generate_rollout
from rlhf_lightning.rollout.keyed_sampling import KeyedSampler, keyed_uniform, splitmix64


def test_splitmix64_matches_the_reference_values():
    # splitmix64's first outputs for state 0 (Vigna's reference generator: state += golden,
    # then the finaliser), as unsigned 64-bit numbers.
    expected = [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    golden = 0x9E3779B97F4A7C15
    states = torch.tensor(
        [
            ((k * golden) & (2**64 - 1)) - (2**64 if (k * golden) & (2**64 - 1) >= 2**63 else 0)
            for k in range(3)
        ]
    )
    got = [int(v) & (2**64 - 1) for v in splitmix64(states)]
    assert got == expected


def test_uniforms_are_in_the_open_interval_and_flat():
    u = keyed_uniform(7, torch.arange(100_000), step=3)
    assert float(u.min()) > 0 and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.005
    assert abs(float(u.std()) - (1 / 12) ** 0.5) < 0.005
    assert not torch.equal(u, keyed_uniform(7, torch.arange(100_000), step=4))
    assert not torch.equal(u, keyed_uniform(8, torch.arange(100_000), step=3))
    assert torch.equal(u[500:600], keyed_uniform(7, torch.arange(500, 600), step=3))


def test_draws_follow_the_softmax_and_never_pick_a_masked_token():
    n = 200_000
    logits = torch.tensor([0.0, 1.0, 2.0, -1.0, float("-inf")])
    sampler = KeyedSampler(0, torch.arange(n), prompt_width=0)
    picks = sampler(torch.zeros(n, 0, dtype=torch.long), logits.expand(n, 5).clone()).argmax(-1)
    freq = torch.bincount(picks, minlength=5).double() / n
    expected = torch.softmax(logits.double(), 0)
    assert torch.allclose(freq, expected, atol=0.004)  # ~4 standard errors at n = 200k
    assert freq[4] == 0


def test_temperature_and_top_k_are_applied_before_the_draw():
    n = 100_000
    logits = torch.tensor([0.0, 1.0, 2.0, 3.0])
    sampler = KeyedSampler(1, torch.arange(n), prompt_width=0, temperature=2.0, top_k=2)
    picks = sampler(torch.zeros(n, 0, dtype=torch.long), logits.expand(n, 4).clone()).argmax(-1)
    freq = torch.bincount(picks, minlength=4).double() / n
    expected = torch.tensor([0.0, 0.0, *torch.softmax(torch.tensor([1.0, 1.5]), 0).tolist()])
    assert torch.allclose(freq, expected.double(), atol=0.005)


def test_a_row_gets_the_same_completion_whatever_batch_it_is_in(gpt2, demo_tokenizer):
    prompts = [f"row {i} " * (1 + i % 3) for i in range(6)]
    config = SamplingConfig(max_new_tokens=10)

    def sample(rows, keys):
        out = generate_rollout(
            gpt2, demo_tokenizer, rows, config=config, generator_seed=3, row_keys=keys
        )
        return out.completions

    whole = sample(prompts, torch.arange(6))
    halves = sample(prompts[:3], torch.arange(3)) + sample(prompts[3:], torch.arange(3, 6))
    assert whole == halves
    assert whole != sample(prompts, torch.arange(6, 12))  # other keys, other draws


def test_keyed_log_probs_are_the_warped_scores_of_the_sampled_tokens(gpt2, demo_tokenizer):
    from rlhf_lightning.rollout import score_tokens

    config = SamplingConfig(max_new_tokens=8, temperature=0.7)
    out = generate_rollout(
        gpt2,
        demo_tokenizer,
        ["a b", "c"],
        config=config,
        generator_seed=0,
        row_keys=torch.arange(2),
        return_logprobs=True,
    )
    pad = demo_tokenizer.pad_token_id  # banned from the draw: rescore under the same ban
    ban = gpt2.get_output_embeddings().register_forward_hook(
        lambda _m, _i, logits: logits.index_fill(-1, torch.tensor([pad]), float("-inf"))
    )
    with torch.no_grad():
        again = score_tokens(
            gpt2, out.input_ids, out.attention_mask, out.context_length, temperature=0.7
        ).logprobs
    ban.remove()
    mask = out.response_mask
    assert torch.allclose(out.logprobs[mask], again[mask], atol=1e-4)


def test_recorded_policy_log_probs_equal_a_forward_pass_even_when_filtering(gpt2, demo_tokenizer):
    """The old log-probs PPO/GRPO need: the unfiltered policy at the temperature, so top-k and
    min_new_tokens (which reshape the sampling distribution) do not leak into them."""
    from rlhf_lightning.rollout import score_tokens

    config = SamplingConfig(max_new_tokens=8, min_new_tokens=8, temperature=0.7, top_k=20)
    out = generate_rollout(
        gpt2,
        demo_tokenizer,
        ["a b", "c", ""],
        config=config,
        generator_seed=0,
        row_keys=torch.arange(3),
    )
    assert out.response_mask.all()  # min_new_tokens held every stop token back
    again = score_tokens(
        gpt2, out.input_ids, out.attention_mask, out.context_length, temperature=0.7
    ).logprobs
    assert torch.allclose(out.policy_logprobs, again, atol=1e-4)


def test_recorded_values_equal_the_value_head_forward(policy, demo_tokenizer):
    """PPO's old values come from the hidden states decoding already computed (GPT-2 and
    Llama): the same numbers the value-head wrapper's own forward gives."""
    from rlhf_lightning.models.value_head import CausalLMWithValueHead

    wrapped = CausalLMWithValueHead(policy).eval()
    torch.nn.init.normal_(wrapped.v_head.summary.weight, std=1.0)  # values far from zero
    out = generate_rollout(
        wrapped,
        demo_tokenizer,
        ["a b c", "c", ""],
        config=SamplingConfig(max_new_tokens=9),
        generator_seed=0,
        row_keys=torch.arange(3),
        record_values=True,
    )
    with torch.no_grad():
        full = wrapped(out.input_ids, out.attention_mask).values
    expected = full[:, out.context_length - 1 : -1]
    mask = out.response_mask
    assert out.policy_values.shape == mask.shape
    assert float(expected[mask].abs().mean()) > 0.1
    assert torch.allclose(out.policy_values[mask], expected[mask], atol=1e-5)
    assert torch.equal(out.policy_values[~mask], torch.zeros_like(out.policy_values[~mask]))


def test_recording_values_needs_a_value_head(gpt2, demo_tokenizer):
    import pytest

    with pytest.raises(ValueError, match="v_head"):
        generate_rollout(gpt2, demo_tokenizer, ["a"], generator_seed=0, record_values=True)


def test_the_pad_token_is_never_sampled_even_when_the_policy_prefers_it(gpt2, demo_tokenizer):
    """A pad id inside a response would read as padding downstream (and an added pad token's
    untrained row can be missing from a reward model's vocabulary): sampling skips it, while
    the recorded old log-probs stay the policy's own."""
    from rlhf_lightning.rollout import score_tokens

    pad = demo_tokenizer.pad_token_id
    assert pad is not None and pad != demo_tokenizer.eos_token_id

    def prefer_pad(_module, _inputs, logits):
        logits = logits.clone()
        logits[..., pad] += 30.0  # nearly all the mass on the pad token
        return logits

    handle = gpt2.get_output_embeddings().register_forward_hook(prefer_pad)
    try:
        keyed = generate_rollout(
            gpt2,
            demo_tokenizer,
            ["a b", "c", ""],
            config=SamplingConfig(max_new_tokens=6),
            generator_seed=0,
            row_keys=torch.arange(3),
        )
        plain = generate_rollout(
            gpt2, demo_tokenizer, ["a b", "c", ""], config=SamplingConfig(max_new_tokens=6)
        )
        with torch.no_grad():
            again = score_tokens(
                gpt2, keyed.input_ids, keyed.attention_mask, keyed.context_length
            ).logprobs
    finally:
        handle.remove()
    for out in (keyed, plain):
        assert not (out.response_ids[out.response_mask] == pad).any()
    mask = keyed.response_mask
    assert torch.allclose(keyed.policy_logprobs[mask], again[mask], atol=1e-4)
    assert float(again[mask].max()) < -20  # the policy did prefer the pad token
