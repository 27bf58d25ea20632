"""A checkpoint remembers the settings of the run that wrote it; a resume compares its own.

``ckpt_path=`` continues a run: the weights, the optimizer state (with its learning rate,
betas and weight decay), the position in the LR schedule and in the data, the RNG states and
the step counters all come from the checkpoint, and the log says so. Settings that would make
it another run (the model, the data, the batch size, the seed, the algorithm, the optimizer and
its schedule) are refused with one message naming them, as is a run length the checkpoint has
already reached; settings that only change reporting or hardware pass, a longer run with a note.
"""

from __future__ import annotations

import logging
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
    "stage.samples_path", "stage.reward_timeout_s",
)  # fmt: skip
# The run's length: a longer run continues, with its schedule planned for the new length.
_LENGTH = ("trainer.max_steps", "trainer.max_epochs", "stage.iterations")
# Restored with the optimizer state: a new value here would be written down but never used.
_OPTIMIZER = ("optim", "stage.optimizer")


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


def check_resume(ckpt_path: str, current: dict[str, Any]) -> None:
    """Compare a checkpoint's settings and progress with this run's config; refuse, or log
    what comes from the checkpoint.

    The file is memory-mapped, so its tensors are not read. ``torch.load``'s errors for a
    file that is not a checkpoint, or holds Python objects, reach the caller (which maps them).

    Raises:
        ConfigError: settings that shape the run differ, or the run would not train further.
    """
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    saved = checkpoint.get(CONFIG_KEY)
    if saved is None:
        log.warning(
            "ckpt_path=%s holds no run config (written by an older version), so this run's "
            "settings cannot be compared with the checkpoint's; make sure they are the same.",
            ckpt_path,
        )
        return
    old, new = _flat(saved), _flat(current)
    changed = {k: (old.get(k), new.get(k)) for k in sorted(old.keys() | new.keys())}
    changed = {k: v for k, v in changed.items() if v[0] != v[1]}
    problems = [_change(k, v) for k, v in changed.items() if not _under(k, _FREE + _LENGTH)]
    problems += _not_longer(new, checkpoint)
    if problems:
        shown = "; ".join(problems[:10])
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise ConfigError(
            f"ckpt_path={ckpt_path}: this run cannot continue the checkpoint's: {shown}{more}. "
            "Fix: resume with the checkpoint's settings (its run directory's "
            ".hydra/config.yaml) and a longer run if wanted, or drop ckpt_path to start a new "
            "run."
        )
    optimizer = ", ".join(f"{k}={v!r}" for k, v in old.items() if _optimizer_value(k))
    log.info(
        "Resuming from %s at step %d: the weights, the optimizer state (%s), the LR schedule "
        "position, the data position, the RNG states and the step counters are taken from "
        "the checkpoint.",
        ckpt_path,
        checkpoint.get("global_step", 0),
        optimizer,
    )
    length = [_change(k, v) for k, v in changed.items() if _under(k, _LENGTH)]
    if length:
        log.warning(
            "Resuming with a longer run (%s): the LR schedule is planned for the new length, "
            "so the run continues but is not the straight run of that length.",
            "; ".join(length),
        )
    free = [_change(k, v) for k, v in changed.items() if _under(k, _FREE)]
    if free:
        log.info("Changed since the checkpoint: %s.", "; ".join(free))


def _not_longer(current: dict[str, Any], checkpoint: dict[str, Any]) -> list[str]:
    """The length settings the checkpoint has gone past (equal: nothing is left to train, the
    run goes straight to validating, finishing and exporting)."""
    step = int(checkpoint.get("global_step", 0))
    iteration = checkpoint.get("online_rl", {}).get("iteration")
    max_steps, iterations = current.get("trainer.max_steps"), current.get("stage.iterations")
    out = []
    if isinstance(max_steps, int) and 0 <= max_steps < step:
        out.append(f"trainer.max_steps={max_steps} is below the checkpoint's step {step}")
    if iteration is not None and isinstance(iterations, int) and iterations < iteration:
        out.append(f"stage.iterations={iterations} is below the checkpoint's iteration {iteration}")
    return out


def _optimizer_value(key: str) -> bool:
    return key.startswith("optim.") and key.rsplit(".", 1)[-1] not in ("_target_", "_partial_")


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


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _change(key: str, values: tuple[Any, Any]) -> str:
    note = " (restored with the optimizer state)" if _under(key, _OPTIMIZER) else ""
    return f"{key}: {values[0]!r} in the checkpoint{note}, {values[1]!r} now"
