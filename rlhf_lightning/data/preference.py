"""The preference DataModule: pairs for reward modelling and DPO, tokenised and batched.

How rows are read, tokenised and truncated: `rlhf_lightning.data.pairs`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import datasets
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader

from rlhf_lightning.data.base import TokenizedDataModule
from rlhf_lightning.data.chat import as_chat_turns
from rlhf_lightning.data.demo_pairs import build_demo_pairs
from rlhf_lightning.data.formats import AUTO
from rlhf_lightning.data.loading import DEMO, load_table
from rlhf_lightning.data.pairs import (
    REFERENCE_LOGP_KEYS,
    SIDES,
    collate_pairs,
    detect_pair_format,
    resolve_pair_columns,
    tokenize_pairs,
)
from rlhf_lightning.data.sft import (
    _check_positive,
    in_memory_splits,
    prepare_splits,
)
from rlhf_lightning.errors import ConfigError, DataError


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
    resolve_columns = staticmethod(resolve_pair_columns)
    # The columns a reference's log-probs are stored in (``add_reference_logps``).
    reference_logp_keys = REFERENCE_LOGP_KEYS
    # What a dropped example is, in the warning that counts them.
    dropped_examples = "pairs have a side with no completion token, or identical sides,"

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
        chat: bool = False,
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
        self.columns = self.resolve_columns(columns)
        self.split = split
        self.val_split = val_split
        self.val_fraction = val_fraction
        self.max_length = max_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.max_samples = max_samples
        self.num_workers = num_workers
        self.seed = seed
        self.chat = chat
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
        self.format = self._detect_format(train, self.source)
        self.train_dataset = self._tokenize(train, "train", self.split)
        self.has_margin = "margin" in self.train_dataset.column_names
        self.num_train_examples = len(self.train_dataset)
        if val is not None:
            self.val_dataset = self._tokenize(val, "validation", val_origin)
            self.num_val_examples = len(self.val_dataset)

    def train_dataloader(self) -> DataLoader:
        # The order depends on (``seed``, epoch) only; the position is saved in checkpoints.
        return self._train_loader(self._ready(self.train_dataset), self.batch_size, self.seed)

    def val_dataloader(self) -> DataLoader | list:
        self._ready(self.train_dataset)
        if self.val_dataset is None:
            return []  # Lightning skips validation when there is no loader
        return self._loader(self.val_dataset, self.eval_batch_size, shard=True)

    def add_reference_logps(
        self, compute: Callable[[DataLoader], tuple[torch.Tensor, torch.Tensor]]
    ) -> None:
        """Stores a reference model's log-probs of every example as columns (precompute).

        Args:
            compute: maps an unshuffled loader over a split to one (N,) tensor per column of
                ``reference_logp_keys`` (pairs: chosen, rejected), in loader order.
        """
        self.setup()
        for name in ("train_dataset", "val_dataset"):
            dataset = getattr(self, name)
            if dataset is None or self.reference_logp_keys[0] in dataset.column_names:
                continue
            values = compute(self._loader(dataset, self.eval_batch_size))
            for key, column in zip(self.reference_logp_keys, values, strict=True):
                dataset = dataset.add_column(key, column.tolist())
            setattr(self, name, dataset)

    def _load(self) -> datasets.DatasetDict:
        splits = self._load_text()
        if not self.chat:
            return splits
        self.format = "messages"  # a user turn and the assistant's two answers
        return as_chat_turns(splits, self.columns, SIDES)

    def _load_text(self) -> datasets.DatasetDict:
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
        fmt = self._detect_format(dataset, source)

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

    def _detect_format(self, dataset: datasets.Dataset, source: str) -> str:
        """Checks the columns of `dataset` and resolves ``self.format`` for it."""
        return detect_pair_format(dataset, self.columns, format=self.format, source=source)

    def _report_dropped(self, dropped: int, total: int, role: str, source: str) -> None:
        if dropped == 0:
            return
        message = (
            f"{source}: {dropped} of {total} {role} {self.dropped_examples} within "
            f"data.max_length={self.max_length} (nothing to learn from them)"
        )
        if dropped == total:
            raise DataError(f"{message}; none is left. Fix: raise data.max_length.")
        rank_zero_warn(f"{message}; they are dropped. Fix: raise data.max_length to keep them.")
