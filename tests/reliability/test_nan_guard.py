"""Non-finite losses and gradients: the update is skipped and counted, a streak stops the run,
and weights with NaN never replace a checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from rlhf_lightning.api import compose_config
from rlhf_lightning.checkpoint_io import AtomicCheckpointIO
from rlhf_lightning.errors import NumericalError
from rlhf_lightning.modules.guards import NonFiniteGuard
from rlhf_lightning.modules.online import OnlineRLModule
from rlhf_lightning.modules.sft import SFTModule
from rlhf_lightning.train import run


def _poison_sft_loss(monkeypatch, bad_batches: set[int]) -> None:
    """Make SFT's loss NaN on the given batch indices (as a corrupt batch would)."""
    original = SFTModule.training_step

    def training_step(self, batch, batch_idx):
        loss = original(self, batch, batch_idx)
        return loss * float("nan") if batch_idx in bad_batches else loss

    monkeypatch.setattr(SFTModule, "training_step", training_step)


def test_a_nan_loss_skips_that_step_and_training_goes_on(tmp_path, monkeypatch):
    _poison_sft_loss(monkeypatch, {3})
    cfg = compose_config(
        "sft",
        ["experiment=smoke", "trainer.max_steps=8", "trainer.log_every_n_steps=1"],
        run_dir=tmp_path / "sft",
    )
    summary = run(cfg)
    metrics = pd.read_csv(Path(summary["run_dir"]) / "metrics.csv")
    skipped = metrics["train/skipped_steps"].dropna().to_numpy()
    assert skipped[0] == 0 and skipped[-1] == 1  # exactly the poisoned batch was skipped
    assert summary["global_step"] == 8  # the skipped batch did not count as a step
    state = torch.load(
        tmp_path / "sft/checkpoints/last.ckpt", map_location="cpu", weights_only=False
    )
    assert all(
        torch.isfinite(t).all() for t in state["state_dict"].values() if t.is_floating_point()
    )
    assert state["non_finite_guard"] == {"skipped": 1, "consecutive": 0}


def test_consecutive_non_finite_steps_stop_the_run_with_a_message(tmp_path, monkeypatch):
    _poison_sft_loss(monkeypatch, set(range(2, 100)))
    cfg = compose_config(
        "sft", ["experiment=smoke", "max_consecutive_bad_steps=3"], run_dir=tmp_path / "sft"
    )
    with pytest.raises(NumericalError, match="3 consecutive updates .* Fix: lower optim.lr"):
        run(cfg)


def test_a_nan_reward_skips_the_ppo_iteration_without_touching_the_weights(tmp_path, monkeypatch):
    original = OnlineRLModule.training_step
    seen = {"weights": None}

    def training_step(self, batch, batch_idx):
        if self.iteration == 1:
            seen["weights"] = [p.detach().clone() for p in self.policy.parameters()]
            reward = self.reward
            self.reward = lambda prompts, completions, **cols: torch.full((len(prompts),), math.nan)
            try:
                return original(self, batch, batch_idx)
            finally:
                self.reward = reward
                seen["after"] = [p.detach().clone() for p in self.policy.parameters()]
        return original(self, batch, batch_idx)

    monkeypatch.setattr(OnlineRLModule, "training_step", training_step)
    cfg = compose_config("ppo", ["experiment=ppo_smoke", "stage.iterations=3"], run_dir=tmp_path)
    summary = run(cfg)
    metrics = pd.read_csv(tmp_path / "metrics.csv").dropna(subset=["train/skipped_steps"])
    per_iteration = metrics["train/skipped_steps"].to_numpy()
    assert per_iteration.tolist() == [0.0, 1.0, 1.0]  # iteration 1 dropped, 2 trained again
    assert all(torch.equal(a, b) for a, b in zip(seen["weights"], seen["after"], strict=True))
    assert summary["global_step"] > 0


def test_guard_counts_and_resets():
    guard = NonFiniteGuard(max_consecutive=2)
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.tensor([1.0, float("inf")])
    assert guard.update_is_finite(torch.tensor(1.0), [p]) is False
    p.grad = torch.ones(2)
    assert guard.update_is_finite(torch.tensor(1.0), [p]) is True
    assert (guard.skipped, guard.consecutive) == (1, 0)
    assert guard.update_is_finite(torch.tensor(float("nan")), [p]) is False
    with pytest.raises(NumericalError):
        guard.update_is_finite(torch.tensor(float("nan")), [p])


def test_a_non_finite_model_never_replaces_a_good_checkpoint(tmp_path):
    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 1}, path)
    with pytest.raises(NumericalError, match="previous checkpoint is kept"):
        io.save_checkpoint({"state_dict": {"w": torch.tensor([1.0, math.nan, 0.0])}}, path)
    kept = torch.load(path, map_location="cpu", weights_only=True)
    assert kept["global_step"] == 1 and torch.equal(kept["state_dict"]["w"], torch.ones(3))
