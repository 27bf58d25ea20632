"""DPO end to end on a tiny model: held-out preference accuracy rises, the reference stays put."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from rlhf_lightning.api import compose_config
from rlhf_lightning.train import run

TINY_DPO = [
    "model=tiny",
    "trainer.max_steps=30",
    "trainer.val_check_interval=10",
    "optim.lr=3e-3",
    "data.val_fraction=0.25",
    "data.batch_size=8",
    "trainer.log_every_n_steps=5",
    "trainer.enable_progress_bar=false",
]


def test_dpo_raises_held_out_preference_accuracy(tmp_path, toy_pairs):
    cfg = compose_config(
        "dpo",
        TINY_DPO,
        run_dir=tmp_path / "dpo",
    )
    summary = run(cfg, dataset=toy_pairs())
    metrics = pd.read_csv(Path(summary["run_dir"]) / "metrics.csv").dropna(subset=["val/accuracy"])
    assert summary["metrics"]["val/accuracy"] >= 0.9
    assert summary["metrics"]["val/rewards_chosen"] > summary["metrics"]["val/rewards_rejected"]
    state = torch.load(
        tmp_path / "dpo/checkpoints/last.ckpt", map_location="cpu", weights_only=False
    )
    ref = next(
        v
        for k, v in state["state_dict"].items()
        if k.startswith("reference.") and k.endswith("wte.weight")
    )
    pol = next(
        v
        for k, v in state["state_dict"].items()
        if k.startswith("policy.") and k.endswith("wte.weight")
    )
    assert not torch.equal(ref, pol)
    assert len(metrics) >= 3


def _tiny_policy_and_pairs(toy_pairs):
    from hydra.utils import instantiate

    from rlhf_lightning.data import PreferenceDataModule
    from rlhf_lightning.models import disable_dropout, load_model_and_tokenizer

    cfg = compose_config("dpo", ["model=tiny"])
    torch.manual_seed(0)
    policy, tokenizer = load_model_and_tokenizer(instantiate(cfg.model, _convert_="all"))
    disable_dropout(policy)
    datamodule = PreferenceDataModule(
        tokenizer, dataset=toy_pairs(40), batch_size=8, val_fraction=0.25, seed=0
    )
    datamodule.setup()
    return policy, datamodule


def test_precomputed_reference_logps_equal_the_live_reference(toy_pairs):
    from rlhf_lightning.models.reference import build_reference, initial_reference
    from rlhf_lightning.modules.dpo import DPOModule, reference_logps

    policy, datamodule = _tiny_policy_and_pairs(toy_pairs)
    live = DPOModule(policy, optimizer=torch.optim.AdamW, reference=build_reference(policy, "copy"))
    live_batches = list(datamodule.val_dataloader())
    live_losses = [live._loss(b).loss for b in live_batches]

    datamodule.add_reference_logps(
        lambda loader: reference_logps(initial_reference(policy, "copy"), loader)
    )
    assert "ref_chosen_logps" in datamodule.train_dataset.column_names
    stored = DPOModule(policy, optimizer=torch.optim.AdamW, reference=None)
    stored_batches = list(datamodule.val_dataloader())
    assert stored_batches[0]["ref_chosen_logps"].shape == (8,)
    for live_loss, batch in zip(live_losses, stored_batches, strict=True):
        # policy == reference here, so every loss is log 2 whichever path scores the reference
        torch.testing.assert_close(stored._loss(batch).loss, live_loss, atol=1e-6, rtol=0)
        torch.testing.assert_close(live_loss, torch.tensor(0.6931472), atol=1e-5, rtol=0)
    # After a step the two paths must still agree: the stored values are the initial policy's.
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.01 * torch.randn_like(p))
    batch = stored_batches[0]
    torch.testing.assert_close(
        stored._loss(batch).loss, live._loss(live_batches[0]).loss, atol=1e-5, rtol=0
    )
    assert abs(stored._loss(batch).loss.detach().item() - 0.6931472) > 1e-4


def test_missing_reference_and_precomputed_logps_is_a_clear_error(toy_pairs):
    from rlhf_lightning.errors import ConfigError
    from rlhf_lightning.modules.dpo import DPOModule

    policy, datamodule = _tiny_policy_and_pairs(toy_pairs)
    module = DPOModule(policy, optimizer=torch.optim.AdamW, reference=None)
    batch = next(iter(datamodule.val_dataloader()))
    with pytest.raises(ConfigError, match="precompute_reference"):
        module._loss(batch)


def test_dpo_stage_with_precomputed_reference_holds_no_reference(tmp_path, toy_pairs):
    cfg = compose_config(
        "dpo",
        [*TINY_DPO, "stage.precompute_reference=true"],
        run_dir=tmp_path / "dpo",
    )
    summary = run(cfg, dataset=toy_pairs())
    assert summary["metrics"]["val/accuracy"] >= 0.9
    state = torch.load(
        tmp_path / "dpo/checkpoints/last.ckpt", map_location="cpu", weights_only=False
    )
    assert not any(k.startswith("reference.") for k in state["state_dict"])
    assert (tmp_path / "dpo/model/config.json").exists()
