"""Mistakes that ended in a traceback: each now gives one message naming the problem and the
fix (an RLHFError, which the CLI prints once and exits with 2)."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch
import transformers
from hydra.utils import instantiate

from rlhf_lightning.api import compose_config
from rlhf_lightning.demo.tokenizer import demo_tokenizer
from rlhf_lightning.errors import ConfigError, DataError, ModelError, RLHFError, StorageError
from rlhf_lightning.rewards import HTTPReward
from rlhf_lightning.train import run

# The smoke recipe (tiny model and data), two steps, quiet.
_SFT = ["experiment=smoke", "trainer.max_steps=2", "stage.num_samples=0", "report=false"]


def _rows(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def _damaged_model(path: Path) -> str:
    config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64)
    transformers.GPT2LMHeadModel(config).save_pretrained(path)
    demo_tokenizer().save_pretrained(path)
    weights = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    return str(path)


# name: (overrides given tmp_path, error class, message pieces)
CASES = {
    "negative learning rate": (
        lambda tmp: [*_SFT, "optim.lr=-1"],
        ConfigError,
        ["optim: Invalid learning rate: -1", "Fix: set optim.lr > 0"],
    ),
    "one-row SFT dataset": (
        lambda tmp: [*_SFT, f"data.path={_rows(tmp / 'one.jsonl', [{'text': 'one row'}])}"],
        DataError,
        ["has 1 row, too few to hold out", "data.val_fraction=0"],
    ),
    "data.max_length above the model's positions": (
        lambda tmp: [*_SFT, "model.arch.n_positions=16", "data.max_length=64"],
        ConfigError,
        ["data.max_length=64: longer than the model's 16 positions", "Fix:"],
    ),
    "truncated model.safetensors": (
        lambda tmp: [
            *_SFT,
            "model=pretrained",
            f"model.name_or_path={_damaged_model(tmp / 'model')}",
        ],
        ModelError,
        ["its weights file is damaged", "Fix: export or copy the model again"],
    ),
    "reward=http with a leftover reward.function": (
        lambda tmp: [
            "experiment=ppo_smoke",
            "reward=http",
            "reward.url=http://127.0.0.1:9/score",
        ],
        ConfigError,
        ["reward: HTTPReward takes no argument 'function'", "'~reward.function'"],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_mistake_gives_one_message_with_the_fix(name, tmp_path):
    overrides, error, pieces = CASES[name]
    stage = "ppo" if "experiment=ppo_smoke" in overrides(tmp_path) else "sft"
    with pytest.raises(error) as err:
        run(compose_config(stage, overrides(tmp_path), run_dir=tmp_path / "run"))
    for piece in pieces:
        assert piece in str(err.value), str(err.value)


def test_the_fix_for_a_leftover_key_works(tmp_path):
    overrides = CASES["reward=http with a leftover reward.function"][0](tmp_path)
    config = compose_config("ppo", [*overrides, "~reward.function"], run_dir=tmp_path)
    assert isinstance(instantiate(config.reward), HTTPReward)


def test_a_full_disk_while_checkpointing_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(StorageError) as err:
        run(compose_config("sft", _SFT, run_dir=tmp_path))
    message = str(err.value)
    assert "not written (No space left on device); the previous checkpoint is kept" in message
    assert "Fix: free space" in message
    assert not list((tmp_path / "checkpoints").glob(".*tmp*"))  # no half-written file left


def test_the_documented_column_mapping_works_without_a_plus(tmp_path):
    rows = [{"question": f"What is {i}+{i}?", "answer": f" {2 * i}"} for i in range(40)]
    path = _rows(tmp_path / "qa.jsonl", rows)
    overrides = [*_SFT, f"data.path={path}", "data.columns.prompt=question"]
    overrides += ["data.columns.completion=answer"]
    summary = run(compose_config("sft", overrides, run_dir=tmp_path / "run"))
    assert summary["global_step"] == 2
    assert issubclass(StorageError, RLHFError)
