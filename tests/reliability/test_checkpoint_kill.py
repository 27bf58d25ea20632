"""A process killed (SIGKILL) while writing a checkpoint leaves the previous one intact.

The trainer's checkpoint IO (``AtomicCheckpointIO``) writes a temporary file beside the target
and renames it over the target only when complete; this test kills a real process in the
middle of that write.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import torch

from rlhf_lightning.api import compose_config
from rlhf_lightning.builders import build_trainer
from rlhf_lightning.checkpoint_io import AtomicCheckpointIO

KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from rlhf_lightning.api import compose_config
    from rlhf_lightning.builders import build_trainer

    from pathlib import Path
    path, run_dir = sys.argv[1], Path(sys.argv[2])
    trainer = build_trainer(compose_config("sft", ["model=tiny"], run_dir=run_dir), run_dir)
    io = trainer.strategy.checkpoint_io

    real_save = torch.save

    def write_half_then_die(obj, f):
        import io as _io
        buffer = _io.BytesIO()
        real_save(obj, buffer)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    torch.save = write_half_then_die
    io.save_checkpoint({"weights": torch.full((1000,), 2.0), "step": 2}, path)
    """
)


def test_sigkill_during_checkpoint_write_keeps_the_previous_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    path = run_dir / "checkpoints" / "last.ckpt"
    trainer = build_trainer(compose_config("sft", ["model=tiny"], run_dir=run_dir), run_dir)
    trainer.strategy.checkpoint_io.save_checkpoint(
        {"weights": torch.full((1000,), 1.0), "step": 1}, path
    )

    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(path), str(run_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]

    state = torch.load(path, map_location="cpu", weights_only=True)
    assert state["step"] == 1 and torch.equal(state["weights"], torch.full((1000,), 1.0))
    # Whatever the killed write left behind is not the checkpoint itself.
    leftovers = [p for p in path.parent.iterdir() if p != path]
    assert leftovers, "the kill should have interrupted a half-written temporary file"
    assert all(0 < p.stat().st_size < path.stat().st_size for p in leftovers)
