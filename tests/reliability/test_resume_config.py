"""Resuming with other settings: refused when they would make a different run (the optimizer's
settings included: the restored optimizer state would not use them) or when the checkpoint has
already gone as far; allowed where they only change what is reported or how long the run goes
on; the log says what is taken from the checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from rlhf_lightning.api import compose_config
from rlhf_lightning.errors import ConfigError
from rlhf_lightning.train import run

_SFT = [
    "model=tiny",
    "data=tiny",
    "data.max_samples=40",
    "stage.num_samples=0",
    "trainer.max_steps=4",
    "trainer.val_check_interval=100",
    "report=false",
    "export.enabled=false",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """last.ckpt of an SFT run stopped after 2 of its 4 steps."""
    run_dir = tmp_path_factory.mktemp("half")
    run(compose_config("sft", [*_SFT, "interrupt_at=2"], run_dir=run_dir))
    return run_dir / "checkpoints" / "last.ckpt"


def _resume(checkpoint: Path, run_dir: Path, *overrides: str) -> dict:
    config = compose_config("sft", [*_SFT, *overrides, f"ckpt_path={checkpoint}"], run_dir=run_dir)
    return run(config)


def test_the_checkpoint_holds_the_resolved_config_without_secrets(checkpoint):
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)["run_config"]
    assert saved["data"]["batch_size"] == 8 and saved["interrupt_at"] == 2
    assert saved["stage"]["name"] == "sft"


def test_resuming_with_settings_that_make_another_run_is_refused(checkpoint, tmp_path):
    with pytest.raises(ConfigError) as err:
        _resume(checkpoint, tmp_path, "data.batch_size=4", "seed=3")
    message = str(err.value)
    assert f"ckpt_path={checkpoint}" in message
    assert "data.batch_size: 8 in the checkpoint, 4 now" in message
    assert "seed: 0 in the checkpoint, 3 now" in message
    assert "Fix:" in message and "drop ckpt_path" in message
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()  # refused before training


def test_optimizer_settings_that_would_not_apply_are_refused(checkpoint, tmp_path):
    with pytest.raises(ConfigError) as err:
        _resume(checkpoint, tmp_path, "optim.lr=0.5")
    message = str(err.value)
    assert (
        "optim.lr: 0.003 in the checkpoint (restored with the optimizer state), 0.5 now" in message
    )
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_a_run_length_the_checkpoint_has_gone_past_is_refused(checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="trainer.max_steps=1 is below the checkpoint's step 2"):
        _resume(checkpoint, tmp_path, "trainer.max_steps=1")


def test_the_log_says_what_is_taken_from_the_checkpoint(checkpoint, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="rlhf_lightning"):
        summary = _resume(checkpoint, tmp_path)
    assert summary["global_step"] == 4
    assert (
        f"Resuming from {checkpoint} at step 2: the weights, the optimizer state (" in caplog.text
    )
    assert "optim.lr=0.003" in caplog.text and "are taken from the checkpoint" in caplog.text
    resumed = torch.load(tmp_path / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    assert resumed["optimizer_states"][0]["param_groups"][0]["initial_lr"] == 0.003


def test_reporting_and_run_length_may_change(checkpoint, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="rlhf_lightning"):
        summary = _resume(
            checkpoint, tmp_path, "trainer.max_steps=6", "trainer.log_every_n_steps=1"
        )
    assert summary["global_step"] == 6
    assert "trainer.max_steps: 4 in the checkpoint, 6 now" in caplog.text


def test_interrupt_at_zero_is_refused_with_a_message(tmp_path):
    with pytest.raises(ConfigError, match=r"interrupt_at=0: .*Fix: .*interrupt_at="):
        run(compose_config("sft", [*_SFT, "interrupt_at=0"], run_dir=tmp_path))


def test_another_model_or_stage_is_refused_before_loading_the_weights(checkpoint, tmp_path):
    with pytest.raises(ConfigError, match=r"model.arch.n_embd: \d+ in the checkpoint, 48 now"):
        _resume(checkpoint, tmp_path / "model", "model.arch.n_embd=48")
    overrides = [o for o in _SFT if not o.startswith(("data=", "stage."))]
    config = compose_config(
        "dpo", [*overrides, "data=tiny_pairs", f"ckpt_path={checkpoint}"], run_dir=tmp_path
    )
    with pytest.raises(ConfigError, match=r"stage._target_: '.*SFTModule' in the checkpoint"):
        run(config)
