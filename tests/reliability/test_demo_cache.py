"""The demo cache cannot be broken for good: a damaged entry is rebuilt (one log line), and two
first-use builds at once give one build that both use."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

from rlhf_lightning.demo.tokenizer import ensure_demo_tokenizer
from rlhf_lightning.models import load_tokenizer


def test_a_truncated_cached_tokenizer_is_rebuilt(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("RLHF_LIGHTNING_CACHE", str(tmp_path))
    path = ensure_demo_tokenizer()
    text = (path / "tokenizer.json").read_text()
    (path / "tokenizer.json").write_text(text[: len(text) // 2])  # a cut-short write
    with caplog.at_level(logging.WARNING, logger="rlhf_lightning"):
        assert ensure_demo_tokenizer() == path
    assert len(caplog.records) == 1 and "damaged" in caplog.text and "rebuilding" in caplog.text
    assert load_tokenizer(str(path)).encode("hello world")


# Builds the demo SFT "model" with a stand-in for the 5-minute training run: it takes a few
# seconds and writes a small model, its tokenizer and metrics.json where the build asks.
_BUILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import transformers
    import rlhf_lightning.demo.policy as policy
    from rlhf_lightning.demo.tokenizer import demo_tokenizer

    def stand_in(cfg, dataset=None):
        time.sleep(3)
        out = Path(cfg.run_dir)
        config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64)
        transformers.GPT2LMHeadModel(config).save_pretrained(out / "model")
        demo_tokenizer().save_pretrained(out / "model")
        (out / "metrics.json").write_text(json.dumps({"stage": "sft"}))
        return {}

    policy.run = stand_in
    print(policy.ensure_demo_sft_model())
    """
)


def test_two_first_use_builds_at_once_give_one_whole_cache_entry(tmp_path):
    env = {**os.environ, "RLHF_LIGHTNING_CACHE": str(tmp_path), "OMP_NUM_THREADS": "1"}
    builds = [
        subprocess.Popen(
            [sys.executable, "-c", _BUILD],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [build.communicate(timeout=600) for build in builds]
    for build, (_, err) in zip(builds, results, strict=True):
        assert build.returncode == 0, err[-3000:]
    model_dir = tmp_path / "demo-sft-v1" / "model"
    assert {out.strip() for out, _ in results} == {str(model_dir)}
    assert (model_dir / "model.safetensors").is_file()
    assert load_tokenizer(str(model_dir)).encode("hello world")
    # One process trained it; the other waited for it and used its result.
    assert sum("training it now" in err for _, err in results) == 1
