"""A tiny RL loop: sample, score through the one reward call, one REINFORCE step, weights move."""

from __future__ import annotations

import pytest
import torch

from rlhf_lightning.functional import sequence_logprobs, shifted_token_logprobs
from rlhf_lightning.models import build_causal_lm
from rlhf_lightning.rewards import CallableReward, HTTPReward, ModelReward, WeightedReward
from rlhf_lightning.rollout import sample_completions

TINY_GPT2 = {"type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 32, "n_positions": 64}
PROMPTS = ["The movie was", "Today I feel", "My phone is", "Honestly,"]
REFERENCES = ["good", "happy", "new", "fine"]


def char_count(prompts, completions):
    return [len(c) / 10 for c in completions]


def completion_logprobs(policy, tokenizer, prompts, completions):
    """Sum of log p(completion EOS | BOS prompt) per row. Shape (B,)."""
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    rows, targets = [], []
    for prompt, completion in zip(prompts, completions, strict=True):
        prompt_ids = [bos, *tokenizer(prompt, add_special_tokens=False)["input_ids"]]
        completion_ids = [*tokenizer(completion, add_special_tokens=False)["input_ids"], eos]
        rows.append(prompt_ids + completion_ids)
        targets.append([False] * len(prompt_ids) + [True] * len(completion_ids))
    width = max(len(r) for r in rows)
    input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])  # (B, T)
    attention_mask = torch.tensor([[True] * len(r) + [False] * (width - len(r)) for r in rows])
    completion_mask = torch.tensor([t + [False] * (width - len(t)) for t in targets])[:, 1:]
    logits = policy(input_ids=input_ids, attention_mask=attention_mask).logits  # (B, T, V)
    token_logps = shifted_token_logprobs(logits, input_ids)  # (B, T-1)
    return sequence_logprobs(token_logps, completion_mask)


@pytest.mark.parametrize("kind", ["callable", "http", "model", "mix"])
def test_one_reinforce_step_per_reward_source(
    kind, demo_tokenizer, reward_server, gpt2_reward_model
):
    sources = {
        "callable": lambda: CallableReward(char_count),
        "http": lambda: HTTPReward(reward_server.url, timeout=2.0, retries=0),
        "model": lambda: ModelReward(gpt2_reward_model(seed=1), demo_tokenizer, batch_size=2),
        "mix": lambda: WeightedReward(
            {
                "chars": CallableReward(char_count),
                "sentiment": CallableReward("rlhf_lightning.rewards.examples:positive_words"),
            },
            {"chars": 1.0, "sentiment": 0.5},
        ),
    }
    source = sources[kind]()
    policy = build_causal_lm(TINY_GPT2, demo_tokenizer, seed=0)
    before = {name: p.detach().clone() for name, p in policy.named_parameters()}
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.1)

    completions = sample_completions(policy, demo_tokenizer, PROMPTS, max_new_tokens=8, seed=0)
    rewards = source(PROMPTS, completions, reference=REFERENCES)  # the same call for every source
    assert rewards.shape == (4,) and rewards.dtype == torch.float32
    assert rewards.std() > 0  # otherwise the advantages below would all be 0

    policy.train()
    advantages = rewards - rewards.mean()  # (B,)
    loss = -(advantages * completion_logprobs(policy, demo_tokenizer, PROMPTS, completions)).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

    changed = [n for n, p in policy.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert changed, f"{kind}: the REINFORCE step left every weight unchanged"
    if kind == "mix":
        assert set(source.last_components) == {"chars", "sentiment"}
