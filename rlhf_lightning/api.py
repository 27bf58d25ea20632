"""One call per stage for notebooks and scripts; the same config and code path as the CLI.

from rlhf_lightning import api
result = api.sft("path/to/model", dataset=my_dataset, text_field="content", max_length=512)
result.metrics["val/perplexity"], result.model_dir
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from rlhf_lightning.paths import config_dir

_BUILTIN_MODELS = {"demo", "tiny", "tiny_llama"}


@dataclass
class StageResult:
    """What a finished stage leaves behind."""

    run_dir: Path
    metrics: dict[str, float]
    global_step: int

    @property
    def model_dir(self) -> Path:
        return self.run_dir / "model"


def compose_config(
    stage: str, overrides: Sequence[str] = (), run_dir: str | Path | None = None
) -> DictConfig:
    """The config `python -m rlhf_lightning stage=<stage> <overrides>` would run with."""
    overrides = [f"stage={stage}", *overrides]
    if GlobalHydra.instance().is_initialized():
        # Inside a running Hydra app (e.g. a stage building the demo policy it starts from).
        cfg = compose("config", overrides=overrides)
    else:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose("config", overrides=overrides)
    with open_dict(cfg):
        cfg.run_dir = str(run_dir or tempfile.mkdtemp(prefix=f"rlhf_lightning-{stage}-"))
    return cfg


def sft(
    model: str = "demo",
    dataset: Any = None,
    *,
    text_field: str | None = None,
    prompt_field: str | None = None,
    completion_field: str | None = None,
    messages_field: str | None = None,
    max_length: int | None = None,
    max_steps: int | None = None,
    lora: bool = False,
    output_dir: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> StageResult:
    """Fine-tune `model` on `dataset` and return the run's metrics and export directory.

    Args:
        model: `demo`, `tiny`, `tiny_llama`, a hub id, or a local model directory.
        dataset: a `datasets.Dataset` / `DatasetDict`, or a path / hub name (`data.path`);
            None uses the embedded demo corpus.
        text_field / prompt_field / completion_field / messages_field: dataset column names
            when they differ from `text`, `prompt`, `completion`, `messages`.
        max_length: tokens per example.
        max_steps: optimizer steps.
        lora: train a LoRA adapter instead of all weights.
        output_dir: the run directory (a fresh temporary one when None).
        overrides: any further CLI-style overrides, e.g. `["optim.lr=3e-5"]`.
    """
    from rlhf_lightning.train import run

    args = list(_model_overrides(model))
    in_memory = dataset is not None and not isinstance(dataset, (str, Path))
    if dataset is not None and not in_memory:
        args.append(f"data.path={dataset}")
    for canonical, column in (
        ("text", text_field),
        ("prompt", prompt_field),
        ("completion", completion_field),
        ("messages", messages_field),
    ):
        if column is not None:
            args.append(f"+data.columns.{canonical}={column}")
    if max_length is not None:
        args.append(f"data.max_length={max_length}")
    if max_steps is not None:
        args.append(f"trainer.max_steps={max_steps}")
    if lora:
        args.append("model.lora.enabled=true")
    cfg = compose_config("sft", [*args, *overrides], run_dir=output_dir)
    summary = run(cfg, dataset=dataset if in_memory else None)
    return StageResult(Path(summary["run_dir"]), summary["metrics"], summary["global_step"])


def _model_overrides(model: str) -> list[str]:
    if model in _BUILTIN_MODELS:
        return [f"model={model}"]
    return ["model=pretrained", f"model.name_or_path={model}"]
