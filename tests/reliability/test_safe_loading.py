"""Safe loading: safetensors on export, no checkpoint code run unless asked, no pickled code.

Each test plants code that would leave a marker file if it ran, and checks the marker is absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import transformers

from rlhf_lightning.api import compose_config
from rlhf_lightning.config import compose_stage
from rlhf_lightning.errors import ConfigError, ModelError
from rlhf_lightning.models.export import export_model
from rlhf_lightning.models.loading import load_pretrained
from rlhf_lightning.train import run


def _tiny_gpt2() -> transformers.GPT2LMHeadModel:
    config = transformers.GPT2Config(
        n_layer=1, n_embd=16, n_head=2, vocab_size=64, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(config)


class _RunsCode:
    """Unpickling this runs a shell command: what a hostile checkpoint could carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_exported_weights_are_safetensors_only(tmp_path, tokenizer):
    out = tmp_path / "model"
    export_model(_tiny_gpt2(), tokenizer, out)
    files = {p.name for p in out.rglob("*") if p.is_file()}
    assert "model.safetensors" in files
    pickled = [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]
    assert pickled == []


def test_every_model_config_keeps_remote_code_off_by_default():
    for stage in ("sft", "reward", "ppo", "dpo", "grpo", "rloo"):
        cfg = compose_stage(stage, [])  # as shipped: built-in names unresolved
        assert cfg.model.get("trust_remote_code", False) is False, stage
        if "reward" in cfg and "trust_remote_code" in cfg.reward:
            assert cfg.reward.trust_remote_code is False, stage


def test_a_model_dir_shipping_code_is_refused_without_running_it(tmp_path):
    model_dir = tmp_path / "remote"
    _tiny_gpt2().save_pretrained(model_dir)
    marker = tmp_path / "code_ran"
    config = json.loads((model_dir / "config.json").read_text())
    config["model_type"] = "hostile"
    config["auto_map"] = {
        "AutoConfig": "hostile.HostileConfig",
        "AutoModelForCausalLM": "hostile.HostileModel",
    }
    (model_dir / "config.json").write_text(json.dumps(config))
    (model_dir / "hostile.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
        "from transformers import GPT2Config, GPT2LMHeadModel\n"
        "class HostileConfig(GPT2Config):\n    model_type = 'hostile'\n"
        "class HostileModel(GPT2LMHeadModel):\n    config_class = HostileConfig\n"
    )
    with pytest.raises(ModelError) as err:
        load_pretrained(str(model_dir))
    assert "ships its own model code" in str(err.value)
    assert "model.trust_remote_code=true" in str(err.value)
    assert not marker.exists()


def test_a_checkpoint_carrying_a_pickled_command_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pickle_ran"
    hostile = tmp_path / "hostile.ckpt"
    torch.save({"state_dict": {}, "payload": _RunsCode(marker)}, hostile)
    cfg = compose_config(
        "sft", ["experiment=smoke", f"ckpt_path={hostile}", f"run_dir={tmp_path / 'run'}"]
    )
    with pytest.raises(ConfigError) as err:
        run(cfg)
    message = str(err.value)
    assert f"ckpt_path={hostile}: not loaded" in message and "Fix:" in message
    assert "system" in message  # names what it refused
    assert not marker.exists()


def test_a_cut_short_checkpoint_gives_a_clear_error(tmp_path):
    broken = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, broken)
    broken.write_bytes(broken.read_bytes()[:500])
    cfg = compose_config(
        "sft", ["experiment=smoke", f"ckpt_path={broken}", f"run_dir={tmp_path / 'run'}"]
    )
    with pytest.raises(ConfigError, match="not a readable checkpoint"):
        run(cfg)
