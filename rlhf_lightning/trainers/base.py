"""The shape every stage trainer class shares: construct, ``train()``, save, push.

A trainer class is a shorthand for a CLI run, like ``rlhf_lightning.api``: its config
dataclass and arguments become overrides of the stage's config, and ``train()`` runs
``api.run_stage`` (the CLI's code path: compose, ``train.run``, the usual run directory).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from rlhf_lightning.api import StageResult, run_stage
from rlhf_lightning.config import default_run_dir
from rlhf_lightning.errors import ConfigError
from rlhf_lightning.models import load_tokenizer
from rlhf_lightning.models.hub import push_model_dir
from rlhf_lightning.trainers.configs import TrainingConfig
from rlhf_lightning.trainers.inputs import (
    DatasetInput,
    ModelInput,
    copy_trained_weights,
    dataset_argument,
    model_argument,
    peft_overrides,
)

log = logging.getLogger(__name__)


class StageTrainer:
    """Base of the stage trainer classes (TRL's constructor shape).

    Args:
        model: a model directory, a hub id, ``tiny`` (a small random model, offline), or a
            model object (saved to ``<output_dir>/input_model`` and trained from there; after
            ``train()`` the object holds the trained weights when their shapes allow).
        args: the stage's config dataclass (TRL's ``args``).
        train_dataset: a ``datasets.Dataset`` / ``DatasetDict``, or a path or hub name.
        eval_dataset: a validation ``datasets.Dataset``.
        processing_class: the tokenizer (TRL's current name; ``tokenizer=`` is TRL 0.5's).
        peft_config: a ``peft.LoraConfig``: train a LoRA adapter.
    """

    stage: ClassVar[str]
    config_class: ClassVar[type[TrainingConfig]] = TrainingConfig

    def __init__(
        self,
        model: ModelInput,
        args: TrainingConfig | None = None,
        train_dataset: DatasetInput = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        *,
        tokenizer: Any = None,
        peft_config: Any = None,
    ) -> None:
        self.args = args if args is not None else self.config_class()
        if not isinstance(self.args, self.config_class):
            raise ConfigError(
                f"{type(self).__name__}(args=<{type(self.args).__name__}>): expected a "
                f"{self.config_class.__name__}. Fix: args={self.config_class.__name__}(...)."
            )
        self.model_input = model
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.processing_class = processing_class if processing_class is not None else tokenizer
        self.peft_config = peft_config
        self.run_dir = Path(self.args.output_dir or default_run_dir(self.stage)).resolve()
        self.result: StageResult | None = None
        self._trained: nn.Module | None = None
        # Built now, so that a mistake in the config is reported before anything runs.
        self._overrides = [*self.stage_overrides(), *peft_overrides(peft_config)]

    def stage_overrides(self) -> list[str]:
        """The CLI overrides of this run (the config's, then the subclass's)."""
        return self.args.overrides_for_stage()

    def train(self) -> StageResult:
        """Run the stage; returns the run directory, final metrics and step count."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        model = model_argument(
            self.model_input, self.processing_class, self.run_dir, type(self).__name__
        )
        dataset, data_overrides = self._dataset()
        self.result = run_stage(
            self.stage,
            model,
            dataset=dataset,
            output_dir=self.run_dir,
            overrides=[*data_overrides, *self._overrides],
        )
        self._trained = None
        if isinstance(self.model_input, nn.Module) and not copy_trained_weights(
            self.model_input, self.model
        ):
            log.warning(
                "The model object passed in keeps its starting weights (the trained ones differ "
                "in shape, e.g. LoRA or a grown vocabulary): use trainer.model."
            )
        if self.args.push_to_hub:
            self.push_to_hub()
        return self.result

    def _dataset(self) -> tuple[DatasetInput, list[str]]:
        return dataset_argument(self.train_dataset, self.eval_dataset)

    @property
    def model(self) -> Any:
        """After ``train()`` the trained model (loaded from the export); before, the model
        object given (a name or path is loaded)."""
        if self.result is None:
            if isinstance(self.model_input, nn.Module):
                return self.model_input
            raise ConfigError(
                f"{type(self).__name__}.model: nothing is loaded before train() when the model "
                "is given by name. Fix: call train() first, or pass a model object."
            )
        if self._trained is None:
            self._trained = self._load_export(self.result.model_dir)
        return self._trained

    def _load_export(self, directory: Path) -> nn.Module:
        from peft import AutoPeftModelForCausalLM
        from transformers import AutoModelForCausalLM

        if (directory / "adapter_config.json").is_file():
            return AutoPeftModelForCausalLM.from_pretrained(directory)
        return AutoModelForCausalLM.from_pretrained(directory)

    @property
    def tokenizer(self) -> Any:
        """The tokenizer the run saved with the model (after ``train()``), else the one given."""
        if self.result is not None:
            return load_tokenizer(str(self.result.model_dir))
        return self.processing_class

    def save_model(self, output_dir: str | Path | None = None) -> Path:
        """A complete, loadable directory of the trained model (weights, tokenizer, model card;
        PPO's value head): ``<run_dir>/model``, copied to `output_dir` when given."""
        if self.result is None:
            raise ConfigError(
                f"{type(self).__name__}.save_model: nothing trained yet. Fix: call train() first."
            )
        source = self.result.model_dir
        if output_dir is None or Path(output_dir).resolve() == source.resolve():
            return source
        target = Path(output_dir)
        shutil.copytree(source, target, dirs_exist_ok=True)
        return target

    save_pretrained = save_model

    def push_to_hub(
        self,
        repo_id: str | None = None,
        *,
        commit_message: str = "End of training",
        token: str | None = None,
        private: bool | None = None,
        endpoint: str | None = None,
    ) -> str:
        """Upload the trained model directory to the Hub; returns the commit URL.

        Args:
            repo_id: ``owner/name``; None: ``args.hub_model_id``.
            token / private: default to ``args.hub_token`` / ``args.hub_private_repo``.
            endpoint: the Hub's URL (None: ``HF_ENDPOINT`` or huggingface.co).
        """
        repo_id = repo_id or self.args.hub_model_id
        if repo_id is None:
            raise ConfigError(
                "push_to_hub: no repository named. Fix: push_to_hub('owner/name'), or set "
                "hub_model_id in the config."
            )
        return push_model_dir(
            self.save_model(),
            repo_id,
            commit_message=commit_message,
            token=token or self.args.hub_token,
            private=self.args.hub_private_repo if private is None else private,
            endpoint=endpoint,
        )
