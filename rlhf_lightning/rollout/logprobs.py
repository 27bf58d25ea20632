"""Score a rollout: per-token log-probs (and entropy, values) of the response tokens.

One forward over ``query + response`` with position ids from the mask, then
``logits[:, Q-1:-1]`` scores ``ids[:, Q:]`` (ALGORITHMS.md §5.1: the logits at t score token t+1).
The same function serves the policy at rollout time, the reference model, and the policy inside
the PPO update, so all three see identical positions and temperature.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple, overload

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from rlhf_lightning.functional import entropy_from_logits, position_ids_from_mask, token_logprobs


class ResponseScores(NamedTuple):
    """Output of :func:`response_logprobs_and_values`.

    Attributes:
        logprobs: Log-probs of the response tokens at the given temperature. Shape (B, A), fp32.
        values: Value head output at the position *before* each response token, i.e. V(state
            that emits token t). Shape (B, A), fp32.
        entropy: Entropy of the next-token distribution (at the temperature), or None.
            Shape (B, A), fp32.
    """

    logprobs: Tensor
    values: Tensor
    entropy: Tensor | None = None


@overload
def response_logprobs(
    model: nn.Module,
    query_response_ids: Tensor,
    attention_mask: Tensor,
    context_length: int,
    temperature: float = ...,
    return_entropy: Literal[False] = ...,
    chunk_size: int | None = ...,
) -> Tensor: ...


@overload
def response_logprobs(
    model: nn.Module,
    query_response_ids: Tensor,
    attention_mask: Tensor,
    context_length: int,
    temperature: float = ...,
    return_entropy: Literal[True] = ...,
    chunk_size: int | None = ...,
) -> tuple[Tensor, Tensor]: ...


def response_logprobs(
    model: nn.Module,
    query_response_ids: Tensor,
    attention_mask: Tensor,
    context_length: int,
    temperature: float = 1.0,
    return_entropy: bool = False,
    chunk_size: int | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Log-probs of the response tokens under ``model`` at ``temperature``.

    The model runs in whatever mode it is in and gradients flow when enabled: wrap in
    ``torch.no_grad()`` for rollout / reference scoring, and keep dropout at p=0 so the first
    PPO minibatch has ratio 1 (§5.3).

    Args:
        model: A causal LM returning an HF output or a NamedTuple, either with ``.logits``
            (B, T, V).
        query_response_ids: Left-padded query then response (``RolloutBatch.input_ids``).
            Shape (B, T).
        attention_mask: True at real tokens (``RolloutBatch.attention_mask``). Shape (B, T).
        context_length: Q, the column where the responses start.
        temperature: Logits are divided by it, as ``generate`` did when sampling (§2
            "Temperature": without it the PPO ratio is not 1 on the first minibatch).
        return_entropy: Also return the entropy of each next-token distribution.
        chunk_size: Rows per forward; bounds the (chunk, T, V) logits held at once. Under
            ``no_grad`` this bounds peak memory; with gradients the graph keeps every chunk.
            None runs the whole batch at once.

    Returns:
        Log-probs, shape (B, A) fp32, A = T - Q; with ``return_entropy``, ``(logprobs,
        entropy)``. Positions outside the response mask (pad after the stop token) are left as
        computed: mask them downstream.
    """
    scores = _score(
        model,
        query_response_ids,
        attention_mask,
        context_length,
        temperature,
        chunk_size,
        want_entropy=return_entropy,
        want_values=False,
    )
    return (scores.logprobs, scores.entropy) if return_entropy else scores.logprobs


def response_logprobs_and_values(
    model: nn.Module,
    query_response_ids: Tensor,
    attention_mask: Tensor,
    context_length: int,
    temperature: float = 1.0,
    return_entropy: bool = False,
    chunk_size: int | None = None,
) -> ResponseScores:
    """Response log-probs and values from one forward of a value-head model.

    Values come from the same positions as the logits, ``values[:, Q-1:-1]``: the value for
    response token t is read at the state that emits it (§1.2 step 3, §5.1). Arguments as in
    :func:`response_logprobs`.

    Args:
        model: Returns a NamedTuple (or object) with ``logits`` (B, T, V) and ``values`` (B, T).
        query_response_ids: Shape (B, T).
        attention_mask: Shape (B, T).
        context_length: Q.
        temperature: Divides the logits (not the values).
        return_entropy: Also fill ``entropy``.
        chunk_size: Rows per forward; None = the whole batch.

    Returns:
        :class:`ResponseScores`, each tensor (B, A); positions outside the response mask are
        left as computed.

    Raises:
        TypeError: If the model output has no ``values`` tensor.
    """
    return _score(
        model,
        query_response_ids,
        attention_mask,
        context_length,
        temperature,
        chunk_size,
        want_entropy=return_entropy,
        want_values=True,
    )


def response_values(
    model: nn.Module,
    query_response_ids: Tensor,
    attention_mask: Tensor,
    context_length: int,
    chunk_size: int | None = None,
) -> Tensor:
    """Values of the response positions from a separate critic (no logits needed).

    Same alignment as :func:`response_logprobs_and_values`: ``values[:, Q-1:-1]``.

    Args:
        model: Returns a (B, T) values tensor, or an output with a ``values`` tensor.
        query_response_ids: Shape (B, T).
        attention_mask: True at real tokens. Shape (B, T).
        context_length: Q.
        chunk_size: Rows per forward; None = the whole batch.

    Returns:
        Values, fp32. Shape (B, A); positions outside the response mask left as computed.
    """
    _check_inputs(query_response_ids, attention_mask, context_length)
    step = chunk_size or query_response_ids.shape[0]
    parts = []
    for start in range(0, query_response_ids.shape[0], step):
        mask = attention_mask[start : start + step]
        out = model(
            input_ids=query_response_ids[start : start + step],
            attention_mask=mask.long(),
            position_ids=position_ids_from_mask(mask),
        )
        values = out if isinstance(out, Tensor) else _values_of(out)
        values = values.squeeze(-1) if values.ndim == 3 else values
        parts.append(values[:, context_length - 1 : -1].float())
    return torch.cat(parts)


def _check_inputs(ids: Tensor, attention_mask: Tensor, context_length: int) -> None:
    if ids.shape != attention_mask.shape or not 0 < context_length < ids.shape[1]:
        raise ValueError(
            f"ids {tuple(ids.shape)} and mask {tuple(attention_mask.shape)} must match, with "
            f"0 < context_length ({context_length}) < T"
        )


def _score(
    model: nn.Module,
    ids: Tensor,
    attention_mask: Tensor,
    context_length: int,
    temperature: float,
    chunk_size: int | None,
    *,
    want_entropy: bool,
    want_values: bool,
) -> ResponseScores:
    """The chunked forward behind both public functions (``values`` empty when not wanted)."""
    _check_inputs(ids, attention_mask, context_length)
    step = chunk_size or ids.shape[0]
    parts = [
        _score_chunk(
            model,
            ids[start : start + step],
            attention_mask[start : start + step],
            context_length,
            temperature,
            want_entropy,
            want_values,
        )
        for start in range(0, ids.shape[0], step)
    ]
    logprobs, values, entropy = zip(*parts, strict=True)
    return ResponseScores(
        logprobs=torch.cat(logprobs),
        values=torch.cat(values),
        entropy=torch.cat(entropy) if want_entropy else None,
    )


def _score_chunk(
    model: nn.Module,
    ids: Tensor,
    attention_mask: Tensor,
    context_length: int,
    temperature: float,
    want_entropy: bool,
    want_values: bool,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(logprobs, values, entropy)`` for one chunk, each (b, A); absent ones are empty/None."""
    extra: dict[str, Any] = {"use_cache": False} if isinstance(model, PreTrainedModel) else {}
    out = model(
        input_ids=ids,
        attention_mask=attention_mask.long(),
        position_ids=position_ids_from_mask(attention_mask),
        **extra,
    )
    logits = getattr(out, "logits", None)
    if not isinstance(logits, Tensor):
        raise TypeError(
            f"{type(out).__name__} has no `logits` tensor: the model must return an HF output or "
            "a NamedTuple with `logits`."
        )
    logits = logits[:, context_length - 1 : -1]  # (b, A, V): position t scores token t+1
    logprobs = token_logprobs(logits, ids[:, context_length:], temperature=temperature)
    scaled = logits.float()  # no copy for fp32
    scaled = scaled if temperature == 1.0 else scaled / temperature
    entropy = entropy_from_logits(scaled) if want_entropy else None
    values = logprobs.new_empty(logprobs.shape[0], 0)
    if want_values:
        values = _values_of(out)[:, context_length - 1 : -1].float()
    return logprobs, values, entropy


def _values_of(out: Any) -> Tensor:
    # An HF ModelOutput is a dict, so `.values` there is the dict method, not a tensor.
    values = getattr(out, "values", None)
    if not isinstance(values, Tensor):
        raise TypeError(
            f"{type(out).__name__} has no `values` tensor: response_logprobs_and_values needs a "
            "value-head model returning (logits, values, ...) as a NamedTuple."
        )
    return values.squeeze(-1) if values.ndim == 3 else values
