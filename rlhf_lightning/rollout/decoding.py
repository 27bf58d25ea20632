"""The HF backend's decoding loop: row-keyed sampling with the KV cache, each row leaving the
batch at its stop token, the cache written in place into room reserved once
(:func:`rlhf_lightning.rollout.generation.generate_rollout` calls it)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from transformers.cache_utils import DynamicLayer

from rlhf_lightning.rollout.keyed_sampling import KeyedSampler


def decode_dropping_finished(
    lm: Any,
    q_ids: Tensor,
    q_mask: Tensor,
    keyed: KeyedSampler,
    max_new_tokens: int,
    stop_ids: list[int],
    pad_id: int,
    cache: Any,  # a transformers Cache, or None
    recorded_values: list[Tensor],
) -> Tensor:
    """Row-keyed sampling with the KV cache, each row leaving the batch at its stop token.

    ``generate`` keeps a finished row in the batch (feeding it padding) until every row has
    stopped, so with responses of natural length most of the last steps' work is for rows
    already done: with B rows, the longest A tokens long, it runs B x A row-steps where the
    responses hold sum(lengths). Here a row that draws a stop token is removed from the batch
    and from the cache (``batch_select_indices``) at once. Every draw is the keyed sampler's
    on the row's own logits, so the samples are ``generate``'s (up to float rounding of the
    same arithmetic in a smaller batch).

    Args:
        lm: The causal LM.
        q_ids: Left-padded queries. Shape (B, Q).
        q_mask: True at real tokens. Shape (B, Q).
        keyed: The sampler; its ``policy_logprobs`` get one (B,) entry per step (0 for rows
            already finished), as under ``generate``.
        max_new_tokens: At most this many steps.
        stop_ids: Tokens that end a row (kept as its last token).
        pad_id: Fills each row after its stop token.
        cache: A prefilled cache for ``q_ids[:, :-1]`` (:func:`_shared_prefill`), or None to
            prefill the whole queries here.
        recorded_values: :func:`_recording_values`'s list: its per-step (rows left,) entries
            are widened to (B,) (0 for rows already finished).

    Returns:
        The drawn tokens, pad after each row's stop. Shape (B, A), A <= ``max_new_tokens``
        (the step at which the last row stopped).
    """
    b, q = q_ids.shape
    device = q_ids.device
    sampled = torch.full((b, max_new_tokens), pad_id, dtype=q_ids.dtype, device=device)
    rows = torch.arange(b, device=device)  # (N,) the batch rows still sampling
    keys = keyed.row_keys.to(device)
    stops = torch.tensor(stop_ids, dtype=q_ids.dtype, device=device)
    mask = q_mask.long()  # (N, Q + t) attention mask of the rows left
    # Positions as generate gives a left-padded batch: the count of real tokens before.
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    ids, pos = (q_ids, positions) if cache is None else (q_ids[:, -1:], positions[:, -1:])
    steps = 0
    for step in range(max_new_tokens):
        out = lm(
            input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True,
            logits_to_keep=1,
        )  # fmt: skip
        if step == 0:
            cache = out.get("cache")
            if cache is None:
                cache = out.get("past_key_values")
            if cache is None:  # rows cannot leave a batch without a cache to select from
                raise RuntimeError(f"{type(lm).__name__} returned no KV cache (use_cache=True)")
            _preallocate(cache, max_new_tokens)
        tokens = keyed.draw(step, out.logits[:, -1], keys[rows]).squeeze(1)  # (N,)
        keyed.policy_logprobs[-1] = _widen(keyed.policy_logprobs[-1], rows, b)
        if recorded_values:
            recorded_values[-1] = _widen(recorded_values[-1], rows, b)
        sampled[rows, step] = tokens
        steps = step + 1
        going = ~torch.isin(tokens, stops)  # (N,)
        if not bool(going.all()):
            if not bool(going.any()):
                break
            kept = going.nonzero().squeeze(1)
            cache.batch_select_indices(kept)
            rows, tokens, mask, pos = rows[kept], tokens[kept], mask[kept], pos[kept]
        ids = tokens.unsqueeze(1)
        mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
        pos = pos[:, -1:] + 1
    return sampled[:, :steps]


class _PreallocatedLayer(DynamicLayer):
    """A KV cache layer that writes each step into room reserved up front.

    ``DynamicLayer`` appends a decoding step's keys and values with ``torch.cat``: a new
    (B, H, T, D) tensor per layer per step, the whole cache copied every step (a third of a
    SmolLM2 decoding step on CPU, measured with torch.profiler). Here the room for every step
    is allocated once and each step writes its column in place; ``keys`` / ``values`` are views
    of the filled part, the same numbers ``DynamicLayer`` would hold.
    """

    def __init__(self, keys: Tensor, values: Tensor, room: int) -> None:
        super().__init__()
        b, h, t, d = keys.shape
        self._keys = keys.new_empty(b, h, t + room, d)
        self._values = values.new_empty(b, values.shape[1], t + room, values.shape[-1])
        self._keys[:, :, :t] = keys
        self._values[:, :, :t] = values
        self._length = t
        self.device = keys.device
        self.is_initialized = True
        self._views()

    def _views(self) -> tuple[Tensor, Tensor]:
        keys = self._keys[:, :, : self._length]
        values = self._values[:, :, : self._length]
        self.keys, self.values = keys, values
        return keys, values

    def update(
        self, key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any
    ) -> tuple[Tensor, Tensor]:
        n = key_states.shape[-2]
        if self._length + n > self._keys.shape[-2]:  # past the room reserved: grow as usual
            keys, values = self._views()
            self._keys = torch.cat([keys, key_states], dim=-2)
            self._values = torch.cat([values, value_states], dim=-2)
        else:
            self._keys[:, :, self._length : self._length + n] = key_states
            self._values[:, :, self._length : self._length + n] = value_states
        self._length += n
        return self._views()

    def batch_select_indices(self, indices: Tensor) -> None:
        self._keys = self._keys[indices]
        self._values = self._values[indices]
        self._views()


def _preallocate(cache: Any, room: int) -> None:
    """Replace ``cache``'s plain dynamic layers by :class:`_PreallocatedLayer` with ``room``
    more positions each; other layer types (sliding windows, ...) stay as they are."""
    layers: list[Any] = getattr(cache, "layers", None) or []
    for i, layer in enumerate(layers):
        if type(layer) is not DynamicLayer or not layer.is_initialized:
            continue
        keys, values = layer.keys, layer.values
        if keys is not None and values is not None and layer.get_seq_length() > 0:
            layers[i] = _PreallocatedLayer(keys, values, room)


def _widen(values: Tensor, rows: Tensor, b: int) -> Tensor:
    """(N,) values of ``rows`` as a (B,) tensor, 0 at the other rows."""
    if len(rows) == b:
        return values
    return values.new_zeros(b).index_copy_(0, rows, values)
