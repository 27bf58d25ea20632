"""Sampling whose randomness belongs to each row, not to the batch.

``torch.multinomial`` draws from one stream for the whole batch, so the sample a row gets
depends on which other rows share its batch, and on how many processes split the batch. Here a
row's token at step t is drawn by inverting its cumulative distribution at one uniform number

    u = U(seed, row_key, t),   token = min{ v : cdf[v] >= u }

with U a counter-based hash (splitmix64) of its three coordinates. That is an exact draw from
``softmax(logits / temperature)`` (after any top-k / top-p filtering), and the randomness is a
pure function of (seed, row key, step): the same prompt with the same key gets the same answer
in a batch of 8 or 512, on one process or eight. Data-parallel RL relies on it: N ranks
generating their shares produce the rollout one process produces for the whole batch.

Cost per step: one softmax, one cumulative sum and one search per row, no per-entry noise.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import LogitsProcessor
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

_MASK64 = (1 << 64) - 1


def _signed(value: int) -> int:
    """A 64-bit constant as the int64 with the same bits."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_MUL1 = _signed(0xBF58476D1CE4E5B9)
_MUL2 = _signed(0x94D049BB133111EB)
_STEP = _signed(0xD1B54A32D192ED03)
_VOCAB = _signed(0xABC98388FB8FAC03)


def _shift_right(x: Tensor, bits: int) -> Tensor:
    """Logical right shift of int64 bit patterns (torch's `>>` keeps the sign)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def splitmix64(x: Tensor) -> Tensor:
    """The splitmix64 finaliser on int64 tensors (wrapping arithmetic): well-mixed bits."""
    z = x + _GOLDEN
    z = (z ^ _shift_right(z, 30)) * _MUL1
    z = (z ^ _shift_right(z, 27)) * _MUL2
    return z ^ _shift_right(z, 31)


def keyed_uniform(seed: int, row_keys: Tensor, step: int) -> Tensor:
    """One uniform number in (0, 1) per row, a pure function of (seed, row key, step).

    Args:
        seed: the rollout's seed.
        row_keys: one int64 key per row (e.g. the row's index in the global batch). Shape (B,).
        step: the generation step (0 for the first response token).

    Returns:
        float64 tensor of shape (B,), on a grid of 2**-53 and never 0.
    """
    device = row_keys.device
    seed_bits = splitmix64(torch.tensor(seed, dtype=torch.long, device=device))
    step_bits = torch.tensor(step, dtype=torch.long, device=device) * _STEP  # wraps, as meant
    bits = splitmix64(splitmix64(row_keys.long() + seed_bits) ^ step_bits)
    return (_shift_right(bits, 11).double() + 0.5) * 2.0**-53


class KeyedSampler(LogitsProcessor):
    """Turns greedy decoding into row-keyed sampling (see the module docstring).

    Pass it in ``logits_processor`` to ``generate(do_sample=False, min_new_tokens=0)``: this
    processor records the policy's log-probs at the temperature, forbids the stop tokens for
    the first ``min_new_tokens`` steps, warps (temperature, top-k, top-p, in ``generate``'s
    order), draws each row's token and returns scores whose argmax is that token (0 there,
    -inf elsewhere).

    Args:
        seed: the rollout's seed.
        row_keys: one key per row. Shape (B,), int64.
        prompt_width: the padded query width Q (step = current length - Q).
        temperature / top_k / top_p: as in ``SamplingConfig``.
        min_new_tokens / stop_token_ids: stop tokens are impossible before this many tokens.
        banned_token_ids: never drawn (the pad token: a response never contains one). Like
            the min-length rule, the ban shapes the draw, not the recorded policy log-probs.
        keep_warped: keep each step's warped scores in ``warped`` (B, V), for log-probs.

    Attributes:
        policy_logprobs: per step, the drawn tokens' log-probs under ``softmax(logits / T)``
            before any filtering (B,): the policy's own, as PPO's old log-probs need them.
    """

    def __init__(
        self,
        seed: int,
        row_keys: Tensor,
        prompt_width: int,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        min_new_tokens: int = 0,
        stop_token_ids: list[int] | None = None,
        keep_warped: bool = False,
        banned_token_ids: list[int] | None = None,
    ) -> None:
        self.seed = seed
        self.row_keys = row_keys.long()
        self.prompt_width = prompt_width
        self.warpers: list[LogitsProcessor] = []
        if temperature != 1.0:
            self.warpers.append(TemperatureLogitsWarper(temperature))
        if top_k:
            self.warpers.append(TopKLogitsWarper(top_k))
        if top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p))
        self.temperature = temperature
        self.min_new_tokens = min_new_tokens
        self.stop_token_ids = list(stop_token_ids or [])
        self.banned_token_ids = list(banned_token_ids or [])
        self.keep_warped = keep_warped
        self.warped: list[Tensor] = []
        self.policy_logprobs: list[Tensor] = []

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        tokens = self.draw(
            input_ids.shape[1] - self.prompt_width, scores, self.row_keys, input_ids=input_ids
        )
        choice = torch.full_like(scores, float("-inf"), dtype=torch.float32)
        return choice.scatter_(1, tokens, 0.0)

    def draw(
        self, step: int, scores: Tensor, row_keys: Tensor, input_ids: Tensor | None = None
    ) -> Tensor:
        """Each row's token at ``step``; records its policy log-prob (and warped scores).

        Args:
            step: the generation step (0 for the first response token).
            scores: the LM's logits at this step. Shape (N, V).
            row_keys: the keys of these N rows (a decoding loop that drops finished rows
                passes the keys of the rows left). Shape (N,).
            input_ids: the sequences so far, for the warpers' signature (temperature, top-k
                and top-p do not read them). Shape (N, Q + step).

        Returns:
            The drawn token ids. Shape (N, 1), int64.
        """
        logits = scores.float()
        # The policy's own distribution at T: recorded for the drawn tokens, and (when nothing
        # filters it at this step) the very distribution sampled from.
        policy = torch.log_softmax(logits / self.temperature, dim=-1)
        forbid_stop = step < self.min_new_tokens and bool(self.stop_token_ids)
        banned = self.banned_token_ids + (self.stop_token_ids if forbid_stop else [])
        truncating = any(not isinstance(w, TemperatureLogitsWarper) for w in self.warpers)
        scores = logits
        if banned and (truncating or self.keep_warped):
            # top-k/top-p must choose among allowed tokens; kept scores must show the ban
            scores = logits.clone()
            scores[:, banned] = float("-inf")
        for warper in self.warpers:
            scores = warper(input_ids, scores)
        if self.keep_warped:
            self.warped.append(scores)
        u = keyed_uniform(self.seed, row_keys.to(scores.device), step)
        if truncating:
            probs = torch.softmax(scores, dim=-1)
        else:
            # The policy at T itself; a banned token's mass is dropped (the cdf is scaled by
            # its total below), with no second softmax over the vocabulary.
            probs = policy.exp()
            if banned:
                probs[:, banned] = 0.0
        cdf = probs.double().cumsum_(dim=-1)
        # u > 0, so a token of probability 0 (a flat stretch of the cdf) is never the first
        # index whose cdf reaches u * total.
        target = (u * cdf[:, -1]).unsqueeze(1)
        tokens = torch.searchsorted(cdf, target).clamp_(max=scores.shape[-1] - 1)
        self.policy_logprobs.append(policy.gather(1, tokens).squeeze(1))
        return tokens
