"""``VLLMBackend``: rollouts sampled by a vLLM engine, returned as a :class:`RolloutBatch`.

The engine runs in its own process and virtualenv (``server_main.py``); this side speaks JSON
over HTTP with the standard library and never imports vLLM. Token ids go in and come out, so
the trainer's tokenizer is the only one that matters (the engine never re-tokenises).

Weights move through a directory both processes can read: a full sync saves the policy as
safetensors and the engine reloads them in place; a LoRA sync saves only the peft adapter and
the engine replaces its adapter in place (no merge). Every call has a timeout, and a dead, hung
or refusing server raises :class:`~rlhf_lightning.rollout.errors.RolloutError` naming the fix
(with the tail of the server log when this backend started the server).
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from rlhf_lightning.errors import RolloutError
from rlhf_lightning.rollout.batch import RolloutBatch
from rlhf_lightning.rollout.queries import left_pad
from rlhf_lightning.rollout.sampling import SamplingConfig
from rlhf_lightning.rollout.stop import truncate_at_stop
from rlhf_lightning.rollout.vllm.client import request_json
from rlhf_lightning.rollout.vllm.process import ServerOptions, VLLMServer

_SEED_MIX = 0x9E3779B1  # odd 32-bit multiplier (golden ratio): spreads (seed, key) pairs
_SEED_MOD = 2**63 - 1  # vLLM seeds a torch.Generator: any non-negative int64


def row_seed(seed: int, key: int) -> int:
    """The engine seed of one row: a function of (rollout seed, row key) alone.

    Each vLLM request gets its own generator, so a row's sample depends on this number and not
    on which other rows share the batch.
    """
    return (int(seed) * _SEED_MIX + int(key)) % _SEED_MOD


class VLLMBackend:
    """Sample rollouts with vLLM; sync full weights or a LoRA adapter into the engine.

    Give either ``model`` (this backend starts and owns a server on 127.0.0.1) or ``url`` (a
    server already running ``server_main.py``; it must read the same ``sync_dir``).

    Args:
        tokenizer: The trainer's tokenizer; decodes prompts and completions.
        model: Hugging Face directory the engine starts from (the initial policy).
        url: Base URL of a running server, e.g. ``http://127.0.0.1:8000``.
        options: Engine settings for a started server (dtype, threads, LoRA, ...).
        request_timeout: Seconds a ``generate`` may take before the server counts as hung.
        sync_timeout: Seconds a weight or adapter sync may take (saving excluded).
        startup_timeout: Seconds for a started server to load and warm up.
        sync_dir: Directory for the weights handed to the engine; default a fresh temporary
            directory (in ``/dev/shm`` when it exists: the weights then never touch the disk).
        venv: The vLLM virtualenv for a started server; default
            :func:`~rlhf_lightning.rollout.vllm.venv.venv_dir`.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        model: str | Path | None = None,
        *,
        url: str | None = None,
        options: ServerOptions | None = None,
        request_timeout: float = 300.0,
        sync_timeout: float = 300.0,
        startup_timeout: float = 600.0,
        sync_dir: str | Path | None = None,
        venv: str | Path | None = None,
    ) -> None:
        if (model is None) == (url is None):
            raise RolloutError(
                "vLLM backend: give exactly one of model (a directory to start a server from) "
                "or url (a running server)."
            )
        if request_timeout <= 0 or sync_timeout <= 0:
            raise RolloutError(
                f"vLLM backend: request_timeout={request_timeout}, sync_timeout={sync_timeout}."
                " Fix: both > 0 seconds."
            )
        self.tokenizer = tokenizer
        self.request_timeout = float(request_timeout)
        self.sync_timeout = float(sync_timeout)
        self.server = None
        if model is not None:
            self.server = VLLMServer(
                model, options, startup_timeout=startup_timeout, venv=Path(venv) if venv else None
            )
        self.url = url.rstrip("/") if url else None
        self._sync_dir = Path(sync_dir) if sync_dir is not None else None
        self._sync_cleanup: weakref.finalize | None = None
        self.weights_version = 0
        self.adapter_version: int | None = None
        self.rollout_versions: dict[str, int | None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> VLLMBackend:
        """Start the owned server (no-op for a URL) and check it answers ``/health``."""
        if self.server is not None and not self.server.is_running():
            self.url = self.server.start()
        health = self.health()
        self.weights_version = int(health.get("weights_version") or 0)
        return self

    def close(self) -> None:
        """Stop the owned server and delete the temporary sync directory."""
        if self.server is not None:
            self.server.close()
        if self._sync_cleanup is not None:
            self._sync_cleanup()

    def __enter__(self) -> VLLMBackend:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def sync_dir(self) -> Path:
        """Where synced weights are written; a temporary directory is made on first use and
        deleted by :meth:`close` (or when the backend is garbage-collected)."""
        if self._sync_dir is None:
            shm = Path("/dev/shm")
            self._sync_dir = Path(
                tempfile.mkdtemp(prefix="rlhf_vllm_sync_", dir=shm if shm.is_dir() else None)
            )
            self._sync_cleanup = weakref.finalize(
                self, shutil.rmtree, str(self._sync_dir), ignore_errors=True
            )
        return self._sync_dir

    @property
    def policy_version(self) -> int:
        """The version of the policy the engine samples from: the newest synced one."""
        if self.adapter_version is not None:
            return max(self.weights_version, self.adapter_version)
        return self.weights_version

    def health(self) -> dict[str, Any]:
        """The server's ``/health`` answer; raises when it is unreachable or not ready."""
        answer = self._request("GET", "/health", None, timeout=10.0, what="health check")
        if answer.get("status") != "ok":
            raise RolloutError(
                f"vLLM server {self.url}: status {answer.get('status')!r} "
                f"({answer.get('error', 'no error given')}). Fix: wait for it to load, or "
                "restart it."
            )
        return answer

    # -- sampling --------------------------------------------------------------------------

    def generate(
        self,
        query_rows: list[list[int]],
        sampling: SamplingConfig,
        seed: int | None,
        pad_id: int,
        stop_ids: list[int],
        prompts: list[str] | None = None,
        *,
        row_keys: list[int] | None = None,
        adapter: bool | None = None,
    ) -> RolloutBatch:
        """Sample one response per query row.

        Args:
            query_rows: B lists of token ids (no padding), used as given.
            sampling: Temperature, top-k/top-p, max/min new tokens, greedy (``do_sample``).
            seed: Rollout seed; each row's engine seed is ``row_seed(seed, key)`` so a row's
                sample does not depend on the rest of the batch. None: unseeded.
            pad_id: Filler for query (left) and response (right) padding. Never sampled unless
                it is a stop id (as in ``generate_rollout``).
            stop_ids: Ids that end a response; the stop token is kept, the rest is pad. The
                model's own EOS is not a stop token unless listed here.
            prompts: Query texts; None decodes them from ``query_rows``.
            row_keys: One int per row for the seeds (e.g. the row's index in the global
                batch); None uses 0..B-1.
            adapter: Sample through the synced LoRA adapter; None: when one was synced. False
                samples the base weights (with LoRA, the frozen base is the reference model).

        Returns:
            A CPU :class:`RolloutBatch` with ``logprobs`` = the sampled tokens' log-probs under
            the sampling distribution (after temperature, top-k/top-p; fp32 on the engine's
            logits), 0 outside ``response_mask``. Shapes (B, Q) and (B, A), A <= max_new_tokens.
            :attr:`rollout_versions` records the weights/adapter versions that sampled it.
        """
        if not stop_ids:
            raise RolloutError("vLLM backend: stop_ids is empty. Fix: pass at least [eos].")
        query_ids, query_mask = left_pad(query_rows, pad_id)
        keys = list(range(len(query_rows))) if row_keys is None else [int(k) for k in row_keys]
        if len(keys) != len(query_rows):
            raise RolloutError(
                f"vLLM backend: {len(keys)} row_keys for {len(query_rows)} rows. Fix: one each."
            )
        stops = [int(t) for t in stop_ids]
        payload = {
            "prompt_token_ids": [[int(t) for t in row] for row in query_rows],
            "seeds": None if seed is None else [row_seed(seed, k) for k in keys],
            "max_tokens": sampling.max_new_tokens,
            "min_tokens": sampling.min_new_tokens,
            "temperature": sampling.temperature,
            "top_k": sampling.top_k,
            "top_p": sampling.top_p,
            "greedy": not sampling.do_sample,
            "stop_token_ids": stops,
            # Pad is never a response token (see generation.py's _pad_ban).
            "banned_token_ids": [] if pad_id in stops else [int(pad_id)],
            "logprobs": True,
            "use_adapter": self.adapter_version is not None if adapter is None else adapter,
        }
        answer = self._request(
            "POST", "/generate", payload, timeout=self.request_timeout, what="generate"
        )
        sampled, sampled_mask, logprobs = _right_pad(answer, len(query_rows), pad_id)
        cut = truncate_at_stop(sampled, stops, pad_id)
        # A row can end short without a stop token (max_model_len reached): its padding is
        # not response either.
        response_mask = cut.response_mask & sampled_mask
        response_ids = torch.where(response_mask, cut.response_ids, pad_id)
        lengths = response_mask.sum(dim=1).tolist()
        responses = [row[:n] for row, n in zip(response_ids.tolist(), lengths, strict=True)]
        if prompts is None:
            prompts = self.tokenizer.batch_decode(query_rows, skip_special_tokens=True)
        self.rollout_versions = {
            "weights_version": answer.get("weights_version"),
            "adapter_version": answer.get("adapter_version"),
        }
        return RolloutBatch(
            query_ids=query_ids,
            query_mask=query_mask,
            response_ids=response_ids,
            response_mask=response_mask,
            contains_stop=cut.contains_stop,
            prompts=list(prompts),
            completions=self.tokenizer.batch_decode(responses, skip_special_tokens=True),
            logprobs=torch.where(response_mask, logprobs, 0.0),
        )

    # -- weight sync -----------------------------------------------------------------------

    def sync_weights(self, model_or_dir: nn.Module | str | Path, version: int) -> int:
        """Replace the engine's weights with the policy's; returns ``version``.

        Args:
            model_or_dir: A causal LM (or a value-head wrapper exposing it as
                ``pretrained_model``), saved as safetensors into ``sync_dir/weights``; or a
                directory that already holds the ``*.safetensors`` (Hugging Face names).
            version: The policy version the engine serves from now on (e.g. the global step).
        """
        if isinstance(model_or_dir, (str, Path)):
            directory = Path(model_or_dir)
        else:
            directory = self._save_weights(model_or_dir)
        answer = self._request(
            "POST",
            "/load_weights",
            {"path": str(directory.resolve()), "version": int(version)},
            timeout=self.sync_timeout,
            what="weight sync",
        )
        self.weights_version = int(answer["weights_version"])
        return self.weights_version

    def sync_adapter(self, peft_model: nn.Module, version: int) -> int:
        """Replace the engine's LoRA adapter with ``peft_model``'s, in place; returns ``version``.

        Only the adapter is saved and sent (no merge); the engine's base weights stay. The
        server must run with ``options.enable_lora`` and a ``max_lora_rank`` >= the adapter's.
        """
        lm: Any = getattr(peft_model, "pretrained_model", peft_model)
        if not hasattr(lm, "peft_config"):
            raise RolloutError(
                "vLLM backend: sync_adapter needs a peft model (models.lora.apply_lora). Fix: "
                "use sync_weights for a model without an adapter."
            )
        directory = self.sync_dir / "adapter"
        shutil.rmtree(directory, ignore_errors=True)
        lm.save_pretrained(directory, safe_serialization=True)
        answer = self._request(
            "POST",
            "/load_adapter",
            {"path": str(directory.resolve()), "version": int(version)},
            timeout=self.sync_timeout,
            what="adapter sync",
        )
        self.adapter_version = int(answer["adapter_version"])
        return self.adapter_version

    def _request(
        self, method: str, route: str, payload: dict | None, *, timeout: float, what: str
    ) -> dict[str, Any]:
        if self.url is None:
            self.start()
        assert self.url is not None
        return request_json(
            self.url, method, route, payload, timeout=timeout, what=what, log_hint=self._log_hint
        )

    def _log_hint(self) -> str:
        if self.server is None:
            return ""
        code = self.server.exit_code()
        state = "running" if code is None else f"exited with code {code}"
        return (
            f"\nThe server process is {state}; last lines of {self.server.log_path}:\n"
            f"{self.server.log_tail(15)}"
        )

    def _save_weights(self, model: nn.Module) -> Path:
        lm: Any = getattr(model, "pretrained_model", model)
        if hasattr(lm, "peft_config"):
            raise RolloutError(
                "vLLM backend: sync_weights got a peft model. Fix: use sync_adapter (the "
                "engine serves the adapter on its base weights), or merge the adapter first."
            )
        directory = self.sync_dir / "weights"
        # The engine reads every *.safetensors there: old shards must not linger.
        shutil.rmtree(directory, ignore_errors=True)
        needed = sum(p.numel() * p.element_size() for p in lm.parameters())
        free = shutil.disk_usage(self.sync_dir).free
        if free < needed * 1.2:
            raise RolloutError(
                f"vLLM backend: {self.sync_dir} has {free / 2**30:.1f} GiB free, the weights "
                f"need {needed / 2**30:.1f} GiB. Fix: set sync_dir to a roomier directory the "
                "server can read."
            )
        lm.save_pretrained(directory, safe_serialization=True)
        return directory


def _right_pad(
    answer: dict, batch: int, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The answer's token ids, where they are real, and their log-probs: right-padded (B, A)."""
    rows = answer.get("token_ids")
    logprob_rows = answer.get("logprobs")
    if not isinstance(rows, list) or len(rows) != batch or logprob_rows is None:
        raise RolloutError(
            f"vLLM server: generate answered {len(rows) if isinstance(rows, list) else rows!r} "
            f"rows for {batch} queries (or no log-probs). Fix: use a server_main.py server of "
            "the same project version."
        )
    width = max(1, max(len(row) for row in rows))
    ids = torch.full((batch, width), pad_id, dtype=torch.long)
    mask = torch.zeros((batch, width), dtype=torch.bool)
    logprobs = torch.zeros((batch, width), dtype=torch.float32)
    for i, (row, lps) in enumerate(zip(rows, logprob_rows, strict=True)):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = True
        logprobs[i, : len(lps)] = torch.tensor(lps, dtype=torch.float32)
    return ids, mask, logprobs
