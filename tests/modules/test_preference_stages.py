"""KTO, ORPO, SimPO and online DPO end to end on a tiny model: the held-out measure rises."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from rlhf_lightning.api import compose_config
from rlhf_lightning.train import run

TINY = [
    "model=tiny",
    "trainer.max_steps=30",
    "trainer.val_check_interval=10",
    "optim.lr=3e-3",
    "data.val_fraction=0.25",
    "trainer.log_every_n_steps=5",
    "trainer.enable_progress_bar=false",
]


def _validation(run_dir: Path, metric: str) -> list[float]:
    """The metric at each validation, step 0 (before training) first."""
    metrics = pd.read_csv(run_dir / "metrics.csv").dropna(subset=[metric])
    return metrics.sort_values("step")[metric].tolist()


def _state(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    return ckpt["state_dict"]


def _embedding(state: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
    return next(v for k, v in state.items() if k.startswith(prefix) and k.endswith("wte.weight"))


@pytest.mark.parametrize(
    ("stage", "metric", "extra"),
    [
        # pairs converted to rows: 16 rows a batch = 8 pairs, as the others
        ("kto", "val/separation", ["data.batch_size=16"]),
        ("orpo", "val/accuracy", ["data.batch_size=8"]),
        ("simpo", "val/accuracy", ["data.batch_size=8"]),
    ],
)
def test_offline_stage_raises_its_held_out_measure(stage, metric, extra, tmp_path, toy_pairs):
    summary = run(compose_config(stage, [*TINY, *extra], run_dir=tmp_path), dataset=toy_pairs())
    values = _validation(tmp_path, metric)
    assert len(values) >= 3  # step 0, then every 10 steps
    assert values[0] == pytest.approx(0.5, abs=0.1)  # the untrained policy cannot tell them apart
    assert values[-1] >= values[0] + 0.10 and values[-1] >= 0.9, values
    assert summary["metrics"][metric] == values[-1]
    state = _state(tmp_path)
    if stage == "kto":
        # the reference stays put while the policy moves; desirable rewards end above undesirable
        assert not torch.equal(_embedding(state, "reference."), _embedding(state, "policy."))
        assert summary["metrics"]["val/margin"] > 0 and summary["metrics"]["val/kl"] >= 0
    else:
        assert not any(k.startswith("reference.") for k in state)  # reference-free
    assert (tmp_path / "model/config.json").is_file()


def test_kto_with_precomputed_reference_matches_the_live_reference(tmp_path, toy_pairs):
    overrides = [*TINY, "data.batch_size=16", "trainer.max_steps=6", "trainer.val_check_interval=3"]
    live = run(compose_config("kto", overrides, run_dir=tmp_path / "live"), dataset=toy_pairs())
    stored = run(
        compose_config(
            "kto", [*overrides, "stage.precompute_reference=true"], run_dir=tmp_path / "stored"
        ),
        dataset=toy_pairs(),
    )
    assert not any(k.startswith("reference.") for k in _state(tmp_path / "stored"))
    for name in ("val/loss", "val/separation", "val/kl", "train/loss"):
        assert stored["metrics"][name] == pytest.approx(live["metrics"][name], abs=1e-4), name


def test_online_dpo_raises_a_toy_reward(tmp_path):
    summary = run(compose_config("online_dpo", ["experiment=online_dpo_smoke"], run_dir=tmp_path))
    metrics = pd.read_csv(tmp_path / "metrics.csv").dropna(subset=["rollout/reward_mean"])
    reward = metrics["rollout/reward_mean"].to_numpy()
    assert len(reward) == 40 and summary["global_step"] == 40  # one DPO step per iteration
    assert reward[-5:].mean() > reward[:5].mean() + 0.05, reward
    # first iteration: policy == reference, so the loss is log 2 and the KL 0
    assert metrics["train/loss"].iloc[0] == pytest.approx(0.6931472, abs=1e-5)
    assert abs(metrics["rollout/kl"].iloc[0]) < 1e-5
    assert (metrics["train/score_margin"] >= 0).all()  # the chosen answer never scores lower
    assert metrics["kl_coef"].iloc[0] == pytest.approx(0.1)  # β
    rows = (tmp_path / "samples.jsonl").read_text().splitlines()
    assert any('"ref_completion"' in row for row in rows)  # the before/after comparison
