"""Token log-probabilities and entropy from logits.

Numerics (ALGORITHMS.md §5.4): always ``log_softmax`` + ``gather`` (or ``x_i - logsumexp(x)``),
never ``log(softmax(x))``: for fp32 logits [0, -200] the former gives [0, -200], the latter
[0, -inf]. Logits are upcast to fp32 first, as TRL's value-head model does for ``lm_logits``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlhf_lightning.functional.masked import masked_sum


def _upcast(logits: Tensor) -> Tensor:
    """fp32 for half/bf16 logits; fp32 and fp64 are kept as they are."""
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


def token_logprobs(logits: Tensor, tokens: Tensor, temperature: float = 1.0) -> Tensor:
    """Log-probability of each token under the logits at the same position.

    No shift happens here: ``logits[b, t]`` scores ``tokens[b, t]``. Use
    :func:`shifted_token_logprobs` for the next-token alignment of a causal LM.

    Args:
        logits: Unnormalised scores. Shape (B, T, V), any float dtype.
        tokens: Token ids. Shape (B, T), long.
        temperature: Logits are divided by it before normalising, so the result matches
            sampling at that temperature (ALGORITHMS.md §2 "Temperature": skipping the division
            at training time makes the PPO ratio differ from 1 on the first minibatch).

    Returns:
        Log-probabilities, fp32 (fp64 for fp64 logits). Shape (B, T).

    Raises:
        ValueError: If ``temperature <= 0`` or the shapes do not match.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if logits.ndim < 2 or logits.shape[:-1] != tokens.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} must be tokens {tuple(tokens.shape)} plus a vocab dim"
        )
    index = tokens.long().unsqueeze(-1)
    if logits.dtype in (torch.float32, torch.float64):
        # TRL selective_log_softmax: x_i - logsumexp(x) never materialises a (B, T, V) output.
        scaled = logits / temperature if temperature != 1.0 else logits
        picked = scaled.gather(-1, index).squeeze(-1)
        return picked - torch.logsumexp(scaled, dim=-1)
    # Half precision: upcast one batch row at a time so the fp32 copy is (T, V), not (B, T, V).
    rows = [
        torch.log_softmax(_upcast(row) / temperature, dim=-1).gather(-1, row_index).squeeze(-1)
        for row, row_index in zip(logits, index, strict=True)
    ]
    return torch.stack(rows)


def indexed_token_logprobs(
    logits: Tensor, rows: Tensor, tokens: Tensor, temperature: float = 1.0
) -> Tensor:
    """Log-probability of each token under a chosen row of `logits`: ``logits[rows[n]]`` scores
    ``tokens[n]``; several tokens may share a row (each completion of a shared prompt is scored
    from the prompt's last position) and the row is normalised once.

    Args:
        logits: Unnormalised scores, one row per distinct scoring position. Shape (K, V).
        rows: The row scoring each token. Shape (N,), long.
        tokens: Token ids. Shape (N,).
        temperature: As :func:`token_logprobs`.

    Returns:
        Log-probabilities, fp32 (fp64 for fp64 logits). Shape (N,).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if logits.ndim != 2 or rows.shape != tokens.shape or rows.ndim != 1:
        raise ValueError(
            f"logits {tuple(logits.shape)} must be (K, V), rows {tuple(rows.shape)} and tokens "
            f"{tuple(tokens.shape)} both (N,)"
        )
    # x_i - logsumexp(x), as token_logprobs: the (K, V) normalised output is never built.
    scaled = _upcast(logits)
    scaled = scaled / temperature if temperature != 1.0 else scaled
    return scaled[rows, tokens.long()] - torch.logsumexp(scaled, dim=-1)[rows]


def shifted_token_logprobs(logits: Tensor, input_ids: Tensor, temperature: float = 1.0) -> Tensor:
    """Next-token log-probabilities of a causal LM: ``logits[:, t]`` scores ``input_ids[:, t+1]``.

    ALGORITHMS.md §5.1 (off-by-one): ``log_softmax(logits[:, :-1]).gather(ids[:, 1:])``.

    Args:
        logits: Model output over the full sequence. Shape (B, T, V).
        input_ids: The full sequence. Shape (B, T), T >= 2.
        temperature: See :func:`token_logprobs`.

    Returns:
        Log-probability of tokens 1..T-1 given their prefix. Shape (B, T-1).
    """
    return token_logprobs(logits[:, :-1], input_ids[:, 1:], temperature=temperature)


def sequence_logprobs(token_logps: Tensor, mask: Tensor) -> Tensor:
    """Sum of token log-probabilities over the masked positions of each sequence.

    DPO and RLOO use the **sum**, not the mean (ALGORITHMS.md §4).

    Args:
        token_logps: Per-token log-probabilities. Shape (B, A).
        mask: Bool, True = response token to count. Shape (B, A).

    Returns:
        Sequence log-probability. Shape (B,). A row with an empty mask gives 0.
    """
    return masked_sum(token_logps, mask, dim=-1)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of the categorical distribution given by the logits.

    ``-Σ_v p_v log p_v`` with ``log p = log_softmax(l)``, which equals TRL's
    ``logsumexp(l) - Σ_v softmax(l)_v · l_v`` (ALGORITHMS.md §1.2 step 7), computed in fp32.

    Args:
        logits: Unnormalised scores. Shape (..., V).

    Returns:
        Entropy in nats. Shape (...).
    """
    logp = torch.log_softmax(_upcast(logits), dim=-1)
    # A -inf logit (banned token) has p = 0 and log p = -inf: 0 * -inf would be NaN, its true
    # contribution is 0. Clamping log p to the most negative finite float keeps it 0.
    # (One log_softmax pass instead of softmax + logsumexp: ~2x faster over a large vocab.)
    return -(logp.exp() * logp.clamp_min(torch.finfo(logp.dtype).min)).sum(dim=-1)
