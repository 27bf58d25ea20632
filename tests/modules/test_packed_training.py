"""Padding-free training (`packing=True`) computes what the padded forward computes.

Every check runs the same work twice, padded and packed, and compares to 1e-6: the scoring
path's log-probs, values, entropies and logits (policy, value-head policy, reference, separate
critic; GPT-2 and Llama), their gradients, the experience built from a rollout, and whole
optimisation passes (losses, each optimizer step's accumulated gradient, the final weights) for
every loss aggregation, under gradient accumulation. The rollout is hand-made with a wide
spread of query and response lengths (1 to the full width), so packing really moves tokens;
its "shared" variant gives rows 2k and 2k+1 the same prompt (GRPO groups of 2), so each pair's
prompt is packed once (``shared_prefix_layout``) and its gradient is that of the two copies.
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification

from rlhf_lightning.functional import (
    KLInLoss,
    KLInReward,
    clipped_token_loss,
    constant_normalizer,
    gae_advantages,
    global_token_mean,
    group_normalized_advantages,
    sequence_mean,
    token_mean,
)
from rlhf_lightning.models import (
    CausalLMWithValueHead,
    ValueModel,
    build_reference,
    disable_dropout,
)
from rlhf_lightning.models.loading import build_causal_lm
from rlhf_lightning.modules.online import OnlineRLCore, RLAlgorithm
from rlhf_lightning.rollout import RolloutBatch, critic_values, score_tokens
from rlhf_lightning.rollout.scoring import _packed_layout

ARCHS = {
    "gpt2": {"type": "gpt2", "n_layer": 2, "n_head": 2, "n_embd": 32, "n_positions": 64},
    "llama": {
        "type": "llama",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 64,
    },
}
TOL = {"atol": 1e-6, "rtol": 1e-6}
Q, A = 7, 9
QUERY_LENGTHS = [7, 3, 1, 5, 7, 2, 4, 6]
RESPONSE_LENGTHS = [9, 1, 4, 0, 6, 9, 2, 5]  # 0: nothing sampled (still a valid row)


PROMPTS = ["distinct", "shared"]


def _rollout(vocab: int, prompts: str = "distinct") -> RolloutBatch:
    g = torch.Generator().manual_seed(0)
    b = len(QUERY_LENGTHS)
    columns = torch.arange(Q)
    query_mask = columns >= Q - torch.tensor(QUERY_LENGTHS)[:, None]  # left-padded
    response_mask = torch.arange(A) < torch.tensor(RESPONSE_LENGTHS)[:, None]  # right-padded
    query_ids = torch.randint(3, vocab, (b, Q), generator=g)
    if prompts == "shared":  # row 2k+1 gets row 2k's prompt
        query_ids[1::2], query_mask[1::2] = query_ids[::2], query_mask[::2]
    response_ids = torch.randint(3, vocab, (b, A), generator=g)
    return RolloutBatch(
        query_ids=torch.where(query_mask, query_ids, 0),
        query_mask=query_mask,
        response_ids=torch.where(response_mask, response_ids, 0),
        response_mask=response_mask,
        contains_stop=torch.tensor(RESPONSE_LENGTHS) < A,
        prompts=[""] * b,
        completions=[""] * b,
    )


@pytest.fixture(scope="module", params=sorted(ARCHS))
def lm(request, demo_tokenizer):
    torch.manual_seed(0)
    return build_causal_lm(ARCHS[request.param], demo_tokenizer).eval()


def _close(a, b, name=""):
    torch.testing.assert_close(a, b, **TOL, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("prompts", PROMPTS)
def test_scoring_packed_equals_padded_for_policy_value_head_and_reference(lm, prompts):
    rollout = _rollout(lm.config.vocab_size, prompts)
    ids, mask, ctx = rollout.input_ids, rollout.attention_mask, rollout.context_length
    m = rollout.response_mask
    head = CausalLMWithValueHead(lm)
    torch.nn.init.normal_(head.v_head.summary.weight, std=1.0)
    for model in (lm, head, build_reference(lm, "copy")):
        kwargs = {"temperature": 0.7, "entropy": True, "keep_logits": True}
        kwargs["values"] = model is head
        padded = score_tokens(model, ids, mask, ctx, **kwargs)
        packed = score_tokens(model, ids, mask, ctx, packed=True, **kwargs)
        name = type(model).__name__
        _close(packed.logprobs[m], padded.logprobs[m], f"{name} logprobs")
        _close(packed.entropy[m], padded.entropy[m], f"{name} entropy")
        _close(packed.logits[m], padded.logits[m], f"{name} logits")
        assert (packed.logprobs[~m] == 0).all()  # nothing scored there
        if model is head:
            _close(packed.values[m], padded.values[m], "values")
    layout = _packed_layout(lm, ids, mask, ctx, None)
    # Shared: the 4 pairs' prompts (7 + 1 + 7 + 4 tokens) once each; distinct: every token.
    expected = mask.sum() - (19 if prompts == "shared" else 0)
    assert layout.packed_index.unique().numel() == expected
    assert (layout.attention is not None) == (prompts == "shared")


@pytest.fixture
def one_thread():
    """One torch thread: a multithreaded reduction splits the sums differently from run to run
    of the suite (torch's thread count is process-wide, so it depends on which tests ran
    before), which moves the fp32 rounding of the gradients compared below by ~1e-6."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("prompts", PROMPTS)
def test_scoring_gradients_packed_equal_padded(lm, prompts, one_thread):
    rollout = _rollout(lm.config.vocab_size, prompts)
    ids, mask, ctx = rollout.input_ids, rollout.attention_mask, rollout.context_length
    weights = torch.randn(ids.shape[0], A, generator=torch.Generator().manual_seed(1))
    weights = torch.where(rollout.response_mask, weights, 0.0)
    grads = []
    for packed in (False, True):
        policy = copy.deepcopy(lm)
        scored = score_tokens(policy, ids, mask, ctx, temperature=0.7, packed=packed)
        (scored.logprobs * weights).sum().backward()
        grads.append({n: p.grad for n, p in policy.named_parameters()})
    # A shared prompt's gradient is its copies' sum, accumulated in another order: fp32 rounding
    # of a sum of many terms (a bias or an embedding row read at many tokens) reaches a few
    # 1e-6 in gradients of up to ~8 here.
    tol = TOL if prompts == "distinct" else {"atol": 1e-5, "rtol": 1e-5}
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, **tol, msg=lambda m, n=name: f"{n}: {m}")


def test_separate_critic_values_packed_equal_padded(demo_tokenizer):
    config = GPT2Config(
        vocab_size=len(demo_tokenizer), n_layer=2, n_head=2, n_embd=32, n_positions=64,
        num_labels=1, pad_token_id=demo_tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    critic = ValueModel(GPT2ForSequenceClassification(config).eval())
    rollout = _rollout(config.vocab_size)
    args = (critic, rollout.input_ids, rollout.attention_mask, rollout.context_length)
    m = rollout.response_mask
    _close(critic_values(*args, packed=True)[m], critic_values(*args)[m], "critic values")


def _algorithm(kind: str, aggregation) -> RLAlgorithm:
    common = {
        "aggregation": aggregation,
        "policy_loss": lambda *a: clipped_token_loss(*a, clip_low=0.2, clip_high=0.2),
        "epochs": 2,
        "num_minibatches": 4,
        "gradient_accumulation_steps": 2,
        "log_entropy": True,
    }
    if kind == "ppo":  # GAE on a shared value head, the KL in the reward, a value loss
        return RLAlgorithm(
            advantage=gae_advantages, kl=KLInReward(), kl_coef=0.05,
            value_loss={"coef": 0.1, "clip": 0.2}, **common,
        )  # fmt: skip
    return RLAlgorithm(  # GRPO: group advantages, the k3 KL in the loss
        advantage=group_normalized_advantages, kl=KLInLoss(estimator="k3"), kl_coef=0.1,
        group_size=2, **common,
    )  # fmt: skip


AGGREGATIONS = {
    "token_mean": token_mean,
    "sequence_mean": sequence_mean,
    "global_token_mean": global_token_mean,
    "constant_normalizer": constant_normalizer,
}


def _train(lm, kind: str, aggregation, packing: bool, prompts: str = "distinct"):
    """Experience and two passes of 4 minibatches (2 per SGD step) from the same start."""
    policy = disable_dropout(copy.deepcopy(lm)).train()  # as OnlineRLModule does
    if kind == "ppo":
        torch.manual_seed(2)
        policy = CausalLMWithValueHead(policy)
    algorithm = _algorithm(kind, aggregation)
    core = OnlineRLCore(
        policy, build_reference(policy, "copy"), algorithm, temperature=0.7,
        max_new_tokens=A, packing=packing,
    )  # fmt: skip
    rollout = _rollout(lm.config.vocab_size, prompts)
    scores = torch.linspace(-1.0, 1.0, len(rollout))
    experience = core.make_experience(rollout, scores)
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.1)
    steps = []

    def step():
        steps.append(
            {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
        )
        optimizer.step()
        optimizer.zero_grad()

    generator = torch.Generator().manual_seed(3)
    stats = core.optimise(experience, lambda loss: loss.backward(), step, generator)
    return experience, stats, steps, dict(policy.named_parameters())


@pytest.mark.parametrize("prompts", PROMPTS)
@pytest.mark.parametrize("kind", ["ppo", "grpo"])
@pytest.mark.parametrize("aggregation", sorted(AGGREGATIONS))
def test_training_packed_equals_padded_under_accumulation(lm, kind, aggregation, prompts):
    padded = _train(lm, kind, AGGREGATIONS[aggregation], packing=False, prompts=prompts)
    packed = _train(lm, kind, AGGREGATIONS[aggregation], packing=True, prompts=prompts)
    m = padded[0].response_mask
    for name in ("old_logprobs", "ref_logprobs", "old_values", "advantages", "returns"):
        a, b = getattr(padded[0], name), getattr(packed[0], name)
        if a is not None:
            _close(b[m] if b.ndim == 2 else b, a[m] if a.ndim == 2 else a, name)
    assert len(padded[1]) == len(packed[1]) == 8  # 2 epochs x 4 minibatches
    for i, (sa, sb) in enumerate(zip(padded[1], packed[1], strict=True)):
        for key in sa:
            if key == "train/value_explained_var":
                # 1 - var(returns - values) / var(returns): a diagnostic that divides rounding
                # differences (~1e-7) by a small variance, so it gets 1e-5.
                torch.testing.assert_close(sb[key], sa[key], atol=1e-5, rtol=1e-5)
            else:
                _close(sb[key], sa[key], f"minibatch {i} {key}")
    assert len(padded[2]) == len(packed[2]) == 4  # accumulated over 2 minibatches each
    for i, (ga, gb) in enumerate(zip(padded[2], packed[2], strict=True)):
        assert ga.keys() == gb.keys()
        for name in ga:
            _close(gb[name], ga[name], f"step {i} grad {name}")
    for name, weight in padded[3].items():
        _close(packed[3][name], weight, f"final {name}")
    moved = [
        n
        for n, w in padded[3].items()
        if not torch.equal(
            w, dict(lm.named_parameters()).get(n.removeprefix("pretrained_model."), w)
        )
    ]
    assert moved  # the passes really trained


def test_a_model_that_lets_packed_sequences_see_each_other_is_refused(lm, monkeypatch):
    from transformers import masking_utils

    from rlhf_lightning.errors import ConfigError
    from rlhf_lightning.rollout import packing_error

    rollout = _rollout(lm.config.vocab_size)
    args = (lm, rollout.input_ids, rollout.attention_mask, rollout.context_length)
    assert packing_error(*args) < 1e-6
    # As if the model ignored the positions: plain causal attention over each packed row.
    monkeypatch.setattr(masking_utils, "find_packed_sequence_indices", lambda positions: None)
    assert packing_error(*args) > 1e-3
    core = OnlineRLCore(
        lm, build_reference(lm, "copy"), _algorithm("grpo", token_mean), packing=True
    )
    with pytest.raises(ConfigError, match="stage.packing=false"):
        core.make_experience(rollout, torch.zeros(len(rollout)))
