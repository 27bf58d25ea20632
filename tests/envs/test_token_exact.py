"""Token-exact multi-turn trajectories: the ids trained are the ids sampled plus the chat
template's tokens for the environment's messages, for several templates, one of which rewrites
earlier turns (drops their <think> blocks)."""

from __future__ import annotations

import pytest
import torch

from rlhf_lightning.data.tasks import build_guess_number
from rlhf_lightning.envs import GuessNumber, ToolArithmetic, TurnLimits, play_episodes
from rlhf_lightning.envs.chat import render, turn_end_ids
from rlhf_lightning.rollout import (
    HFBackend,
    RolloutBatch,
    SamplingConfig,
    left_pad,
    score_tokens,
)

ROWS = list(build_guess_number()["train"].select(range(6)))


def _play(tokenizer, sampler, on_template_rewrite="keep", rows=ROWS, policy=None):
    limits = TurnLimits(max_turns=4, max_total_tokens=400, on_template_rewrite=on_template_rewrite)
    return play_episodes(
        sampler, policy, tokenizer, GuessNumber(), rows, SamplingConfig(max_new_tokens=12), limits,
        seed=0, row_keys=torch.arange(len(rows)),
    )  # fmt: skip


def _sequences(batch) -> list[list[int]]:
    """Each row's real token ids: first prompt, then turns and messages."""
    return [
        batch.query_ids[i][batch.query_mask[i]].tolist()
        + batch.response_ids[i][batch.response_mask[i]].tolist()
        for i in range(len(batch))
    ]


def _check_turns(out, sampler) -> None:
    """Every turn the sampler returned sits in its row's ids exactly, right after the exact ids
    the sampler was given, with its log-probs, and is the only part of the row trained."""
    batch, sequences = out.batch, _sequences(out.batch)
    width = batch.query_ids.shape[1]
    sampled_positions = [set() for _ in sequences]
    for turn, (queries, turns, logprobs) in enumerate(sampler.calls):
        live = [i for i in range(len(sequences)) if out.turns[i] > turn]
        assert len(live) == len(queries)
        for i, query, ids, lps in zip(live, queries, turns, logprobs, strict=True):
            assert sequences[i][: len(query)] == query  # conditioned on the exact history
            assert sequences[i][len(query) : len(query) + len(ids)] == ids  # kept as sampled
            start = len(query) - int(batch.query_mask[i].sum())  # response column of the turn
            columns = range(start, start + len(ids))
            assert batch.action_mask[i, list(columns)].all()
            recorded = batch.policy_logprobs[i, list(columns)].tolist()
            assert recorded == pytest.approx(lps, abs=1e-7)
            sampled_positions[i] |= set(columns)
    for i in range(len(sequences)):
        trained = set(batch.action_mask[i].nonzero().flatten().tolist())
        assert trained == sampled_positions[i]  # environment tokens are never trained
    assert width == batch.context_length


@pytest.mark.parametrize("name", ["chatml", "llama3", "zephyr"])
def test_trained_ids_are_the_sampled_ids_plus_the_templates_message_tokens(
    name, templated, scripted
):
    tokenizer = templated[name]
    sampler = scripted(tokenizer, turn_end_ids(tokenizer)[0])
    out = _play(tokenizer, sampler)
    assert (out.turns > 1).any() and out.counts["template_rewrites"] == 0
    _check_turns(out, sampler)
    # The environment's tokens: what the template writes for the whole conversation, after
    # the sampled turns. Decoded, each row is the template's rendering of its conversation
    # (up to the end of the last turn) ...
    sequences = _sequences(out.batch)
    retokenised = 0
    for i, conversation in enumerate(out.conversations):
        last = max(k for k, m in enumerate(conversation) if m["role"] == "assistant")
        text = tokenizer.decode(sequences[i])
        rendered = render(tokenizer, conversation[: last + 1], False)
        assert rendered.startswith(text), (text, rendered)
        assert rendered[len(text) :].strip() == ""  # only the template's trailing newline left
        # ... and yet not its tokenisation: numbers were sampled digit by digit.
        retokenised += tokenizer(text, add_special_tokens=False)["input_ids"] != sequences[i]
    assert retokenised > 0  # re-tokenising the text would have changed the trained ids


def test_a_template_that_strips_earlier_think_blocks_is_detected_and_kept(templated, scripted):
    tokenizer = templated["think"]
    sampler = scripted(tokenizer, turn_end_ids(tokenizer)[0], think=True)
    out = _play(tokenizer, sampler)
    followed = int(sum(max(int(t) - 1, 0) for t in out.turns))  # turns with a message after
    assert followed > 0 and out.counts["template_rewrites"] == followed
    _check_turns(out, sampler)  # the sampled <think> blocks stay, exactly as sampled
    think = tokenizer.convert_tokens_to_ids("<think>")
    for i, sequence in enumerate(_sequences(out.batch)):
        assert sequence.count(think) == int(out.turns[i])
    assert out.counts["dropped"] == 0


def test_a_template_rewrite_can_drop_the_trajectory_instead(templated, scripted):
    tokenizer = templated["think"]
    sampler = scripted(tokenizer, turn_end_ids(tokenizer)[0], think=True)
    out = _play(tokenizer, sampler, on_template_rewrite="drop")
    rewritten = out.counts["template_rewrites"]
    assert rewritten > 0 and out.counts["dropped"] == rewritten
    assert (out.turns <= 1).all()  # each ends where its first message would have followed
    dropped = ~out.batch.action_mask.any(dim=1)
    assert int(dropped.sum()) == rewritten  # no token of a dropped trajectory is trained


def test_a_real_policy_samples_the_tokens_and_logprobs_that_are_trained(
    demo_tokenizer, turn_ending_policy
):
    """HF sampling through the backend: the log-prob recorded for each sampled token equals the
    policy's log-prob of that token in the assembled trajectory (one forward, the scoring
    path), so the first update's ratio is 1 up to the KV cache's rounding."""
    out = _play(demo_tokenizer, HFBackend(), rows=ROWS * 2, policy=turn_ending_policy)
    batch = out.batch
    assert (out.turns > 1).any()  # environment messages between turns
    assert (batch.response_mask & ~batch.action_mask).any()
    with torch.no_grad():
        scored = score_tokens(
            turn_ending_policy, batch.input_ids, batch.attention_mask, batch.context_length
        ).logprobs
    mask = batch.action_mask
    torch.testing.assert_close(scored[mask], batch.policy_logprobs[mask], atol=2e-5, rtol=0)


class ToolCaller:
    """A backend whose first turn calls the calculator and whose second answers with the
    number, its ids being the tokenizer's own encoding of that text."""

    def __init__(self, tokenizer, stop_id: int) -> None:
        self.tokenizer, self.stop_id = tokenizer, stop_id
        self.calls: list[tuple[list[list[int]], list[list[int]], list[list[float]]]] = []

    def generate(self, policy, tokenizer, prompts, sampling, *, seed, row_keys, **kwargs):
        queries = kwargs["query_ids"]
        call = (
            '<tool_call>{"name": "calculator", "arguments": {"expression": "12 * 34"}}</tool_call>'
        )
        text = call if not self.calls else "The answer is 408."
        ids = [*self.tokenizer(text, add_special_tokens=False)["input_ids"], self.stop_id]
        turns = [list(ids) for _ in queries]
        logprobs = [[-0.5] * len(ids) for _ in queries]
        self.calls.append(([list(q) for q in queries], turns, logprobs))
        n = len(queries)
        q_ids, q_mask = left_pad(queries, 0)
        return RolloutBatch(
            q_ids, q_mask, torch.tensor(turns), torch.ones(n, len(ids), dtype=torch.bool),
            torch.ones(n, dtype=torch.bool), [""] * n, [""] * n,
            policy_logprobs=torch.tensor(logprobs),
        )  # fmt: skip


@pytest.mark.parametrize("name", ["chatml", "llama3"])
def test_a_tool_call_and_its_result_are_token_exact(name, templated):
    tokenizer = templated[name]
    sampler = ToolCaller(tokenizer, turn_end_ids(tokenizer)[0])
    rows = [{"prompt": "What is 12 * 34?", "answer": "408"}] * 2
    limits = TurnLimits(max_turns=3, max_total_tokens=400)
    out = play_episodes(
        sampler, None, tokenizer, ToolArithmetic(), rows, SamplingConfig(max_new_tokens=64),
        limits, seed=0, row_keys=torch.arange(2),
    )  # fmt: skip
    assert out.turns.tolist() == [2, 2] and out.success.all()
    roles = [m["role"] for m in out.conversations[0]]
    assert roles == ["user", "assistant", "tool", "assistant"]
    assert out.conversations[0][2]["content"] == "408"  # the calculator's answer
    _check_turns(out, sampler)  # sampled ids kept; the tool message's tokens never trained
    assert out.batch.turn_rewards.sum(1).tolist() == [1.0, 1.0]
