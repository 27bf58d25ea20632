"""What the tokenising DataModules share: cache fingerprints, DataLoaders, the setup guard.

Also the resumable training loader every DataModule uses: `ResumableDataLoader` over an
`EpochSampler`, whose order in each epoch is a pure function of (seed, epoch) and whose position
in the epoch travels in the checkpoint.

Data parallel: the samplers read the rank and world size from `torch.distributed` when they
are iterated, so Lightning's own distributed sampler is turned off (`use_distributed_sampler:
false` in conf/trainer/default.yaml). Each global batch (`batch_size` x world size rows of the
epoch's order) is cut into one contiguous slice per rank: the rows two processes train on in a
step are the rows one process with the doubled batch trains on.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import datasets
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from rlhf_lightning.distributed import rank_and_world

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
        self, dataset: datasets.Dataset, batch_size: int, shard: bool = False
    ) -> DataLoader:
        """An ordered loader (validation, scoring passes); `shard`: this rank's rows only."""
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=ShardSampler(len(dataset)) if shard else None,
            collate_fn=self._collate_fn(),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _train_loader(self, dataset: datasets.Dataset, batch_size: int, seed: int) -> DataLoader:
        """The shuffled training loader: order from (seed, epoch), position saved in checkpoints."""
        return resumable_loader(
            dataset, batch_size, seed, self._collate_fn(), num_workers=self.num_workers
        )

    def _collate_fn(self) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id or 0  # padded positions are masked out anyway
        # A partial of a module-level function pickles, so worker processes work.
        return functools.partial(type(self).collate, pad_token_id=int(pad_id))

    def _ready(self, dataset: datasets.Dataset | None) -> datasets.Dataset:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before its dataloaders")
        return dataset


def rank_slice(order: torch.Tensor, batch_size: int, rank: int, world: int) -> torch.Tensor:
    """This rank's share of an epoch order, global batch by global batch.

    Global batch k is ``order[k*world*batch_size : (k+1)*world*batch_size]``; rank r takes its
    r-th contiguous slice of `batch_size` rows. A final partial global batch of R rows is dealt
    out round-robin (rank r takes rows r, r + world, ...) when every rank gets at least one
    row, and dropped otherwise, so that every rank sees the same number of batches.

    Args:
        order: the epoch's row order. Shape: (N,).
        batch_size: rows per batch on one rank.
        rank / world: this process's rank and the number of processes.

    Returns:
        This rank's indices, in the order its batches are drawn. Shape: (<= ceil(N / world),).
    """
    if world == 1:
        return order
    span = batch_size * world
    full = len(order) // span
    shares = order[: full * span].view(full, world, batch_size)[:, rank].reshape(-1)
    rest = order[full * span :]
    if len(rest) >= world:
        shares = torch.cat([shares, rest[rank::world]])
    return shares


def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 63-bit seed for one epoch of a run seeded with `seed`."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(2, np.uint64)[0] >> 1)


class EpochSampler(Sampler[int]):
    """Dataset indices in an order that depends only on (seed, epoch), from a start offset.

    `ResumableDataLoader` sets `epoch` and `start` before each pass; skipping happens here, on
    indices, so batches skipped on resume are never loaded or collated. In a distributed run
    each rank yields its `rank_slice` of the epoch's order.

    Args:
        num_rows: dataset length.
        seed: the run's data seed.
        shuffle: a seeded permutation per epoch; False keeps dataset order.
        batch_size: rows per batch on one rank (cuts the order into global batches).
    """

    def __init__(self, num_rows: int, seed: int, shuffle: bool = True, batch_size: int = 1) -> None:
        self.num_rows = num_rows
        self.seed = seed
        self.shuffle = shuffle
        self.batch_size = batch_size
        self.epoch = 0
        self.start = 0  # indices of this epoch already consumed (a multiple of the batch size)

    def order(self, epoch: int) -> torch.Tensor:
        """The whole epoch's index order. Shape: (num_rows,), int64."""
        if not self.shuffle:
            return torch.arange(self.num_rows)
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        return torch.randperm(self.num_rows, generator=generator)

    def __iter__(self) -> Iterator[int]:
        rank, world = rank_and_world()
        mine = rank_slice(self.order(self.epoch), self.batch_size, rank, world)
        yield from mine[self.start :].tolist()

    def __len__(self) -> int:
        # The full epoch: DataLoader.__len__ (batches per epoch) must not shrink on resume.
        rank, world = rank_and_world()
        return len(rank_slice(torch.arange(self.num_rows), self.batch_size, rank, world))


class ShardSampler(Sampler[int]):
    """In-order indices of this rank's contiguous shard (validation, evaluation passes).

    Shards differ in size by at most one row and nothing is repeated, so metrics that sum over
    ranks (torchmetrics) count every row exactly once.
    """

    def __init__(self, num_rows: int) -> None:
        self.num_rows = num_rows

    def _bounds(self) -> tuple[int, int]:
        rank, world = rank_and_world()
        return rank * self.num_rows // world, (rank + 1) * self.num_rows // world

    def __iter__(self) -> Iterator[int]:
        start, stop = self._bounds()
        yield from range(start, stop)

    def __len__(self) -> int:
        start, stop = self._bounds()
        return stop - start


class ResumableDataLoader(DataLoader):
    """A DataLoader that Lightning checkpoints: it records the epoch and the batches handed out.

    Lightning saves `state_dict()` of stateful training loaders in the fit loop's checkpoint
    entry and calls `load_state_dict()` on resume, before the first batch is drawn. Each pass
    that starts fresh is the next epoch; the first pass after a load continues the loaded epoch
    after its last batch (or starts the next epoch when that one was complete). With an
    `EpochSampler` the skipped batches are skipped as indices; with any other sampler (e.g. one
    Lightning substituted for distributed training) they are drawn and dropped.

    Takes exactly `DataLoader`'s arguments, so Lightning can re-instantiate it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._epoch = -1  # the pass in progress; -1 before the first one
        self._yielded = 0  # batches of that pass handed out so far
        self._continue = False  # the next pass resumes (_epoch, _yielded) from a loaded state
        self._seed = None if self.generator is None else self.generator.initial_seed()

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "batches": self._yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._epoch, self._yielded = int(state["epoch"]), int(state["batches"])
        self._continue = True

    def __iter__(self) -> Iterator[Any]:
        # A generator: nothing is decided until the first batch is asked for, so an iterator
        # Lightning creates and drops unused does not count as an epoch.
        return self._pass()

    def _pass(self) -> Iterator[Any]:
        if not self._continue or self._yielded >= len(self):
            self._epoch, self._yielded = self._epoch + 1, 0
        self._continue = False
        if self.generator is not None and self._seed is not None:
            # Worker seeds are drawn from this generator: per epoch, not per process lifetime.
            self.generator.manual_seed(epoch_seed(self._seed, self._epoch))
        skip = self._place_sampler()
        for batch in super().__iter__():
            if skip:
                skip -= 1
                continue
            self._yielded += 1
            yield batch

    def _place_sampler(self) -> int:
        """Point the sampler at this epoch and position; return batches left to drop by hand."""
        if isinstance(self.sampler, EpochSampler) and self.batch_size is not None:
            self.sampler.epoch = self._epoch
            self.sampler.start = self._yielded * self.batch_size
            return 0
        return self._yielded


def resumable_loader(
    dataset: Any,
    batch_size: int,
    seed: int,
    collate_fn: Callable[[list[Any]], Any],
    *,
    shuffle: bool = True,
    drop_last: bool = False,
    num_workers: int = 0,
) -> ResumableDataLoader:
    """A shuffled training loader whose order is a function of (seed, epoch) and that resumes.

    Args:
        dataset: a map-style dataset of N rows.
        batch_size: rows per batch.
        seed: the data seed.
        collate_fn: rows -> batch.
        shuffle: permute each epoch; False keeps dataset order.
        drop_last: drop a final partial batch.
        num_workers: worker processes (kept alive across epochs when > 0).
    """
    return ResumableDataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochSampler(len(dataset), seed, shuffle, batch_size),
        drop_last=drop_last,
        collate_fn=collate_fn,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        # Its own generator: worker seeds never draw from (or depend on) the global torch RNG.
        generator=torch.Generator().manual_seed(seed),
    )
