"""GGUF files as a model source: dequantised once into a cached Hugging Face directory.

`transformers` reads a GGUF file (`from_pretrained(dir, gguf_file=name)`), but every load
parses the whole header and dequantises every tensor again (tens of seconds for SmolLM2-135M),
and the loaded model is marked quantised, so `save_pretrained`, peft and the export path refuse
or special-case it. So the file is converted once, in float32 (the dequantised values exactly),
into a plain safetensors directory with its tokenizer, config and generation config; every
later load is an ordinary local-directory load (about a second) in whatever dtype is asked for.

Cache entries live under `paths.cache_dir() / "gguf"`, one per file, keyed by the file's
resolved path, size and modification time (and `CONVERSION_VERSION` and the transformers version): a rewritten file is
converted again, an unchanged one never. An entry is built beside its final place and renamed
into it under a file lock, and records the size of every file it holds, so a half-written or
damaged entry is detected and rebuilt, never loaded.

Converting needs about twice the float32 model size in memory (the dequantised model and its
plain copy) and the float32 size on disk (538 MB for SmolLM2-135M's 94 MiB Q4_1 file).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import shutil
import time
from pathlib import Path

from filelock import FileLock

from rlhf_lightning.errors import ModelError
from rlhf_lightning.paths import cache_dir

log = logging.getLogger(__name__)

# Bump when the conversion writes something different, so old entries are not reused.
CONVERSION_VERSION = 1
MARKER = "gguf-source.json"


def gguf_model_dir(name_or_path: str | Path | None, gguf_file: str | Path) -> Path:
    """The converted Hugging Face directory of a GGUF file, converting it on first use.

    Args:
        name_or_path: The directory holding the file, or None when `gguf_file` is a path.
        gguf_file: The file's name inside `name_or_path`, or a path to it.

    Returns:
        A directory that `from_pretrained` and `load_tokenizer` load like any local model.

    Raises:
        ModelError: If the file is missing, or transformers cannot read or convert it.
    """
    source = resolve_gguf_file(name_or_path, gguf_file)
    entry = cache_entry(source)
    if _damage(entry) is None:
        return entry
    entry.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(entry.parent / f"{entry.name}.lock")):
        damage = _damage(entry)
        if damage is None:  # another process finished it while this one waited
            return entry
        if entry.exists():
            log.warning("GGUF cache entry %s is damaged (%s): converting again", entry, damage)
            shutil.rmtree(entry)
        for stale in entry.parent.glob(f".{entry.name}.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed conversion
        _build(source, entry)
    return entry


def resolve_gguf_file(name_or_path: str | Path | None, gguf_file: str | Path) -> Path:
    """The GGUF file named by `model.name_or_path` + `model.gguf_file`, checked to exist."""
    path = Path(gguf_file).expanduser()
    if name_or_path is not None and not path.is_absolute():
        path = Path(name_or_path).expanduser() / path
    if not path.is_file():
        raise ModelError(
            f"model.gguf_file={gguf_file}: no such file ({path}). Fix: set model.name_or_path "
            "to the directory holding it and model.gguf_file to its name, or give its full path."
        )
    return path.resolve()


def cache_entry(source: Path) -> Path:
    """Where the conversion of `source` is cached: `<cache>/gguf/<stem>-<key>`."""
    import transformers

    stat = source.stat()
    # The transformers version too: the tokenizer files it writes are read back by the same one.
    key = "\0".join(
        map(
            str,
            (CONVERSION_VERSION, transformers.__version__, source, stat.st_size, stat.st_mtime_ns),
        )
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir() / "gguf" / f"{source.stem}-{digest}"


def _damage(entry: Path) -> str | None:
    """Why `entry` is not a complete conversion, or None when it is."""
    marker = entry / MARKER
    if not marker.is_file():
        return "not converted yet" if not entry.exists() else f"no {MARKER}"
    try:
        files = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return f"unreadable {MARKER}"
    for name, size in files.items():
        path = entry / name
        if not path.is_file() or path.stat().st_size != size:
            return f"{name} is missing or has the wrong size"
    return None


def _build(source: Path, entry: Path) -> None:
    size_mb = source.stat().st_size / 2**20
    log.warning(
        "Converting GGUF %s (%.0f MB) to a float32 Hugging Face directory, once: usually "
        "under a minute per 100 MB on 2 CPU cores -> %s",
        source,
        size_mb,
        entry,
    )
    start = time.perf_counter()
    partial = entry.parent / f".{entry.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        _convert(source, partial)
        seconds = time.perf_counter() - start
        files = {p.name: p.stat().st_size for p in sorted(partial.iterdir()) if p.is_file()}
        record = {
            "source": str(source),
            "size": source.stat().st_size,
            "mtime_ns": source.stat().st_mtime_ns,
            "conversion_version": CONVERSION_VERSION,
            "seconds": round(seconds, 1),
            "files": files,
        }
        # The marker is written last: its presence says every file before it is complete.
        (partial / MARKER).write_text(json.dumps(record, indent=2) + "\n")
        os.replace(partial, entry)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    log.info("GGUF %s converted in %.1f s -> %s", source.name, seconds, entry)


def _convert(source: Path, out: Path) -> None:
    """Dequantise `source` to float32 and save model + tokenizer with `save_pretrained`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        loaded = AutoModelForCausalLM.from_pretrained(
            source.parent, gguf_file=source.name, dtype=torch.float32, **_dequantize_kwargs()
        )
        model = _plain_copy(loaded)
    except ImportError as err:
        raise ModelError(
            f"model.gguf_file={source}: reading GGUF needs a package that is missing ({err}). "
            "Fix: pip install gguf accelerate (both are dependencies of rlhf-lightning)."
        ) from err
    except (OSError, ValueError, KeyError, RuntimeError, NotImplementedError) as err:
        raise ModelError(
            f"model.gguf_file={source}: transformers cannot convert this GGUF file "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). Fix: use "
            "a GGUF of an architecture transformers supports (llama, mistral, qwen2, gemma, "
            "phi3, ...) written by llama.cpp's converter, or a Hugging Face directory instead."
        ) from err
    del loaded
    # The GGUF tokenizer has no length limit; the model's context is the natural one.
    context = getattr(model.config, "max_position_embeddings", None)
    if context and tokenizer.model_max_length > context:
        tokenizer.model_max_length = context
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _dequantize_kwargs() -> dict:
    """Ask for dense weights where transformers can keep GGUF blocks packed (5.x `GgufConfig`).

    Without it, a machine with GGUF matmul kernels would load packed, untrainable weights; older
    transformers always dequantise and have no such option.
    """
    try:
        from transformers import GgufConfig
    except ImportError:
        return {}
    if "dequantize" not in inspect.signature(GgufConfig.__init__).parameters:
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def _plain_copy(loaded):
    """The same weights in a model that is not marked quantised, so it saves like any other."""
    from transformers import AutoModelForCausalLM

    config = loaded.config
    if getattr(config, "quantization_config", None) is not None:
        del config.quantization_config
    if getattr(loaded, "hf_quantizer", None) is None:
        return loaded
    model = AutoModelForCausalLM.from_config(config, dtype=loaded.dtype)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    return model
