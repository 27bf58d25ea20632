"""Logger wiring: W&B groups for sweeps, never for lone runs; no credentials needed."""

from __future__ import annotations

from omegaconf import OmegaConf

from rlhf_lightning import loggers
from rlhf_lightning.loggers import build_loggers

WANDB = OmegaConf.create(
    {"wandb": {"_target_": "rlhf_lightning.loggers.wandb_logger", "mode": "offline", "group": None}}
)


def _group(logger_list):
    wandb_logger = logger_list[-1]
    return wandb_logger._wandb_init.get("group")


def test_multirun_jobs_share_their_sweep_group(tmp_path, monkeypatch):
    monkeypatch.setattr(loggers, "is_multirun", lambda: True)
    job = tmp_path / "multirun" / "2026-11-24_03-00-00" / "3"
    assert _group(build_loggers(WANDB, job, "ppo-3")) == "2026-11-24_03-00-00"


def test_a_lone_run_has_no_group_and_an_explicit_group_wins(tmp_path, monkeypatch):
    monkeypatch.setattr(loggers, "is_multirun", lambda: False)
    assert _group(build_loggers(WANDB, tmp_path / "run", "sft-run")) is None
    monkeypatch.setattr(loggers, "is_multirun", lambda: True)
    explicit = OmegaConf.merge(WANDB, {"wandb": {"group": "mine"}})
    assert _group(build_loggers(explicit, tmp_path / "a" / "0", "sft-0")) == "mine"


def test_outside_hydra_is_not_a_multirun():
    assert loggers.is_multirun() is False
