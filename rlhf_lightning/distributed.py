"""Batch statistics across data-parallel ranks (no-ops in a single process).

In a data-parallel RL run each rank holds its share of the rollout batch (rank r holds global
rows [r*B, (r+1)*B)). Statistics defined over the whole batch (advantage whitening, running
reward moments, the KL controller's input, a token count that normalises a loss) are computed
on the gathered global tensor with the same functions a single process uses, so N processes
compute what one process with the N-times batch computes. Process management stays Lightning's:
these functions only use the process group Lightning's strategy set up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside a distributed run."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def all_reduce_sum(x: Tensor) -> Tensor:
    """The sum of `x` over ranks (a new tensor; `x` itself unchanged)."""
    _, world = rank_and_world()
    if world == 1:
        return x
    total = x.detach().clone()
    torch.distributed.all_reduce(total, op=torch.distributed.ReduceOp.SUM)
    return total


def gather_rows(x: Tensor, pad_value: float = 0) -> tuple[Tensor, slice]:
    """Every rank's rows of `x`, in rank order, and the slice that is this rank's.

    Dim 1 (if any) is padded at the end with `pad_value` to the widest rank's, e.g. response
    widths that differ because generation stopped earlier on one rank.

    Args:
        x: This rank's rows. Shape (B, ...); every rank must hold the same B.

    Returns:
        (the global tensor (world * B, ...), this rank's rows in it).
    """
    rank, world = rank_and_world()
    rows = x.shape[0]
    if world == 1:
        return x, slice(0, rows)
    sizes = torch.tensor([rows, x.shape[1] if x.dim() > 1 else 0], device=x.device)
    widest = sizes.clone()
    torch.distributed.all_reduce(widest, op=torch.distributed.ReduceOp.MAX)
    smallest = sizes.clone()
    torch.distributed.all_reduce(smallest, op=torch.distributed.ReduceOp.MIN)
    if int(widest[0]) != int(smallest[0]):
        raise RuntimeError(
            f"gather_rows: ranks hold {int(smallest[0])} to {int(widest[0])} rows; every rank "
            "must hold the same number (full rollout batches on every rank)."
        )
    is_bool = x.dtype == torch.bool
    if is_bool:  # masks travel as bytes (padding and collectives want a numeric type)
        x = x.to(torch.uint8)
    if x.dim() > 1 and x.shape[1] < int(widest[1]):
        x = F.pad(x, (0, 0) * (x.dim() - 2) + (0, int(widest[1]) - x.shape[1]), value=pad_value)
    parts = [torch.empty_like(x) for _ in range(world)]
    torch.distributed.all_gather(parts, x.contiguous())
    full = torch.cat(parts)
    return (full.bool() if is_bool else full), slice(rank * rows, (rank + 1) * rows)


def over_global_batch(fn: Callable[..., Tensor], x: Tensor, *others: Tensor) -> Tensor:
    """`fn(x, *others)` computed on all ranks' rows; this rank's part of the result.

    For row-wise tensors whose statistic spans the batch, e.g.
    ``over_global_batch(masked_whiten, advantages, mask)``. Widths padded for the gather are
    cut back to this rank's width.
    """
    _, world = rank_and_world()
    if world == 1:
        return fn(x, *others)
    full, mine = gather_rows(x)
    gathered = [gather_rows(t)[0] for t in others]
    out = fn(full, *gathered)[mine]
    return out[:, : x.shape[1]] if x.dim() > 1 else out


def over_global_rows(fn: Callable[[Any], Any], inputs: Any) -> Any:
    """``fn(inputs)`` on every rank's rows; this rank's rows of the result.

    For functions of a NamedTuple of row-wise tensors (e.g. an advantage estimator's
    ``AdvantageInputs``) whose statistics span the whole batch. Tensor fields are gathered
    (widths padded with 0 / False), other fields pass through; the result's tensor fields are
    cut back to this rank's rows and width. None stays None.
    """
    _, world = rank_and_world()
    if world == 1:
        return fn(inputs)
    fields = inputs._asdict()
    tensors = {k: v for k, v in fields.items() if isinstance(v, Tensor)}
    mine = slice(0)
    gathered = {}
    for name, value in tensors.items():
        gathered[name], mine = gather_rows(value)
    width = next((v.shape[1] for v in tensors.values() if v.dim() > 1), None)
    out = fn(inputs._replace(**gathered))

    def local(x: Any) -> Any:
        if not isinstance(x, Tensor):
            return x
        x = x[mine]
        return x[:, :width] if x.dim() > 1 and width is not None else x

    return type(out)(*(local(x) for x in out))
