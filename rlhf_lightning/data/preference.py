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
side has no completion token left is dropped and counted (one warning per split).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import datasets
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader

from rlhf_lightning.data.base import TokenizedDataModule
from rlhf_lightning.data.chat import assistant_spans
from rlhf_lightning.data.collate import pad_batch
from rlhf_lightning.data.demo_pairs import build_demo_pairs
from rlhf_lightning.data.formats import AUTO, _encode, eos_token_id
from rlhf_lightning.data.loading import DEMO, load_table
from rlhf_lightning.data.sft import (
    _ROW,
    _check_positive,
    in_memory_splits,
    prepare_splits,
)
from rlhf_lightning.data.validation import _FIX_ROWS, describe, require_messages, require_text
from rlhf_lightning.errors import ConfigError, DataError

PAIR_COLUMNS = ("prompt", "chosen", "rejected", "margin")
PAIR_FORMATS = ("text", "messages")
SIDES = ("chosen", "rejected")

Pair = dict[str, Any]


class Side(NamedTuple):
    """One tokenised side of a pair, before truncation: ``lead prompt completion end``."""

    lead: list[int]
    prompt: list[int]
    completion: list[int]
    completion_mask: list[bool]  # per completion token (messages: False between assistant turns)
    end: list[int]


# --- columns and format -------------------------------------------------------------------


def resolve_pair_columns(columns: Mapping[str, str] | None) -> dict[str, str]:
    """Checks a ``canonical -> dataset column`` mapping (prompt/chosen/rejected/margin)."""
    columns = dict(columns or {})
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


def special_affixes(tokenizer: Any) -> tuple[list[int], list[int]]:
    """``(lead, end)``: the tokens that start and end every text side (see module docstring).

    Found by encoding a probe with and without special tokens, so any post-processor works
    (BERT ``[CLS] $A [SEP]``, Llama ``<s> $A``, GPT-2 nothing).
    """
    probe = "a"
    with_specials = _encode([probe], tokenizer, special=True)[0]
    plain = _encode([probe], tokenizer, special=False)[0]
    lead: list[int] = []
    tail: list[int] = []
    for start in range(len(with_specials) - len(plain) + 1):
        if with_specials[start : start + len(plain)] == plain:
            lead, tail = with_specials[:start], with_specials[start + len(plain) :]
            break
    if not lead and tokenizer.bos_token_id is not None:
        lead = [int(tokenizer.bos_token_id)]
    end = tail or [eos_token_id(tokenizer)]
    return lead, end


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


def _text_sides(
    rows: Sequence[Mapping[str, Any]],
    names: Mapping[str, str],
    has: Mapping[str, bool],
    tokenizer: Any,
    indices: Sequence[int],
    source: str,
) -> list[tuple[Side, Side]]:
    prompts, chosen, rejected = [], [], []
    for row, index in zip(rows, indices, strict=True):
        prompt = row[names["prompt"]] if has["prompt"] else ""
        if not isinstance(prompt, str):
            raise DataError(
                f"{source}: row {index}, column '{names['prompt']}': expected a string (\"\" "
                f"for no prompt), got {describe(prompt)}. {_FIX_ROWS}"
            )
        texts = [
            require_text(row[names[side]], index=index, column=names[side], source=source)
            for side in SIDES
        ]
        if texts[0].strip() == texts[1].strip():
            raise DataError(_identical(source, index, names, texts[0]))
        prompts.append(prompt)
        chosen.append(texts[0])
        rejected.append(texts[1])
    lead, end = special_affixes(tokenizer)
    # One batched call per column: the fast tokenizer's batch path is ~10x faster.
    encoded = [_encode(texts, tokenizer, special=False) for texts in (prompts, chosen, rejected)]
    return [
        (
            Side(lead, prompt_ids, chosen_ids, [True] * len(chosen_ids), end),
            Side(lead, prompt_ids, rejected_ids, [True] * len(rejected_ids), end),
        )
        for prompt_ids, chosen_ids, rejected_ids in zip(*encoded, strict=True)
    ]


def _message_sides(
    rows: Sequence[Mapping[str, Any]],
    names: Mapping[str, str],
    has: Mapping[str, bool],
    tokenizer: Any,
    indices: Sequence[int],
    source: str,
) -> list[tuple[Side, Side]]:
    if not getattr(tokenizer, "is_fast", False):
        raise DataError(
            f"{source}: format 'messages' needs a fast tokenizer (for character offsets), got "
            f"{type(tokenizer).__name__}. Fix: load the tokenizer with use_fast=True."
        )
    _, end = special_affixes(tokenizer)
    sides = []
    for row, index in zip(rows, indices, strict=True):
        chats = [
            require_messages(row[names[side]], index=index, column=names[side], source=source)
            for side in SIDES
        ]
        if chats[0] == chats[1]:
            raise DataError(_identical(source, index, names, chats[0]))
        prompt, completions = _split_prompt(row, chats, names, has, index, source)
        sides.append(
            tuple(
                _message_side(prompt, completion, tokenizer, end, index, source)
                for completion in completions
            )
        )
    return sides


def _split_prompt(
    row: Mapping[str, Any],
    chats: list[list[dict[str, Any]]],
    names: Mapping[str, str],
    has: Mapping[str, bool],
    index: int,
    source: str,
) -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]]]:
    """``(prompt messages, [chosen completion, rejected completion])`` of one chat row."""
    if has["prompt"]:
        prompt = _prompt_messages(row[names["prompt"]], index, names["prompt"], source)
        completions = [
            chat[len(prompt) :] if chat[: len(prompt)] == prompt else chat for chat in chats
        ]
    else:
        shared = 0
        while shared < min(map(len, chats)) and chats[0][shared] == chats[1][shared]:
            shared += 1
        prompt, completions = chats[0][:shared], [chat[shared:] for chat in chats]
    for side, completion in zip(SIDES, completions, strict=True):
        replies = [m for m in completion if m["role"] == "assistant"]
        if not replies or not all(m["content"].strip() for m in replies):
            raise DataError(
                f"{source}: row {index}, column '{names[side]}': no non-empty assistant turn "
                f"after the prompt (the turns shared by chosen and rejected, or column "
                f"'{names['prompt']}'), so there is nothing to compare. {_FIX_ROWS}"
            )
    return prompt, completions


def _prompt_messages(value: Any, index: int, column: str, source: str) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}] if value.strip() else []
    ok = isinstance(value, list | tuple) and all(
        isinstance(m, Mapping)
        and isinstance(m.get("role"), str)
        and isinstance(m.get("content"), str)
        for m in value
    )
    if not ok:
        raise DataError(
            f"{source}: row {index}, column '{column}': expected a list of {{'role': ..., "
            f"'content': ...}} messages or a string, got {describe(value)}. {_FIX_ROWS}"
        )
    return [dict(message) for message in value]


def _message_side(
    prompt: list[dict[str, Any]],
    completion: list[dict[str, Any]],
    tokenizer: Any,
    end: list[int],
    index: int,
    source: str,
) -> Side:
    """Renders ``prompt + completion``; the completion starts at its first assistant span."""
    text, spans = assistant_spans(prompt + completion, tokenizer, index=index, source=source)
    spans = spans[sum(m["role"] == "assistant" for m in prompt) :]
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoded["input_ids"])
    mask = [
        any(start < span_end and stop > span_start for span_start, span_end in spans)
        for start, stop in encoded["offset_mapping"]
    ]
    if not any(mask):
        raise DataError(
            f"{source}: row {index}: the chat template renders nothing for the completion's "
            "assistant turns. Fix: check the template (model.chat_template) writes message content."
        )
    first = mask.index(True)
    bos = tokenizer.bos_token_id
    lead = input_ids[:1] if first > 0 and bos is not None and input_ids[0] == bos else []
    ends_already = len(input_ids) >= len(end) and input_ids[len(input_ids) - len(end) :] == end
    return Side(
        lead,
        input_ids[len(lead) : first],
        input_ids[first:],
        mask[first:],
        [] if ends_already else end,
    )


def truncate_pair(chosen: Side, rejected: Side, max_length: int | None) -> Pair | None:
    """Assembles both sides, truncated as the module docstring says.

    Returns:
        ``{"<side>_input_ids": list[int], "<side>_completion_mask": list[bool]}`` for both
        sides, or None when a side has no completion token within ``max_length``.
    """
    longest = max(len(chosen.completion), len(rejected.completion))
    pair: Pair = {}
    for name, side in zip(SIDES, (chosen, rejected), strict=True):
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
        # An empty prompt without a lead token would make the first completion token position 0.
        completion_mask[0] = False
        pair[f"{name}_input_ids"] = input_ids
        pair[f"{name}_completion_mask"] = completion_mask
    return pair


def _identical(source: str, index: int, names: Mapping[str, str], value: Any) -> str:
    return (
        f"{source}: row {index}: columns '{names['chosen']}' and '{names['rejected']}' are "
        f"identical ({describe(value)}), so the pair prefers nothing. {_FIX_ROWS}"
    )


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
        examples have one.
    """
    sequences = [
        {"input_ids": f[f"{side}_input_ids"], "loss_mask": f[f"{side}_completion_mask"]}
        for side in SIDES
        for f in features
    ]
    padded = pad_batch(sequences, pad_token_id, pad_to_multiple_of=pad_to_multiple_of)
    n = len(features)
    batch = {}
    for k, side in enumerate(SIDES):
        rows = slice(k * n, (k + 1) * n)
        batch[f"{side}_input_ids"] = padded["input_ids"][rows]
        batch[f"{side}_attention_mask"] = padded["attention_mask"][rows]
        batch[f"{side}_completion_mask"] = padded["loss_mask"][rows]
    if features and "margin" in features[0]:
        batch["margin"] = torch.tensor([float(f["margin"]) for f in features], dtype=torch.float32)
    return batch


# --- the DataModule -----------------------------------------------------------------------


class PreferenceDataModule(TokenizedDataModule):
    """Loads, validates, tokenises and batches preference pairs (see the module docstring).

    Batches (``collate_pairs``), each (B, T) right-padded with the pad token, T shared by both
    sides: ``chosen_input_ids``, ``chosen_attention_mask``, ``chosen_completion_mask``,
    ``rejected_input_ids``, ``rejected_attention_mask``, ``rejected_completion_mask``; plus
    ``margin`` (B,) float32 when the data has a margin column.

    Args:
        tokenizer: a Hugging Face tokenizer (fast, with a chat template for ``messages``).
        path: ``"demo"`` (``build_demo_pairs``: positive preferred to negative demo texts), a
            local file or directory, or a hub dataset name (see ``load_table``).
        format: ``"auto"``, ``"text"`` or ``"messages"``.
        columns: canonical name (prompt, chosen, rejected, margin) -> dataset column.
        split: the training split.
        val_split: the validation split; None uses an existing ``validation``/``test``-like
            split, else holds out ``val_fraction`` of the training split (seeded). The demo
            pairs hold out ``val_fraction`` of the demo *texts* (no text in both splits).
        val_fraction: share held out when there is no validation split; 0 disables validation.
        max_length: tokens per side (longer ones are truncated, see the module docstring).
        batch_size: training batch size (pairs).
        eval_batch_size: validation batch size (default ``batch_size``).
        max_samples: use at most this many rows of the training split (a seeded random subset,
            taken before holding out validation) and of a given validation split.
        num_workers: DataLoader worker processes.
        seed: seeds the demo pairs, the subset, the held-out split and the training order.
        dataset: an in-memory ``datasets.Dataset`` or ``DatasetDict`` to use instead of ``path``.

    Attributes:
        format: the resolved format (after ``setup``).
        has_margin: whether training batches carry ``margin`` (after ``setup``).
        num_train_examples: training pairs after ``setup``.
        num_val_examples: validation pairs (0 without validation) after ``setup``.
    """

    collate = staticmethod(collate_pairs)
    fingerprint_tag = "preference-v1"

    def __init__(
        self,
        tokenizer: Any,
        path: str = DEMO,
        format: str = AUTO,
        columns: dict[str, str] | None = None,
        split: str = "train",
        val_split: str | None = None,
        val_fraction: float = 0.1,
        max_length: int = 128,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        max_samples: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        dataset: datasets.Dataset | datasets.DatasetDict | None = None,
    ) -> None:
        super().__init__()
        _check_positive(max_length=max_length, batch_size=batch_size)
        if max_samples is not None:
            _check_positive(max_samples=max_samples)
        if not 0.0 <= val_fraction < 1.0:
            raise ConfigError(
                f"data.val_fraction={val_fraction}: must be in [0, 1). Fix: e.g. 0.1, or 0."
            )
        self.tokenizer = tokenizer
        self.path = path
        self.format = format
        self.columns = resolve_pair_columns(columns)
        self.split = split
        self.val_split = val_split
        self.val_fraction = val_fraction
        self.max_length = max_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.max_samples = max_samples
        self.num_workers = num_workers
        self.seed = seed
        self.dataset = dataset
        self.source = f"data.path={path}" if dataset is None else "data.dataset (in-memory)"
        self.train_dataset: datasets.Dataset | None = None
        self.val_dataset: datasets.Dataset | None = None
        self.has_margin = False
        self.num_train_examples = 0
        self.num_val_examples = 0

    def setup(self, stage: str | None = None) -> None:
        """Loads, splits and tokenises the pairs; later calls do nothing."""
        if self.train_dataset is not None:
            return
        train, val, val_origin = prepare_splits(
            self._load(),
            split=self.split,
            val_split=self.val_split,
            val_fraction=self.val_fraction,
            max_samples=self.max_samples,
            seed=self.seed,
            source=self.source,
        )
        self.format = detect_pair_format(
            train, self.columns, format=self.format, source=self.source
        )
        self.train_dataset = self._tokenize(train, "train", self.split)
        self.has_margin = "margin" in self.train_dataset.column_names
        self.num_train_examples = len(self.train_dataset)
        if val is not None:
            self.val_dataset = self._tokenize(val, "validation", val_origin)
            self.num_val_examples = len(self.val_dataset)

    def train_dataloader(self) -> DataLoader:
        # A dedicated seeded generator: the data order depends on ``seed`` only.
        generator = torch.Generator().manual_seed(self.seed)
        return self._loader(self._ready(self.train_dataset), self.batch_size, True, generator)

    def val_dataloader(self) -> DataLoader | list:
        self._ready(self.train_dataset)
        if self.val_dataset is None:
            return []  # Lightning skips validation when there is no loader
        return self._loader(self.val_dataset, self.eval_batch_size, False, None)

    def _load(self) -> datasets.DatasetDict:
        if self.dataset is not None:
            return in_memory_splits(self.dataset, self.split, self.source)
        if self.path != DEMO:
            return load_table(self.path, split=None)
        pairs = build_demo_pairs(seed=self.seed, val_fraction=self.val_fraction)
        if self.val_fraction == 0:
            return datasets.DatasetDict({"train": pairs["train"]})
        return pairs

    def _tokenize(self, dataset: datasets.Dataset, role: str, origin: str) -> datasets.Dataset:
        """Tokenises the ``role`` (train/validation) pairs, which come from split ``origin``."""
        source = self.source if origin == self.split else f"{self.source} (split '{origin}')"
        # Validates the columns of every split, not only the one the format was detected on.
        fmt = detect_pair_format(dataset, self.columns, format=self.format, source=source)

        def tokenize(rows: list[dict[str, Any]], row_numbers: list[int]) -> list[dict | None]:
            return tokenize_pairs(
                rows,
                fmt,
                self.columns,
                self.tokenizer,
                self.max_length,
                indices=row_numbers,
                source=source,
            )

        keys = [f"{side}_{part}" for side in SIDES for part in ("input_ids", "completion_mask")]
        if self.columns.get("margin", "margin") in dataset.column_names:
            keys.append("margin")
        tokenized, dropped = self._map_tokenized(dataset, fmt, f"{role} pairs", tokenize, keys)
        self._report_dropped(dropped, len(dataset), role, source)
        return tokenized

    def _report_dropped(self, dropped: int, total: int, role: str, source: str) -> None:
        if dropped == 0:
            return
        message = (
            f"{source}: {dropped} of {total} {role} pairs have a side with no completion token "
            f"within data.max_length={self.max_length}"
        )
        if dropped == total:
            raise DataError(f"{message}; none is left. Fix: raise data.max_length.")
        rank_zero_warn(f"{message}; they are dropped. Fix: raise data.max_length to keep them.")
