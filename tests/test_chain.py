"""Chained recipes (rlhf_lightning/chain.py): earlier stages hand their model to the run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf, open_dict

from rlhf_lightning.chain import exported_model, run_chain
from rlhf_lightning.config import compose_stage
from rlhf_lightning.errors import ConfigError

SFT_TINY = [
    "experiment=smoke",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "stage.num_samples=0",
    "data.max_samples=32",
]
GRPO_TINY = [
    "experiment=grpo_smoke",
    "model=pretrained",  # model.name_or_path left unset (null): the chain provides it
    "stage.iterations=1",
    "stage.compare_prompts=0",
    "data.batch_size=4",
    "stage.sampling.max_new_tokens=4",
    "report=false",
]


def _with_chain(cfg, chain):
    with open_dict(cfg):
        cfg.chain = OmegaConf.create(chain)
    return cfg


def _saved_model(run_dir: Path) -> str:
    return yaml.safe_load((run_dir / ".hydra/config.yaml").read_text())["model"]["name_or_path"]


def test_a_chained_sft_hands_its_model_to_the_run(tmp_path):
    run_dir = tmp_path / "recipe"
    cfg = _with_chain(
        compose_stage("grpo", [*GRPO_TINY, "threads=1"], run_dir=run_dir),
        [{"name": "warmup", "stage": "sft", "overrides": [*SFT_TINY, "report=false"]}],
    )
    summary = run_chain(cfg)
    warmup = run_dir / "warmup"
    assert (warmup / "model" / "config.json").is_file()
    assert (warmup / "metrics.json").is_file() and (warmup / ".hydra/config.yaml").is_file()
    assert _saved_model(run_dir) == str(warmup / "model")
    assert summary["chain"] == [{"name": "warmup", "stage": "sft", "run_dir": str(warmup)}]
    assert summary["stage"] == "grpo" and (run_dir / "model" / "config.json").is_file()
    # the run's seed and thread count reached the chained stage
    saved = yaml.safe_load((warmup / ".hydra/config.yaml").read_text())
    assert (saved["seed"], saved["threads"]) == (cfg.seed, 1)


def test_a_merged_lora_export_is_handed_on_in_place_of_the_adapter(tmp_path):
    # An adapter-only export (adapter_config.json) is handed on as model/; once a LoRA run has
    # also written merged weights (model/merged/config.json), those are.
    model = tmp_path / "model"
    model.mkdir()
    (model / "adapter_config.json").write_text("{}")
    assert exported_model(tmp_path) == model
    (model / "merged").mkdir()
    assert exported_model(tmp_path) == model  # an empty folder is not an export
    (model / "merged" / "config.json").write_text("{}")
    assert exported_model(tmp_path) == model / "merged"


def test_a_given_model_skips_the_chain(tmp_path):
    first = tmp_path / "first"
    run_chain(
        _with_chain(
            compose_stage("grpo", GRPO_TINY, run_dir=first),
            [{"name": "sft", "stage": "sft", "overrides": [*SFT_TINY, "report=false"]}],
        )
    )
    again = tmp_path / "again"
    cfg = _with_chain(
        compose_stage("grpo", [*GRPO_TINY, f"model.name_or_path={first}/sft/model"], run_dir=again),
        [{"name": "sft", "stage": "sft", "overrides": SFT_TINY}],
    )
    run_chain(cfg)
    assert not (again / "sft").exists()
    assert _saved_model(again) == f"{first}/sft/model"


def test_a_malformed_chain_entry_is_named(tmp_path):
    cfg = _with_chain(compose_stage("grpo", GRPO_TINY, run_dir=tmp_path), [{"overrides": []}])
    with pytest.raises(ConfigError, match=r"chain\[0\].*stage"):
        run_chain(cfg)
