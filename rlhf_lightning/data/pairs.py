"""Preference pairs (prompt, chosen, rejected) for reward modelling and DPO.

Accepted rows (canonical column names; ``columns`` renames them, e.g. ``{"chosen": "better"}``):

* ``format="text"``: ``chosen`` and ``rejected`` strings, an optional ``prompt`` string (absent
  or ``""``: the completions stand alone, as in the demo pairs).
* ``format="messages"``: ``chosen`` and ``rejected`` are chat message lists, rendered with the
  tokenizer's chat template. The prompt turns are either a separate ``prompt`` column (a message
  list, or a string taken as one user turn; leading copies of it in ``chosen``/``rejected`` are
  not repeated) or, without that column, the longest run of leading messages the two sides
  share.
* ``format="auto"`` reads the type of the ``chosen`` column: strings -> text, lists -> messages.
* An optional ``margin`` column (a number per row: how much better chosen is) is carried to the
  batches.

Each side is tokenised like the SFT data, so a DPO policy sees what SFT taught it:

* text: ``lead + prompt + completion + end``. Prompt and completion are encoded separately
  without special tokens (no token straddles the boundary). ``lead`` is what the tokenizer puts
  in front of a text itself (BERT ``[CLS]``, Llama ``<s>``), else its BOS when it has one (GPT-2
  style, as SFT's prompt/completion path); ``end`` is what it appends itself (BERT ``[SEP]``),
  else EOS. So nothing is doubled and every sequence ends with EOS (causal) or ``[SEP]``
  (encoders): a sequence classifier pooling at the last real token has read the whole text.
  For a causal tokenizer that appends no EOS itself (GPT-2, Llama, Qwen) the result is
  exactly SFT's ``tokenize_prompt_completion``.
* messages: the rendered conversation (the template writes its own special tokens, as in SFT's
  messages path), followed by ``end`` unless it already ends with it. The completion is the
  part after the generation prompt of its first assistant turn.

``completion_mask`` is True on the completion's tokens including ``end`` (for messages: the
assistant turns of the completion, as SFT's targets, plus ``end``), which is what DPO sums
log-probabilities over; position 0 is never in it (nothing predicts it).

**Truncation** to ``max_length`` keeps ``lead`` and ``end`` and cuts the prompt's start and the
completion's end: the prompt (the same for both sides) keeps its last
``max(budget - longest completion, budget // 2)`` tokens (all of it if shorter), the
completions fill the rest; ``budget = max_length - len(lead) - len(end)``. A pair in which a
side has no completion token left, or whose sides are cut to the same tokens, is dropped and
counted (one warning per split; an error when no pair is left).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import datasets
import torch

from rlhf_lightning.data.collate import pad_batch
from rlhf_lightning.data.formats import AUTO
from rlhf_lightning.data.pair_sides import SIDES, Side, _message_sides, _text_sides
from rlhf_lightning.data.sft import (
    _ROW,
)
from rlhf_lightning.data.validation import describe
from rlhf_lightning.errors import DataError

PAIR_COLUMNS = ("prompt", "chosen", "rejected", "margin")
PAIR_FORMATS = ("text", "messages")
# Columns DPO adds when it precomputes the reference's sequence log-probs before training.
REFERENCE_LOGP_KEYS = ("ref_chosen_logps", "ref_rejected_logps")

Pair = dict[str, Any]


def resolve_pair_columns(columns: Mapping[str, str] | None) -> dict[str, str]:
    """Checks a ``canonical -> dataset column`` mapping (prompt/chosen/rejected/margin)."""
    # A null entry (how the data configs list the names) keeps the default column name.
    columns = {k: v for k, v in (columns or {}).items() if v is not None}
    for canonical in columns:
        if canonical not in PAIR_COLUMNS:
            raise DataError(
                f"data.columns.{canonical}: unknown column name '{canonical}' for preference "
                f"data. Fix: map one of {', '.join(PAIR_COLUMNS)} (data.columns.chosen=better)."
            )
    return columns


def detect_pair_format(
    dataset: datasets.Dataset,
    columns_map: Mapping[str, str] | None = None,
    *,
    format: str = AUTO,
    source: str = "data",
) -> str:
    """Checks the columns of a preference dataset and resolves its format.

    Args:
        dataset: the rows (only ``column_names`` and ``features`` are read).
        columns_map: canonical name -> dataset column.
        format: ``"auto"``, ``"text"`` or ``"messages"``.
        source: what the data is (``data.path=...``), for error messages.

    Returns:
        ``"text"`` or ``"messages"``.

    Raises:
        DataError: unknown format, a mapped column or ``chosen``/``rejected`` missing.
    """
    columns = resolve_pair_columns(columns_map)
    available = list(dataset.column_names)
    listing = ", ".join(c for c in available if c != _ROW)
    for canonical, column in columns.items():
        if column not in available:
            raise DataError(
                f"{source}: column '{column}' (data.columns.{canonical}) not found "
                f"(columns: {listing}). Fix: set data.columns.{canonical} to one of the columns."
            )
    for canonical in SIDES:
        if columns.get(canonical, canonical) not in available:
            used = set(columns.values()) | set(PAIR_COLUMNS) | {_ROW}
            guess = next((c for c in available if c not in used), "<column>")
            hint = ""
            if "completion" in available or "text" in available or "messages" in available:
                hint = " (this looks like SFT data; preference data needs two completions)"
            raise DataError(
                f"{source}: column '{canonical}' not found (columns: {listing}){hint}. "
                f"Fix: map it with data.columns.{canonical}={guess}, or point data.path at "
                "data with chosen/rejected (and optionally prompt, margin) columns."
            )
    if format == AUTO:
        feature = dataset.features[columns.get("chosen", "chosen")]
        return "text" if isinstance(feature, datasets.Value) else "messages"
    if format not in PAIR_FORMATS:
        raise DataError(
            f"{source}: unknown data.format={format} for preference data. "
            f"Fix: use one of {AUTO}, {', '.join(PAIR_FORMATS)}."
        )
    return format


# --- tokenisation -------------------------------------------------------------------------


def tokenize_pair(
    prompt: str, chosen: str, rejected: str, tokenizer: Any, max_length: int | None
) -> Pair | None:
    """Validates and tokenises one text pair; see ``tokenize_pairs``.

    Returns:
        ``{"chosen_input_ids", "chosen_completion_mask", "rejected_input_ids",
        "rejected_completion_mask"}`` (lists), or None when truncation leaves a side no
        completion token.
    """
    row = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    return tokenize_pairs([row], "text", {}, tokenizer, max_length)[0]


def tokenize_pairs(
    rows: Sequence[Mapping[str, Any]],
    format: str,
    columns: Mapping[str, str],
    tokenizer: Any,
    max_length: int | None,
    *,
    indices: Sequence[int] | None = None,
    source: str = "data",
) -> list[Pair | None]:
    """Validates and tokenises preference rows.

    Args:
        rows: dataset rows (dicts of column -> value); ``prompt`` and ``margin`` are optional.
        format: ``"text"`` or ``"messages"``.
        columns: canonical name -> dataset column.
        tokenizer: a Hugging Face tokenizer (fast, with a chat template, for ``messages``).
        max_length: maximum tokens per side, or None.
        indices: the rows' indices in their split, for error messages (default 0, 1, ...).
        source: what the data is (``data.path=...``), for error messages.

    Returns:
        Per row ``{"chosen_input_ids", "chosen_completion_mask", "rejected_input_ids",
        "rejected_completion_mask"}`` plus ``"margin"`` (float) when the rows have one; None
        when truncation leaves a side no completion token.

    Raises:
        DataError: naming the row and column: empty or non-string completions, chosen and
            rejected identical (texts: up to surrounding whitespace), a malformed conversation
            or no assistant turn after the prompt, a non-numeric or non-finite margin.
    """
    indices = list(range(len(rows))) if indices is None else list(indices)
    names = {canonical: columns.get(canonical, canonical) for canonical in PAIR_COLUMNS}
    has = {canonical: bool(rows) and names[canonical] in rows[0] for canonical in PAIR_COLUMNS}
    if format == "text":
        sides = _text_sides(rows, names, has, tokenizer, indices, source)
    elif format == "messages":
        sides = _message_sides(rows, names, has, tokenizer, indices, source)
    else:
        raise DataError(
            f"{source}: unknown data.format={format} for preference data. "
            f"Fix: use one of {', '.join(PAIR_FORMATS)}."
        )
    pairs = [truncate_pair(chosen, rejected, max_length) for chosen, rejected in sides]
    if has["margin"]:
        for pair, row, index in zip(pairs, rows, indices, strict=True):
            margin = _require_margin(row[names["margin"]], index, names["margin"], source)
            if pair is not None:
                pair["margin"] = margin
    return pairs


def truncate_pair(chosen: Side, rejected: Side, max_length: int | None) -> Pair | None:
    """Assembles both sides, truncated as the module docstring says.

    Returns:
        ``{"<side>_input_ids": list[int], "<side>_completion_mask": list[bool]}`` for both
        sides, or None when a side has no completion token within ``max_length`` or both
        sides are the same tokens there.
    """
    longest = max(len(chosen.completion), len(rejected.completion))
    pair: Pair = {}
    for name, side in zip(SIDES, (chosen, rejected), strict=True):
        assembled = truncate_side(side, longest, max_length)
        if assembled is None:
            return None
        input_ids, completion_mask, _ = assembled
        # An empty prompt without a lead token would make the first completion token position 0.
        completion_mask[0] = False
        pair[f"{name}_input_ids"] = input_ids
        pair[f"{name}_completion_mask"] = completion_mask
    if pair["chosen_input_ids"] == pair["rejected_input_ids"]:
        return None  # cut to the same tokens: no preference left to learn
    return pair


def truncate_side(
    side: Side, longest: int, max_length: int | None
) -> tuple[list[int], list[bool], int] | None:
    """One side as ``lead prompt completion end``, truncated as the module docstring says.

    Args:
        side: the tokenised side.
        longest: the longest completion among the sides that share this prompt (the prompt
            keeps the same tokens on every side).
        max_length: maximum tokens, or None.

    Returns:
        ``(input_ids, completion_mask, prompt_length)``, where the first ``prompt_length``
        tokens are ``lead + prompt``; None when no completion token fits. With an empty prompt
        and no lead, ``completion_mask[0]`` is still True: nothing predicts position 0, which
        the caller must mask once the sequence is final.
    """
    keep_prompt, keep_completion = len(side.prompt), len(side.completion)
    if max_length is not None:
        budget = max_length - len(side.lead) - len(side.end)
        keep_prompt = min(keep_prompt, max(budget - longest, budget // 2))
        keep_completion = min(keep_completion, budget - keep_prompt)
    if keep_completion < 1:
        return None
    prompt = side.prompt[len(side.prompt) - keep_prompt :]
    input_ids = side.lead + prompt + side.completion[:keep_completion] + side.end
    completion_mask = (
        [False] * (len(side.lead) + keep_prompt)
        + side.completion_mask[:keep_completion]
        + [True] * len(side.end)
    )
    return input_ids, completion_mask, len(side.lead) + keep_prompt


def _require_margin(value: Any, index: int, column: str, source: str) -> float:
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise DataError(
        f"{source}: row {index}, column '{column}': expected a finite number (how much better "
        f"chosen is than rejected), got {describe(value)}. Fix: store margins as numbers, "
        f"drop such rows, or map no margin column (data.columns.margin) to train without one."
    )


# --- batching -----------------------------------------------------------------------------


def collate_pairs(
    features: Sequence[Mapping[str, Any]],
    pad_token_id: int,
    pad_to_multiple_of: int | None = None,
) -> dict[str, torch.Tensor]:
    """Right-pads both sides of every pair to one common length T.

    One T for chosen and rejected lets a model score all 2B sequences in one forward:
    ``torch.cat([chosen_input_ids, rejected_input_ids])`` then ``.chunk(2)``.

    Args:
        features: examples from ``tokenize_pairs``.
        pad_token_id: id written into padded positions.
        pad_to_multiple_of: round T up to a multiple of this.

    Returns:
        ``{side}_input_ids`` LongTensor, ``{side}_attention_mask`` LongTensor (1 = real token,
        as Hugging Face models expect) and ``{side}_completion_mask`` BoolTensor, each of shape
        (B, T), for side in chosen, rejected; plus ``margin`` float32 of shape (B,) when the
        examples have one, and ``ref_chosen_logps``/``ref_rejected_logps`` (B,) when the
        reference log-probs were precomputed (DPO).
    """
    prefixes = tuple(f"{side}_" for side in SIDES)
    return collate_sides(
        features, prefixes, pad_token_id, pad_to_multiple_of, ("margin", *REFERENCE_LOGP_KEYS)
    )


def collate_sides(
    features: Sequence[Mapping[str, Any]],
    prefixes: Sequence[str],
    pad_token_id: int,
    pad_to_multiple_of: int | None = None,
    scalar_keys: Sequence[str] = (),
) -> dict[str, torch.Tensor]:
    """Right-pads every sequence of every example to one common length T.

    Args:
        features: examples holding ``{prefix}input_ids`` and ``{prefix}completion_mask`` for
            each prefix (e.g. ``chosen_``/``rejected_``; KTO: ``""``/``kl_``).
        prefixes: the sequences of an example.
        pad_token_id: id written into padded positions.
        pad_to_multiple_of: round T up to a multiple of this.
        scalar_keys: per-example numbers carried as float32 (B,) tensors when present.

    Returns:
        ``{prefix}input_ids``, ``{prefix}attention_mask`` (LongTensor, 1 = real token) and
        ``{prefix}completion_mask`` (BoolTensor), each (B, T); plus the scalar keys found.
    """
    sequences = [
        {"input_ids": f[f"{prefix}input_ids"], "loss_mask": f[f"{prefix}completion_mask"]}
        for prefix in prefixes
        for f in features
    ]
    padded = pad_batch(sequences, pad_token_id, pad_to_multiple_of=pad_to_multiple_of)
    n = len(features)
    batch = {}
    for k, prefix in enumerate(prefixes):
        rows = slice(k * n, (k + 1) * n)
        batch[f"{prefix}input_ids"] = padded["input_ids"][rows]
        batch[f"{prefix}attention_mask"] = padded["attention_mask"][rows]
        batch[f"{prefix}completion_mask"] = padded["loss_mask"][rows]
    for key in scalar_keys:
        if features and key in features[0]:
            batch[key] = torch.tensor([float(f[key]) for f in features], dtype=torch.float32)
    return batch


# --- the DataModule -----------------------------------------------------------------------
