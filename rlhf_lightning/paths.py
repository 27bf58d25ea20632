"""Where the Hydra configs and the demo cache live."""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def config_dir() -> Path:
    """The Hydra config directory: inside the package for a wheel, top-level `conf/` in a clone."""
    bundled = _PACKAGE_DIR / "conf"
    if bundled.is_dir():
        return bundled
    return _PACKAGE_DIR.parent / "conf"


def cache_dir() -> Path:
    """Cache for artefacts built on first use (demo tokenizer, demo SFT model).

    `RLHF_LIGHTNING_CACHE` overrides the default `~/.cache/rlhf_lightning`.
    """
    root = os.environ.get("RLHF_LIGHTNING_CACHE") or Path.home() / ".cache" / "rlhf_lightning"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
