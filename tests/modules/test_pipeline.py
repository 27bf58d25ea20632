"""stage=pipeline: SFT -> reward model -> PPO chained by their outputs; skipping by path."""

from __future__ import annotations

import json

import pytest

from rlhf_lightning.api import compose_config
from rlhf_lightning.errors import ConfigError
from rlhf_lightning.pipeline import format_table, overrides_from_mapping, run_pipeline

TINY = [
    "model=tiny",
    "data=tiny",
    "pipeline.sft.trainer.max_steps=6",
    "pipeline.reward.trainer.max_steps=6",
    "+pipeline.reward.data=tiny_pairs",
    "+pipeline.reward.stage.calibration.num_samples=8",
    "pipeline.ppo.stage.iterations=2",
    "+pipeline.ppo.data.batch_size=4",
    "+pipeline.ppo.stage.compare_prompts=4",
    "trainer.enable_progress_bar=false",
]


def test_overrides_from_mapping_flattens_and_quotes():
    node = {"trainer": {"max_steps": 5, "precision": "bf16-mixed"}, "data": "tiny", "x": [1, 2]}
    assert overrides_from_mapping(node) == [
        "trainer.max_steps=5",
        'trainer.precision="bf16-mixed"',
        'data="tiny"',
        "x=[1,2]",
    ]
    assert overrides_from_mapping({"a": None, "b": True, "c": 0.5}) == ["a=null", "b=true", "c=0.5"]
    with pytest.raises(ConfigError, match="pipeline override y"):
        overrides_from_mapping({"y": [{"k": 1}]})


def test_pipeline_chains_stages_then_skips_them_by_path(tmp_path, capsys):
    summary = run_pipeline(compose_config("pipeline", TINY, run_dir=tmp_path / "pipe"))
    root = tmp_path / "pipe"
    for stage in ("sft", "reward", "ppo"):
        assert json.loads((root / stage / "metrics.json").read_text())["stage"] == stage
        assert (root / stage / "model" / "config.json").is_file()
        assert (root / stage / "report" / "index.html").is_file()  # every run writes its report
    # Each stage consumed the previous one's output.
    reward_cfg = (root / "reward/.hydra/config.yaml").read_text()
    assert f"name_or_path: {root / 'sft/model'}" in reward_cfg
    ppo_cfg = (root / "ppo/.hydra/config.yaml").read_text()
    assert f"path: {root / 'reward/model'}" in ppo_cfg
    assert "max_steps: 6" in (root / "sft/.hydra/config.yaml").read_text()
    rows = {row["stage"]: row for row in summary["stages"]}
    assert rows["sft"]["start"] > rows["sft"]["end"]  # perplexity fell from its step-0 value
    assert summary == json.loads((root / "metrics.json").read_text())
    out = capsys.readouterr().out
    assert "| sft | val/perplexity |" in out
    assert f"Report: {root / 'ppo/report/index.html'}" in out
    assert (root / "ppo/report/reward_kl.png").is_file()
    comparison = [
        json.loads(line)
        for line in (root / "ppo/samples.jsonl").read_text().splitlines()
        if "ref_completion" in line
    ]
    assert len(comparison) == 4 and all("ref_reward" in row for row in comparison)

    reuse = TINY + [
        f"pipeline.sft_model={root / 'sft/model'}",
        f"pipeline.reward_model={root / 'reward/model'}",
    ]
    again = run_pipeline(compose_config("pipeline", reuse, run_dir=tmp_path / "again"))
    assert not (tmp_path / "again/sft").exists() and not (tmp_path / "again/reward").exists()
    assert (tmp_path / "again/ppo/model/config.json").is_file()
    assert [row["wall_s"] is None for row in again["stages"]] == [True, True, False]


def test_pipeline_names_a_missing_model_dir(tmp_path):
    cfg = compose_config("pipeline", [*TINY, f"pipeline.sft_model={tmp_path}/nope"])
    with pytest.raises(ConfigError, match=r"pipeline.sft_model=.*no config.json"):
        run_pipeline(cfg)


def test_format_table_marks_skipped_stages(tmp_path):
    from rlhf_lightning.pipeline import StageOutcome

    table = format_table(
        [
            StageOutcome("sft", None, tmp_path, None, "", None, None),
            StageOutcome("ppo", tmp_path, tmp_path, 90.0, "rollout/reward_mean", -0.1, 1.25),
        ]
    )
    assert "| sft | - | - | - | skipped |" in table
    assert "| ppo | rollout/reward_mean | -0.100 | 1.250 | 1.5 min |" in table
