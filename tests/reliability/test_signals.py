"""A run stopped by SIGTERM saves a checkpoint and says how to resume; one killed by SIGKILL
resumes from its last periodic checkpoint; both then finish."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

# Long enough that the run is still training whenever the signal arrives.
LONG_RUN = [
    "experiment=smoke",
    "trainer.max_steps=100000",
    "trainer.val_check_interval=1000",
    "trainer.limit_val_batches=1",
]


def _cli(run_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "rlhf_lightning", *overrides, f"hydra.run.dir={run_dir}"]


def _wait_for(condition, process: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "the run ended before the signal could be sent"
        assert time.monotonic() < deadline, "the run did not get going in time"
        time.sleep(0.2)


def _saved_step(ckpt: Path) -> int:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]


def _resume_to(run_dir: Path, ckpt: Path, steps: int) -> dict:
    done = subprocess.run(
        _cli(run_dir, *LONG_RUN, f"trainer.max_steps={steps}", f"ckpt_path={ckpt}"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((run_dir / "metrics.json").read_text())


def _signal_mid_run(run_dir: Path, sig: signal.Signals) -> tuple[subprocess.Popen, str, int]:
    """Start a long run, send `sig` once fit is under way; (process, stderr, step saved before)."""
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    process = subprocess.Popen(
        _cli(run_dir, *LONG_RUN, "checkpoint.every_n_steps=3"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    # A periodic checkpoint means fit is under way (and its signal handling installed).
    _wait_for(ckpt.exists, process)
    saved_before = _saved_step(ckpt)
    time.sleep(2)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=300)
    return process, stderr, saved_before


def test_sigterm_saves_a_checkpoint_and_the_run_resumes_to_the_end(tmp_path):
    run_dir = tmp_path / "run"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    process, stderr, _ = _signal_mid_run(run_dir, signal.SIGTERM)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "SIGTERM stopped the run at step" in stderr and f"ckpt_path={ckpt}" in stderr
    stopped_at = _saved_step(ckpt)
    assert stopped_at > 0
    assert not (run_dir / "model").exists()  # an interrupted run is not passed off as a result

    summary = _resume_to(run_dir, ckpt, stopped_at + 6)
    assert summary["global_step"] == stopped_at + 6
    assert (run_dir / "model" / "config.json").is_file()


def test_sigkill_mid_run_resumes_from_the_last_periodic_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    process = subprocess.Popen(
        _cli(run_dir, *LONG_RUN, "checkpoint.every_n_steps=5"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for(ckpt.exists, process)
    time.sleep(2)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    saved = _saved_step(ckpt)  # loads: the kill never leaves a torn checkpoint behind
    assert saved > 0 and saved % 5 == 0

    summary = _resume_to(run_dir, ckpt, saved + 6)
    assert summary["global_step"] == saved + 6


def test_ctrl_c_saves_a_checkpoint_and_names_it(tmp_path):
    run_dir = tmp_path / "run"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    process, stderr, first_saved = _signal_mid_run(run_dir, signal.SIGINT)
    assert process.returncode == 128 + signal.SIGINT, stderr[-3000:]
    assert "SIGINT stopped the run at step" in stderr and f"ckpt_path={ckpt}" in stderr
    assert _saved_step(ckpt) >= first_saved  # saved on the way out, never older than before
    assert not (run_dir / "model").exists()
