"""Checkpoint files that are either the old one or the complete new one, never half of either.

Lightning's default IO writes through an fsspec transaction whose temporary file lives in the
system temp directory; moving it into a run directory on another filesystem is a copy, and a
kill during that copy leaves a truncated checkpoint. Here the temporary file sits beside the
target, is flushed to disk, and replaces the target with one atomic rename.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from rlhf_lightning.errors import NumericalError, StorageError
from rlhf_lightning.rundir import fsync_directory


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` with same-directory temp file + fsync + ``os.replace`` saves.

    Local paths only (the run directory contract); loading is Lightning's own.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        _check_finite(checkpoint.get("state_dict", {}), path)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Hidden and unique per process, so a leftover from a killed save is never mistaken for
        # a checkpoint and two processes never write the same temporary file.
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with tmp.open("wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as err:  # a full disk, a read-only or vanished directory
            raise _not_written(path, err) from err
        finally:
            tmp.unlink(missing_ok=True)
        fsync_directory(path.parent)


def _not_written(path: Path, err: OSError) -> StorageError:
    reason = err.strerror or str(err)
    return StorageError(
        f"checkpoint {path}: not written ({reason}); the previous checkpoint is kept. Fix: "
        "free space on that disk (or give the run another directory with hydra.run.dir=...), "
        "then run the same command with ckpt_path=<the kept checkpoint> to continue."
    )


def _check_finite(state_dict: dict[str, Any], path: str | os.PathLike) -> None:
    """Refuse to replace a good checkpoint with weights holding NaN or Inf."""
    bad = [
        name
        for name, tensor in state_dict.items()
        if torch.is_tensor(tensor)
        and tensor.is_floating_point()
        and not bool(torch.isfinite(tensor).all())
    ]
    if bad:
        raise NumericalError(
            f"checkpoint {path}: not written, {len(bad)} weight tensors hold NaN/Inf (first: "
            f"{bad[0]}); the previous checkpoint is kept. Fix: lower optim.lr or check the data "
            "and rewards for NaN/Inf, then resume from the kept checkpoint."
        )
