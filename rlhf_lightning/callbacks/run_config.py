"""A checkpoint remembers the settings of the run that wrote it; a resume compares its own.

``ckpt_path=`` continues a run: the weights, the optimizer state (with its learning rate,
betas and weight decay), the position in the LR schedule and in the data, the RNG states and
the step counters all come from the checkpoint. Settings that would make it another run (the
model, the data, the batch size, the seed, the algorithm, the schedule) are refused with one
message naming them; settings the checkpoint overrides are logged as taken from it; settings
that only change reporting, hardware or the run's length pass, the length with a note.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from rlhf_lightning.errors import ConfigError

log = logging.getLogger(__name__)

CONFIG_KEY = "run_config"

# Settings free to differ: where and how the run reports, checkpoints and exports, and the
# hardware it runs on. (A key matches a prefix when equal to it or below it.)
_FREE = (
    "run_dir", "ckpt_path", "interrupt_at", "report", "export", "logger", "callbacks",
    "checkpoint", "hydra", "max_consecutive_bad_steps", "data.num_workers",
    "data.eval_batch_size", "trainer.enable_progress_bar", "trainer.enable_model_summary",
    "trainer.log_every_n_steps", "trainer.val_check_interval",
    "trainer.check_val_every_n_epoch", "trainer.limit_val_batches",
    "trainer.num_sanity_val_steps", "trainer.accelerator", "trainer.devices",
    "trainer.num_nodes", "trainer.strategy", "stage.validate_at_start",
    "stage.max_consecutive_bad_steps", "stage.num_samples", "stage.sample_prompts",
    "stage.sample_max_new_tokens", "stage.sample_every", "stage.compare_prompts",
    "stage.samples_path",
)  # fmt: skip
# The run's length: a longer (or shorter) run continues, with its schedule planned anew.
_LENGTH = ("trainer.max_steps", "trainer.max_epochs", "stage.iterations")
# Optimizer hyper-parameters: restored with the optimizer state, whatever the config says.
_FROM_CHECKPOINT = ("optim", "stage.optimizer")
_CLASS_KEYS = ("_target_", "_partial_")  # a different optimizer class is another run


class RunConfigInCheckpoint(Callback):
    """Writes the run's resolved, redacted config into every checkpoint (``run_config``).

    Args:
        config: the plain config saved as ``.hydra/config.yaml``.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[CONFIG_KEY] = self.config


def saved_run_config(ckpt_path: str | Path) -> dict[str, Any] | None:
    """The config stored in a checkpoint file, or None when it holds none.

    The file is memory-mapped, so its tensors are not read. Raises what ``torch.load`` raises
    for a file that is not a checkpoint or holds Python objects (the caller maps those).
    """
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    return checkpoint.get(CONFIG_KEY)


def check_resume(saved: dict[str, Any] | None, current: dict[str, Any], ckpt_path: str) -> None:
    """Compare the checkpoint's settings with this run's; refuse, or log what comes from where.

    Raises:
        ConfigError: when settings that shape the run differ.
    """
    taken = "weights, optimizer state, LR schedule position, data position, RNG states, counters"
    log.info("Resuming from %s: %s are taken from the checkpoint.", ckpt_path, taken)
    if saved is None:
        log.warning(
            "ckpt_path=%s holds no run config (written by an older version), so this run's "
            "settings cannot be compared with the checkpoint's; make sure they are the same.",
            ckpt_path,
        )
        return
    changed = _differences(_flat(saved), _flat(current))
    refused = [key for key in changed if _kind(key) == "refused"]
    if refused:
        shown = "; ".join(_change(key, changed[key]) for key in refused[:10])
        more = f" (and {len(refused) - 10} more)" if len(refused) > 10 else ""
        raise ConfigError(
            f"ckpt_path={ckpt_path}: the checkpoint was written by a run with other settings, "
            f"so resuming would not continue it: {shown}{more}. Fix: resume with the "
            "checkpoint's settings (its run directory's .hydra/config.yaml), or drop ckpt_path "
            "to start a new run."
        )
    from_checkpoint = [key for key in changed if _kind(key) == "checkpoint"]
    if from_checkpoint:
        log.warning(
            "Resuming: these settings are taken from the checkpoint (the optimizer state "
            "holds them): %s.",
            "; ".join(
                f"{key}: {changed[key][0]!r} in the checkpoint (used), {changed[key][1]!r} "
                "given (not used)"
                for key in from_checkpoint
            ),
        )
    length = [key for key in changed if _kind(key) == "length"]
    if length:
        log.warning(
            "Resuming with another run length (%s): the LR schedule is planned for the new "
            "length, so the run continues but is not the straight run of that length.",
            "; ".join(_change(key, changed[key]) for key in length),
        )
    free = [key for key in changed if _kind(key) == "free"]
    if free:
        log.info(
            "Changed since the checkpoint: %s.", "; ".join(_change(k, changed[k]) for k in free)
        )


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys -> values; paths inside the run directory compare relative to it."""
    run_dir = str(config.get("run_dir") or "")
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
            return
        if run_dir and isinstance(node, str) and node.startswith(run_dir):
            node = "${run_dir}" + node[len(run_dir) :]
        out[prefix[:-1]] = node

    walk(config, "")
    return out


def _differences(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    keys = sorted(saved.keys() | current.keys())
    return {k: (saved.get(k), current.get(k)) for k in keys if saved.get(k) != current.get(k)}


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _kind(key: str) -> str:
    if _under(key, _FREE):
        return "free"
    if _under(key, _LENGTH):
        return "length"
    if _under(key, _FROM_CHECKPOINT) and key.rsplit(".", 1)[-1] not in _CLASS_KEYS:
        return "checkpoint"
    return "refused"


def _change(key: str, values: tuple[Any, Any]) -> str:
    return f"{key}: {values[0]!r} in the checkpoint, {values[1]!r} now"
