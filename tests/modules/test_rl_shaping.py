"""Score shaping for verifiable rewards in the online-RL path (modules/online/shaping.py): the
overlong and length terms on worked numbers, and DAPO's dynamic sampling in the core."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from rlhf_lightning.api import compose_config
from rlhf_lightning.demo.tokenizer import ensure_demo_tokenizer
from rlhf_lightning.errors import ConfigError
from rlhf_lightning.functional import AggregationContext, sequence_mean
from rlhf_lightning.models import (
    ModelSpec,
    build_reference,
    disable_dropout,
    load_model_and_tokenizer,
)
from rlhf_lightning.modules.online import OnlineRLCore, RLAlgorithm, ScoreShaping
from rlhf_lightning.modules.online.core import trained_rows
from rlhf_lightning.modules.online.shaping import ScoreShaper
from rlhf_lightning.rollout import SamplingConfig, generate_rollout

TINY = {"type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 32, "n_positions": 64}


def test_overlong_and_length_terms_add_to_the_raw_scores():
    shaper = ScoreShaper(
        ScoreShaping(overlong_buffer=4, overlong_penalty=1.0, length_penalty=0.5),
        max_new_tokens=8,
        group_size=2,
    )
    raw = torch.tensor([1.0, 1.0, 0.0, 1.0])
    lengths = torch.tensor([3, 4, 6, 8])
    shaped = shaper(raw, torch.ones(4, dtype=torch.bool), lengths)
    # Overlong: no penalty up to 8 - 4 = 4 tokens, then (4 - len) / 4: [0, 0, -0.5, -1].
    # Length (Kimi): group (3, 4): lambda = 0.5 - (len - 3) / 1 = [0.5, -0.5], both right;
    # group (6, 8): lambda = 0.5 - (len - 6) / 2 = [0.5, -0.5]; row 2 is wrong -> min(0, 0.5) = 0.
    # Weighted by 0.5: [0.25, -0.25, 0, -0.25].
    # Total: [1 + 0 + 0.25, 1 + 0 - 0.25, 0 - 0.5 + 0, 1 - 1 - 0.25].
    assert shaped.tolist() == [1.25, 0.75, -0.5, -0.25]


def test_the_missing_stop_penalty_and_clip_come_after_the_length_terms():
    shaper = ScoreShaper(
        ScoreShaping(overlong_buffer=2, missing_stop_penalty=1.0, clip=1.0), max_new_tokens=4
    )
    stopped = torch.tensor([True, False])
    # row 0: 3 + (2 - 3) / 2 = 2.5 -> clipped to 1; row 1: 0 + (2 - 4) / 2 - 1 = -2 -> -1
    shaped = shaper(torch.tensor([3.0, 0.0]), stopped, torch.tensor([3, 4]))
    assert shaped.tolist() == [1.0, -1.0]


def test_an_overlong_window_beyond_the_budget_is_refused():
    with pytest.raises(ConfigError, match="overlong_buffer=9.*max_new_tokens=8"):
        ScoreShaper(ScoreShaping(overlong_buffer=9), max_new_tokens=8)


def test_dynamic_sampling_needs_groups():
    with pytest.raises(ConfigError, match="dynamic_sampling=true with group_size=1"):
        RLAlgorithm(advantage=None, policy_loss=None, aggregation=None, dynamic_sampling=True)  # type: ignore[arg-type]


@pytest.fixture
def grpo_core():
    def make(**algorithm_args):
        cfg = compose_config("grpo", ["experiment=grpo_smoke"])
        algorithm: RLAlgorithm = instantiate(cfg.stage.algorithm, _convert_="all")
        for key, value in algorithm_args.items():
            setattr(algorithm, key, value)
        lm, tok = load_model_and_tokenizer(
            ModelSpec(tokenizer=str(ensure_demo_tokenizer()), arch=TINY)
        )
        return OnlineRLCore(lm, build_reference(lm, "copy"), algorithm, max_new_tokens=6), tok

    return make


def _rollout(core, tok):
    return generate_rollout(
        core.policy, tok, ["a", "a", "b c", "b c"], config=SamplingConfig(max_new_tokens=6),
        generator_seed=1, row_keys=torch.arange(4),
    )  # fmt: skip


def test_dynamic_sampling_leaves_equal_groups_out_of_the_loss(grpo_core):
    core, tok = grpo_core(dynamic_sampling=True, group_size=2)
    # group 0 (rows 0, 1) scores alike: no signal; group 1 differs
    exp = core.make_experience(_rollout(core, tok), torch.tensor([1.0, 1.0, 0.0, 1.0]))
    assert exp.kept.tolist() == [False, False, True, True]
    assert not exp.loss_mask[:2].any()
    assert torch.equal(exp.loss_mask[2:], exp.response_mask[2:])
    # A dropped row sends no gradient, the KL term included.
    loss, _ = core.minibatch_loss(exp.select(torch.tensor([0, 1])), AggregationContext(1.0, 6))
    assert loss.item() == 0.0


def test_a_minibatch_trains_on_its_kept_rows_or_on_all_when_none_is_kept():
    kept = torch.tensor([False, False, True, True, False, False])
    assert trained_rows(torch.tensor([5, 2, 0, 3]), kept).tolist() == [2, 3]
    # none kept: the rows stay (zero loss), so every process runs the same reductions
    assert trained_rows(torch.tensor([4, 0, 1]), kept).tolist() == [4, 0, 1]


def test_dropped_rows_leave_the_update_as_a_batch_of_only_kept_groups_would(grpo_core):
    # sequence_mean divides by the rows it is given: with the dropped group's rows in the
    # minibatch the gradient would be half of the kept-only batch's.
    core, tok = grpo_core(
        dynamic_sampling=True, group_size=2, aggregation=sequence_mean, num_minibatches=1, epochs=1
    )
    disable_dropout(core.policy)  # the two backward passes must see the same network
    exp = core.make_experience(_rollout(core, tok), torch.tensor([1.0, 1.0, 0.0, 1.0]))
    params = [p for p in core.policy.parameters() if p.requires_grad]

    def gradient(experience):
        for p in params:
            p.grad = None
        core.optimise(experience, lambda loss: loss.backward(), lambda: None)
        return torch.cat([p.grad.flatten() for p in params if p.grad is not None])

    whole, kept_only = gradient(exp), gradient(exp.select(torch.tensor([2, 3])))
    assert kept_only.abs().sum() > 0
    torch.testing.assert_close(whole, kept_only, rtol=1e-5, atol=1e-7)


def test_a_rollout_without_any_informative_group_makes_no_update(grpo_core):
    core, tok = grpo_core(dynamic_sampling=True, group_size=2)
    exp = core.make_experience(_rollout(core, tok), torch.tensor([0.0, 0.0, 1.0, 1.0]))
    assert not exp.kept.any()
    calls = []
    stats = core.optimise(exp, calls.append, lambda: calls.append("step"))
    assert stats == [] and calls == []


def test_without_dynamic_sampling_every_row_is_kept(grpo_core):
    core, tok = grpo_core(group_size=2)
    exp = core.make_experience(_rollout(core, tok), torch.tensor([1.0, 1.0, 0.0, 0.0]))
    assert exp.kept.all() and torch.equal(exp.loss_mask, exp.response_mask)
