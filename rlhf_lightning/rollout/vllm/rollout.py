"""``rollout=vllm``: the online-RL stages sample with a vLLM engine instead of the trainer's model.

The engine starts on the first rollout, from the directory the policy was loaded from (for a
LoRA policy: its base, with LoRA serving on), and is handed the trainer's current weights at
once, so it samples exactly the policy being trained (a resumed run's too). After every
optimisation phase the stage calls :meth:`VLLMRollout.sync`: the adapter alone for a LoRA
policy (loaded in place, ~0.3 s on CPU), else the full weights. Every rollout carries the policy
version that sampled it.

The engine's log-probs are the *sampler's*. With ``reuse_logprobs`` (the default) they are
also the old log-probs the clipped ratio divides by, so the trainer runs no forward to
recompute them: the fp32 engine's match the trainer's to ~3e-5 nats a token, and the stage
measures that gap (``rollout/logprob_gap``) on the first minibatch's forward, which still runs
the sampling policy. They are reused only where they are what the trainer would compute: plain
sampling at a temperature (no top-k/top-p, no minimum length, whose masks the engine's
log-probs include), no value head to read (PPO with ``critic=shared`` reads the values in the
recomputing forward), no exact KL, and no ``stage.algorithm.importance_cap`` (which weighs the
trainer's own old log-probs against the engine's, truncated importance sampling); otherwise
the trainer recomputes them in one forward and the gap is measured there.

The engine's compute threads (``options.threads: auto``): the trainer's own torch thread count
while the trainer waits for each rollout (``stage.max_staleness=0``: the trainer's cores are
idle during generation), one fewer (at least one) when generation overlaps training.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from rlhf_lightning.errors import ConfigError
from rlhf_lightning.rollout.batch import RolloutBatch
from rlhf_lightning.rollout.queries import encode_prompts, pad_token_id
from rlhf_lightning.rollout.sampling import SamplingConfig
from rlhf_lightning.rollout.vllm.backend import VLLMBackend
from rlhf_lightning.rollout.vllm.process import ServerOptions

log = logging.getLogger(__name__)


class VLLMRollout:
    """The vLLM rollout backend of the online-RL stages (``conf/rollout/vllm.yaml``).

    Args:
        model: Directory the engine starts from; None: where the policy was loaded from (a
            model built from ``model.arch`` is saved to the sync directory first).
        url: A server already running ``server_main.py`` instead of one started here.
        options: Engine settings (dtype, threads, ...); LoRA serving is switched on for a LoRA
            policy. ``threads="auto"``: see :meth:`engine_threads`.
        request_timeout / sync_timeout / startup_timeout: Seconds before a generate, a sync or
            the engine's start counts as failed.
        sync_dir: Directory both sides read the synced weights from; None: a temporary one.
        venv: The vLLM virtualenv; None: ``$RLHF_LIGHTNING_VLLM_VENV`` or the cache's.
        reuse_logprobs: the engine's log-probs of its samples are the old log-probs (no
            recomputing forward) where they equal the trainer's up to kernel differences (see
            the module docstring); False: the trainer always recomputes them.
    """

    def __init__(
        self,
        model: str | None = None,
        url: str | None = None,
        options: ServerOptions | dict[str, Any] | None = None,
        request_timeout: float = 300.0,
        sync_timeout: float = 300.0,
        startup_timeout: float = 600.0,
        sync_dir: str | None = None,
        venv: str | None = None,
        reuse_logprobs: bool = True,
    ) -> None:
        if isinstance(options, dict):
            options = ServerOptions(**options)
        threads = options.threads if options is not None else 0
        if threads != "auto" and (not isinstance(threads, int) or threads < 0):
            raise ConfigError(
                f"stage.rollout.options.threads={threads!r}: auto, 0 (vLLM's own binding) or "
                "a number of threads."
            )
        self.model = model
        self.url = url
        self.options = options or ServerOptions()
        self.timeouts = {
            "request_timeout": request_timeout,
            "sync_timeout": sync_timeout,
            "startup_timeout": startup_timeout,
        }
        self.sync_dir = sync_dir
        self.venv = venv
        self.reuse_logprobs = reuse_logprobs
        self.overlaps_training = False
        self.backend: VLLMBackend | None = None
        self._scratch: tempfile.TemporaryDirectory | None = None

    holds_own_weights = True  # the engine's copy: rollouts may be generated while training runs

    def expect_overlap(self, overlapped: bool) -> None:
        """Whether generation will overlap training (``stage.max_staleness`` > 0); told by the
        stage before the first rollout, it sizes the engine's threads (:meth:`engine_threads`)."""
        self.overlaps_training = bool(overlapped)

    def engine_threads(self) -> int:
        """The engine's compute threads: ``options.threads``, or for ``auto`` the trainer's own
        torch thread count (its share of the machine, ``rlhf_lightning/threads.py``) while the
        trainer waits for each rollout, one fewer (at least one) when they overlap, so the two
        never ask for more cores than the trainer was given."""
        if self.options.threads != "auto":
            return int(self.options.threads)
        trainer = torch.get_num_threads()
        return max(1, trainer - 1) if self.overlaps_training else trainer

    def generate(
        self,
        policy: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        prompts: list[str],
        sampling: SamplingConfig,
        *,
        seed: int,
        row_keys: Tensor,
        record_values: bool = False,
        query_ids: list[list[int]] | None = None,
    ) -> RolloutBatch:
        """One response per prompt (or per row of ``query_ids``, sent as they are) from the
        engine (``record_values`` is the trainer's job)."""
        backend = self.backend or self._start(policy, tokenizer)
        batch = backend.generate(
            encode_prompts(tokenizer, prompts) if query_ids is None else query_ids,
            sampling,
            seed,
            pad_token_id(tokenizer),
            sampling.resolved_stop_ids(tokenizer),
            None if query_ids is not None else prompts,
            row_keys=[int(k) for k in row_keys],
        )
        reuse = self.reuse_logprobs and _logprobs_are_the_policys(sampling)
        return dataclasses.replace(
            batch,
            policy_version=backend.policy_version,
            # The engine's log-probs of the tokens under softmax(logits / T): what the trainer's
            # forward would recompute, to kernel differences (OnlineRLCore reuses them).
            policy_logprobs=batch.logprobs if reuse else None,
        )

    def sync(self, policy: nn.Module, version: int) -> None:
        """Hand the engine the policy's weights (the adapter alone for LoRA) as `version`."""
        if self.backend is None:
            return  # not started yet: it starts from the current weights
        lm: Any = getattr(policy, "pretrained_model", policy)
        if isinstance(lm, PeftModel):
            self.backend.sync_adapter(lm, version)
        else:
            self.backend.sync_weights(lm, version)

    def close(self) -> None:
        """Stop the engine this backend started."""
        if self.backend is not None:
            self.backend.close()
            self.backend = None
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    def _start(self, policy: nn.Module, tokenizer: PreTrainedTokenizerBase) -> VLLMBackend:
        lm: Any = getattr(policy, "pretrained_model", policy)
        peft = isinstance(lm, PeftModel)
        options = dataclasses.replace(self.options, threads=self.engine_threads())
        log.info(
            "vLLM engine threads: %d (options.threads=%s, generation %s training)",
            options.threads, self.options.threads,
            "overlaps" if self.overlaps_training else "alternates with",
        )  # fmt: skip
        base_config = (lm.get_base_model() if peft else lm).config
        positions = getattr(base_config, "max_position_embeddings", None) or getattr(
            base_config, "n_positions", None
        )
        if positions:  # the engine refuses a longer context than the model's
            options = dataclasses.replace(
                options, max_model_len=min(options.max_model_len, int(positions))
            )
        if peft:
            rank = max(config.r for config in lm.peft_config.values())
            options = dataclasses.replace(
                options, enable_lora=True, max_lora_rank=max(options.max_lora_rank, rank)
            )
        model = None if self.url else (self.model or self._starting_dir(lm, tokenizer, peft))
        backend = VLLMBackend(
            tokenizer, model, url=self.url, options=options, sync_dir=self.sync_dir,
            venv=self.venv, **self.timeouts,
        ).start()  # fmt: skip
        self.backend = backend
        self.sync(policy, version=0)  # the engine samples exactly the weights being trained
        return backend

    def _starting_dir(self, lm: Any, tokenizer: PreTrainedTokenizerBase, peft: bool) -> str:
        """Where the policy (its base, with LoRA) was loaded from; else a saved copy."""
        base = lm.get_base_model() if peft else lm
        loaded_from = Path(str(getattr(base.config, "_name_or_path", "") or "_none_"))
        if (loaded_from / "config.json").is_file():
            return str(loaded_from)
        # A model built from model.arch was never saved: the engine starts from a copy.
        self._scratch = tempfile.TemporaryDirectory(prefix="rlhf_vllm_initial_")
        target = Path(self._scratch.name)
        state = base.state_dict()
        if peft:  # the base's own weights: LoRA layers wrap them as `<layer>.base_layer`
            state = {
                k.replace(".base_layer.", "."): v for k, v in state.items() if "lora_" not in k
            }
        base.save_pretrained(target, state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(target)
        return str(target)


def _logprobs_are_the_policys(sampling: SamplingConfig) -> bool:
    """Whether the engine's log-probs of its samples are the policy's at the sampling
    temperature: the engine reports them after top-k/top-p and the minimum-length mask, which
    the trainer's old log-probs (``softmax(logits / T)``) do not include."""
    return (
        sampling.do_sample
        and sampling.top_k == 0
        and sampling.top_p == 1.0
        and sampling.min_new_tokens == 0
    )
