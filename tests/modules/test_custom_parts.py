"""The documented way to add an algorithm part (docs/algorithms.md): one function plus one config
file, found through Hydra's search path, runs in a real GRPO stage."""

from __future__ import annotations

import sys
import textwrap

import pandas as pd

from rlhf_lightning.api import compose_config
from rlhf_lightning.train import run

ESTIMATOR = '''
from rlhf_lightning.functional import AdvantageInputs, Advantages

CALLS = []


def group_median(inputs: AdvantageInputs) -> Advantages:
    """Each reward minus the median of its group."""
    CALLS.append(inputs.sequence_rewards.shape[0])
    grouped = inputs.sequence_rewards.view(-1, inputs.group_size)
    baseline = grouped.median(dim=1, keepdim=True).values
    return Advantages((grouped - baseline).reshape(-1), None)
'''

CONFIG = """
# @package stage.algorithm.advantage
_target_: my_estimators.group_median
_partial_: true
"""


def test_a_registered_advantage_estimator_runs_in_grpo(tmp_path, monkeypatch):
    (tmp_path / "my_estimators.py").write_text(textwrap.dedent(ESTIMATOR))
    (tmp_path / "my_conf" / "advantage").mkdir(parents=True)
    (tmp_path / "my_conf" / "advantage" / "group_median.yaml").write_text(CONFIG)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = compose_config(
        "grpo",
        [
            "experiment=grpo_smoke",
            "stage.iterations=2",
            "advantage=group_median",
            f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]",
        ],
        run_dir=tmp_path / "run",
    )
    assert cfg.stage.algorithm.advantage._target_ == "my_estimators.group_median"
    run(cfg)
    # 2 iterations of 8 prompts x 4 samples: the estimator saw every rollout
    assert sys.modules["my_estimators"].CALLS == [32, 32]
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv").dropna(subset=["rollout/reward_mean"])
    assert len(metrics) == 2
