"""Unpaired preference rows for KTO: a completion and whether it is desirable.

Accepted rows (canonical column names; ``columns`` renames them, e.g. ``{"label": "thumbs_up"}``):

* ``prompt`` (optional), ``completion`` and ``label`` (bool, True = desirable; 0/1 integers are
  read as False/True). ``format="text"``: strings. ``format="messages"``: ``completion`` is a
  list of chat messages holding the assistant turn(s); ``prompt`` is a message list or a string
  taken as one user turn (leading copies of it in ``completion`` are not repeated); without a
  ``prompt`` column, the messages before the completion's first assistant turn are the prompt.
  ``format="auto"`` reads the type of the ``completion`` column.
* **Paired data** (``chosen``/``rejected`` columns and no ``completion`` column): each pair
  becomes one desirable row (its chosen completion) and one undesirable row (its rejected one),
  tokenised and truncated exactly as the pair is for DPO (``rlhf_lightning.data.pairs``). The
  embedded default is the demo preference pairs converted this way. Splits are taken before the
  conversion, so both rows of a pair land in the same split, and ``max_samples`` counts pairs.

Each row is tokenised as one side of a pair is (``lead + prompt + completion + end``, the
prompt's start and the completion's end cut to ``max_length``).

**The KL reference point.** KTO estimates KL(π‖π_ref) on mismatched (prompt, completion) pairs
(Ethayarajh et al. 2024, §4). Each row's mismatched completion is fixed when the data is
prepared: the completion of the next row (in dataset order, cyclically) whose prompt differs,
or simply of the next row when every prompt is the same (the demo rows have no prompt). Each
block of pairs tokenised together (``datasets.map``'s batch) is laid out as its chosen rows,
then its rejected rows, so a row's partner comes from another pair. TRL instead rotates the completions by one within each device batch, which needs
an unshuffled order; a fixed partner lets the data be shuffled and makes the estimate the same
however a batch is split across processes. The mismatched sequence is ``lead + prompt + the
partner's completion``, cut to ``max_length``.
"""

from __future__ import annotations

import numbers
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import datasets
import torch

from rlhf_lightning.data.formats import AUTO
from rlhf_lightning.data.pair_sides import (
    Side,
    _message_side,
    _message_sides,
    _prompt_messages,
    _text_prompt,
    _text_sides,
    encode_text_sides,
    special_affixes,
)
from rlhf_lightning.data.pairs import PAIR_FORMATS, collate_sides, detect_pair_format, truncate_side
from rlhf_lightning.data.preference import PreferenceDataModule
from rlhf_lightning.data.validation import _FIX_ROWS, describe, require_messages, require_text
from rlhf_lightning.errors import DataError

KTO_COLUMNS = ("prompt", "completion", "label", "chosen", "rejected")
# Each example: the row's own sequence ("") and its mismatched KL sequence ("kl_").
KTO_PREFIXES = ("", "kl_")
# Columns KTO adds when it precomputes the reference's sequence log-probs before training.
KTO_REFERENCE_KEYS = ("ref_logps", "ref_kl_logps")
_TOKENIZED = ["input_ids", "completion_mask", "prompt_length", "label"]


def resolve_kto_columns(columns: Mapping[str, str] | None) -> dict[str, str]:
    """Checks a ``canonical -> dataset column`` mapping (prompt/completion/label, or the
    chosen/rejected of paired data)."""
    # A null entry (how the data configs list the names) keeps the default column name; the
    # pair configs KTO's build on list `margin`, which KTO does not read.
    columns = {k: v for k, v in (columns or {}).items() if v is not None}
    unknown = [canonical for canonical in columns if canonical not in KTO_COLUMNS]
    if unknown:
        raise DataError(
            f"data.columns.{unknown[0]}: unknown column name '{unknown[0]}' for KTO data. "
            f"Fix: map one of {', '.join(KTO_COLUMNS)} (data.columns.label=thumbs_up)."
        )
    return columns


def detect_kto_format(
    dataset: datasets.Dataset,
    columns: Mapping[str, str],
    *,
    format: str = AUTO,
    source: str = "data",
) -> tuple[str, bool]:
    """Checks the columns of KTO data and resolves ``(format, paired)``.

    Raises:
        DataError: a mapped column missing, neither ``completion`` + ``label`` nor
            ``chosen`` + ``rejected``, or an unknown format.
    """
    names = {canonical: columns.get(canonical, canonical) for canonical in KTO_COLUMNS}
    available = list(dataset.column_names)
    if names["completion"] not in available:
        if names["chosen"] in available and names["rejected"] in available:
            pair_columns = {
                k: v for k, v in columns.items() if k in ("prompt", "chosen", "rejected")
            }
            return detect_pair_format(dataset, pair_columns, format=format, source=source), True
        listing = ", ".join(c for c in available if not c.startswith("__"))
        raise DataError(
            f"{source}: column '{names['completion']}' not found (columns: {listing}). Fix: give "
            "KTO data prompt/completion/label columns (map them with data.columns.completion=..., "
            "data.columns.label=...), or paired data with chosen/rejected columns."
        )
    for canonical in ("label", *(c for c in columns if c not in ("chosen", "rejected"))):
        if names[canonical] not in available:
            raise DataError(
                f"{source}: column '{names[canonical]}' (data.columns.{canonical}) not found. "
                f"Fix: map data.columns.{canonical} to one of the columns: {', '.join(available)}."
            )
    if format == AUTO:
        feature = dataset.features[names["completion"]]
        return ("text" if isinstance(feature, datasets.Value) else "messages"), False
    if format not in PAIR_FORMATS:
        raise DataError(
            f"{source}: unknown data.format={format} for KTO data. "
            f"Fix: use one of {AUTO}, {', '.join(PAIR_FORMATS)}."
        )
    return format, False


def tokenize_kto_rows(
    rows: Sequence[Mapping[str, Any]],
    format: str,
    columns: Mapping[str, str],
    tokenizer: Any,
    max_length: int | None,
    *,
    paired: bool = False,
    indices: Sequence[int] | None = None,
    source: str = "data",
) -> list[dict[str, Any] | None]:
    """Validates and tokenises KTO rows (or paired rows, two KTO rows each).

    Returns:
        Per KTO row ``{"input_ids", "completion_mask", "prompt_length", "label"}`` (the first
        ``prompt_length`` tokens are lead + prompt), or None when truncation leaves no
        completion token. Paired rows give all their chosen rows, then all their rejected rows.
    """
    indices = list(range(len(rows))) if indices is None else list(indices)
    names = {canonical: columns.get(canonical, canonical) for canonical in KTO_COLUMNS}
    has = {canonical: bool(rows) and names[canonical] in rows[0] for canonical in KTO_COLUMNS}
    if paired:
        tokenize = _text_sides if format == "text" else _message_sides
        pairs = tokenize(rows, names, has, tokenizer, indices, source)
        chosen = [
            _example(c, True, max(len(c.completion), len(r.completion)), max_length)
            for c, r in pairs
        ]
        rejected = [
            _example(r, False, max(len(c.completion), len(r.completion)), max_length)
            for c, r in pairs
        ]
        return chosen + rejected
    labels = [
        _require_label(row[names["label"]], index, names["label"], source)
        for row, index in zip(rows, indices, strict=True)
    ]
    if format == "text":
        prompts = [
            _text_prompt(row, names, has, i, source) for row, i in zip(rows, indices, strict=True)
        ]
        completions = [
            require_text(
                row[names["completion"]], index=i, column=names["completion"], source=source
            )
            for row, i in zip(rows, indices, strict=True)
        ]
        sides = [side for (side,) in encode_text_sides(tokenizer, prompts, completions)]
    else:
        _, end = special_affixes(tokenizer)
        sides = [
            _message_side(*_split_messages(row, names, has, i, source), tokenizer, end, i, source)
            for row, i in zip(rows, indices, strict=True)
        ]
    return [
        _example(side, label, len(side.completion), max_length)
        for side, label in zip(sides, labels, strict=True)
    ]


def _example(side: Side, label: bool, longest: int, max_length: int | None) -> dict | None:
    assembled = truncate_side(side, longest, max_length)
    if assembled is None:
        return None
    input_ids, completion_mask, prompt_length = assembled
    return {
        "input_ids": input_ids,
        "completion_mask": completion_mask,
        "prompt_length": prompt_length,
        "label": label,
    }


def _require_label(value: Any, index: int, column: str, source: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    raise DataError(
        f"{source}: row {index}, column '{column}': expected a bool (True = desirable), got "
        f"{describe(value)}. Fix: store labels as True/False (or 1/0), or map data.columns.label "
        "to the column that holds them."
    )


def _split_messages(
    row: Mapping[str, Any],
    names: Mapping[str, str],
    has: Mapping[str, bool],
    index: int,
    source: str,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(prompt messages, completion messages)`` of one chat row."""
    column = names["completion"]
    chat = require_messages(row[column], index=index, column=column, source=source)
    if has["prompt"]:
        prompt = _prompt_messages(row[names["prompt"]], index, names["prompt"], source)
        completion = chat[len(prompt) :] if chat[: len(prompt)] == prompt else chat
    else:
        first = next(i for i, m in enumerate(chat) if m["role"] == "assistant")
        prompt, completion = chat[:first], chat[first:]
    replies = [m for m in completion if m["role"] == "assistant"]
    if not replies or not all(m["content"].strip() for m in replies):
        raise DataError(
            f"{source}: row {index}, column '{column}': no non-empty assistant turn after the "
            f"prompt, so there is nothing to label. {_FIX_ROWS}"
        )
    return prompt, completion


def kl_partners(prompts: Sequence[Hashable]) -> list[int]:
    """Each row's KL partner: the next row (cyclically) whose prompt differs, else the next row.

    Args:
        prompts: one hashable prompt per row (e.g. its token ids as a tuple).

    Returns:
        One row index per row.
    """
    n = len(prompts)
    later: list[int | None] = [None] * n  # the first later row with another prompt
    for i in range(n - 2, -1, -1):
        later[i] = i + 1 if prompts[i + 1] != prompts[i] else later[i + 1]
    # Rows of the last run of equal prompts wrap around to the first row with another prompt.
    wrap = next((k for k in range(n) if prompts[k] != prompts[-1]), None) if n else None
    return [
        found if found is not None else (wrap if wrap is not None else (i + 1) % n)
        for i, found in enumerate(later)
    ]


def add_kl_sequences(dataset: datasets.Dataset, max_length: int | None) -> datasets.Dataset:
    """Adds each row's mismatched sequence: its own lead + prompt, its partner's completion.

    Columns ``kl_input_ids`` and ``kl_completion_mask``; cut to ``max_length``.
    """
    input_ids = dataset["input_ids"]
    masks = dataset["completion_mask"]
    prompt_lengths = dataset["prompt_length"]
    prompts = [tuple(ids[:n]) for ids, n in zip(input_ids, prompt_lengths, strict=True)]
    kl_ids, kl_masks = [], []
    for i, j in enumerate(kl_partners(prompts)):
        own, other = prompt_lengths[i], prompt_lengths[j]
        stop = None if max_length is None else other + max_length - own
        kl_ids.append(list(prompts[i]) + input_ids[j][other:stop])
        kl_masks.append([False] * own + masks[j][other:stop])
    return dataset.add_column("kl_input_ids", kl_ids).add_column("kl_completion_mask", kl_masks)


def collate_kto(
    features: Sequence[Mapping[str, Any]],
    pad_token_id: int,
    pad_to_multiple_of: int | None = None,
) -> dict[str, torch.Tensor]:
    """Right-pads each row's sequence and its mismatched KL sequence to one common length T.

    Returns:
        ``input_ids``, ``attention_mask``, ``completion_mask`` and the same three with the
        ``kl_`` prefix, each (B, T); ``label`` BoolTensor (B,); ``ref_logps`` / ``ref_kl_logps``
        (B,) when the reference log-probs were precomputed.
    """
    batch = collate_sides(
        features, KTO_PREFIXES, pad_token_id, pad_to_multiple_of, KTO_REFERENCE_KEYS
    )
    for prefix in KTO_PREFIXES:
        batch[f"{prefix}completion_mask"][:, 0] = False  # nothing predicts position 0
    batch["label"] = torch.tensor([bool(f["label"]) for f in features], dtype=torch.bool)
    return batch


class KTODataModule(PreferenceDataModule):
    """KTO rows (or paired data, converted), tokenised and batched with their KL sequences.

    Takes ``PreferenceDataModule``'s arguments; ``columns`` maps prompt, completion, label (or
    chosen, rejected); ``batch_size`` counts KTO rows (two per pair of paired data). With
    ``path="demo"`` the rows are the demo preference pairs, converted.

    Batches: see :func:`collate_kto`.
    """

    collate = staticmethod(collate_kto)
    fingerprint_tag = "kto-v1"
    resolve_columns = staticmethod(resolve_kto_columns)
    reference_logp_keys = KTO_REFERENCE_KEYS
    dropped_examples = "rows have no completion token"

    def _detect_format(self, dataset: datasets.Dataset, source: str) -> str:
        return detect_kto_format(dataset, self.columns, format=self.format, source=source)[0]

    def _tokenize(self, dataset: datasets.Dataset, role: str, origin: str) -> datasets.Dataset:
        source = self.source if origin == self.split else f"{self.source} (split '{origin}')"
        fmt, paired = detect_kto_format(dataset, self.columns, format=self.format, source=source)

        def tokenize(rows: list[dict[str, Any]], row_numbers: list[int]) -> list[dict | None]:
            return tokenize_kto_rows(
                rows,
                fmt,
                self.columns,
                self.tokenizer,
                self.max_length,
                paired=paired,
                indices=row_numbers,
                source=source,
            )

        tokenized, dropped = self._map_tokenized(dataset, fmt, f"{role} rows", tokenize, _TOKENIZED)
        self._report_dropped(dropped, len(dataset) * (2 if paired else 1), role, source)
        return add_kl_sequences(tokenized, self.max_length)
