"""The SFT stage end to end on tiny models: it learns, writes the run directory, resumes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

import rlhf_lightning.builders as train_mod
from rlhf_lightning import api
from rlhf_lightning.models import load_model_and_tokenizer
from rlhf_lightning.train import run


def _column(run_dir: Path, name: str) -> list[float]:
    with (run_dir / "metrics.csv").open() as f:
        return [float(r[name]) for r in csv.DictReader(f) if r.get(name)]


def test_smoke_run_learns_and_writes_the_run_directory(smoke_cfg, tmp_path):
    cfg = smoke_cfg("trainer.max_steps=30", "trainer.log_every_n_steps=2")
    summary = run(cfg)
    run_dir = Path(cfg.run_dir)

    losses = _column(run_dir, "train/loss")
    assert len(losses) >= 10
    # Loss falls: the mean of the last 3 logged losses is well below the first one.
    assert sum(losses[-3:]) / 3 < losses[0] - 0.5
    for name in [
        ".hydra/config.yaml",
        "metrics.csv",
        "metrics.json",
        "checkpoints/last.ckpt",
        "model/config.json",
        "model/model.safetensors",
        "model/tokenizer.json",
        "samples.jsonl",
    ]:
        assert (run_dir / name).is_file(), name

    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert on_disk["stage"] == "sft" and on_disk["global_step"] == 30 == summary["global_step"]
    m = on_disk["metrics"]
    assert m["val/perplexity"] == pytest.approx(
        torch.exp(torch.tensor(m["val/loss"])).item(), rel=1e-4
    )
    assert m["val/unigram_perplexity"] > 1 and m["perf/tokens_per_s"] > 0
    assert len(_column(run_dir, "val/unigram_perplexity")) == 1  # logged once

    model = AutoModelForCausalLM.from_pretrained(run_dir / "model")
    tok = AutoTokenizer.from_pretrained(run_dir / "model")
    ids = tok("I love", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > ids.shape[1]


class _ResumeProbe(Callback):
    """Records the step and the first Adam moment the resumed fit starts from."""

    def on_train_start(self, trainer, pl_module):
        opt = trainer.optimizers[0]
        first = next(p for p in pl_module.parameters() if p.requires_grad)
        self.step = trainer.global_step
        self.exp_avg = opt.state[first]["exp_avg"].clone()
        self.lr = opt.param_groups[0]["lr"]


def test_resume_continues_from_the_same_step_and_optimizer_state(smoke_cfg, tmp_path, monkeypatch):
    first = smoke_cfg("trainer.max_steps=10", run_dir=tmp_path / "a")
    run(first)
    ckpt = tmp_path / "a" / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert saved["global_step"] == 10

    probe = _ResumeProbe()
    build = train_mod.build_trainer

    def build_with_probe(cfg, run_dir, module=None):
        trainer = build(cfg, run_dir, module)
        trainer.callbacks.append(probe)
        return trainer

    monkeypatch.setattr(train_mod, "build_trainer", build_with_probe)
    resumed = smoke_cfg("trainer.max_steps=20", f"ckpt_path={ckpt}", run_dir=tmp_path / "b")
    summary = run(resumed)

    assert probe.step == 10
    saved_state = saved["optimizer_states"][0]["state"][0]["exp_avg"]
    torch.testing.assert_close(probe.exp_avg, saved_state, rtol=0, atol=0)
    assert probe.lr == pytest.approx(saved["lr_schedulers"][0]["_last_lr"][0])
    assert summary["global_step"] == 20


def test_lora_keeps_base_bit_identical_and_exports_the_adapter(smoke_cfg, tmp_path):
    cfg = smoke_cfg(
        "model.lora.enabled=true",
        "model.lora.merge_on_export=true",
        "optim.lr=1e-2",
        "trainer.max_steps=10",
    )
    run(cfg)
    run_dir = Path(cfg.run_dir)
    state = torch.load(run_dir / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    weights = state["state_dict"]

    # The same spec and seed rebuild the untouched base.
    cfg.model.lora.enabled = False
    fresh, _ = load_model_and_tokenizer(instantiate(cfg.model, _convert_="all"))
    fresh_params = fresh.state_dict()  # includes tied weights (GPT-2's lm_head)
    base_keys = [k for k in weights if "lora_" not in k]
    assert base_keys
    for key in base_keys:
        name = key.removeprefix("model.base_model.model.").replace(".base_layer", "")
        assert torch.equal(weights[key], fresh_params[name]), key
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # lora_B starts at zero

    assert (run_dir / "model/adapter_config.json").is_file()
    assert not (run_dir / "model/model.safetensors").exists()
    adapted = PeftModel.from_pretrained(fresh, run_dir / "model")
    merged = AutoModelForCausalLM.from_pretrained(run_dir / "model/merged")
    ids = torch.tensor([[0, 17, 42, 99]])
    torch.testing.assert_close(
        adapted(input_ids=ids).logits, merged(input_ids=ids).logits, rtol=1e-4, atol=1e-4
    )


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_chat_messages_on_a_llama_style_model(smoke_cfg, tmp_path):
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Rate item {i}."},
                {"role": "assistant", "content": "It is great!" if i % 2 else "It is bad."},
            ]
        }
        for i in range(64)
    ]
    data = _write_jsonl(tmp_path / "chat.jsonl", rows)
    cfg = smoke_cfg(
        "model=tiny_llama",
        f"data.path={data}",
        "data.max_samples=null",
        "trainer.max_steps=15",
        "optim.lr=3e-3",
    )
    summary = run(cfg)
    losses = _column(Path(cfg.run_dir), "train/loss")
    assert losses[-1] < losses[0]
    assert summary["metrics"]["val/loss"] < 8.3  # below uniform over the 4k vocabulary


def test_python_api_with_an_in_memory_prompt_completion_dataset(tmp_path):
    ds = Dataset.from_dict(
        {
            "question": [f"What is {i} plus one?" for i in range(80)],
            "answer": [f" {i + 1}." for i in range(80)],
        }
    )
    result = api.sft(
        "tiny",
        dataset=ds,
        prompt_field="question",
        completion_field="answer",
        max_steps=6,
        output_dir=tmp_path / "api",
        overrides=["data=tiny", "trainer.enable_progress_bar=false"],
    )
    assert result.global_step == 6
    assert (result.model_dir / "config.json").is_file()
    assert "val/loss" in result.metrics


def test_tensorboard_and_offline_wandb_loggers_beside_metrics_csv(smoke_cfg, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", "/nonexistent")  # no stored credentials: mode=auto goes offline
    cfg = smoke_cfg(
        "logger=[csv,tensorboard,wandb]", "trainer.max_steps=4", "trainer.log_every_n_steps=2"
    )
    run(cfg)
    run_dir = Path(cfg.run_dir)
    assert _column(run_dir, "train/loss")
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    offline_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1 and list(offline_runs[0].glob("*.wandb"))
    # The resolved config went to W&B as the run's config (inside the offline run's records,
    # uploaded by `wandb sync`).
    records = next(offline_runs[0].glob("*.wandb")).read_bytes()
    assert b"warmup_decay_schedule" in records and b'max_steps":4' in records


@pytest.mark.parametrize(
    "overrides",
    [
        ["model.gradient_checkpointing=true", "trainer.precision=bf16-mixed"],
        ["data.packing=true"],
    ],
    ids=["checkpointing-bf16", "packing"],
)
def test_memory_and_packing_switches_still_learn(smoke_cfg, overrides):
    cfg = smoke_cfg(
        *overrides, "trainer.max_steps=12", "trainer.log_every_n_steps=2", "optim.lr=3e-3"
    )
    run(cfg)
    losses = _column(Path(cfg.run_dir), "train/loss")
    assert losses[-1] < losses[0]
