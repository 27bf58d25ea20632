"""Cache entries built on first use: one builder at a time, checked on use, rebuilt if damaged.

Two runs starting at once on an empty cache would both build the same entry, one deleting the
other's work; a write cut short (a full disk, a kill) would leave an entry that fails every
later run. So an entry is checked each time it is used (cheaply: its files parse), and a
missing or damaged one is built under a lock that the other processes wait on, then use.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from rlhf_lightning.paths import cache_dir

log = logging.getLogger(__name__)


@contextmanager
def entry_lock(entry: Path) -> Iterator[None]:
    """Hold the cache entry `entry` (a path under ``cache_dir()``) while building it."""
    lock = FileLock(str(cache_dir() / f".{entry.name}.lock"))
    try:
        lock.acquire(timeout=1)
    except Timeout:
        log.warning("Waiting for another process that is building %s ...", entry)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def ensure_entry(entry: Path, problem: Callable[[], str | None], build: Callable[[], None]) -> None:
    """Make `entry` usable: `problem()` is None when it is, else what is wrong (``"missing"``
    for an entry never built); `build()` writes it whole (its own log line says so)."""
    if problem() is None:
        return
    with entry_lock(entry):
        found = problem()  # another process may have built it while this one waited
        if found is None:
            return
        if found != "missing":
            log.warning("The cached %s is damaged (%s): rebuilding it.", entry, found)
        build()


def tokenizer_problem(directory: Path) -> str | None:
    """None when `directory` holds a tokenizer whose files parse, else what is wrong."""
    from tokenizers import Tokenizer

    if not (directory / "tokenizer.json").is_file():
        return "missing"
    try:
        Tokenizer.from_file(str(directory / "tokenizer.json"))
        json.loads((directory / "tokenizer_config.json").read_text())
    except Exception as err:  # any parse failure is damage: the entry is rebuilt
        return f"{type(err).__name__}: {str(err)[:120]}"
    return None


def model_problem(directory: Path) -> str | None:
    """None when `directory` holds a model (config, safetensors weights) and its tokenizer
    whose files parse, else what is wrong."""
    from safetensors import safe_open

    if not (directory / "config.json").is_file():
        return "missing"
    try:
        json.loads((directory / "config.json").read_text())
        with safe_open(str(directory / "model.safetensors"), framework="pt") as weights:
            if not list(weights.keys()):
                return "model.safetensors holds no tensors"
    except Exception as err:  # any parse failure is damage: the entry is rebuilt
        return f"{type(err).__name__}: {str(err)[:120]}"
    return tokenizer_problem(directory)
