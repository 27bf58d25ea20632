"""The sweep table over Hydra multirun job directories, and the command line's exit codes."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf_lightning.errors import ConfigError
from rlhf_lightning.report import write_sweep
from rlhf_lightning.report.__main__ import main


def write_job(
    sweep: Path, name: str, overrides: list[str], metrics: dict[str, float] | None
) -> Path:
    """A job directory as Hydra multirun leaves it: overrides always, metrics.json if it ran."""
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if metrics is not None:
        summary = {"stage": "ppo", "global_step": 30, "wall_s": 9.5, "metrics": metrics}
        (job / "metrics.json").write_text(json.dumps(summary))
    return job


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    sweep = tmp_path / "multirun"
    common = {"train/loss": 0.1, "kl_coef": 0.05, "rollout/response_length": 12.0}
    write_job(
        sweep,
        "0",
        ["experiment=ppo_smoke", "optim.lr=1e-4"],
        {**common, "rollout/reward_mean": 0.25, "rollout/kl": 1.5},
    )
    write_job(
        sweep,
        "1",
        ["experiment=ppo_smoke", "optim.lr=3e-4"],
        {**common, "rollout/reward_mean": 0.5, "rollout/kl": 4.0},
    )
    (sweep / "multirun.yaml").write_text("hydra: {}\n")  # Hydra's own file, not a job
    return sweep


def test_sweep_table_has_the_differing_override_and_the_key_metrics(sweep):
    table = write_sweep(sweep)
    assert table.columns == [
        "job",
        "optim.lr",
        "rollout/reward_mean",
        "rollout/kl",
        "rollout/response_length",
        "global_step",
        "wall_s",
    ]
    assert table.rows == [
        ["0", "1e-4", 0.25, 1.5, 12.0, 30, 9.5],
        ["1", "3e-4", 0.5, 4.0, 12.0, 30, 9.5],
    ]


def test_sweep_writes_csv_and_markdown(sweep):
    write_sweep(sweep)
    with (sweep / "sweep.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["job"], r["optim.lr"], r["rollout/kl"]) for r in rows] == [
        ("0", "1e-4", "1.5"),
        ("1", "3e-4", "4.0"),
    ]
    md = (sweep / "sweep.md").read_text().splitlines()
    assert md[0].startswith("| job | optim.lr | rollout/reward_mean")
    assert md[2].startswith("| 0   | 1e-4     | 0.25")


def test_job_without_metrics_keeps_its_row_marked(sweep):
    write_job(sweep, "2", ["experiment=ppo_smoke", "optim.lr=1e-3"], None)
    table = write_sweep(sweep)
    assert table.columns[-1] == "status"
    assert table.rows[2][:2] == ["2", "1e-3"]
    assert table.rows[2][-1] == "no metrics.json"
    assert table.rows[0][-1] == "ok"


def test_jobs_sort_by_number_and_fall_back_to_train_loss(tmp_path):
    sweep = tmp_path / "multirun"
    for name in ("10", "2"):
        write_job(sweep, name, [f"seed={name}"], {"train/loss": float(name)})
    table = write_sweep(sweep)
    assert table.columns == ["job", "seed", "train/loss", "global_step", "wall_s"]
    assert [row[0] for row in table.rows] == ["2", "10"]


def test_directory_without_jobs_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no job directories.*Fix:"):
        write_sweep(tmp_path)


def test_cli_sweep_prints_the_table(sweep, capsys):
    assert main(["--sweep", str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "optim.lr" in out and "3e-4" in out and "rollout/reward_mean" in out


def test_cli_report_prints_the_page_path(tmp_path, capsys):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("stage:\n  name: sft\n")
    assert main([str(run), "--format", "md"]) == 0
    assert capsys.readouterr().out.strip() == str(run / "report" / "index.md")


def test_cli_bad_sweep_path_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["--sweep", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: report --sweep ") and "Fix:" in err
    assert len(err.splitlines()) == 1


def test_cli_bad_run_dir_exits_2_with_one_line(tmp_path):
    # A real process: the exit code and stderr as a shell sees them.
    proc = subprocess.run(
        [sys.executable, "-m", "rlhf_lightning.report", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: report ") and "Fix:" in lines[0]
    assert proc.stdout == ""


def test_cli_needs_a_run_dir_or_a_sweep(capsys):
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2


def test_held_out_accuracy_and_pass_at_k_come_first_among_rl_metrics(tmp_path: Path):
    sweep = tmp_path / "multirun"
    for job, aggregation in enumerate(["sequence_mean", "token_mean"]):
        metrics = {
            "rollout/reward_mean": 0.5,
            "eval/pass@8": 0.6,
            "eval/pass@1": 0.3,
            "eval/accuracy": 0.25 + 0.1 * job,
        }
        write_job(sweep, str(job), [f"aggregation={aggregation}"], metrics)
    table = write_sweep(sweep)
    assert table.columns == [
        "job",
        "aggregation",
        "eval/accuracy",
        "eval/pass@1",
        "eval/pass@8",
        "rollout/reward_mean",
        "global_step",
        "wall_s",
    ]
    assert [row[2] for row in table.rows] == [0.25, 0.35]
