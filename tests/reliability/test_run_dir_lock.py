"""Two runs in one run directory: the second is refused before it writes anything there."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from rlhf_lightning.api import compose_config
from rlhf_lightning.errors import ConfigError
from rlhf_lightning.train import run


def test_a_second_run_into_a_busy_run_directory_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "rlhf_lightning", "experiment=smoke", "trainer.max_steps=100000",
         "trainer.val_check_interval=1000", "checkpoint.every_n_steps=2", "report=false",
         f"hydra.run.dir={run_dir}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not (run_dir / "checkpoints" / "last.ckpt").exists():
            assert first.poll() is None and time.monotonic() < deadline, "the first run failed"
            time.sleep(0.2)
        config_before = (run_dir / ".hydra" / "config.yaml").read_text()
        second = compose_config("sft", ["experiment=smoke", "seed=7"], run_dir=run_dir)
        with pytest.raises(ConfigError) as err:
            run(second)
        message = str(err.value)
        assert f"run_dir={run_dir}: another run (pid {first.pid}) is writing" in message
        assert "Fix:" in message
        assert (run_dir / ".hydra" / "config.yaml").read_text() == config_before
    finally:
        first.kill()
        first.wait(timeout=60)
    # Once the first run is gone (even killed), the directory is free again.
    assert run(compose_config("sft", ["experiment=smoke", "report=false"], run_dir=run_dir))
