"""What the tokenising DataModules share: cache fingerprints, DataLoaders, the setup guard."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import Any

import datasets
import lightning as L
import torch
from torch.utils.data import DataLoader

# Carries each row's index in its original split through sampling and splitting, so that
# validation errors point at the row the user can find in their file.
ROW_COLUMN = "__rlhf_row__"


class TokenizedDataModule(L.LightningDataModule):
    """Base for DataModules that tokenise rows with `self.tokenizer` and pad them by `collate`.

    Subclasses set `tokenizer`, `columns`, `max_length`, `num_workers`, and the class
    attributes `collate` (a module-level function taking `pad_token_id`) and `fingerprint_tag`.
    """

    collate: Callable[..., dict[str, torch.Tensor]]
    fingerprint_tag: str = ""
    tokenizer: Any
    columns: dict[str, str]
    max_length: int
    num_workers: int

    def _map_tokenized(
        self,
        dataset: datasets.Dataset,
        fmt: str,
        role: str,
        tokenize: Callable[[list[dict[str, Any]], list[int]], list[dict[str, Any] | None]],
        keys: list[str],
    ) -> tuple[datasets.Dataset, int]:
        """Tokenise `dataset` in batches with `tokenize(rows, row_numbers)`; keep `keys`.

        Returns:
            (the tokenised dataset, how many rows `tokenize` dropped by returning None).
        """
        dropped = 0

        def tokenize_batch(batch: dict[str, list]) -> dict[str, list]:
            nonlocal dropped
            rows = [
                dict(zip(batch, values, strict=True))
                for values in zip(*batch.values(), strict=True)
            ]
            examples = tokenize(rows, batch[ROW_COLUMN])
            kept = [example for example in examples if example is not None]
            dropped += len(examples) - len(kept)
            return {key: [example[key] for example in kept] for key in keys}

        tokenized = dataset.map(
            tokenize_batch,
            batched=True,
            remove_columns=dataset.column_names,
            # In memory, no cache lookup, and an explicit fingerprint: datasets would otherwise
            # try to hash the closure (tokenizer included), which is slow and unstable.
            keep_in_memory=True,
            load_from_cache_file=False,
            new_fingerprint=self._fingerprint(dataset, fmt),
            desc=f"Tokenizing {role}",
        )
        return tokenized, dropped

    def _fingerprint(self, dataset: datasets.Dataset, fmt: str) -> str:
        """A `datasets` cache key: the data, the format and everything the tokenisation reads."""
        key = (
            self.fingerprint_tag,
            dataset._fingerprint,
            fmt,
            sorted(self.columns.items()),
            self.max_length,
            type(self.tokenizer).__name__,
            getattr(self.tokenizer, "name_or_path", ""),
            len(self.tokenizer),
            getattr(self.tokenizer, "chat_template", None),
        )
        return hashlib.sha256(repr(key).encode()).hexdigest()[:32]

    def _loader(
        self,
        dataset: datasets.Dataset,
        batch_size: int,
        shuffle: bool,
        generator: torch.Generator | None,
    ) -> DataLoader:
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id or 0  # padded positions are masked out anyway
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            generator=generator,
            # A partial of a module-level function pickles, so worker processes work.
            collate_fn=functools.partial(type(self).collate, pad_token_id=int(pad_id)),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _ready(self, dataset: datasets.Dataset | None) -> datasets.Dataset:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before its dataloaders")
        return dataset
