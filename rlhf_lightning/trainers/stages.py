"""SFTTrainer, RewardTrainer, DPOTrainer, GRPOTrainer and RLOOTrainer: TRL's shape over the
same stages the CLI runs (``stage=sft|reward|dpo|grpo|rloo``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from rlhf_lightning.errors import ConfigError
from rlhf_lightning.trainers.base import StageTrainer
from rlhf_lightning.trainers.configs import DPOConfig, RewardConfig, SFTConfig, override_value
from rlhf_lightning.trainers.inputs import (
    DatasetInput,
    ModelInput,
    dataset_argument,
    reward_overrides,
)
from rlhf_lightning.trainers.online_configs import GRPOConfig, OnlineConfig, RLOOConfig


class SFTTrainer(StageTrainer):
    """Supervised fine-tuning (``stage=sft``).

    Text (``text`` or ``dataset_text_field``), prompt/completion (trained on the completion)
    and chat ``messages`` (trained on assistant turns) are recognised by their columns.

    Args:
        formatting_func: turns an example into its training text (or, TRL 0.5's form, a batch
            into a list of texts); applied to the datasets before the run.
        dataset_text_field / max_seq_length / packing: TRL 0.5's constructor arguments, the
            same as the fields of ``SFTConfig`` (which they override).
        (the others: see ``StageTrainer``)
    """

    stage = "sft"
    config_class = SFTConfig

    def __init__(
        self,
        model: ModelInput,
        args: SFTConfig | None = None,
        train_dataset: DatasetInput = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        *,
        tokenizer: Any = None,
        peft_config: Any = None,
        formatting_func: Callable[..., Any] | None = None,
        dataset_text_field: str | None = None,
        max_seq_length: int | None = None,
        packing: bool | None = None,
    ) -> None:
        self.formatting_func = formatting_func
        self._extra = [
            *([] if max_seq_length is None else [f"data.max_length={max_seq_length}"]),
            *([] if packing is None else [f"data.packing={override_value(packing)}"]),
        ]
        if dataset_text_field not in (None, "text") and formatting_func is None:
            self._extra.append(f"+data.columns.text={override_value(dataset_text_field)}")
        super().__init__(
            model,
            args,
            train_dataset,
            eval_dataset,
            processing_class,
            tokenizer=tokenizer,
            peft_config=peft_config,
        )

    def stage_overrides(self) -> list[str]:
        return [*super().stage_overrides(), *self._extra]

    def _dataset(self) -> tuple[DatasetInput, list[str]]:
        dataset, overrides = dataset_argument(
            self.train_dataset, self.eval_dataset, self.formatting_func
        )
        # The formatted texts are the `text` column: a mapped text field no longer applies.
        return dataset, [*overrides, *(["data.format=text"] if self.formatting_func else [])]


class RewardTrainer(StageTrainer):
    """Reward modelling (``stage=reward``) on ``chosen``/``rejected`` pairs (with or without a
    ``prompt`` column; text or chat messages). The model: a backbone directory or id, or an
    ``AutoModelForSequenceClassification`` object (``num_labels=1``)."""

    stage = "reward"
    config_class = RewardConfig

    def _load_export(self, directory: Path) -> nn.Module:
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(directory)


class DPOTrainer(StageTrainer):
    """DPO (``stage=dpo``) on ``prompt``/``chosen``/``rejected`` pairs.

    Args:
        ref_model: None (a frozen copy of the starting policy, or with LoRA the adapter-off
            base, as TRL does). A separate reference model is not supported.
    """

    stage = "dpo"
    config_class = DPOConfig

    def __init__(self, model: ModelInput, ref_model: Any = None, *args: Any, **kwargs: Any):
        if ref_model is not None:
            raise ConfigError(
                "DPOTrainer(ref_model=...): the reference is the starting policy itself (a "
                "frozen copy, or the adapter-off base with LoRA). Fix: drop ref_model."
            )
        super().__init__(model, *args, **kwargs)


class _OnlineTrainer(StageTrainer):
    """GRPO / RLOO: ``reward_funcs`` score the completions of the ``prompt`` column; the
    dataset's other columns reach reward functions as keyword arguments."""

    config_class = OnlineConfig

    def __init__(
        self,
        model: ModelInput,
        reward_funcs: Any,
        args: OnlineConfig | None = None,
        train_dataset: DatasetInput = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        reward_processing_classes: Any = None,
        *,
        tokenizer: Any = None,
        peft_config: Any = None,
    ) -> None:
        if eval_dataset is not None:
            raise ConfigError(
                f"{type(self).__name__}(eval_dataset=...): the online-RL stages do not "
                "evaluate on a dataset; they compare the starting and the trained policy on "
                "prompts of the training data at the end (samples.jsonl). Fix: drop "
                "eval_dataset."
            )
        self.reward_funcs = reward_funcs
        self.reward_processing_classes = reward_processing_classes
        super().__init__(
            model,
            args,
            train_dataset,
            None,
            processing_class,
            tokenizer=tokenizer,
            peft_config=peft_config,
        )

    def stage_overrides(self) -> list[str]:
        weights = getattr(self.args, "reward_weights", None)
        rewards = reward_overrides(self.reward_funcs, weights, self.reward_processing_classes)
        return [*rewards, *super().stage_overrides()]


class GRPOTrainer(_OnlineTrainer):
    """GRPO (``stage=grpo``): ``num_generations`` completions per prompt, group-normalised
    advantages, the KL to the reference (``beta``) in the loss."""

    stage = "grpo"
    config_class = GRPOConfig


class RLOOTrainer(_OnlineTrainer):
    """RLOO (``stage=rloo``): ``num_generations`` completions per prompt, each one's baseline
    the mean reward of the others."""

    stage = "rloo"
    config_class = RLOOConfig
