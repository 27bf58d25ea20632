"""Credentials used by a run never land in its run directory or its tracker config."""

from __future__ import annotations

import torch

from rlhf_lightning.api import compose_config
from rlhf_lightning.rundir import redact_secrets
from rlhf_lightning.train import run


def test_redaction_hits_credentials_only():
    config = {
        "reward": {"url": "http://x", "headers": {"Authorization": "Bearer s3cret", "X-Id": "7"}},
        "logger": {"wandb": {"api_key": "k3y", "project": "p"}},
        "stage": {
            "sampling": {"max_new_tokens": 24},
            "token": "t0k",
            "hub_password": "pw",
            "hf_token": "h",
        },
        "tokenizer": {"pad_token_id": 0, "bos_token": "<s>"},
        "list": [{"secret": "x"}, 3],
    }
    redacted = redact_secrets(config)
    assert redacted["reward"]["headers"] == {"Authorization": "***", "X-Id": "***"}
    assert redacted["reward"]["url"] == "http://x"
    assert redacted["logger"]["wandb"] == {"api_key": "***", "project": "p"}
    assert redacted["stage"] == {
        "sampling": {"max_new_tokens": 24},
        "token": "***",
        "hub_password": "***",
        "hf_token": "***",
    }
    assert redacted["tokenizer"] == {"pad_token_id": 0, "bos_token": "<s>"}
    assert redacted["list"] == [{"secret": "***"}, 3]
    assert config["reward"]["headers"]["Authorization"] == "Bearer s3cret"  # input untouched


def test_an_env_secret_is_used_but_not_saved(tmp_path, monkeypatch):
    monkeypatch.setenv("REWARD_API_TOKEN", "tok-12345-secret")
    cfg = compose_config(
        "ppo",
        [
            "experiment=ppo_smoke",
            "stage.iterations=1",
            # A root key: stage.* keys are the module's arguments.
            "+api_token=${oc.env:REWARD_API_TOKEN}",
        ],
        run_dir=tmp_path,
    )
    assert cfg.api_token == "tok-12345-secret"  # the run itself sees the value
    run(cfg)
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix in {".yaml", ".json", ".jsonl", ".csv", ".log", ".html"}:
            assert "tok-12345-secret" not in path.read_text(errors="replace"), path
    assert "api_token: '***'" in (tmp_path / ".hydra" / "config.yaml").read_text()
    # The checkpoint keeps the run's config for resuming: redacted too.
    ckpt = torch.load(tmp_path / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["run_config"]["api_token"] == "***"
