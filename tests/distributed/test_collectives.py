"""The cross-rank statistics on a real two-process gloo group equal the one-process values."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import torch

from rlhf_lightning.functional import masked_whiten
from rlhf_lightning.functional.advantages import RunningMoments, rloo_advantages

WORKER = textwrap.dedent(
    """
    import json, sys
    import torch
    from rlhf_lightning.distributed import all_reduce_sum, gather_rows, over_global_batch
    from rlhf_lightning.functional import masked_whiten
    from rlhf_lightning.functional.advantages import RunningMoments, rloo_advantages

    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    g = torch.Generator().manual_seed(0)
    values = torch.randn(8, 6, generator=g)
    lengths = torch.tensor([6, 3, 5, 1, 2, 6, 4, 3])
    mask = torch.arange(6)[None] < lengths[:, None]
    mine = slice(4 * rank, 4 * rank + 4)
    # Rank 0's responses are 6 wide, rank 1's only 4 (generation stopped earlier there).
    width = 6 if rank == 0 else 4
    local, local_mask = values[mine, :width], mask[mine, :width]
    whitened = over_global_batch(masked_whiten, local, local_mask)
    scores = torch.randn(8, generator=g)
    rloo = over_global_batch(lambda x: rloo_advantages(x, 2, True), scores[mine])
    moments = RunningMoments()
    moments.update(gather_rows(scores[mine])[0])
    total = all_reduce_sum(local_mask.sum())
    print(json.dumps({
        "rank": rank,
        "whitened": whitened.tolist(),
        "rloo": rloo.tolist(),
        "moments": [moments.mean, moments.std],
        "tokens": int(total),
    }))
    torch.distributed.destroy_process_group()
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gathered_statistics_equal_the_single_process_ones(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(script)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={
                **os.environ,
                "OMP_NUM_THREADS": "1",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "RANK": str(rank),
                "WORLD_SIZE": "2",
            },
        )
        for rank in range(2)
    ]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))

    g = torch.Generator().manual_seed(0)
    values = torch.randn(8, 6, generator=g)
    lengths = torch.tensor([6, 3, 5, 1, 2, 6, 4, 3])
    mask = torch.arange(6)[None] < lengths[:, None]
    mask[4:, 4:] = False  # what rank 1 holds: its rows cut to 4 wide
    expected = masked_whiten(values, mask)
    scores = torch.randn(8, generator=g)
    expected_rloo = rloo_advantages(scores, 2, True)
    moments = RunningMoments()
    moments.update(scores)
    for out in outs:
        rank = out["rank"]
        width = 6 if rank == 0 else 4
        got = torch.tensor(out["whitened"])
        want = expected[4 * rank : 4 * rank + 4, :width]
        assert torch.allclose(got, want, atol=1e-6)
        assert torch.allclose(torch.tensor(out["rloo"]), expected_rloo[4 * rank : 4 * rank + 4])
        assert out["moments"] == [moments.mean, moments.std]
        assert out["tokens"] == int(mask.sum())
