"""The run-directory contract: metrics.json, samples.jsonl, checkpoints/, model/."""

from __future__ import annotations

import csv
import fcntl
import json
import math
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rlhf_lightning.errors import ConfigError


def checkpoint_path(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "last.ckpt"


def last_logged_values(metrics_csv: Path) -> dict[str, float]:
    """The last non-empty value of every column of a Lightning `metrics.csv`."""
    if not metrics_csv.is_file():
        return {}
    values: dict[str, float] = {}
    with metrics_csv.open(newline="") as f:
        for row in csv.DictReader(f):
            for key, raw in row.items():
                if key in ("epoch", "step") or raw in (None, ""):
                    continue
                value = float(raw)
                if not math.isnan(value):
                    values[key] = value
    return values


def write_metrics_json(
    run_dir: Path, stage: str, global_step: int, wall_s: float, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write `metrics.json`: the stage, the step reached, wall time and each metric's last value."""
    summary = {
        "stage": stage,
        "global_step": global_step,
        "wall_s": round(wall_s, 3),
        "metrics": last_logged_values(run_dir / "metrics.csv"),
    }
    if extra:
        summary.update(extra)
    atomic_write_text(run_dir / "metrics.json", json.dumps(summary, indent=2) + "\n")
    return summary


def append_samples(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Append rows (prompt, completion, step, ...) to `samples.jsonl`."""
    with (run_dir / "samples.jsonl").open("a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file and rename, so readers never see a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@contextmanager
def hold_run_dir(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir` for one run: a second run into it is refused while this one lives.

    An advisory lock (``flock``) on ``<run_dir>/.lock``, holding the holder's pid for the
    message; the operating system releases it when the process ends, however it ends, so a
    killed run never leaves the directory locked.

    Raises:
        ConfigError: another process holds the directory.
    """
    path = run_dir / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise ConfigError(
                f"run_dir={run_dir}: another run (pid {holder}) is writing into this "
                "directory, and two runs in one directory mix their metrics, checkpoints and "
                "model. Fix: give this run its own directory (hydra.run.dir=..., or the default "
                "timestamped one), or wait for that run to end."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Fill a directory that appears whole or not at all.

    Yields a hidden temporary directory beside `path`. When the block ends, its files are
    flushed to disk and it is renamed to `path`; an existing `path` is renamed aside first and
    deleted afterwards, so a reader finds the old directory, for an instant none, or the new
    one, never a mix of the two. When the block raises, `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Unique per process, so two writers never share a temporary directory.
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        if not path.exists():
            os.replace(tmp, path)
        else:
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)  # the previous directory goes back
                raise
            shutil.rmtree(old)
        fsync_directory(path.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    for directory, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(directory, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_directory(Path(directory))


def fsync_directory(directory: Path) -> None:
    """Make renames inside `directory` durable (a rename reaches the disk with its entry)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# Config keys whose values are credentials: never written to the run directory or a tracker.
# Whole key names only: `max_new_tokens` or `pad_token_id` are settings, not secrets.
_SECRET_KEY = re.compile(
    r"^(authorization|api[_-]?key|.*_api[_-]?key|token|.*(api|auth|access|hf|bearer|refresh)"
    r"[_-]?token|secret|.*_secret|password|.*_password|passwd)$",
    re.I,
)
REDACTED = "***"


def redact_secrets(node: Any, parent_key: str = "", found: set[str] | None = None) -> Any:
    """A copy of a plain config container with credential values replaced by ``***``.

    Every value under a ``headers`` mapping (HTTP reward auth), every value whose key is a
    credential's name (token, api_key, password, secret, authorization, ...) and every URL
    query parameter with such a name (``?api_key=...``) is redacted, so that a secret read with
    ``${oc.env:...}`` is used by the run but never saved with it.

    Args:
        found: when given, collects the secret values replaced (to scrub other copies).
    """
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            secret = parent_key == "headers" or _SECRET_KEY.search(str(key))
            if value is not None and not isinstance(value, dict | list) and secret:
                if found is not None:
                    found.add(str(value))
                out[key] = REDACTED
            else:
                out[key] = redact_secrets(value, str(key), found)
        return out
    if isinstance(node, list):
        return [redact_secrets(item, parent_key, found) for item in node]
    if isinstance(node, str) and "?" in node:
        return _URL_PARAM.sub(lambda m: _redact_param(m, found), node)
    return node


# A URL query parameter: its separator, name and value.
_URL_PARAM = re.compile(r"([?&])([^=&#\s]+)=([^&#\s]*)")


def _redact_param(match: re.Match[str], found: set[str] | None) -> str:
    separator, name, value = match.groups()
    if not value or not _SECRET_KEY.search(name):
        return match.group(0)
    if found is not None:
        found.add(value)
    return f"{separator}{name}={REDACTED}"


def record_overrides(run_dir: Path, overrides: list[str]) -> None:
    """Write ``<run_dir>/.hydra/overrides.yaml`` as the CLI's Hydra does (runs from Python)."""
    path = run_dir / ".hydra" / "overrides.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.create(list(overrides))))


def redact_override(override: str) -> str:
    """``key=value`` with the value replaced by ``***`` when the key names a credential, and
    URL query parameters named like one (``?api_key=...``) redacted inside the value."""
    key, sep, _ = override.partition("=")
    parts = key.lstrip("+~").split(".")
    secret = _SECRET_KEY.search(parts[-1]) or "headers" in parts[:-1]
    if sep and secret:
        return f"{key}{sep}{REDACTED}"
    return _URL_PARAM.sub(lambda m: _redact_param(m, None), override)


def save_resolved_config(cfg: DictConfig, run_dir: Path) -> None:
    """Write the resolved, redacted config to ``<run_dir>/.hydra/config.yaml`` (atomically).

    Hydra's own copy keeps interpolations such as ``${hydra:runtime.output_dir}``; the contract
    is the resolved config, and runs started from Python get the same file.
    """
    path = run_dir / ".hydra" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    secrets: set[str] = set()
    redacted = redact_secrets(OmegaConf.to_container(cfg, resolve=True), found=secrets)
    atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.create(redacted)))
    # Hydra's own copies (overrides.yaml, hydra.yaml) hold the command line as it was typed.
    for other in path.parent.glob("*.yaml"):
        text = other.read_text(encoding="utf-8")
        scrubbed = scrub(text, secrets)
        if scrubbed != text:
            atomic_write_text(other, scrubbed)


def scrub(text: str, secrets: set[str]) -> str:
    """`text` with every secret value (of four characters or more) replaced by ``***``."""
    for secret in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain values, interpolations resolved and credentials redacted: what the
    run directory, the trackers and the checkpoints keep."""
    return redact_secrets(OmegaConf.to_container(cfg, resolve=True))
