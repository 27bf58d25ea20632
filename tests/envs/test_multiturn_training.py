"""Training on multi-turn trajectories: the first minibatch's ratio is exactly 1, and the
environment's tokens (attended to, never chosen by the policy) get no gradient."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from rlhf_lightning.api import compose_config
from rlhf_lightning.data.tasks import build_guess_number
from rlhf_lightning.envs import GuessNumber, TurnLimits, play_episodes
from rlhf_lightning.functional import AggregationContext
from rlhf_lightning.models import build_reference
from rlhf_lightning.modules.online import OnlineRLCore, RLAlgorithm
from rlhf_lightning.rollout import HFBackend, SamplingConfig

ROWS = list(build_guess_number()["train"].select(range(4)))
GROUP = 2


@pytest.fixture
def played(demo_tokenizer, turn_ending_policy):
    """Two episodes per game from a policy that ends its turns: several turns, environment
    messages between them."""
    rows = [row for row in ROWS for _ in range(GROUP)]
    out = play_episodes(
        HFBackend(), turn_ending_policy, demo_tokenizer, GuessNumber(), rows,
        SamplingConfig(max_new_tokens=8), TurnLimits(max_turns=4, max_total_tokens=120),
        seed=3, row_keys=torch.arange(len(rows)),
    )  # fmt: skip
    assert (out.turns > 1).any()
    assert (out.batch.response_mask & ~out.batch.action_mask).any()  # environment tokens
    return out


def _core(policy) -> OnlineRLCore:
    cfg = compose_config("grpo", ["experiment=grpo_smoke"])
    algorithm: RLAlgorithm = instantiate(cfg.stage.algorithm, _convert_="all")
    algorithm.group_size = GROUP
    return OnlineRLCore(policy, build_reference(policy, "copy"), algorithm)


def _scores(out) -> torch.Tensor:
    return out.batch.turn_rewards.sum(1)  # what the module scores an episode with


def test_the_first_minibatch_ratio_is_exactly_one_on_multi_turn_data(played, turn_ending_policy):
    core = _core(turn_ending_policy)
    # Without the sampler's log-probs the old log-probs come from the same forward as the
    # loss's: the ratio is 1 bit for bit.
    rollout = played.batch
    rollout.policy_logprobs = None
    exp = core.make_experience(rollout, _scores(played))
    assert torch.equal(exp.response_mask, rollout.action_mask)  # trained: the sampled tokens
    assert torch.equal(exp.sequence_kl, torch.zeros_like(exp.sequence_kl))  # policy == ref
    _, stats = core.minibatch_loss(exp, AggregationContext(1.0, int(exp.loss_mask.sum())))
    assert stats["train/ratio"].item() == 1.0
    assert stats["train/approx_kl"].item() == 0.0 and stats["train/clipfrac"].item() == 0.0


def test_sampled_logprobs_reused_as_old_logprobs_give_a_ratio_of_one(played, turn_ending_policy):
    # The sampler's per-turn log-probs (KV cache, turn by turn) stand for the old policy: the
    # ratio is 1 up to float rounding, on every sampled token of every turn.
    core = _core(turn_ending_policy)
    exp = core.make_experience(played.batch, _scores(played))
    assert torch.equal(exp.old_logprobs, played.batch.policy_logprobs)
    _, stats = core.minibatch_loss(exp, AggregationContext(1.0, int(exp.loss_mask.sum())))
    assert abs(stats["train/ratio"].item() - 1.0) < 1e-5
    assert stats["train/clipfrac"].item() == 0.0


def test_environment_tokens_get_no_gradient(played, turn_ending_policy, monkeypatch):
    core = _core(turn_ending_policy)
    # Episodes of a game scored apart: non-zero group advantages on every sampled token.
    scores = torch.arange(len(played.turns), dtype=torch.float32) % GROUP
    exp = core.make_experience(played.batch, scores)
    assert (exp.advantages != 0).all()
    captured = {}
    score = core._score_policy

    def keep_logprobs(*args, **kwargs):
        scored = score(*args, **kwargs)
        scored.logprobs.retain_grad()
        captured["logprobs"] = scored.logprobs
        return scored

    monkeypatch.setattr(core, "_score_policy", keep_logprobs)
    loss, _ = core.minibatch_loss(exp, AggregationContext(1.0, int(exp.loss_mask.sum())))
    loss.backward()
    grad = captured["logprobs"].grad  # (B, A): d loss / d log pi(token)
    environment = played.batch.response_mask & ~played.batch.action_mask
    assert torch.equal(grad[environment], torch.zeros_like(grad[environment]))
    assert (grad[played.batch.action_mask] != 0).all()
