"""Start and stop the vLLM server process (``server_main.py`` in the vLLM virtualenv).

The server binds 127.0.0.1 on a port the OS picks and writes it to a file, so two servers never
race for a port. It runs in its own session (process group) and watches our pid, so
:meth:`VLLMServer.stop` can end it and anything it spawned, and a killed trainer does not leave
it running. Its stdout/stderr go to a log file whose tail every startup error quotes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from rlhf_lightning.errors import RolloutError
from rlhf_lightning.rollout.vllm.venv import require_venv

SERVER_SCRIPT = Path(__file__).with_name("server_main.py")
_LOG_TAIL_LINES = 30
# Variables of the project's environment that must not reach the venv's interpreter.
_DROPPED_ENV = ("PYTHONPATH", "PYTHONHOME", "PIP_CONSTRAINT")


@dataclass
class ServerOptions:
    """How the engine is started (``server_main.py`` flags).

    Attributes:
        dtype: Engine weights/activations: "float32" (exact comparisons with the trainer),
            "bfloat16" (faster on CPUs with AVX512-BF16/AMX) or "float16".
        max_model_len: Longest query + response in tokens.
        max_num_seqs: Rows decoded together.
        kv_cache_gib: KV-cache memory in GiB (``VLLM_CPU_KVCACHE_SPACE``).
        threads: Compute threads; 0 leaves them to vLLM (in-process: one for serving, or the
            inherited ``OMP_NUM_THREADS``). ``VLLMRollout`` resolves its ``"auto"`` to a number.
        seed: Engine seed (rows without their own seed).
        enable_lora: Serve a LoRA adapter (needed by ``sync_adapter``).
        max_lora_rank: Largest adapter rank accepted.
        enforce_eager: Skip torch.compile: faster start, slower decoding.
        extra_env: More environment variables for the server.
    """

    dtype: str = "float32"
    max_model_len: int = 2048
    max_num_seqs: int = 64
    kv_cache_gib: int = 1
    threads: int | str = 0
    seed: int = 0
    enable_lora: bool = False
    max_lora_rank: int = 16
    enforce_eager: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)

    def flags(self) -> list[str]:
        if not isinstance(self.threads, int):
            raise RolloutError(
                f"vLLM server: threads={self.threads!r}. Fix: a number (VLLMRollout resolves "
                "auto before starting the server)."
            )
        flags = [
            f"--dtype={self.dtype}",
            f"--max-model-len={self.max_model_len}",
            f"--max-num-seqs={self.max_num_seqs}",
            f"--kv-cache-gib={self.kv_cache_gib}",
            f"--threads={self.threads}",
            f"--seed={self.seed}",
            f"--max-lora-rank={self.max_lora_rank}",
        ]
        flags += ["--enable-lora"] if self.enable_lora else []
        flags += ["--enforce-eager"] if self.enforce_eager else []
        return flags


class VLLMServer:
    """One ``server_main.py`` process serving ``model``; a context manager.

    Args:
        model: A Hugging Face model directory (config, safetensors weights, tokenizer files).
        options: Engine settings.
        startup_timeout: Seconds for the engine to answer ``/health`` with ok (load + warm-up).
        venv: The vLLM virtualenv; default :func:`~rlhf_lightning.rollout.vllm.venv.venv_dir`.
        log_path: Where the server's output goes; default a temporary file.
    """

    def __init__(
        self,
        model: str | Path,
        options: ServerOptions | None = None,
        *,
        startup_timeout: float = 600.0,
        venv: Path | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.model = Path(model)
        self.options = options or ServerOptions()
        self.startup_timeout = float(startup_timeout)
        self.venv = venv
        self._workdir = tempfile.TemporaryDirectory(prefix="rlhf_vllm_")
        self.log_path = Path(log_path) if log_path else Path(self._workdir.name) / "server.log"
        self.process: subprocess.Popen | None = None
        self.url: str | None = None
        self.startup_seconds: float | None = None

    def start(self) -> str:
        """Start the server and wait until its engine is ready; returns its base URL."""
        if self.process is not None:
            return self.url or ""
        if not (self.model / "config.json").is_file():
            raise RolloutError(
                f"vLLM server: {self.model} has no config.json. Fix: give a Hugging Face model "
                "directory (save_pretrained output with safetensors weights)."
            )
        python = require_venv(self.venv)
        port_file = Path(self._workdir.name) / "port"
        cmd = [
            str(python),
            str(SERVER_SCRIPT),
            f"--model={self.model}",
            "--host=127.0.0.1",
            "--port=0",
            f"--port-file={port_file}",
            f"--parent-pid={os.getpid()}",
            *self.options.flags(),
        ]
        env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
        env |= {"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **self.options.extra_env}
        start = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: stop() ends all of it
            )
        try:
            self.url = f"http://127.0.0.1:{self._wait_for_port(port_file, start)}"
            self._wait_until_ready(start)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - start
        return self.url

    def _wait_for_port(self, port_file: Path, start: float) -> int:
        while time.monotonic() - start < self.startup_timeout:
            self._raise_if_exited("while starting")
            if port_file.is_file():
                return int(port_file.read_text())
            time.sleep(0.1)
        raise self._timeout_error()

    def _wait_until_ready(self, start: float) -> None:
        while time.monotonic() - start < self.startup_timeout:
            self._raise_if_exited("while loading the model")
            status = self._health()
            if status == "ok":
                return
            if status == "failed" and self.process is not None:
                self.process.wait(timeout=30)
                self._raise_if_exited("while loading the model")
            time.sleep(0.5)
        raise self._timeout_error()

    def _health(self) -> str | None:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=5) as response:
                return json.loads(response.read()).get("status")
        except urllib.error.HTTPError as err:
            with contextlib.suppress(ValueError):
                return json.loads(err.read()).get("status")
        except (urllib.error.URLError, TimeoutError, ConnectionError, ValueError):
            return None
        return None

    def _raise_if_exited(self, when: str) -> None:
        code = self.process.poll() if self.process is not None else None
        if code is not None:
            raise RolloutError(
                f"vLLM server for {self.model} exited (code {code}) {when}.\n"
                f"--- last lines of {self.log_path} ---\n{self.log_tail()}\n---\n"
                "Fix: read the log above (a model vLLM cannot load, too little memory: lower "
                "kv_cache_gib or max_model_len, a broken venv: rerun "
                "`python -m rlhf_lightning.rollout.vllm.setup --force`)."
            )

    def _timeout_error(self) -> RolloutError:
        return RolloutError(
            f"vLLM server for {self.model} was not ready after {self.startup_timeout:.0f} s.\n"
            f"--- last lines of {self.log_path} ---\n{self.log_tail()}\n---\n"
            "Fix: raise startup_timeout (the first start compiles the model; a busy machine is "
            "slower), or set enforce_eager=true to skip compilation."
        )

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.strip().splitlines()[-lines:]) or "(empty log)"

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the server to exit (SIGTERM), then kill its process group after ``timeout`` s."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=timeout)
        # Children that outlived the leader (none expected in-process) go with the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    def close(self) -> None:
        self.stop()
        self._workdir.cleanup()

    def __enter__(self) -> VLLMServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.stop(timeout=5)
