"""Rollout backends: what turns prompts into a `RolloutBatch` for the online-RL stages.

A backend is selected with ``rollout=`` (``conf/rollout/``). Every backend returns the same
rollout batch (token ids, masks, the policy's log-probs where it has them) and is told when the
trainer's weights changed (``sync``), so an inference engine holding its own copy of the weights
can reload them. The built-in ``hf`` backend samples with the trainer's own model (batched,
KV cache, row-keyed randomness): there is nothing to sync.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Protocol

import torch
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
        query_ids: list[list[int]] | None = None,
    ) -> RolloutBatch:
        """One response per prompt (prompts already repeated for groups).

        Args:
            policy: The trainer's policy (a causal LM, or a value-head wrapper around one).
            tokenizer: The policy's tokenizer.
            prompts: B prompt strings (ignored when ``query_ids`` is given).
            sampling: The stage's sampling settings.
            seed: This rollout's seed (a function of the run seed and the iteration).
            row_keys: Each row's index in the global batch, so a row's sample does not depend
                on how the batch is split across processes. Shape (B,).
            record_values: Also record the policy's value head at every response position.
            query_ids: B rows of token ids to continue exactly as given, never re-tokenised
                (a multi-turn conversation so far); None encodes ``prompts``.
        """
        ...

    def sync(self, policy: nn.Module, version: int) -> None:
        """The policy's weights changed (after an optimisation phase): `version` is the number of
        optimisation phases so far."""
        ...


class HFBackend:
    """The trainer's own model samples (``generate_rollout``).

    Args:
        own_copy: sample with a copy of the policy kept by the backend and refreshed by
            :meth:`sync` after every optimisation phase, instead of the policy itself: what
            asynchronous RL (``stage.max_staleness`` > 0) needs, since rollouts for later
            iterations are then generated while the trainer changes its weights. Costs a second
            copy of the weights.
        share_prefill: a group's G copies of a prompt share one prefill (its KV cache computed
            once, repeated G times): the same samples for less work (``generate_rollout``).
        drop_finished: a row leaves the decoding batch at its stop token instead of being run
            (on padding) until the batch's longest response ends: the same samples for the
            work of the real response tokens (``generate_rollout``).
    """

    def __init__(
        self, own_copy: bool = False, share_prefill: bool = True, drop_finished: bool = True
    ) -> None:
        self.own_copy = own_copy
        self.share_prefill = share_prefill
        self.drop_finished = drop_finished
        self.model: nn.Module | None = None
        self.version = 0

    @property
    def holds_own_weights(self) -> bool:
        """Whether sampling reads weights of its own, which the trainer may change meanwhile."""
        return self.own_copy

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
        model = policy
        if self.own_copy:
            if self.model is None:  # the weights being trained now, a fresh or a resumed run's
                self.model = copy.deepcopy(policy).requires_grad_(False)
            model = self.model
        rollout = generate_rollout(
            model,
            tokenizer,
            prompts=None if query_ids is not None else prompts,
            query_ids=query_ids,
            config=sampling,
            generator_seed=seed,
            row_keys=row_keys,
            record_values=record_values,
            share_prefill=self.share_prefill,
            drop_finished=self.drop_finished,
        )
        return (
            dataclasses.replace(rollout, policy_version=self.version) if self.own_copy else rollout
        )

    def sync(self, policy: nn.Module, version: int) -> None:
        """Refresh the copy with the policy's weights (nothing to do without one)."""
        if self.model is not None:
            with torch.no_grad():
                for mine, theirs in zip(self.model.parameters(), policy.parameters(), strict=True):
                    mine.copy_(theirs)
        self.version = version
