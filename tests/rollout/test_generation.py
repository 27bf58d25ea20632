"""generate_rollout: one batched generate call, the cut after the stop token, seeds, warnings."""

from __future__ import annotations

import warnings

import pytest
import torch

from rlhf_lightning.errors import ConfigError
from rlhf_lightning.models.loading import build_causal_lm
from rlhf_lightning.rollout import (
    OffPolicySamplingWarning,
    SamplingConfig,
    generate_rollout,
    respond_to_batch,
)

TINY_GPT2 = {"type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 32, "n_positions": 128}


def test_shapes_masks_and_text(policy, demo_tokenizer, prompts):
    config = SamplingConfig(max_new_tokens=6)
    batch = generate_rollout(policy, demo_tokenizer, prompts, config=config, generator_seed=0)
    B = len(prompts)
    # BOS + the prompt's tokens; "" is BOS alone.
    lengths = [1 + len(r) for r in demo_tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    Q = max(lengths)
    assert batch.query_ids.shape == batch.query_mask.shape == (B, Q)
    assert batch.response_ids.shape == batch.response_mask.shape == (B, 6)
    assert batch.input_ids.shape == (B, Q + 6) and batch.context_length == Q
    assert batch.query_mask.dtype == batch.response_mask.dtype == torch.bool
    # Left padding: each row's real query tokens are a suffix ending in column Q-1.
    assert batch.query_mask[:, -1].all()
    assert batch.query_mask.long().diff(dim=1).ge(0).all()
    assert batch.query_mask.sum(1).tolist() == lengths
    assert batch.query_ids[2, -1] == demo_tokenizer.bos_token_id  # "" starts from BOS
    assert batch.prompts == prompts
    assert len(batch.completions) == B and all(isinstance(c, str) for c in batch.completions)


def test_cut_after_first_stop_in_real_generation(policy, demo_tokenizer, prompts):
    # Half the vocabulary stops a response, so most rows stop within a few tokens.
    stops = list(range(0, len(demo_tokenizer), 2))
    config = SamplingConfig(max_new_tokens=12, stop_token_ids=stops)
    batch = generate_rollout(policy, demo_tokenizer, prompts * 2, config=config, generator_seed=1)
    pad = demo_tokenizer.pad_token_id
    assert batch.contains_stop.any()
    for ids, mask, stopped in zip(
        batch.response_ids.tolist(),
        batch.response_mask.tolist(),
        batch.contains_stop.tolist(),
        strict=True,
    ):
        n = sum(mask)
        assert mask == [True] * n + [False] * (len(mask) - n)
        assert ids[n:] == [pad] * (len(ids) - n)
        is_stop = [t in stops for t in ids[:n]]
        # Stopped rows: exactly one stop token, the last kept one; others never stopped.
        assert is_stop == ([False] * (n - 1) + [True] if stopped else [False] * n)


def test_cut_is_exact_on_literal_generate_output(gpt2, demo_tokenizer, monkeypatch):
    gpt2.train()  # generation must switch to eval mode and come back
    eos, pad = demo_tokenizer.eos_token_id, demo_tokenizer.pad_token_id
    tokens = demo_tokenizer(" good bad", add_special_tokens=False)["input_ids"]
    good, bad = tokens
    # HF pads finished rows with pad; pretend it did not, to check our own cut.
    literal = torch.tensor([[good, eos, bad, eos], [good, bad, good, bad], [eos, good, eos, bad]])
    calls = []

    def fake_generate(input_ids, attention_mask, **kwargs):
        calls.append((gpt2.training, kwargs))
        return torch.cat([input_ids, literal], dim=1)

    monkeypatch.setattr(gpt2, "generate", fake_generate)
    try:
        batch = generate_rollout(gpt2, demo_tokenizer, ["a", "bb", ""])
    finally:
        gpt2.eval()
    assert batch.response_ids.tolist() == [
        [good, eos, pad, pad],
        [good, bad, good, bad],
        [eos, pad, pad, pad],
    ]
    assert batch.response_mask.tolist() == [
        [True, True, False, False],
        [True, True, True, True],
        [True, False, False, False],
    ]
    assert batch.contains_stop.tolist() == [True, False, True]
    assert batch.completions == [" good", " good bad good bad", ""]
    # One call for the batch, in eval mode, pure sampling, KV cache on.
    assert len(calls) == 1
    training, kwargs = calls[0]
    assert training is False
    assert (kwargs["top_k"], kwargs["top_p"], kwargs["use_cache"]) == (0, 1.0, True)
    assert kwargs["eos_token_id"] == [eos] and kwargs["pad_token_id"] == pad


def test_train_mode_restored_per_module(demo_tokenizer):
    model = build_causal_lm(TINY_GPT2, demo_tokenizer).train()
    model.transformer.h[0].eval()  # a frozen block stays in eval mode
    generate_rollout(model, demo_tokenizer, ["hi"], config=SamplingConfig(max_new_tokens=2))
    assert model.training and model.lm_head.training
    assert not model.transformer.h[0].training


def test_seeded_rollouts_repeat_and_leave_global_rng_alone(gpt2, demo_tokenizer, prompts):
    config = SamplingConfig(max_new_tokens=8)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = generate_rollout(gpt2, demo_tokenizer, prompts, config=config, generator_seed=7)
    second = generate_rollout(gpt2, demo_tokenizer, prompts, config=config, generator_seed=7)
    other = generate_rollout(gpt2, demo_tokenizer, prompts, config=config, generator_seed=8)
    assert torch.equal(torch.rand(3), expected_next)  # the global stream did not move
    assert torch.equal(first.response_ids, second.response_ids)
    assert first.completions == second.completions
    assert not torch.equal(first.response_ids, other.response_ids)


def test_greedy_batch_equals_one_at_a_time(policy, demo_tokenizer, prompts):
    config = SamplingConfig(max_new_tokens=8, do_sample=False)
    batch = generate_rollout(policy, demo_tokenizer, prompts, config=config)
    for i, prompt in enumerate(prompts):
        alone = generate_rollout(policy, demo_tokenizer, [prompt], config=config)
        n = int(alone.response_mask.sum())
        assert batch.response_ids[i, :n].tolist() == alone.response_ids[0, :n].tolist()
        assert int(batch.response_mask[i].sum()) == n
        assert batch.completions[i] == alone.completions[0]


def test_query_ids_as_lists_or_padded_tensor(gpt2, demo_tokenizer):
    bos, pad = demo_tokenizer.bos_token_id, demo_tokenizer.pad_token_id
    rows = [[bos, 350, 82, 1556], [bos, 82]]
    config = SamplingConfig(max_new_tokens=4, do_sample=False)
    from_lists = generate_rollout(gpt2, demo_tokenizer, query_ids=rows, config=config)
    right_padded = torch.tensor([[bos, 350, 82, 1556], [bos, 82, pad, pad]])
    mask = right_padded != pad
    from_tensor = generate_rollout(
        gpt2, demo_tokenizer, query_ids=right_padded, query_mask=mask, config=config
    )
    assert from_lists.query_ids.tolist() == [[bos, 350, 82, 1556], [pad, pad, bos, 82]]
    assert torch.equal(from_lists.query_ids, from_tensor.query_ids)
    assert torch.equal(from_lists.response_ids, from_tensor.response_ids)
    assert from_lists.prompts == demo_tokenizer.batch_decode(rows, skip_special_tokens=True)
    with pytest.raises(ValueError, match="exactly one"):
        generate_rollout(gpt2, demo_tokenizer, ["x"], query_ids=rows)


@pytest.mark.parametrize(
    "fields", [{"top_k": 5}, {"top_p": 0.9}, {"min_new_tokens": 2}], ids=["top_k", "top_p", "min"]
)
def test_off_policy_settings_warn(fields):
    with pytest.warns(OffPolicySamplingWarning, match="KL estimate .* biased"):
        SamplingConfig(**fields)


def test_on_policy_settings_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SamplingConfig()
        SamplingConfig(temperature=0.7, max_new_tokens=53)
        SamplingConfig(do_sample=False, top_k=5)  # greedy ignores top_k


def test_invalid_sampling_config():
    with pytest.raises(ConfigError, match="temperature"):
        SamplingConfig(temperature=0.0)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        SamplingConfig(max_new_tokens=0)
    with pytest.raises(ConfigError, match="stop_token_ids"):
        SamplingConfig(stop_token_ids=[])


def test_min_new_tokens_delays_the_stop(gpt2, demo_tokenizer, prompts):
    stops = list(range(0, len(demo_tokenizer), 2))
    with pytest.warns(OffPolicySamplingWarning):
        config = SamplingConfig(max_new_tokens=8, min_new_tokens=4, stop_token_ids=stops)
    batch = generate_rollout(gpt2, demo_tokenizer, prompts, config=config, generator_seed=0)
    assert (batch.response_mask.sum(1) >= 4).all()


def test_respond_to_batch_returns_one_string_per_query(gpt2, demo_tokenizer, prompts):
    out = respond_to_batch(gpt2, demo_tokenizer, prompts, max_new_tokens=5, seed=0, temperature=0.8)
    assert len(out) == len(prompts) and all(isinstance(c, str) for c in out)
    again = respond_to_batch(
        gpt2, demo_tokenizer, prompts, max_new_tokens=5, seed=0, temperature=0.8
    )
    assert out == again


def test_value_head_wrapper_generates_with_its_lm(demo_tokenizer, prompts, value_head_wrapper):
    lm = build_causal_lm(TINY_GPT2, demo_tokenizer)
    wrapper = value_head_wrapper(lm).train()
    config = SamplingConfig(max_new_tokens=5)
    wrapped = generate_rollout(wrapper, demo_tokenizer, prompts, config=config, generator_seed=3)
    assert wrapper.training and wrapper.v_head[0].training  # mode restored
    bare = generate_rollout(lm, demo_tokenizer, prompts, config=config, generator_seed=3)
    assert torch.equal(wrapped.response_ids, bare.response_ids)


def test_groups_share_one_prefill_and_draw_the_same_samples(policy, demo_tokenizer, prompts):
    """GRPO's layout (each prompt G times in a row): one prefill per distinct prompt, the same
    samples, log-probs and values (row-keyed sampling) as prefilling every row."""
    from rlhf_lightning.models import CausalLMWithValueHead
    from rlhf_lightning.rollout import generation

    model = CausalLMWithValueHead(policy)
    grouped = [p for p in prompts for _ in range(3)]  # G = 3
    prefill_rows = []
    real = generation._shared_prefill

    def counting(lm, q_ids, q_mask):
        cache = real(lm, q_ids, q_mask)
        prefill_rows.append(cache.layers[0].keys.shape[0] if cache is not None else None)
        return cache

    runs = []
    for share in (False, True):
        generation_kwargs = {"share_prefill": share, "record_values": True}
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(generation, "_shared_prefill", counting)
            runs.append(
                generate_rollout(
                    model,
                    demo_tokenizer,
                    grouped,
                    config=SamplingConfig(max_new_tokens=10),
                    generator_seed=5,
                    row_keys=torch.arange(len(grouped)),
                    **generation_kwargs,
                )  # fmt: skip
            )
    padded, shared = runs
    assert prefill_rows == [len(grouped)]  # the cache holds every row, computed for 4 prompts
    assert torch.equal(shared.response_ids, padded.response_ids)
    assert shared.completions == padded.completions
    torch.testing.assert_close(shared.policy_logprobs, padded.policy_logprobs, atol=1e-5, rtol=0)
    torch.testing.assert_close(shared.policy_values, padded.policy_values, atol=1e-5, rtol=0)


def test_distinct_prompts_have_no_prefill_to_share(gpt2, demo_tokenizer, prompts):
    from rlhf_lightning.rollout.generation import _shared_prefill
    from rlhf_lightning.rollout.queries import encode_prompts, left_pad

    q_ids, q_mask = left_pad(encode_prompts(demo_tokenizer, prompts), 0, "cpu")
    assert _shared_prefill(gpt2, q_ids, q_mask) is None
    shared = _shared_prefill(gpt2, q_ids.repeat_interleave(2, 0), q_mask.repeat_interleave(2, 0))
    assert shared.layers[0].keys.shape[:1] == (2 * len(prompts),)
    assert shared.get_seq_length() == q_ids.shape[1] - 1


@pytest.mark.parametrize("share_prefill", [False, True])
def test_dropping_finished_rows_draws_generates_samples(
    policy, demo_tokenizer, prompts, share_prefill
):
    """Rows leaving the batch at their stop token: the same responses, log-probs and values as
    ``generate`` running every row to the end, for fewer row-steps of decoding."""
    from rlhf_lightning.models import CausalLMWithValueHead

    model = CausalLMWithValueHead(policy)
    grouped = [p for p in prompts for _ in range(3)]
    # A random model rarely draws EOS: a third of the vocabulary stops, so rows end at
    # different steps (checked below).
    stops = list(range(5, len(demo_tokenizer), 3))
    config = SamplingConfig(max_new_tokens=12, stop_token_ids=stops)
    rows_decoded = []
    hook = policy.register_forward_pre_hook(
        lambda _m, _a, kw: rows_decoded.append(kw["input_ids"].shape[0]), with_kwargs=True
    )
    runs = {}
    try:
        for drop in (False, True):
            rows_decoded.clear()
            runs[drop] = generate_rollout(
                model, demo_tokenizer, grouped, config=config, generator_seed=11,
                row_keys=torch.arange(len(grouped)), record_values=True,
                share_prefill=share_prefill, drop_finished=drop,
            )  # fmt: skip
            runs[drop, "rows"] = sum(rows_decoded)
    finally:
        hook.remove()
    full, dropping = runs[False], runs[True]
    lengths = full.response_mask.sum(1)
    assert lengths.min() < lengths.max()  # rows stop at different steps
    assert torch.equal(dropping.response_ids, full.response_ids)
    assert torch.equal(dropping.response_mask, full.response_mask)
    assert dropping.completions == full.completions
    torch.testing.assert_close(dropping.policy_logprobs, full.policy_logprobs, atol=1e-6, rtol=0)
    torch.testing.assert_close(dropping.policy_values, full.policy_values, atol=1e-6, rtol=0)
    assert runs[True, "rows"] < runs[False, "rows"]
