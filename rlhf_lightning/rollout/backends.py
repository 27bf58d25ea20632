"""Rollout backends: what turns prompts into a `RolloutBatch` for the online-RL stages.

A backend is selected with ``rollout=`` (``conf/rollout/``). Every backend returns the same
rollout batch (token ids, masks, the policy's log-probs where it has them) and is told when the
trainer's weights changed (``sync``), so an inference engine holding its own copy of the weights
can reload them. The built-in ``hf`` backend samples with the trainer's own model (batched,
KV cache, row-keyed randomness): there is nothing to sync.
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from rlhf_lightning.rollout.batch import RolloutBatch
from rlhf_lightning.rollout.generation import generate_rollout
from rlhf_lightning.rollout.sampling import SamplingConfig


class RolloutBackend(Protocol):
    """Samples responses for the online-RL stages."""

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
    ) -> RolloutBatch:
        """One response per prompt (prompts already repeated for groups).

        Args:
            policy: The trainer's policy (a causal LM, or a value-head wrapper around one).
            tokenizer: The policy's tokenizer.
            prompts: B prompt strings.
            sampling: The stage's sampling settings.
            seed: This rollout's seed (a function of the run seed and the iteration).
            row_keys: Each row's index in the global batch, so a row's sample does not depend
                on how the batch is split across processes. Shape (B,).
            record_values: Also record the policy's value head at every response position.
        """
        ...

    def sync(self, policy: nn.Module, version: int) -> None:
        """The policy's weights changed (after an optimisation phase): `version` is the number of
        optimisation phases so far."""
        ...


class HFBackend:
    """The trainer's own model samples (``generate_rollout``): nothing to sync."""

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
    ) -> RolloutBatch:
        return generate_rollout(
            policy,
            tokenizer,
            prompts=prompts,
            config=sampling,
            generator_seed=seed,
            row_keys=row_keys,
            record_values=record_values,
        )

    def sync(self, policy: nn.Module, version: int) -> None:
        """Nothing: the rollout reads the policy's own weights."""
