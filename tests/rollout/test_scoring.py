"""score_tokens, the one scoring path: positions from the mask, the rollout's temperature, values
aligned, the same numbers for the policy, a reference and DPO's whole sequences."""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch
from torch import nn

from rlhf_lightning.functional import position_ids_from_mask, shifted_token_logprobs
from rlhf_lightning.models import build_reference
from rlhf_lightning.rollout import (
    SamplingConfig,
    critic_values,
    generate_rollout,
    left_pad,
    score_tokens,
    truncate_at_stop,
)

TEMPERATURE = 0.7


def test_position_ids_are_the_exclusive_cumsum():
    # ALGORITHMS.md §5.2: mask [0, 0, 1, 1, 1] -> [0, 0, 0, 1, 2]
    mask = torch.tensor([[False, False, True, True, True], [True, True, True, True, True]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]


def test_left_padded_row_scores_like_the_unpadded_row(policy, demo_tokenizer, prompts):
    config = SamplingConfig(max_new_tokens=6, temperature=TEMPERATURE)
    batch = generate_rollout(policy, demo_tokenizer, prompts, config=config, generator_seed=0)
    with torch.no_grad():
        padded = score_tokens(
            policy,
            batch.input_ids,
            batch.attention_mask,
            batch.context_length,
            temperature=TEMPERATURE,
        ).logprobs
    assert padded.shape == batch.response_ids.shape and padded.dtype == torch.float32
    for i in range(len(prompts)):
        query = batch.query_ids[i][batch.query_mask[i]]  # the real tokens only, no padding
        ids = torch.cat([query, batch.response_ids[i]]).unsqueeze(0)
        mask = torch.cat([torch.ones_like(query, dtype=torch.bool), batch.response_mask[i]])
        with torch.no_grad():
            alone = score_tokens(
                policy, ids, mask.unsqueeze(0), len(query), temperature=TEMPERATURE
            ).logprobs
        n = int(batch.response_mask[i].sum())
        torch.testing.assert_close(padded[i, :n], alone[0, :n], atol=1e-5, rtol=0)


def test_forward_without_position_ids_would_shift_padded_rows(gpt2, demo_tokenizer, prompts):
    # The pitfall the position ids fix (§5.2): same padded batch, default positions 0..T-1.
    batch = generate_rollout(gpt2, demo_tokenizer, prompts, config=SamplingConfig(max_new_tokens=4))
    Q = batch.context_length
    with torch.no_grad():
        ours = score_tokens(gpt2, batch.input_ids, batch.attention_mask, Q).logprobs
        logits = gpt2(input_ids=batch.input_ids, attention_mask=batch.attention_mask.long()).logits
    naive = torch.log_softmax(logits[:, Q - 1 : -1], -1).gather(-1, batch.response_ids[..., None])
    shortest = int(batch.query_mask.sum(1).argmin())
    assert (ours[shortest] - naive[shortest, :, 0]).abs().max() > 1e-3
    torch.testing.assert_close(ours[0], naive[0, :, 0], atol=1e-5, rtol=0)  # unpadded row: same


def test_generate_scores_equal_the_scoring_path_at_temperature(policy, demo_tokenizer, prompts):
    # "ratio == 1 on the first PPO minibatch" (§2 Temperature): generate's scores are already
    # logits / T, so scoring at the same T must reproduce the behaviour log-probs.
    rows = [[demo_tokenizer.bos_token_id, *r] for r in demo_tokenizer(prompts)["input_ids"]]
    query_ids, query_mask = left_pad(rows, demo_tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(0)
        out = policy.generate(
            input_ids=query_ids,
            attention_mask=query_mask.long(),
            do_sample=True,
            temperature=TEMPERATURE,
            top_k=0,
            top_p=1.0,
            max_new_tokens=6,
            pad_token_id=demo_tokenizer.pad_token_id,
            output_scores=True,
            return_dict_in_generate=True,
        )
    Q = query_ids.shape[1]
    response = out.sequences[:, Q:]
    response_mask = truncate_at_stop(response, [demo_tokenizer.eos_token_id], 0).response_mask
    # Oracle: a plain log_softmax of each step's scores, entropy as -sum p log p.
    step_logps = torch.stack([torch.log_softmax(s, dim=-1) for s in out.scores], dim=1)
    expected = step_logps.gather(-1, response[..., None]).squeeze(-1)
    expected_entropy = -(step_logps.exp() * step_logps).sum(-1)

    attention_mask = torch.cat([query_mask, response_mask], dim=1)
    with torch.no_grad():
        scored = score_tokens(
            policy, out.sequences, attention_mask, Q, temperature=TEMPERATURE, entropy=True
        )
        logps, entropy = scored.logprobs, scored.entropy
    torch.testing.assert_close(logps[response_mask], expected[response_mask], atol=1e-5, rtol=0)
    torch.testing.assert_close(
        entropy[response_mask], expected_entropy[response_mask], atol=1e-5, rtol=0
    )
    ratio = torch.exp(logps - expected)[response_mask]
    torch.testing.assert_close(ratio, torch.ones_like(ratio), atol=1e-5, rtol=0)


def test_rollout_logprobs_match_rescoring(policy, demo_tokenizer, prompts):
    config = SamplingConfig(max_new_tokens=6, temperature=TEMPERATURE)
    batch = generate_rollout(
        policy, demo_tokenizer, prompts, config=config, generator_seed=5, return_logprobs=True
    )
    # The sampling distribution is the policy's without the pad token (never a response
    # token): rescore under the same ban.
    pad = demo_tokenizer.pad_token_id
    ban = policy.get_output_embeddings().register_forward_hook(
        lambda _m, _i, logits: logits.index_fill(-1, torch.tensor([pad]), float("-inf"))
    )
    with torch.no_grad():
        rescored = score_tokens(
            policy,
            batch.input_ids,
            batch.attention_mask,
            batch.context_length,
            temperature=TEMPERATURE,
        ).logprobs
    ban.remove()
    mask = batch.response_mask
    torch.testing.assert_close(rescored[mask], batch.logprobs[mask], atol=1e-5, rtol=0)


def test_a_reference_scores_like_the_policy_at_init(gpt2, demo_tokenizer, prompts):
    # The KL penalty is exactly 0 at the start: a frozen copy scores the same tokens identically.
    batch = generate_rollout(gpt2, demo_tokenizer, prompts, config=SamplingConfig(max_new_tokens=4))
    args = (batch.input_ids, batch.attention_mask, batch.context_length)
    with torch.no_grad():
        policy = score_tokens(gpt2, *args, temperature=TEMPERATURE).logprobs
    reference = score_tokens(build_reference(gpt2, "copy"), *args, temperature=TEMPERATURE)
    assert torch.equal(reference.logprobs, policy)


def test_start_one_scores_every_token_of_right_padded_rows(gpt2, demo_tokenizer):
    # DPO's layout: prompt + completion right-padded, every token after the first scored.
    rows = demo_tokenizer(["a b c d", "e f"])["input_ids"]
    width = max(map(len, rows))
    pad = demo_tokenizer.pad_token_id
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[True] * len(r) + [False] * (width - len(r)) for r in rows])
    with torch.no_grad():
        scored = score_tokens(gpt2, ids, mask, start=1).logprobs
        logits = gpt2(input_ids=ids, attention_mask=mask.long()).logits
    expected = shifted_token_logprobs(logits, ids)  # right padding: default positions agree
    real = mask[:, 1:]
    torch.testing.assert_close(scored[real], expected[real], atol=1e-5, rtol=0)


def test_gradients_flow_to_the_policy(gpt2, demo_tokenizer, prompts):
    batch = generate_rollout(gpt2, demo_tokenizer, prompts, config=SamplingConfig(max_new_tokens=3))
    logps = score_tokens(gpt2, batch.input_ids, batch.attention_mask, batch.context_length).logprobs
    logps[batch.response_mask].sum().backward()
    grad = gpt2.lm_head.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    gpt2.zero_grad(set_to_none=True)


class Output(NamedTuple):
    logits: torch.Tensor
    values: torch.Tensor


class TokenTaggedValues(nn.Module):
    """Value "head" that returns each position's input id: shows which position a value is from."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.pretrained_model = lm

    def forward(self, input_ids, attention_mask, position_ids=None, logits_to_keep=0):
        logits = self.pretrained_model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
        ).logits
        return Output(logits, input_ids.float())


def test_values_are_read_at_the_state_before_each_response_token(gpt2, demo_tokenizer, prompts):
    batch = generate_rollout(gpt2, demo_tokenizer, prompts, config=SamplingConfig(max_new_tokens=4))
    Q = batch.context_length
    with torch.no_grad():
        scores = score_tokens(
            TokenTaggedValues(gpt2),
            batch.input_ids,
            batch.attention_mask,
            Q,
            values=True,
            entropy=True,
        )
        bare = score_tokens(gpt2, batch.input_ids, batch.attention_mask, Q).logprobs
    # Value for response token j comes from position Q-1+j (§1.2 step 3): the last query token,
    # then response tokens 0..A-2.
    previous = torch.cat([batch.query_ids[:, -1:], batch.response_ids[:, :-1]], dim=1)
    assert torch.equal(scores.values, previous.float())
    assert scores.values.dtype == torch.float32
    torch.testing.assert_close(scores.logprobs, bare, atol=0, rtol=0)
    assert scores.entropy is not None and scores.entropy.shape == bare.shape


def test_value_head_wrapper_values_and_hf_output_without_values(
    gpt2, demo_tokenizer, prompts, value_head_wrapper
):
    wrapper = value_head_wrapper(gpt2).eval()
    batch = generate_rollout(
        wrapper, demo_tokenizer, prompts, config=SamplingConfig(max_new_tokens=3)
    )
    args = (batch.input_ids, batch.attention_mask, batch.context_length)
    with torch.no_grad():
        scores = score_tokens(wrapper, *args, values=True)
        assert scores.values.shape == batch.response_ids.shape and scores.entropy is None
        with pytest.raises(TypeError, match="values"):
            score_tokens(gpt2, *args, values=True)  # an HF output has no value head


class TaggedCritic(nn.Module):
    """A separate critic returning a bare (B, T) tensor: each position's input id."""

    def forward(self, input_ids, attention_mask, position_ids=None):
        return input_ids.float()


def test_separate_critic_values_use_the_same_alignment(gpt2, demo_tokenizer, prompts):
    batch = generate_rollout(gpt2, demo_tokenizer, prompts, config=SamplingConfig(max_new_tokens=4))
    values = critic_values(
        TaggedCritic(), batch.input_ids, batch.attention_mask, batch.context_length
    )
    previous = torch.cat([batch.query_ids[:, -1:], batch.response_ids[:, :-1]], dim=1)
    assert torch.equal(values, previous.float())


@pytest.mark.parametrize("packed", [False, True])
def test_only_runs_the_lm_head_at_the_chosen_tokens(gpt2, demo_tokenizer, prompts, packed):
    # A multi-turn episode scores the policy's tokens, not the environment's between them:
    # `only` picks them, the LM head sees those positions alone, the rest come back 0.
    batch = generate_rollout(gpt2, demo_tokenizer, prompts, config=SamplingConfig(max_new_tokens=5))
    args = (batch.input_ids, batch.attention_mask, batch.context_length)
    only = batch.response_mask.clone()
    only[:, 1::2] = False  # every other response token, as if the environment's
    rows = []
    hook = gpt2.lm_head.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[:-1].numel()))
    with torch.no_grad():
        full = score_tokens(gpt2, *args, temperature=TEMPERATURE, entropy=True, keep_logits=True)
        rows.clear()
        part = score_tokens(
            gpt2, *args, temperature=TEMPERATURE, entropy=True, keep_logits=True,
            packed=packed, only=only,
        )  # fmt: skip
    hook.remove()
    assert rows == [int(only.sum())] and 0 < rows[0] < int(batch.response_mask.sum())
    for name in ("logprobs", "entropy", "logits"):
        got, want = getattr(part, name), getattr(full, name)
        assert got.shape == want.shape, name
        assert not got[~only].any(), name
        torch.testing.assert_close(got[only], want[only], atol=1e-5, rtol=0)
    # A model that ignores logits_to_keep and returns every position's logits: the same.
    tagged = score_tokens(
        TokenTaggedValues(gpt2), *args, temperature=TEMPERATURE, values=True, only=only
    )
    torch.testing.assert_close(tagged.logprobs, part.logprobs, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="only"):
        score_tokens(gpt2, *args, only=only[:, 1:])
