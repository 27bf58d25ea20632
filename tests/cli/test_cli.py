"""The command line: a real run, multirun, and one clear message for each kind of mistake."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import rlhf_lightning

SMOKE = ["experiment=smoke", "trainer.max_steps=4", "trainer.val_check_interval=2"]


# The subprocess runs the package these tests import (a checkout may differ from the installed one).
PACKAGE_ROOT = str(Path(rlhf_lightning.__file__).resolve().parents[1])


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    path = os.pathsep.join(p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONPATH": path}
    return subprocess.run(
        [sys.executable, "-m", "rlhf_lightning", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_sft_run_writes_the_contracted_files(tmp_path):
    out = tmp_path / "run"
    proc = cli("stage=sft", *SMOKE, f"hydra.run.dir={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in [
        ".hydra/config.yaml",
        "metrics.csv",
        "metrics.json",
        "checkpoints/last.ckpt",
        "model/config.json",
    ]:
        assert (out / name).is_file(), name
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 4


def test_multirun_gives_one_directory_per_job(tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli(
        "-m",
        *SMOKE,
        "trainer.max_steps=2",
        "optim.lr=1e-3,3e-3",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lrs = []
    for job in ("0", "1"):
        assert json.loads((sweep / job / "metrics.json").read_text())["global_step"] == 2
        saved = yaml.safe_load((sweep / job / ".hydra" / "config.yaml").read_text())
        assert saved["stage"]["optimizer"]["lr"] == saved["optim"]["lr"]  # what the module got
        lrs.append(saved["optim"]["lr"])
    assert lrs == [1e-3, 3e-3]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["stage=nonsense"], ["stage", "nonsense", "sft"]),
        (["trainer.max_stepz=3"], ["trainer.max_stepz", "+trainer.max_stepz"]),
        (["data.path=/no/such/file.jsonl"], ["/no/such/file.jsonl", "not found", "Fix"]),
        (["model=pretrained", "model.name_or_path=./no_such_model"], ["no_such_model", "Fix"]),
        (["ckpt_path=/no/such.ckpt"], ["ckpt_path", "Fix"]),
    ],
    ids=["unknown-stage", "wrong-override", "missing-file", "missing-model", "missing-ckpt"],
)
def test_mistakes_give_one_clear_message_and_a_nonzero_exit(tmp_path, args, expected):
    proc = cli(*SMOKE, *args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    # Exit code 2 whether Hydra (unknown option, key not in the config) or the project found it
    assert proc.returncode == 2, proc.stderr[-2000:]
    for word in expected:
        assert word in proc.stderr, (word, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and "HYDRA_FULL_ERROR" not in proc.stderr
    # one message, printed once (no log line repeating it on the terminal)
    output = proc.stdout + proc.stderr
    assert output.count("error: ") == 1, output[-2000:]
    first_line = proc.stderr.split("error: ", 1)[1].splitlines()[0]
    assert output.count(first_line) == 1, output[-2000:]
    assert "Fix" in proc.stderr


def test_help_lists_stages_groups_examples_and_outputs(tmp_path):
    proc = cli("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for stage in ("sft", "reward", "ppo", "dpo", "grpo", "rloo", "pipeline"):
        assert f"\n  {stage} " in text, stage
    # each config group with its options, the default marked
    assert "model:" in text and "tiny" in text and "demo*" in text
    assert "trainer:" in text and "ddp_gpu" in text and "logger:" in text and "csv*" in text
    assert "experiment:" in text and "ppo_smoke" in text
    assert text.count("python -m rlhf_lightning stage=") + text.count("-m stage=") >= 5
    assert "outputs/<stage>/" in text and "model/" in text and "metrics.csv" in text
    # Hydra's generic help and the config dump are gone
    assert "Powered by Hydra" not in text and "== Config ==" not in text


def test_missing_column_names_the_column_and_the_fix(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"body": f"text {i}"}) + "\n" for i in range(20)))
    proc = cli(*SMOKE, f"data.path={data}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert "body" in proc.stderr and "Fix" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()
