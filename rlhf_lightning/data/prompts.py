"""Prompts for the RL stages: a `prompt` column (plus any extra columns for the reward)."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import datasets
import lightning as L
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from rlhf_lightning.data.base import EpochSampler, rank_slice, resumable_loader
from rlhf_lightning.data.demo_prompts import demo_prompts
from rlhf_lightning.data.loading import DEMO, load_table
from rlhf_lightning.data.sft import in_memory_splits
from rlhf_lightning.distributed import rank_and_world
from rlhf_lightning.errors import DataError

log = logging.getLogger(__name__)


class PromptTruncationWarning(UserWarning):
    """Prompts longer than `data.max_prompt_tokens` were cut to their last tokens."""


class PromptDataModule(L.LightningDataModule):
    """Batches of prompts for rollouts: `{"prompts": list[str], <column>: list, ...}`.

    Extra columns (a reference answer, a target label, ...) travel with each prompt and reach
    the reward source as keyword arguments.

    Args:
        path: `demo` (openings of demo corpus texts), a local file/dir, or a hub dataset name.
        prompt_column: the column holding the prompt text.
        split: the split to read.
        batch_size: prompts per PPO iteration (the rollout batch).
        num_prompts: for `demo`, how many distinct openings; otherwise caps the rows.
        opening_words: for `demo`, words per opening.
        seed: seeds the sampling order.
        max_prompt_tokens: prompts longer than this (in tokens of `tokenizer`, BOS not
            counted) keep their last `max_prompt_tokens` tokens, the part the response
            continues; one warning gives the count and the first such row. None: no limit.
        chat: render each prompt as a user turn through the tokenizer's chat template, with the
            assistant's generation prompt after it (instruct models answer a turn; a plain
            prompt is continued as text).
        tokenizer: the policy's tokenizer, needed for `max_prompt_tokens` and `chat`.
        dataset: an in-memory `datasets.Dataset` instead of `path`.
        eval_split: the held-out split evaluated by `stage=eval` and by the RL stages'
            evaluator (e.g. ``validation`` of a built-in task); None: no evaluation data.
    """

    def __init__(
        self,
        path: str = DEMO,
        prompt_column: str = "prompt",
        split: str = "train",
        batch_size: int = 32,
        num_prompts: int | None = 4096,
        opening_words: int = 3,
        seed: int = 0,
        max_prompt_tokens: int | None = None,
        chat: bool = False,
        tokenizer: PreTrainedTokenizerBase | None = None,
        dataset: datasets.Dataset | datasets.DatasetDict | None = None,
        eval_split: str | None = None,
    ) -> None:
        super().__init__()
        self.path = path
        self.prompt_column = prompt_column
        self.split = split
        self.batch_size = batch_size
        self.num_prompts = num_prompts
        self.opening_words = opening_words
        self.seed = seed
        self.max_prompt_tokens = max_prompt_tokens
        self.chat = chat
        self.tokenizer = tokenizer
        self.dataset = dataset
        self.eval_split = eval_split
        self.rows: datasets.Dataset | None = None
        self.eval_rows: datasets.Dataset | None = None
        self.truncated_prompts = 0

    def setup(self, stage: str | None = None) -> None:
        if self.rows is not None:
            return
        if self.eval_split is not None:
            # Every problem of the split, unshortened: the evaluator picks its first N.
            self.eval_rows = self._checked(self._load(self.eval_split))
            if self.chat:
                self.eval_rows = self._as_chat_turns(self.eval_rows)
        if self.eval_split is not None and self.eval_split == self.split:
            log.warning(
                "data.eval_split=%s is the training split: evaluation measures training "
                "problems, not held-out ones.",
                self.split,
            )
        rows = self._checked(self._load(self.split))
        if self.num_prompts is not None and self.path != DEMO:
            rows = rows.select(range(min(self.num_prompts, len(rows))))
        rows = self._truncate_long_prompts(rows)
        self.rows = self._as_chat_turns(rows) if self.chat else rows

    def _load(self, split: str) -> datasets.Dataset:
        if self.dataset is not None:
            return in_memory_splits(self.dataset, split, "data")[split]
        if self.path == DEMO:
            prompts = demo_prompts(self.num_prompts or 4096, self.opening_words, self.seed)
            return datasets.Dataset.from_dict({self.prompt_column: prompts})
        return load_table(self.path, split)

    def _checked(self, rows: datasets.Dataset) -> datasets.Dataset:
        if self.prompt_column not in rows.column_names:
            raise DataError(
                f"data.path={self.path}: column '{self.prompt_column}' not found (columns: "
                f"{', '.join(rows.column_names)}). Fix: set data.prompt_column=<column>."
            )
        bad = [i for i, p in enumerate(rows[self.prompt_column]) if not isinstance(p, str)]
        if bad:
            raise DataError(
                f"data.path={self.path}: row {bad[0]} has a non-text '{self.prompt_column}'. "
                "Fix: every prompt must be a string."
            )
        return rows

    def _as_chat_turns(self, rows: datasets.Dataset) -> datasets.Dataset:
        """Each prompt as a user turn plus the assistant's generation prompt (chat template)."""
        if self.tokenizer is None:
            raise DataError("data.chat=true needs the policy's tokenizer (its chat template).")
        column, tokenizer = self.prompt_column, self.tokenizer

        def render(row: dict[str, Any]) -> dict[str, Any]:
            turn = [{"role": "user", "content": row[column]}]
            text = tokenizer.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
            return {column: text}

        return rows.map(render, load_from_cache_file=False)

    def _truncate_long_prompts(self, rows: datasets.Dataset) -> datasets.Dataset:
        """Cut prompts over `max_prompt_tokens` to their last tokens; warn once with the count."""
        limit, tokenizer = self.max_prompt_tokens, self.tokenizer
        if limit is None or tokenizer is None or len(rows) == 0:
            return rows
        prompts = list(rows[self.prompt_column])
        ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
        long_rows = [i for i, row_ids in enumerate(ids) if len(row_ids) > limit]
        self.truncated_prompts = len(long_rows)
        if not long_rows:
            return rows
        first = long_rows[0]
        message = (
            f"data.path={self.path}: {len(long_rows)} of {len(rows)} prompts are longer than "
            f"data.max_prompt_tokens={limit} tokens (the first is row {first}, "
            f"{len(ids[first])} tokens); each keeps its last {limit} tokens. Fix: raise "
            "data.max_prompt_tokens (the policy's context must hold prompt + response) or "
            "shorten those prompts."
        )
        warnings.warn(message, PromptTruncationWarning, stacklevel=2)
        log.warning(message)
        shortened = {i: tokenizer.decode(ids[i][-limit:]) for i in long_rows}
        column = self.prompt_column

        def cut(row: dict[str, Any], index: int) -> dict[str, Any]:
            return {column: shortened.get(index, row[column])}

        return rows.map(cut, with_indices=True, load_from_cache_file=False)

    def train_dataloader(self) -> DataLoader:
        assert self.rows is not None, "call setup() first"
        if len(self.rows) < self.batch_size:  # a partial batch is dropped: nothing would run
            raise DataError(
                f"data.path={self.path}: {len(self.rows)} prompts, fewer than one rollout batch "
                f"(data.batch_size={self.batch_size}), so no iteration would run. Fix: lower "
                "data.batch_size or give more prompts."
            )
        # The order depends on (seed, epoch) only; the position is saved in checkpoints.
        return resumable_loader(
            self.rows,
            self.batch_size,
            self.seed,
            self._collate,
            drop_last=True,  # PPO minibatching needs full rollout batches
        )

    def batch_at(self, step: int) -> dict[str, list]:
        """The batch the training loader hands out at global `step` (0-based, across epochs).

        The loader's order is a function of (seed, epoch) alone (``data.base.EpochSampler``), so
        any step's batch is known in advance: rollouts for later iterations can be generated
        ahead (asynchronous RL) and still be exactly the ones the loader will name.
        """
        assert self.rows is not None, "call setup() first"
        rank, world = rank_and_world()
        sampler = EpochSampler(len(self.rows), self.seed, True, self.batch_size)
        per_epoch = len(sampler) // self.batch_size  # drop_last: full batches only
        if per_epoch == 0:
            raise DataError(
                f"data.path={self.path}: {len(self.rows)} prompts do not fill one batch of "
                f"{self.batch_size}. Fix: lower data.batch_size or give more prompts."
            )
        epoch, index = divmod(step, per_epoch)
        mine = rank_slice(sampler.order(epoch), self.batch_size, rank, world)
        rows = mine[index * self.batch_size : (index + 1) * self.batch_size].tolist()
        return self._collate(list(self.rows.select(rows)))

    def first_batch(self, n: int) -> dict[str, list]:
        """The first `n` prompts (and their columns) in dataset order: fixed evaluation prompts."""
        assert self.rows is not None, "call setup() first"
        return self._collate(list(self.rows.select(range(min(n, len(self.rows))))))

    def eval_problems(self) -> dict[str, list]:
        """Every problem of `eval_split`, collated like a batch (dataset order).

        Raises:
            DataError: without an `eval_split`.
        """
        assert self.rows is not None, "call setup() first"
        if self.eval_rows is None:
            raise DataError(
                f"data.path={self.path}: no evaluation split. Fix: set data.eval_split "
                "(validation for the built-in tasks), or turn the evaluation off "
                "(stage.evaluator=null)."
            )
        return self._collate(list(self.eval_rows))

    def val_dataloader(self) -> DataLoader | list:
        """One batch, the whole evaluation split, for ``stage=eval``: the evaluator batches it
        and gives each process its share (``modules/evaluation.py``). None without an
        ``eval_split``. (The RL stages read ``eval_problems`` themselves.)"""
        if self.eval_rows is None:
            return []  # Lightning skips validation when there is no loader
        return DataLoader([self.eval_problems()], batch_size=None, collate_fn=_as_is)

    def _collate(self, rows: list[dict[str, Any]]) -> dict[str, list]:
        batch: dict[str, list] = {"prompts": [r[self.prompt_column] for r in rows]}
        for key in rows[0]:
            if key != self.prompt_column:
                batch[key] = [r[key] for r in rows]
        return batch


def _as_is(batch: dict[str, list]) -> dict[str, list]:
    return batch
