"""The online-RL core's contracts: the loss mask of never-stopped responses, one KL estimate in
both `rollout/kl` and samples.jsonl, and a saved config that is exactly the one that ran."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from rlhf_lightning.api import compose_config
from rlhf_lightning.demo.tokenizer import ensure_demo_tokenizer
from rlhf_lightning.functional import AggregationContext
from rlhf_lightning.models import ModelSpec, build_reference, load_model_and_tokenizer
from rlhf_lightning.modules.online import OnlineRLCore, RLAlgorithm
from rlhf_lightning.modules.online.records import extra_metrics, iteration_metrics
from rlhf_lightning.rollout import SamplingConfig, generate_rollout
from rlhf_lightning.rundir import redact_secrets
from rlhf_lightning.train import run

TINY = {"type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 32, "n_positions": 64}


@pytest.fixture
def grpo_core():
    def make(**algorithm_args):
        from hydra.utils import instantiate

        cfg = compose_config("grpo", ["experiment=grpo_smoke"])
        algorithm: RLAlgorithm = instantiate(cfg.stage.algorithm, _convert_="all")
        for key, value in algorithm_args.items():
            setattr(algorithm, key, value)
        lm, tok = load_model_and_tokenizer(
            ModelSpec(tokenizer=str(ensure_demo_tokenizer()), arch=TINY)
        )
        return OnlineRLCore(lm, build_reference(lm, "copy"), algorithm), tok

    return make


def test_mask_truncated_leaves_never_stopped_responses_out_of_the_loss(grpo_core):
    core, tok = grpo_core(mask_truncated=True, group_size=2)
    rollout = generate_rollout(
        core.policy, tok, ["a", "a", "b c", "b c"], config=SamplingConfig(max_new_tokens=6),
        generator_seed=1, row_keys=torch.arange(4),
    )  # fmt: skip
    # make row 1 a response that never stopped, whatever was sampled
    rollout.contains_stop[:] = torch.tensor([True, False, True, True])
    exp = core.make_experience(rollout, torch.tensor([1.0, 0.0, 0.5, -0.5]))
    assert not exp.loss_mask[1].any()
    for row in (0, 2, 3):
        assert torch.equal(exp.loss_mask[row], exp.response_mask[row])
    # the masked row sends no gradient: its loss is 0 whatever its advantage
    loss, _ = core.minibatch_loss(exp.select(torch.tensor([1])), AggregationContext(1.0, 6))
    assert loss.item() == 0.0


def test_rollout_kl_and_the_samples_report_the_same_estimate(tmp_path):
    # k3 in the reward; both the metric and the sample rows must still be the k1 sequence KL
    cfg = compose_config(
        "ppo",
        [
            "experiment=ppo_smoke",
            "stage.iterations=3",
            "stage.sample_every=1",
            "stage.compare_prompts=0",
            "data.batch_size=8",
            "stage.algorithm.kl.estimator=k3",
        ],
        run_dir=tmp_path / "ppo",
    )
    run(cfg)
    metrics = pd.read_csv(tmp_path / "ppo/metrics.csv").dropna(subset=["rollout/kl"])
    rows = [json.loads(line) for line in (tmp_path / "ppo/samples.jsonl").read_text().splitlines()]
    for step in (1, 2):  # every row of the batch is a sample row (8 rows, batch of 8)
        kls = [r["kl"] for r in rows if r["step"] == step]
        assert len(kls) == 8
        assert sum(kls) / 8 == pytest.approx(metrics["rollout/kl"].iloc[step], abs=1e-5)


def test_saved_config_is_exactly_the_config_that_ran(tmp_path):
    cfg = compose_config("ppo", ["experiment=ppo_smoke", "stage.iterations=1"], run_dir=tmp_path)
    expected = redact_secrets(OmegaConf.to_container(cfg, resolve=True))
    run(cfg)
    saved = yaml.safe_load((Path(tmp_path) / ".hydra/config.yaml").read_text())
    assert saved == expected
    assert saved["trainer"]["max_steps"] == -1  # declared by the stage config, not edited in
    assert OmegaConf.to_container(cfg, resolve=True) == OmegaConf.to_container(
        compose_config("ppo", ["experiment=ppo_smoke", "stage.iterations=1"], run_dir=tmp_path),
        resolve=True,
    )  # running did not change the config object either


def _engine_rollout(core, tok, shift: float):
    """A rollout whose sampler ("engine") log-probs sit `shift` nats above the policy's on every
    response token, handed on as the policy's too (what VLLMRollout's reuse_logprobs does)."""
    rollout = generate_rollout(
        core.policy, tok, ["a", "a", "b c", "b c"], config=SamplingConfig(max_new_tokens=6),
        generator_seed=1, row_keys=torch.arange(4),
    )  # fmt: skip
    engine = torch.where(rollout.response_mask, rollout.policy_logprobs + shift, 0.0)
    return dataclasses.replace(rollout, logprobs=engine, policy_logprobs=engine)


def test_engine_logprobs_as_old_logprobs_skip_the_forward_and_the_first_minibatch_measures_gap(
    grpo_core,
):
    core, tok = grpo_core(group_size=2, num_minibatches=2, epochs=2)
    core.policy.eval()  # no dropout: every forward computes the sampling function
    rollout = _engine_rollout(core, tok, shift=0.01)
    scores = torch.tensor([1.0, 0.0, 0.5, -0.5])
    calls = []
    handle = core.policy.register_forward_hook(lambda *_: calls.append(1))
    exp = core.make_experience(rollout, scores)
    handle.remove()
    assert calls == [] and exp.old_from_sampler  # no recomputing forward
    assert torch.equal(exp.old_logprobs, rollout.logprobs)
    optimizer = torch.optim.SGD(core.policy.parameters(), lr=0.1)
    stats = core.optimise(
        exp, torch.Tensor.backward, optimizer.step, torch.Generator().manual_seed(0)
    )
    gaps = [float(s["rollout/logprob_gap"]) for s in stats]
    # the first minibatch's forward is still the sampling policy's: the gap is the shift
    assert gaps[0] == pytest.approx(0.01, abs=1e-4)
    assert len(gaps) == 4 and all(math.isnan(g) for g in gaps[1:])
    metrics = iteration_metrics(rollout, scores, stats, torch.tensor(0.0), 0.1, 1.0)
    assert float(metrics["rollout/logprob_gap"]) == pytest.approx(gaps[0])
    assert "rollout/logprob_gap" not in extra_metrics(exp, scores, None, {})


def test_importance_cap_recomputes_the_old_logprobs_against_the_engine(grpo_core):
    core, tok = grpo_core(group_size=2, num_minibatches=2, importance_cap=2.0)
    core.policy.eval()
    rollout = _engine_rollout(core, tok, shift=0.01)
    scores = torch.tensor([1.0, 0.0, 0.5, -0.5])
    exp = core.make_experience(rollout, scores)
    assert not exp.old_from_sampler
    # recomputed: the trainer's own, 0.01 below the engine's on every response token
    gap = exp.sampler_logprobs - exp.old_logprobs
    assert torch.allclose(
        gap[exp.response_mask], torch.full_like(gap[exp.response_mask], 0.01), atol=1e-4
    )
    assert float(extra_metrics(exp, scores, None, {})["rollout/logprob_gap"]) == pytest.approx(
        0.01, abs=1e-4
    )
    stats = core.optimise(exp, torch.Tensor.backward, lambda: None)
    assert "rollout/logprob_gap" not in stats[0] and "train/importance_clipfrac" in stats[0]
