"""An export (`<run>/model`, a critic beside the policy) is written whole or not at all; a
SIGTERM while it is written names the checkpoint to finish from; a model directory without a
tokenizer is refused by name."""

from __future__ import annotations

import os
import signal
import time

import pytest
import transformers
from transformers import PreTrainedTokenizerBase

from rlhf_lightning.api import compose_config
from rlhf_lightning.errors import ModelError, RunInterrupted
from rlhf_lightning.models import load_tokenizer
from rlhf_lightning.models.export import export_model
from rlhf_lightning.train import run

# The smoke recipe (tiny model and data), two steps, quiet.
_SFT = ["experiment=smoke", "trainer.max_steps=2", "stage.num_samples=0", "report=false"]


def _tiny_gpt2(seed: int) -> transformers.GPT2LMHeadModel:
    transformers.set_seed(seed)
    config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64)
    return transformers.GPT2LMHeadModel(config)


class _BrokenPart:
    def save_pretrained(self, directory, **kwargs):
        directory.mkdir()
        (directory / "half.bin").write_bytes(b"\0" * 10)
        raise OSError("disk full")


def test_parts_land_inside_the_export_and_a_failure_keeps_the_old_one(tmp_path, tokenizer):
    out = tmp_path / "model"
    export_model(_tiny_gpt2(0), tokenizer, out, parts={"critic": _tiny_gpt2(1)})
    assert (out / "model.safetensors").is_file()
    assert (out / "critic" / "model.safetensors").is_file()
    before = (out / "model.safetensors").read_bytes()

    with pytest.raises(OSError, match="disk full"):
        export_model(_tiny_gpt2(2), tokenizer, out, parts={"critic": _BrokenPart()})
    assert (out / "model.safetensors").read_bytes() == before  # the previous export, whole
    assert (out / "critic" / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary leftovers


def test_a_model_directory_without_a_tokenizer_is_refused(tmp_path):
    _tiny_gpt2(0).save_pretrained(tmp_path / "cut")  # weights and config, no tokenizer files
    with pytest.raises(ModelError, match=r"cut: model files but no tokenizer files .*Fix: "):
        load_tokenizer(str(tmp_path / "cut"))


def test_sigterm_during_the_export_names_the_checkpoint_and_leaves_no_model(tmp_path, monkeypatch):
    save = PreTrainedTokenizerBase.save_pretrained

    def interrupted_save(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives between the weights and the tokenizer
        time.sleep(5)
        return save(self, *args, **kwargs)

    def unhandled(signum, frame):  # instead of killing the test session
        raise AssertionError("SIGTERM during the export was not handled")

    run_dir = tmp_path / "run"
    config = compose_config("sft", _SFT, run_dir=run_dir)
    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", interrupted_save)
    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        with pytest.raises(RunInterrupted) as err:
            run(config)
    finally:
        signal.signal(signal.SIGTERM, previous)
        monkeypatch.undo()
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert err.value.exit_code == 128 + signal.SIGTERM
    assert "SIGTERM stopped the run while it wrote its results" in str(err.value)
    assert f"ckpt_path={ckpt}" in str(err.value)
    assert not (run_dir / "model").exists()
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".model")]

    # The same command with ckpt_path: nothing left to train, the export is written.
    run(compose_config("sft", [*_SFT, f"ckpt_path={ckpt}"], run_dir=tmp_path / "again"))
    assert load_tokenizer(str(tmp_path / "again" / "model")).get_vocab()
