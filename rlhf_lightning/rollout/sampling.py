"""How responses are sampled: `SamplingConfig`, one block for every RL stage (`stage.sampling`).

Sampling is pure ancestral sampling by default (temperature only; top_k 0, top_p 1): PPO's KL
penalty and importance ratio assume the samples come from the policy itself (ALGORITHMS.md
§5.5); other settings warn once (:class:`OffPolicySamplingWarning`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from rlhf_lightning.errors import ConfigError


class OffPolicySamplingWarning(UserWarning):
    """Sampling settings that make the samples come from a distribution other than the policy."""


@dataclass
class SamplingConfig:
    """How responses are sampled.

    Attributes:
        max_new_tokens: Response budget A; a response that reaches it without a stop token has
            ``contains_stop`` False.
        min_new_tokens: Forbid the stop tokens before this many tokens (off-policy when > 0).
        temperature: Logits are divided by it. Score the rollout at the same temperature
            (``score_tokens(temperature=...)``) or the PPO ratio is not 1 on the first
            minibatch (ALGORITHMS.md §2 "Temperature").
        top_k: Keep the k most likely tokens; 0 disables (off-policy when != 0).
        top_p: Nucleus sampling mass; 1.0 disables (off-policy when != 1).
        stop_token_ids: Ids that end a response; None means ``[tokenizer.eos_token_id]``.
        do_sample: False decodes greedily (evaluation); temperature, top_k and top_p are then
            unused.
    """

    max_new_tokens: int = 32
    min_new_tokens: int = 0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    stop_token_ids: list[int] | None = None
    do_sample: bool = True

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"sampling.max_new_tokens={self.max_new_tokens}: must be >= 1.")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ConfigError(
                f"sampling.min_new_tokens={self.min_new_tokens}: must be in "
                f"[0, max_new_tokens={self.max_new_tokens}]."
            )
        if self.temperature <= 0:
            raise ConfigError(
                f"sampling.temperature={self.temperature}: must be > 0 (greedy decoding is "
                "sampling.do_sample=false)."
            )
        if self.top_k < 0 or not 0 < self.top_p <= 1:
            raise ConfigError(
                f"sampling.top_k={self.top_k}, top_p={self.top_p}: need top_k >= 0 (0 = off) "
                "and 0 < top_p <= 1 (1 = off)."
            )
        if self.stop_token_ids is not None and not self.stop_token_ids:
            raise ConfigError("sampling.stop_token_ids is empty. Fix: null (= [eos]) or ids.")
        self._warn_if_off_policy()

    def _warn_if_off_policy(self) -> None:
        # Python's default filter shows a given warning once per call site, so a config built
        # every step does not flood the log.
        truncating = self.do_sample and (self.top_k != 0 or self.top_p != 1.0)
        if truncating or self.min_new_tokens > 0:
            warnings.warn(
                f"sampling with top_k={self.top_k}, top_p={self.top_p}, "
                f"min_new_tokens={self.min_new_tokens}: the samples no longer come from the "
                "policy, so the KL estimate against the reference is biased (it can go negative "
                "and the policy can exploit that through R = r - beta*KL) and PPO ratios are "
                "measured against the wrong behaviour distribution (ALGORITHMS.md §5.5). "
                "Use top_k=0, top_p=1.0, min_new_tokens=0 for RL rollouts.",
                OffPolicySamplingWarning,
                stacklevel=3,
            )

    def resolved_stop_ids(self, tokenizer: PreTrainedTokenizerBase) -> list[int]:
        """``stop_token_ids``, or ``[eos]`` when unset."""
        if self.stop_token_ids is not None:
            return [int(t) for t in self.stop_token_ids]
        if tokenizer.eos_token_id is None:
            raise ConfigError(
                "sampling.stop_token_ids is unset and the tokenizer has no EOS. Fix: set "
                "sampling.stop_token_ids."
            )
        return [int(tokenizer.eos_token_id)]

    def generate_kwargs(self, stop_ids: list[int], pad_id: int) -> dict:
        """Keyword arguments for ``model.generate``.

        Every knob that reshapes the distribution is set explicitly to its neutral value:
        ``generate`` fills unset ones from ``model.generation_config`` and then from global
        defaults, and the global default ``top_k`` is 50, not 0.
        """
        kwargs = {
            "max_new_tokens": self.max_new_tokens,
            # Always set: generate then derives min_length from it, ignoring the model's.
            "min_new_tokens": self.min_new_tokens,
            "do_sample": self.do_sample,
            "num_beams": 1,
            "repetition_penalty": 1.0,
            "no_repeat_ngram_size": 0,
            "eos_token_id": stop_ids,
            "pad_token_id": pad_id,
            "use_cache": True,
        }
        if self.do_sample:
            kwargs |= {
                "temperature": self.temperature,
                "top_k": self.top_k,
                "top_p": self.top_p,
                "typical_p": 1.0,
                "epsilon_cutoff": 0.0,
                "eta_cutoff": 0.0,
            }
        return kwargs
