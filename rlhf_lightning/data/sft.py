"""The supervised fine-tuning DataModule: any supported dataset -> padded token batches."""

from __future__ import annotations

from typing import Any

import datasets
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader

from rlhf_lightning.data.base import ROW_COLUMN, TokenizedDataModule
from rlhf_lightning.data.chat import as_chat_turns
from rlhf_lightning.data.collate import pack_sequences, pad_batch
from rlhf_lightning.data.formats import AUTO, detect_format, tokenize_rows
from rlhf_lightning.data.loading import DEMO, load_table, pick_splits
from rlhf_lightning.errors import ConfigError, DataError

_ROW = ROW_COLUMN


class SFTDataModule(TokenizedDataModule):
    """Loads, validates, tokenises and batches SFT data (text, prompt/completion or messages).

    Batches are ``{"input_ids", "attention_mask", "loss_mask"}`` of shape (B, T) from
    ``pad_batch``: logits at ``t - 1`` predict ``input_ids[:, t]`` where ``loss_mask[:, t]``.

    Args:
        tokenizer: a Hugging Face tokenizer (fast, with a chat template for ``messages``).
        path: ``"demo"``, a local file or directory, or a hub dataset name (see ``load_table``).
        format: ``"auto"``, ``"text"``, ``"prompt_completion"`` or ``"messages"``.
        columns: canonical name -> dataset column, e.g. ``{"text": "content"}``.
        split: the training split.
        val_split: the validation split; None uses an existing ``validation``/``test``-like
            split, else holds out ``val_fraction`` of the training split (seeded).
        val_fraction: share of the training split held out when there is no validation split;
            0 disables validation.
        max_length: tokens per example (longer ones are truncated); the block size when packing.
        batch_size: training batch size.
        eval_batch_size: validation batch size (default ``batch_size``).
        packing: concatenate examples into blocks of ``max_length`` tokens (no padding waste;
            attention crosses example boundaries).
        max_samples: use at most this many rows of the training split (a seeded random subset,
            taken before holding out validation) and of a given validation split.
        num_workers: DataLoader worker processes.
        seed: seeds the subset, the held-out split and the training order.
        dataset: an in-memory ``datasets.Dataset`` or ``DatasetDict`` to use instead of ``path``.

    Attributes:
        format: the resolved format (after ``setup``).
        num_train_examples: training examples (blocks when packing) after ``setup``.
        num_val_examples: validation examples (0 without validation) after ``setup``.
    """

    collate = staticmethod(pad_batch)

    def __init__(
        self,
        tokenizer: Any,
        path: str = DEMO,
        format: str = AUTO,
        columns: dict[str, str] | None = None,
        split: str = "train",
        val_split: str | None = None,
        val_fraction: float = 0.05,
        max_length: int = 128,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        packing: bool = False,
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
                f"data.val_fraction={val_fraction}: must be in [0, 1). Fix: e.g. 0.05, or 0."
            )
        self.tokenizer = tokenizer
        self.path = path
        self.format = format
        self.columns = {k: v for k, v in (columns or {}).items() if v is not None}
        self.split = split
        self.val_split = val_split
        self.val_fraction = val_fraction
        self.max_length = max_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.packing = packing
        self.max_samples = max_samples
        self.num_workers = num_workers
        self.seed = seed
        self.chat = chat
        self.dataset = dataset
        self.source = f"data.path={path}" if dataset is None else "data.dataset (in-memory)"
        self.train_dataset: datasets.Dataset | None = None
        self.val_dataset: datasets.Dataset | None = None
        self.num_train_examples = 0
        self.num_val_examples = 0

    def setup(self, stage: str | None = None) -> None:
        """Loads, splits and tokenises the data; later calls do nothing."""
        if self.train_dataset is not None:
            return
        train, val, val_origin = self._raw_splits()
        self.format = detect_format(
            train.column_names, self.columns, format=self.format, source=self.source
        )
        self.train_dataset = self._tokenize(train, "train", self.split)
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

    def target_tokens(self, split: str = "train") -> torch.Tensor:
        """All target token ids of a split, flattened (for the unigram perplexity baseline).

        Args:
            split: ``"train"`` or ``"validation"``.

        Returns:
            ``input_ids[t]`` for every ``t`` where ``loss_mask[t]``, in dataset order.
            Shape: (N,), int64.
        """
        if split not in ("train", "validation"):
            raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
        dataset = self.train_dataset if split == "train" else self.val_dataset
        if split == "train":
            self._ready(dataset)
        if dataset is None or len(dataset) == 0:
            return torch.zeros(0, dtype=torch.long)
        table = dataset.with_format("arrow")[:]
        input_ids = torch.from_numpy(_flat(table, "input_ids")).long()
        loss_mask = torch.from_numpy(_flat(table, "loss_mask")).bool()
        return input_ids[loss_mask]

    def sample_prompts(self, n: int, opening_tokens: int = 3) -> list[str]:
        """Prompts from the data, to sample from the trained model: the untrained part (the
        prompt, the conversation before the reply) of the first `n` validation examples, or of
        training examples without validation; for plain text, its first `opening_tokens` tokens.
        """
        dataset = self.val_dataset if self.num_val_examples else self._ready(self.train_dataset)
        rows = dataset.with_format(None)[: max(n, 0)]
        bos = self.tokenizer.bos_token or ""
        prompts = []
        for ids, mask in zip(rows["input_ids"], rows["loss_mask"], strict=True):
            first_target = mask.index(True) if True in mask else len(ids)
            end = first_target if first_target > 1 else min(len(ids), 1 + opening_tokens)
            text = self.tokenizer.decode(ids[:end], skip_special_tokens=False)
            # The sampler starts an empty prompt at BOS itself.
            prompts.append(text.removeprefix(bos) if bos else text)
        return prompts

    def _raw_splits(self) -> tuple[datasets.Dataset, datasets.Dataset | None, str]:
        """``(train, validation or None, the split validation rows come from)``."""
        return prepare_splits(
            self._load(),
            split=self.split,
            val_split=self.val_split,
            val_fraction=self.val_fraction,
            max_samples=self.max_samples,
            seed=self.seed,
            source=self.source,
        )

    def _load(self) -> datasets.DatasetDict:
        if self.dataset is None:
            splits = load_table(self.path, split=None)
        else:
            splits = in_memory_splits(self.dataset, self.split, self.source)
        if not self.chat:
            return splits
        # prompt/completion rows as a user turn and the assistant's answer (chat template)
        chat = as_chat_turns(splits, self.columns, ("completion",))
        self.columns = {k: v for k, v in self.columns.items() if k not in ("prompt", "completion")}
        self.format = "messages"
        return chat

    def _tokenize(self, dataset: datasets.Dataset, role: str, origin: str) -> datasets.Dataset:
        """Tokenises the ``role`` (train/validation) rows, which come from split ``origin``."""
        source = self.source if origin == self.split else f"{self.source} (split '{origin}')"
        # Validates the columns of every split, not only the one the format was detected on.
        fmt = detect_format(dataset.column_names, self.columns, format=self.format, source=source)

        def tokenize(rows: list[dict[str, Any]], row_numbers: list[int]) -> list[dict | None]:
            return tokenize_rows(
                rows,
                fmt,
                self.columns,
                self.tokenizer,
                self.max_length,
                indices=row_numbers,
                source=source,
            )

        tokenized, dropped = self._map_tokenized(
            dataset, fmt, role, tokenize, ["input_ids", "loss_mask"]
        )
        self._report_dropped(dropped, len(dataset), role, source)
        if self.packing:
            tokenized = datasets.Dataset.from_dict(pack_sequences(tokenized[:], self.max_length))
        return tokenized

    def _report_dropped(self, dropped: int, total: int, role: str, source: str) -> None:
        if dropped == 0:
            return
        message = (
            f"{source}: {dropped} of {total} {role} examples have no target token within "
            f"data.max_length={self.max_length} (prompt too long, or the conversation is cut "
            "before the first assistant reply)"
        )
        if dropped == total:
            raise DataError(f"{message}; none is left. Fix: raise data.max_length.")
        rank_zero_warn(f"{message}; they are dropped. Fix: raise data.max_length to keep them.")


def prepare_splits(
    splits: datasets.DatasetDict,
    *,
    split: str,
    val_split: str | None,
    val_fraction: float,
    max_samples: int | None,
    seed: int,
    source: str,
) -> tuple[datasets.Dataset, datasets.Dataset | None, str]:
    """Picks train/validation rows: row numbers, seeded subsets and a held-out share.

    Every row gets its index in its original split (column ``__rlhf_row__``) so that errors
    found later point at a row the user can find in their file.

    Args:
        splits: all splits of the dataset.
        split: the training split.
        val_split: the validation split; None uses an existing ``validation``/``test``-like
            split, else holds out ``val_fraction`` of the training split (seeded).
        val_fraction: share of the training split held out when there is no validation split.
        max_samples: at most this many rows of the training split (a seeded random subset,
            taken before holding out validation) and of a given validation split.
        seed: seeds the subsets and the held-out split.
        source: what the data is (``data.path=...``), for error messages.

    Returns:
        ``(train, validation or None, the split validation rows come from)``.
    """
    train, val, val_origin = pick_splits(splits, split, val_split, source=source)
    train = _with_rows(train)
    val = _with_rows(val) if val is not None else None
    if max_samples is not None:
        train = _subset(train, max_samples, seed)
        val = _subset(val, max_samples, seed) if val is not None else None
    if val is None and val_fraction > 0 and len(train) == 1:
        raise DataError(
            f"{source}: split '{split}' has 1 row, too few to hold out "
            f"data.val_fraction={val_fraction} of it for validation and train on the rest. "
            "Fix: give more rows, or data.val_fraction=0 to train without validation."
        )
    if val is None and val_fraction > 0 and len(train) >= 2:
        n_val = max(1, round(len(train) * val_fraction))
        parts = train.train_test_split(test_size=n_val, shuffle=True, seed=seed)
        train, val, val_origin = parts["train"], parts["test"], split
    if len(train) == 0:
        raise DataError(
            f"{source}: split '{split}' has no rows. Fix: point data.path at a "
            "non-empty dataset or choose another data.split."
        )
    return train, val, val_origin or split


def in_memory_splits(
    dataset: datasets.Dataset | datasets.DatasetDict, split: str, source: str
) -> datasets.DatasetDict:
    """An in-memory ``data.dataset`` as a ``DatasetDict`` (a lone ``Dataset`` is ``split``)."""
    if isinstance(dataset, datasets.Dataset):
        return datasets.DatasetDict({split: dataset})
    if isinstance(dataset, datasets.DatasetDict):
        return dataset
    raise DataError(
        f"{source}: expected a datasets.Dataset or DatasetDict, got "
        f"{type(dataset).__name__}. Fix: wrap it with datasets.Dataset.from_list(...)."
    )


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"data.{name}={value}: must be a positive integer. Fix: e.g. 16.")


def _with_rows(dataset: datasets.Dataset) -> datasets.Dataset:
    if _ROW in dataset.column_names:
        return dataset
    return dataset.add_column(_ROW, list(range(len(dataset))))


def _subset(dataset: datasets.Dataset, n: int, seed: int) -> datasets.Dataset:
    """A seeded random subset: the head of a file is often one topic or source."""
    if len(dataset) <= n:
        return dataset
    return dataset.shuffle(seed=seed).select(range(n)).flatten_indices()


def _flat(table: Any, column: str) -> np.ndarray:
    """One list column of an Arrow table, concatenated; copied so torch may own it."""
    return np.array(table.column(column).combine_chunks().flatten().to_numpy(zero_copy_only=False))
