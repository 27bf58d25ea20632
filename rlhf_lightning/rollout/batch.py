"""`RolloutBatch`: sampled responses to a batch of queries, with their masks.

Layout (ALGORITHMS.md §2): queries are **left**-padded so that every response starts at the
same column ``Q`` (the context length); responses are **right**-padded, and everything after
the first stop token is pad with mask False. Masks are bool, True = real token.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

Indices = Tensor | Sequence[int] | slice


@dataclass
class RolloutBatch:
    """One rollout: B queries and one sampled response each.

    Attributes:
        query_ids: Left-padded query token ids. Shape (B, Q), long.
        query_mask: True at real query tokens. Shape (B, Q), bool.
        response_ids: Right-padded response ids; positions after the first stop token hold the
            pad id. Shape (B, A), long.
        response_mask: True up to and including the first stop token (the whole row when the
            response has none). Shape (B, A), bool.
        contains_stop: Whether the response ended with a stop token (False: it hit
            ``max_new_tokens``). Shape (B,), bool.
        prompts: The query text of each row (decoded when the rollout started from ids).
        completions: The response text of each row, special tokens removed.
        logprobs: Optional log-probs of the response tokens under the *sampling* distribution,
            from the scores ``generate`` returned (see ``generate_rollout(return_logprobs=True)``).
            Positions outside ``response_mask`` hold arbitrary values. Shape (B, A), fp32.
        policy_logprobs: Optional log-probs of the response tokens under the *policy* at the
            sampling temperature (no top-k/top-p/min-length filtering), recorded while sampling
            with row keys: what PPO/GRPO/RLOO's old log-probs are, without another forward pass.
            0 outside ``response_mask``. Shape (B, A), fp32.
        policy_values: Optional values of the response positions from the policy's value head
            (position t: the state before response token t), recorded while sampling
            (``generate_rollout(record_values=True)``). 0 outside ``response_mask``.
            Shape (B, A), fp32.
        policy_version: The version of the policy that sampled the rollout (optimisation phases
            before it), when the backend keeps its own copy of the weights; None otherwise.
        action_mask: Multi-turn rollouts (``rlhf_lightning.envs``): True at the tokens the
            policy sampled, False at the environment's and tools' messages between its turns
            (which ``response_mask`` covers too, so attention sees them). None: every response
            token was sampled. Shape (B, A), bool.
        turn_rewards: Multi-turn rollouts: each turn's environment reward on the last token of
            that turn, 0 elsewhere. Shape (B, A), fp32.
    """

    query_ids: Tensor
    query_mask: Tensor
    response_ids: Tensor
    response_mask: Tensor
    contains_stop: Tensor
    prompts: list[str]
    completions: list[str]
    logprobs: Tensor | None = None
    policy_logprobs: Tensor | None = None
    policy_values: Tensor | None = None
    policy_version: int | None = None
    action_mask: Tensor | None = None
    turn_rewards: Tensor | None = None

    def __post_init__(self) -> None:
        batch, _ = self.query_ids.shape
        for name in ("query_mask", "response_mask", "contains_stop", "action_mask"):
            value = getattr(self, name)
            if value is not None and value.dtype != torch.bool:
                raise TypeError(f"RolloutBatch.{name} must be bool (True = real token)")
        if self.query_mask.shape != self.query_ids.shape:
            raise ValueError("RolloutBatch: query_mask and query_ids differ in shape")
        if self.response_mask.shape != self.response_ids.shape or self.response_ids.shape[0] != (
            batch
        ):
            raise ValueError("RolloutBatch: response_ids/response_mask must both be (B, A)")
        for name in ("logprobs", "policy_logprobs", "policy_values", "action_mask", "turn_rewards"):
            value = getattr(self, name)
            if value is not None and value.shape != self.response_ids.shape:
                raise ValueError(f"RolloutBatch: {name} must have the shape of response_ids")
        if not (len(self.contains_stop) == len(self.prompts) == len(self.completions) == batch):
            raise ValueError("RolloutBatch: contains_stop, prompts and completions need B entries")

    def __len__(self) -> int:
        return self.query_ids.shape[0]

    @property
    def input_ids(self) -> Tensor:
        """Query followed by response. Shape (B, T), T = Q + A."""
        return torch.cat([self.query_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> Tensor:
        """True at real query and response tokens. Shape (B, T), bool."""
        return torch.cat([self.query_mask, self.response_mask], dim=1)

    @property
    def policy_token_mask(self) -> Tensor:
        """True at the response tokens the policy sampled (what is trained): ``action_mask``,
        or ``response_mask`` when there is none. Shape (B, A), bool."""
        return self.response_mask if self.action_mask is None else self.action_mask

    @property
    def context_length(self) -> int:
        """Q: the column where every response starts."""
        return self.query_ids.shape[1]

    @property
    def response_lengths(self) -> Tensor:
        """Real response tokens per row, the stop token included. Shape (B,), long."""
        return self.response_mask.sum(dim=1)

    def to(self, device: torch.device | str) -> RolloutBatch:
        """A copy with every tensor on ``device``."""
        return self._map(lambda t: t.to(device))

    def select(self, indices: Indices) -> RolloutBatch:
        """The rows at ``indices`` (ints, a slice, a long tensor or a bool row mask), in order."""
        if isinstance(indices, slice):
            rows = list(range(len(self)))[indices]
        else:
            index = torch.as_tensor(indices)
            if index.dtype == torch.bool:
                index = index.nonzero().flatten()
            rows = index.flatten().tolist()
        return self._take(rows)

    def repeat_interleave(self, k: int) -> RolloutBatch:
        """Each row ``k`` times, copies contiguous (prompt-major, the GRPO group layout).

        Row ``i * k + j`` is copy ``j`` of row ``i`` (ALGORITHMS.md §5.10: old RLOO's k-major
        ``repeat`` is the other layout; group baselines must reshape as ``(B, k)``).
        """
        if k < 1:
            raise ValueError(f"repeat_interleave needs k >= 1, got {k}")
        return self._take([i for i in range(len(self)) for _ in range(k)])

    def split(self, minibatch_size: int) -> list[RolloutBatch]:
        """Consecutive minibatches of ``minibatch_size`` rows; the last one may be smaller."""
        if minibatch_size < 1:
            raise ValueError(f"split needs minibatch_size >= 1, got {minibatch_size}")
        return [
            self.select(slice(start, start + minibatch_size))
            for start in range(0, len(self), minibatch_size)
        ]

    def _take(self, rows: list[int]) -> RolloutBatch:
        index = torch.tensor(rows, dtype=torch.long, device=self.query_ids.device)
        return self._map(
            lambda t: t.index_select(0, index.to(t.device)),
            prompts=[self.prompts[i] for i in rows],
            completions=[self.completions[i] for i in rows],
        )

    def _map(
        self,
        fn: Callable[[Tensor], Tensor],
        prompts: list[str] | None = None,
        completions: list[str] | None = None,
    ) -> RolloutBatch:
        """A copy with ``fn`` applied to every tensor field and new (or copied) text lists."""
        tensors: dict[str, Any] = {
            field.name: fn(value)
            for field in dataclasses.fields(self)
            if isinstance(value := getattr(self, field.name), Tensor)
        }
        return dataclasses.replace(
            self,
            **tensors,
            prompts=list(self.prompts) if prompts is None else prompts,
            completions=list(self.completions) if completions is None else completions,
        )
