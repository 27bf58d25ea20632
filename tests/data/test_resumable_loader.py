"""The resumable training loader: order from (seed, epoch), position restored without collating."""

from __future__ import annotations

import pytest
import torch

from rlhf_lightning.data.base import EpochSampler, ResumableDataLoader, resumable_loader


def _collate_counting(calls: list[int]):
    def collate(rows: list[int]) -> list[int]:
        calls.append(len(rows))
        return list(rows)

    return collate


def _epochs(loader, n: int) -> list[list[list[int]]]:
    return [list(loader) for _ in range(n)]


def test_each_epoch_order_is_a_function_of_seed_and_epoch():
    a = _epochs(resumable_loader(list(range(10)), 3, seed=7, collate_fn=list), 3)
    b = _epochs(resumable_loader(list(range(10)), 3, seed=7, collate_fn=list), 3)
    assert a == b
    assert a[0] != a[1]  # a fresh permutation per epoch
    assert sorted(i for batch in a[1] for i in batch) == list(range(10))
    other = _epochs(resumable_loader(list(range(10)), 3, seed=8, collate_fn=list), 1)
    assert other[0] != a[0]


@pytest.mark.parametrize("stop_after", [0, 2, 4])  # 4 = a complete epoch of 4 batches
def test_a_loaded_state_continues_after_the_last_batch_handed_out(stop_after):
    straight = _epochs(resumable_loader(list(range(10)), 3, seed=1, collate_fn=list), 3)
    flat = [batch for epoch in straight for batch in epoch]

    first = resumable_loader(list(range(10)), 3, seed=1, collate_fn=list)
    list(first)  # epoch 0 whole
    it = iter(first)
    head = [next(it) for _ in range(stop_after)]  # then stop inside epoch 1
    state = first.state_dict()
    # Before its first batch, epoch 1 has not begun: the state says "epoch 0 complete".
    assert state == (
        {"epoch": 1, "batches": stop_after} if stop_after else {"epoch": 0, "batches": 4}
    )

    calls: list[int] = []
    resumed = resumable_loader(list(range(10)), 3, seed=1, collate_fn=_collate_counting(calls))
    iter(resumed)  # an iterator created and dropped unused is not an epoch
    resumed.load_state_dict(state)
    rest = [batch for epoch in _epochs(resumed, 2) for batch in epoch]
    assert flat[:4] + head + rest[: len(flat) - 4 - stop_after] == flat
    assert len(calls) == len(rest)  # skipped batches were never collated


def test_drop_last_and_len_keep_the_full_epoch():
    loader = resumable_loader(list(range(10)), 4, seed=0, collate_fn=list, drop_last=True)
    assert len(loader) == 2 and all(len(b) == 4 for b in loader)
    loader.load_state_dict({"epoch": 0, "batches": 1})
    assert len(loader) == 2 and len(list(loader)) == 1


def test_unshuffled_sampler_keeps_dataset_order():
    assert EpochSampler(5, seed=3, shuffle=False).order(4).tolist() == list(range(5))


def test_another_sampler_drops_skipped_batches_by_hand():
    loader = ResumableDataLoader(list(range(6)), batch_size=2, collate_fn=list)
    loader.load_state_dict({"epoch": 0, "batches": 2})
    assert list(loader) == [[4, 5]]


def test_worker_processes_follow_the_same_order_and_resume():
    def make(workers: int) -> ResumableDataLoader:
        return resumable_loader(list(range(12)), 3, 5, torch.tensor, num_workers=workers)

    serial = [[b.tolist() for b in epoch] for epoch in _epochs(make(0), 2)]
    parallel = make(2)  # persistent workers: one pool across epochs
    assert [[b.tolist() for b in epoch] for epoch in _epochs(parallel, 2)] == serial
    resumed = make(2)
    resumed.load_state_dict({"epoch": 1, "batches": 3})
    assert [b.tolist() for b in resumed] == serial[1][3:]
