"""Credentials used by a run never land in its run directory or its tracker config."""

from __future__ import annotations

import os
import subprocess
import sys

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


SECRETS = {
    "command line": "cli-secret-1937",
    "header": "hdr-secret-5512",
    "URL query": "url-secret-7730",
    "oc.env": "env-secret-4821",
}


def test_secrets_through_every_route_stay_off_disk_and_out_of_the_output(tmp_path):
    """A CLI run given a secret by each route: no file of its run directory (Hydra's own
    copies of the command line, the config, the checkpoint, TensorBoard's hparams, the
    report) and no line it prints holds one."""
    run_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "rlhf_lightning", "experiment=smoke", "trainer.max_steps=2",
        "logger=tensorboard",
        f"+api_token={SECRETS['command line']}",
        f"+headers.Authorization='Bearer {SECRETS['header']}'",
        f"+scorer_url='http://scorer.local/score?api_key={SECRETS['URL query']}&v=2'",
        "+hf_token=${oc.env:RUN_SECRET}",
        f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    env = {**os.environ, "RUN_SECRET": SECRETS["oc.env"], "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run_dir / "tensorboard" / "hparams.yaml").is_file()
    assert (run_dir / ".hydra" / "overrides.yaml").is_file()
    leaks = [
        (route, str(path.relative_to(run_dir)))
        for path in run_dir.rglob("*")
        if path.is_file()
        for route, secret in SECRETS.items()
        if secret.encode() in path.read_bytes()
    ]
    leaks += [(route, "output") for route, s in SECRETS.items() if s in done.stdout + done.stderr]
    assert leaks == []
    config = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "score?api_key=***&v=2" in config  # the URL stays readable, its secret does not
