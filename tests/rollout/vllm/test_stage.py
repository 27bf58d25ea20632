"""`rollout=vllm` in a real online-RL stage: the engine samples, the trainer's weights reach it
after every optimisation phase (full weights, or the adapter alone with LoRA), the sampler's
log-probs stay close to the trainer's, and every sample row carries its policy version."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from rlhf_lightning.api import compose_config
from rlhf_lightning.train import run

pytestmark = pytest.mark.vllm


@pytest.mark.parametrize(
    ("lora", "importance_cap"),
    [(False, 2.0), (True, None)],
    # importance_cap: the trainer recomputes the old log-probs and weighs them against the
    # engine's; without it the engine's are the old ones and the first minibatch measures the gap
    ids=["full weights, recomputed", "lora adapter, engine log-probs reused"],
)
def test_grpo_samples_with_vllm_and_syncs_every_iteration(
    tmp_path, vllm_venv, lora, importance_cap
):
    overrides = [
        "experiment=grpo_smoke",
        "model=tiny_llama",
        "rollout=vllm",
        "stage.iterations=3",
        "stage.sample_every=1",
        "stage.compare_prompts=0",
        f"stage.algorithm.importance_cap={importance_cap or 'null'}",
        f"stage.rollout.venv={vllm_venv}",
        f"model.lora.enabled={str(lora).lower()}",
    ]
    if lora:
        overrides.append("optim.lr=3e-2")
    run(compose_config("grpo", overrides, run_dir=tmp_path / "run"))
    metrics = pd.read_csv(tmp_path / "run/metrics.csv").dropna(subset=["rollout/reward_mean"])
    assert len(metrics) == 3
    # fp32 engine and trainer: the same distribution up to kernel rounding
    assert metrics["rollout/logprob_gap"].max() < 1e-3, metrics["rollout/logprob_gap"].tolist()
    assert ("train/importance_clipfrac" in metrics) == (importance_cap is not None)
    rows = [json.loads(line) for line in (tmp_path / "run/samples.jsonl").read_text().splitlines()]
    # iteration i samples the policy after i optimisation phases: every sync reached the engine
    assert {(r["step"], r["policy_version"]) for r in rows} == {(0, 0), (1, 1), (2, 2)}
