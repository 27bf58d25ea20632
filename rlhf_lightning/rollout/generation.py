"""Batched sampling from a causal LM with the KV cache: rollouts for PPO, GRPO and RLOO.

One ``model.generate`` call per batch (KV cache on, eval mode, no grad) on left-padded queries,
then every response is cut after its first stop token (ALGORITHMS.md §2 "EOS trick").

Sampling is pure ancestral sampling by default (temperature only; top_k 0, top_p 1): PPO's KL
penalty and importance ratio assume the samples come from the policy itself (§5.5).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import torch
from torch import Tensor, nn
from transformers import LogitsProcessorList, PreTrainedTokenizerBase

from rlhf_lightning.functional import token_logprobs
from rlhf_lightning.models.dropout import eval_mode
from rlhf_lightning.rollout.batch import RolloutBatch
from rlhf_lightning.rollout.decoding import decode_dropping_finished
from rlhf_lightning.rollout.keyed_sampling import KeyedSampler
from rlhf_lightning.rollout.queries import (
    encode_prompts,
    left_pad,
    pad_token_id,
    rows_from_tensor,
    start_token_id,
)
from rlhf_lightning.rollout.sampling import SamplingConfig
from rlhf_lightning.rollout.stop import truncate_at_stop


@torch.no_grad()
def generate_rollout(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str] | None = None,
    query_ids: list[list[int]] | Tensor | None = None,
    config: SamplingConfig | None = None,
    generator_seed: int | None = None,
    *,
    query_mask: Tensor | None = None,
    prepend_bos: bool = True,
    return_logprobs: bool = False,
    row_keys: Tensor | None = None,
    record_values: bool = False,
    share_prefill: bool = False,
    drop_finished: bool = False,
) -> RolloutBatch:
    """Sample one response per query in a single batched ``generate`` call.

    Steps: encode the queries (text or ids) → left-pad → ``generate`` once (eval mode, no grad,
    KV cache; each submodule's train/eval mode is restored after) → cut after the first stop
    token → decode. For GRPO groups, repeat each prompt G times contiguously first.

    Args:
        model: A causal LM, or a value-head wrapper exposing it as ``pretrained_model`` (the
            wrapper is put in eval mode, the inner LM generates).
        tokenizer: Encodes prompts and decodes completions.
        prompts: B query strings. Give either these or ``query_ids``.
        query_ids: B lists of ids, or a padded (B, Q) tensor (see ``query_mask``). Used as given
            (no BOS added); an empty row starts at BOS.
        config: Sampling settings; None is ``SamplingConfig()``.
        generator_seed: Seed for this call only: the global RNG streams are forked and
            restored, so seeding a rollout does not shift anything else.
        query_mask: For a tensor ``query_ids``: True at real tokens, any padding side.
            None: tokens equal to the pad id are padding.
        prepend_bos: For ``prompts``: put BOS first (as the SFT data does), see
            :func:`~rlhf_lightning.rollout.queries.encode_prompts`.
        return_logprobs: Also return the log-probs of the sampled tokens under the sampling
            distribution, from ``generate``'s scores (logits / temperature after any top-k/top-p
            filtering, and without the pad token, which is never sampled). They equal
            :func:`~rlhf_lightning.rollout.scoring.score_tokens` at the same temperature
            when sampling is on-policy, up to the pad token's probability (~0 for a trained
            model).
        row_keys: One int key per row (e.g. its index in the global batch). With a
            ``generator_seed``, each row's noise is then a function of (seed, key, step) alone
            (``keyed_sampling``): the same answers whatever the batch composition or the number
            of data-parallel processes. Shape (B,). None: one stream for the batch.
        record_values: For a value-head wrapper (``model.v_head``): also record the value of
            every response position from the hidden state each decoding step already computes
            (the LM head's input, which is the ``hidden_states[-1]`` the wrapper's forward
            reads), so PPO needs no policy forward to get its old values.
        share_prefill: Rows holding the same query next to each other (GRPO/RLOO's groups)
            share one prefill: each distinct query's KV cache is computed once and repeated
            for its rows (:func:`_shared_prefill`); the same samples, 1/G of the prefill work.
        drop_finished: With keyed sampling (``row_keys`` and ``generator_seed``) and without
            ``return_logprobs``: decode in this module's own loop, which removes a row from the
            batch (and its KV cache) once it has drawn a stop token, instead of ``generate``,
            which runs every row until the last one stops. The same samples (each row's draw
            depends only on its own logits and key), for the decoding work of the real
            response tokens rather than B x the longest (:func:`~rlhf_lightning.rollout.decoding.decode_dropping_finished`).

    Returns:
        A :class:`RolloutBatch` on the model's device. Shapes (B, Q) and (B, A) with
        A <= ``max_new_tokens`` (generation stops once every row has stopped).
    """
    config = config or SamplingConfig()
    pad_id = pad_token_id(tokenizer)
    stop_ids = config.resolved_stop_ids(tokenizer)
    rows = _query_rows(tokenizer, prompts, query_ids, query_mask, pad_id, prepend_bos)
    lm: Any = getattr(model, "pretrained_model", model)  # the LM that generates
    device = next(lm.parameters()).device
    q_ids, q_mask = left_pad(rows, pad_id, device)
    kwargs = config.generate_kwargs(stop_ids, pad_id)
    # Padding is never a response token: a pad id inside a response would read as padding
    # downstream, and an added pad token (models.tokenizer.PAD_TOKEN) has an untrained
    # embedding row a reward model or critic without it cannot even look up.
    banned = _pad_ban(pad_id, stop_ids)
    if banned:
        kwargs["suppress_tokens"] = banned
    keyed = None
    if row_keys is not None and generator_seed is not None and config.do_sample:
        keyed = KeyedSampler(
            generator_seed,
            torch.as_tensor(row_keys, device=device),
            q_ids.shape[1],
            config.temperature,
            config.top_k,
            config.top_p,
            min_new_tokens=config.min_new_tokens,
            stop_token_ids=stop_ids,
            keep_warped=return_logprobs,
            banned_token_ids=banned,
        )
        # Greedy over the keyed choice is the sample; generate's warpers and its min-length
        # rule stay off (the sampler applies them after recording the policy's log-probs).
        for name in ("temperature", "top_k", "top_p", "typical_p", "epsilon_cutoff", "eta_cutoff"):
            kwargs.pop(name, None)
        kwargs |= {
            "do_sample": False,
            "min_new_tokens": 0,
            "logits_processor": LogitsProcessorList([keyed]),
        }
        kwargs.pop("suppress_tokens", None)  # the sampler bans them after recording
    if share_prefill:
        with eval_mode(model):
            cache = _shared_prefill(lm, q_ids, q_mask)
        if cache is not None:
            kwargs["cache"] = cache  # transformers 5's name (past_key_values before)
    with (
        eval_mode(model),
        # Keyed sampling draws no global randomness; leaving the global streams alone matters
        # when rollouts are generated in a background thread (max_staleness > 0), where
        # forking and restoring them would race with the training thread's draws.
        _seeded(device, None if keyed is not None else generator_seed),
        _recording_values(model, lm, record_values) as recorded_values,
    ):
        if keyed is not None and drop_finished and not return_logprobs:
            sampled = decode_dropping_finished(
                lm, q_ids, q_mask, keyed, config.max_new_tokens, stop_ids, pad_id,
                kwargs.get("cache"), recorded_values,
            )  # fmt: skip
        else:
            out = lm.generate(
                input_ids=q_ids,
                attention_mask=q_mask.long(),
                **kwargs,
                output_scores=return_logprobs,
                return_dict_in_generate=return_logprobs,
            )
            sequences = out if isinstance(out, Tensor) else out.sequences
            sampled = sequences[:, q_ids.shape[1] :]  # (B, A)
    cut = truncate_at_stop(sampled, stop_ids, pad_id)
    logprobs = None
    if return_logprobs:
        # (B, A, V) fp32: the processed scores, already / temperature and filtered (for keyed
        # sampling, the warped scores before the noise).
        steps = keyed.warped if keyed is not None else out.scores
        logprobs = token_logprobs(torch.stack(list(steps), dim=1), sampled)
    policy_logprobs = None
    if keyed is not None and keyed.policy_logprobs:
        recorded = torch.stack(keyed.policy_logprobs, dim=1)[:, : sampled.shape[1]]
        policy_logprobs = torch.where(cut.response_mask, recorded, 0.0)
    policy_values = None
    if recorded_values:
        values = torch.stack(recorded_values, dim=1)[:, : sampled.shape[1]]
        policy_values = torch.where(cut.response_mask, values, 0.0)
    lengths = cut.response_mask.sum(dim=1).tolist()
    responses = [row[:n] for row, n in zip(cut.response_ids.tolist(), lengths, strict=True)]
    if prompts is None:
        prompts = tokenizer.batch_decode(rows, skip_special_tokens=True)
    return RolloutBatch(
        query_ids=q_ids,
        query_mask=q_mask,
        response_ids=cut.response_ids,
        response_mask=cut.response_mask,
        contains_stop=cut.contains_stop,
        prompts=list(prompts),
        completions=tokenizer.batch_decode(responses, skip_special_tokens=True),
        logprobs=logprobs,
        policy_logprobs=policy_logprobs,
        policy_values=policy_values,
    )


def respond_to_batch(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    queries: list[str],
    max_new_tokens: int = 32,
    *,
    seed: int | None = None,
    **sampling,
) -> list[str]:
    """One sampled completion per query, as text (the classic TRL helper, batched).

    TRL's ``respond_to_batch`` looped token by token without a KV cache; this is one
    :func:`generate_rollout` call.

    Args:
        model: A causal LM (or value-head wrapper, see :func:`generate_rollout`).
        tokenizer: Encodes the queries and decodes the completions.
        queries: B prompt strings.
        max_new_tokens: Longest completion, in tokens.
        seed: Seed for this call only (the global RNG is untouched).
        **sampling: Further :class:`SamplingConfig` fields (``temperature``, ``do_sample``, ...).

    Returns:
        B completions, cut after the first stop token, special tokens removed.
    """
    config = SamplingConfig(max_new_tokens=max_new_tokens, **sampling)
    return generate_rollout(
        model, tokenizer, queries, config=config, generator_seed=seed
    ).completions


def _query_rows(
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str] | None,
    query_ids: list[list[int]] | Tensor | None,
    query_mask: Tensor | None,
    pad_id: int,
    prepend_bos: bool,
) -> list[list[int]]:
    """The real query tokens of each row, from exactly one of ``prompts`` / ``query_ids``."""
    if (prompts is None) == (query_ids is None):
        raise ValueError("generate_rollout: pass exactly one of prompts or query_ids")
    if prompts is not None:
        return encode_prompts(tokenizer, prompts, prepend_bos=prepend_bos)
    assert query_ids is not None
    if isinstance(query_ids, Tensor):
        rows = rows_from_tensor(query_ids, query_mask, pad_id)
    else:
        rows = [[int(t) for t in row] for row in query_ids]
    start = start_token_id(tokenizer)
    return [row or [start] for row in rows]


def _shared_prefill(lm: Any, q_ids: Tensor, q_mask: Tensor) -> Any | None:
    """The KV cache of every query but its last column, each run of equal rows computed once.

    GRPO and RLOO sample G responses per prompt, the prompt repeated in G adjacent rows: the
    prefill would compute the same keys and values G times. Here each distinct query runs once
    and its cache is repeated for its rows; ``generate`` then runs the last query column (whose
    logits draw the first response token) for every row, as it does after any prefill. The
    positions are those ``generate`` gives a left-padded batch (mask cumsum - 1).

    Args:
        lm: The causal LM that generates.
        q_ids: Left-padded queries. Shape (B, Q).
        q_mask: True at real tokens. Shape (B, Q).

    Returns:
        A transformers cache for (B, Q - 1), or None when no two adjacent rows are equal (or
        Q < 2): nothing to share.
    """
    b, q = q_ids.shape
    if b < 2 or q < 2:
        return None
    same = (q_ids[1:] == q_ids[:-1]).all(dim=1) & (q_mask[1:] == q_mask[:-1]).all(dim=1)
    first = torch.cat([same.new_ones(1), ~same])  # (B,) the first row of each run
    if bool(first.all()):
        return None
    owner = first.long().cumsum(0) - 1  # (B,) each row's distinct query
    ids, mask = q_ids[first, :-1], q_mask[first, :-1].long()
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    out = lm(
        input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
        logits_to_keep=1,
    )  # fmt: skip
    cache = out.get("cache")  # transformers 5's name
    if cache is None:
        cache = out.get("past_key_values")
    if not hasattr(cache, "batch_select_indices"):  # a legacy tuple cache: prefill as usual
        return None
    cache.batch_select_indices(owner)
    return cache


@contextmanager
def _recording_values(model: nn.Module, lm: Any, enabled: bool) -> Iterator[list[Tensor]]:
    """Collect ``model.v_head`` of the last position's hidden state at every LM-head call.

    Each decoding step runs the LM head once: on the prompt (its last position predicts
    response token 0) and then on each new token, so step t's value is the value of response
    position t. Only (B,) per step is kept, not the hidden states.
    """
    recorded: list[Tensor] = []
    if not enabled:
        yield recorded
        return
    head = getattr(model, "v_head", None)
    if head is None:
        raise ValueError("record_values needs a value-head wrapper (a model with .v_head)")

    def record(_module: nn.Module, args: tuple) -> None:
        hidden = args[0][:, -1]  # (B, H): the newest position
        recorded.append(head(hidden).reshape(hidden.shape[0]).float())

    handle = lm.get_output_embeddings().register_forward_pre_hook(record)
    try:
        yield recorded
    finally:
        handle.remove()


@contextmanager
def _seeded(device: torch.device, seed: int | None) -> Iterator[None]:
    """Seed the CPU generator and ``device``'s inside; both streams restored on exit."""
    if seed is None:
        yield
        return
    accelerator = device.type != "cpu"
    with torch.random.fork_rng(
        devices=[device] if accelerator else [],
        device_type=device.type if accelerator else None,
    ):
        torch.random.default_generator.manual_seed(seed)
        if device.type == "cuda":
            # Only this device's generator: torch.manual_seed would reseed every GPU.
            index = device.index if device.index is not None else torch.cuda.current_device()
            torch.cuda.default_generators[index].manual_seed(seed)
        elif accelerator:
            torch.get_device_module(device.type).manual_seed(seed)
        yield


@torch.no_grad()
def sample_completions(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    *,
    max_new_tokens: int = 40,
    temperature: float = 1.0,
    seed: int | None = None,
) -> list[str]:
    """Sample one completion per prompt in a single left-padded batch.

    Pure ancestral sampling (top_k 0, top_p 1): the samples come from the model's own
    distribution. An empty prompt starts from BOS. Returns the completions without the prompt,
    cut at EOS, special tokens removed.
    """
    bos = tokenizer.bos_token or ""
    texts = [p if p else bos for p in prompts]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues from the right end of each row
    try:
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        out = cast(Any, model).generate(
            **batch,
            do_sample=True,
            temperature=temperature,
            top_k=0,
            top_p=1.0,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            suppress_tokens=_pad_ban(tokenizer.pad_token_id, [tokenizer.eos_token_id]) or None,
        )
    model.train(was_training)
    new_tokens = out[:, batch["input_ids"].shape[1] :]
    return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


def _pad_ban(pad_id: int | None, stop_ids: list[int]) -> list[int]:
    """[pad id] unless the pad token is also a stop token (see `generate_rollout`), else []."""
    return [pad_id] if pad_id is not None and pad_id not in stop_ids else []
