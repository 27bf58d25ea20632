"""Bounded-staleness asynchronous RL: rollouts generated ahead by a sampler with weights of its
own, at most `max_staleness` policy versions old; 0 is exactly the synchronous run."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from rlhf_lightning.api import compose_config
from rlhf_lightning.errors import ConfigError
from rlhf_lightning.train import run

SMOKE = [
    "experiment=grpo_smoke",
    "stage.iterations=6",
    "stage.sample_every=1",
    "stage.compare_prompts=0",
    "report=false",
]


def _run(tmp_path: Path, name: str, *overrides: str) -> Path:
    run(compose_config("grpo", [*SMOKE, *overrides], run_dir=tmp_path / name))
    return tmp_path / name


def _training_metrics(run_dir: Path) -> pd.DataFrame:
    metrics = pd.read_csv(run_dir / "metrics.csv")
    return metrics[[c for c in metrics.columns if not c.startswith("perf/")]]


def test_no_staleness_is_the_synchronous_run(tmp_path):
    copied = _run(tmp_path, "copy", "stage.rollout.own_copy=true")
    # max_staleness=0 generates every rollout in its own iteration: the very same run
    zero = _run(tmp_path, "zero", "stage.rollout.own_copy=true", "stage.max_staleness=0")
    pd.testing.assert_frame_equal(_training_metrics(copied), _training_metrics(zero))
    # Sampling with a copy of the weights instead of the policy itself: the same numbers up to
    # float rounding (the copy's buffers sit elsewhere in memory, which some kernels notice).
    plain = _run(tmp_path, "plain")
    pd.testing.assert_frame_equal(
        _training_metrics(plain), _training_metrics(copied), check_exact=False, atol=1e-5, rtol=1e-4
    )


def test_one_iteration_ahead_trains_on_rollouts_one_version_old(tmp_path):
    ahead = _run(tmp_path, "ahead", "stage.rollout.own_copy=true", "stage.max_staleness=1")
    rows = [json.loads(line) for line in (ahead / "samples.jsonl").read_text().splitlines()]
    versions = {row["step"]: row["policy_version"] for row in rows}
    # iteration 0 samples version 0; each later one was sampled before the previous update
    assert versions == {0: 0, 1: 0, 2: 1, 3: 2, 4: 3, 5: 4}
    synchronous = _run(tmp_path, "sync", "stage.rollout.own_copy=true")
    rewards = [
        pd.read_csv(d / "metrics.csv")["rollout/reward_mean"].dropna().iloc[:2]
        for d in (ahead, synchronous)
    ]
    assert rewards[0].iloc[0] == rewards[1].iloc[0]  # the same first rollout
    assert rewards[0].iloc[1] != rewards[1].iloc[1]  # then a staler one


def test_staleness_needs_a_sampler_with_its_own_weights(tmp_path):
    with pytest.raises(ConfigError, match="own_copy=true"):
        _run(tmp_path, "refused", "stage.max_staleness=1")
