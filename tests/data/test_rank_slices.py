"""Data parallel splits: each rank's slice of every global batch, validation shards."""

from __future__ import annotations

import pytest
import torch

from rlhf_lightning.data.base import ShardSampler, rank_slice


@pytest.mark.parametrize("n, batch, world", [(20, 3, 2), (24, 4, 3), (7, 2, 2), (5, 2, 4)])
def test_ranks_together_hold_each_global_batch_in_order(n, batch, world):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    shares = [rank_slice(order, batch, r, world) for r in range(world)]
    span = batch * world
    full = n // span
    for k in range(full):  # global batch k = the ranks' k-th batches, rank after rank
        joined = torch.cat([s[k * batch : (k + 1) * batch] for s in shares])
        assert torch.equal(joined, order[k * span : (k + 1) * span])
    rest = n - full * span
    tails = [s[full * batch :] for s in shares]
    if rest >= world:  # dealt round-robin, every row once
        assert sorted(torch.cat(tails).tolist()) == sorted(order[full * span :].tolist())
    else:  # too few rows for every rank: dropped, so every rank sees as many batches
        assert all(len(t) == 0 for t in tails)
    counts = {-(-len(s) // batch) for s in shares}
    assert len(counts) == 1


def test_one_process_keeps_the_whole_order():
    order = torch.arange(10)
    assert torch.equal(rank_slice(order, 3, 0, 1), order)


def test_validation_shards_cover_every_row_once(monkeypatch):
    import rlhf_lightning.data.base as base

    rows = []
    for rank in range(3):
        monkeypatch.setattr(base, "rank_and_world", lambda rank=rank: (rank, 3))
        sampler = ShardSampler(10)
        rows += list(sampler)
        assert len(sampler) in (3, 4)
    assert rows == list(range(10))
