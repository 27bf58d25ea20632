"""A reward call that never returns: the reward deadline stops the run with a message; SIGTERM
still saves last.ckpt and names it, and the run resumed from there ends with the weights of a
run that never stopped."""

from __future__ import annotations

import importlib
import signal
import time
from pathlib import Path

import pytest
import torch

from rlhf_lightning.api import compose_config
from rlhf_lightning.errors import ConfigError, RewardError, RunInterrupted
from rlhf_lightning.train import run

_PPO = [
    "experiment=ppo_smoke",
    "reward.function=stuck_reward:score",
    "stage.iterations=4",
    "stage.compare_prompts=0",
    "data.num_prompts=48",
    "stage.algorithm.epochs=2",
    "report=false",
    "export.enabled=false",
    "checkpoint.every_n_steps=1000",
]


@pytest.fixture
def stuck_reward(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    module = importlib.import_module("stuck_reward")
    module.calls, module.STUCK_CALL, module.SEND_SIGTERM = 0, None, True
    module.RELEASE.clear()
    yield module
    module.RELEASE.set()  # lets an abandoned call's thread finish
    module.STUCK_CALL = None


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    return ckpt["state_dict"]


def test_sigterm_during_a_stuck_reward_call_saves_and_the_run_resumes_exactly(
    stuck_reward, tmp_path
):
    run(compose_config("ppo", _PPO, run_dir=tmp_path / "straight"))

    stuck_reward.calls, stuck_reward.STUCK_CALL = 0, 3  # the third iteration gets stuck
    stopped = tmp_path / "stopped"
    start = time.monotonic()
    with pytest.raises(RunInterrupted) as err:
        run(compose_config("ppo", _PPO, run_dir=stopped))
    assert time.monotonic() - start < 45, "the stuck call held the run until it returned"
    ckpt = stopped / "checkpoints" / "last.ckpt"
    assert err.value.exit_code == 128 + signal.SIGTERM
    assert "SIGTERM stopped the run" in str(err.value)
    assert f"ckpt_path={ckpt}" in str(err.value)
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert saved["online_rl"]["iteration"] == 2  # the stuck iteration is done again on resume

    stuck_reward.STUCK_CALL = None
    stuck_reward.RELEASE.set()
    resumed = tmp_path / "resumed"
    summary = run(compose_config("ppo", [*_PPO, f"ckpt_path={ckpt}"], run_dir=resumed))
    assert summary["global_step"] == saved["global_step"] * 2
    expected, got = _weights(tmp_path / "straight"), _weights(resumed)
    assert [k for k in expected if not torch.equal(expected[k], got[k])] == []


def test_a_reward_call_past_the_deadline_stops_the_run_with_a_message(stuck_reward, tmp_path):
    stuck_reward.STUCK_CALL, stuck_reward.SEND_SIGTERM = 2, False
    config = compose_config("ppo", [*_PPO, "stage.reward_timeout_s=2"], run_dir=tmp_path)
    start = time.monotonic()
    with pytest.raises(RewardError) as err:
        run(config)
    assert time.monotonic() - start < 45
    message = str(err.value)
    assert "reward function 'stuck_reward:score': returned no scores within 2 s" in message
    assert "stage.reward_timeout_s" in message


def test_a_reward_deadline_that_is_not_positive_is_refused(stuck_reward, tmp_path):
    config = compose_config("ppo", [*_PPO, "stage.reward_timeout_s=0"], run_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"stage.reward_timeout_s=0.*Fix: .*null"):
        run(config)
