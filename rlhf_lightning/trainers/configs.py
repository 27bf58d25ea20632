"""Config dataclasses of the trainer classes, with TRL's field names where the meaning is the same.

Each field set (not None) becomes one CLI override of the stage's config
(:meth:`TrainingConfig.overrides`); a field left None keeps this project's stage default, which
may differ from TRL's (the stage configs in ``conf/stage/`` say what they are). ``overrides``
takes any other setting in the CLI's syntax, e.g. ``["data.max_samples=1000"]``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from rlhf_lightning.errors import ConfigError

# TRL name -> config key of the stages trained by optimizer steps (SFT, reward, DPO).
_STEP_KEYS = {
    "learning_rate": "optim.lr",
    "weight_decay": "optim.weight_decay",
    "per_device_train_batch_size": "data.batch_size",
    "per_device_eval_batch_size": "data.eval_batch_size",
    "max_steps": "trainer.max_steps",
    "gradient_accumulation_steps": "trainer.accumulate_grad_batches",
    "warmup_ratio": "scheduler.warmup_ratio",
    "warmup_steps": "scheduler.warmup_steps",
    "lr_scheduler_type": "scheduler.decay",
    "max_grad_norm": "trainer.gradient_clip_val",
    "logging_steps": "trainer.log_every_n_steps",
    "eval_steps": "trainer.val_check_interval",
    "save_steps": "checkpoint.every_n_steps",
    "seed": "seed",
}
_SCHEDULES = {"cosine": "cosine", "linear": "linear", "constant": "constant"}
# Strings Hydra reads as they are: paths, ids, names.
_PLAIN = re.compile(r"[\w./:+-]+")


@dataclass
class TrainingConfig:
    """What every trainer class takes (TRL's ``TrainingArguments`` names).

    Attributes:
        output_dir: the run directory; None: ``outputs/<stage>/<date>_<time>``, as the CLI's.
        learning_rate / weight_decay / warmup_ratio / warmup_steps: the optimizer and schedule.
        lr_scheduler_type: ``cosine``, ``linear`` or ``constant`` after the warmup.
        per_device_train_batch_size / per_device_eval_batch_size: examples per batch and process.
        max_steps: optimizer steps (online RL: iterations, one rollout and its updates each).
        num_train_epochs: passes over the data instead of ``max_steps``.
        gradient_accumulation_steps / max_grad_norm / seed: as in TRL.
        logging_steps / eval_steps / save_steps: every how many steps to log, validate and
            checkpoint.
        bf16 / fp16: mixed precision; gradient_checkpointing: recompute activations.
        report_to: loggers besides CSV: ``tensorboard``, ``wandb`` (``none``: CSV only).
        push_to_hub / hub_model_id / hub_token / hub_private_repo: push the export after train.
        overrides: any further CLI overrides, applied last.
    """

    _keys: ClassVar[dict[str, str]] = _STEP_KEYS

    output_dir: str | None = None
    learning_rate: float | None = None
    weight_decay: float | None = None
    lr_scheduler_type: str | None = None
    warmup_ratio: float | None = None
    warmup_steps: int | None = None
    per_device_train_batch_size: int | None = None
    per_device_eval_batch_size: int | None = None
    max_steps: int | None = None
    num_train_epochs: int | None = None
    gradient_accumulation_steps: int | None = None
    max_grad_norm: float | None = None
    logging_steps: int | None = None
    eval_steps: int | None = None
    save_steps: int | None = None
    seed: int | None = None
    bf16: bool = False
    fp16: bool = False
    gradient_checkpointing: bool = False
    report_to: str | Sequence[str] | None = None
    push_to_hub: bool = False
    hub_model_id: str | None = None
    hub_token: str | None = None
    hub_private_repo: bool | None = None
    overrides: list[str] = field(default_factory=list)

    def overrides_for_stage(self) -> list[str]:
        """The CLI overrides this config stands for."""
        args = [
            f"{self._keys[f.name]}={override_value(self._value(f.name))}"
            for f in fields(self)
            if f.name in self._keys and getattr(self, f.name) is not None
        ]
        if self.num_train_epochs is not None:
            args += [f"trainer.max_epochs={self.num_train_epochs}", "trainer.max_steps=-1"]
        if self.bf16 or self.fp16:
            args.append(f"trainer.precision={'bf16' if self.bf16 else '16'}-mixed")
        if self.gradient_checkpointing:
            args.append("model.gradient_checkpointing=true")
        if self.report_to is not None:
            wanted = [self.report_to] if isinstance(self.report_to, str) else list(self.report_to)
            loggers = ["csv", *(r for r in wanted if r not in ("none", "csv"))]
            args.append(f"logger=[{','.join(loggers)}]")
        return [*args, *self._stage_overrides(), *self.overrides]

    def _value(self, name: str) -> Any:
        value = getattr(self, name)
        if name == "lr_scheduler_type" and value not in _SCHEDULES:
            raise ConfigError(
                f"lr_scheduler_type={value!r}: not a schedule here. Fix: one of "
                f"{sorted(_SCHEDULES)} (after the linear warmup)."
            )
        return value

    def _stage_overrides(self) -> list[str]:
        """The stage's own fields (subclasses)."""
        return []


@dataclass
class SFTConfig(TrainingConfig):
    """SFT (``SFTTrainer``).

    Attributes:
        max_length: tokens per example (TRL 0.5's ``max_seq_length`` is the same).
        dataset_text_field: the text column when it is not ``text``.
        packing: pack examples into full ``max_length`` blocks.
    """

    max_length: int | None = None
    max_seq_length: int | None = None
    dataset_text_field: str | None = None
    packing: bool | None = None

    def _stage_overrides(self) -> list[str]:
        args = []
        length = self.max_length or self.max_seq_length
        if length is not None:
            args.append(f"data.max_length={length}")
        if self.dataset_text_field not in (None, "text"):
            args.append(f"+data.columns.text={self.dataset_text_field}")
        if self.packing is not None:
            args.append(f"data.packing={override_value(self.packing)}")
        return args


@dataclass
class RewardConfig(TrainingConfig):
    """Reward modelling (``RewardTrainer``).

    Attributes:
        max_length: tokens per prompt + response.
        center_rewards_coefficient: TRL's reward centring, ``+ c * mean((r_c + r_r)^2)``.
        calibrate_on: a policy (model directory) whose sampled completions then score mean 0,
            std 1; None leaves scores raw.
    """

    max_length: int | None = None
    center_rewards_coefficient: float | None = None
    calibrate_on: str | None = None

    def _stage_overrides(self) -> list[str]:
        args = [] if self.max_length is None else [f"data.max_length={self.max_length}"]
        if self.center_rewards_coefficient is not None:
            args.append(f"stage.center_coef={self.center_rewards_coefficient}")
        if self.calibrate_on is None:
            args.append("stage.calibration=null")
        else:
            args.append(f"stage.calibration.policy={override_value(self.calibrate_on)}")
        return args


@dataclass
class DPOConfig(TrainingConfig):
    """DPO (``DPOTrainer``).

    Attributes:
        beta: the KL strength.
        loss_type: ``sigmoid``, ``hinge`` or ``ipo``.
        label_smoothing: conservative DPO's label noise.
        max_length: tokens per prompt + response.
        precompute_ref_log_probs: score every pair with the reference once, hold no reference.
    """

    beta: float | None = None
    loss_type: str | None = None
    label_smoothing: float | None = None
    max_length: int | None = None
    precompute_ref_log_probs: bool | None = None

    def _stage_overrides(self) -> list[str]:
        named = {
            "stage.beta": self.beta,
            "stage.loss_type": self.loss_type,
            "stage.label_smoothing": self.label_smoothing,
            "data.max_length": self.max_length,
            "stage.precompute_reference": self.precompute_ref_log_probs,
        }
        return [f"{k}={override_value(v)}" for k, v in named.items() if v is not None]


def override_value(value: Any) -> str:
    """A Python value in Hydra's override syntax (strings quoted when they need it)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    text = str(value)
    if isinstance(value, str) and not _PLAIN.fullmatch(text):
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return text
