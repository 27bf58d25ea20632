"""Model cards: the README.md of an exported model directory, in the Hugging Face format.

A YAML header the Hub reads (base model, library, pipeline tag, tags, datasets) and a body a
person reads: what trained the model and on what, the key settings, the final metrics, the
command that reproduces it and how to load it. Every export writes one (it also replaces the
empty template peft writes beside an adapter); a run fills in what only the run knows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from rlhf_lightning.models.lora import is_peft_model

CARD_NAME = "README.md"
LIBRARY_TAG = "rlhf_lightning"
# A Hub id (`name` or `owner/name`); local directories go in the body, not the header.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass
class ModelCard:
    """What a card says. Empty fields are left out.

    Attributes:
        base_model: the hub id or directory training started from; None for random weights.
        architecture: how random weights were built (e.g. ``gpt2, n_layer=2, ...``).
        kind: ``causal_lm``, ``reward`` (sequence classification), or ``value_head`` (a causal
            LM with a PPO value head saved beside it).
        adapter: the directory holds a LoRA adapter (library ``peft``), not full weights.
        stage / trained_by: the stage name and the class that trained it.
        datasets: what it trained on, as named in the config (a hub name, a path, ``demo``).
        config: key settings, dotted name -> value.
        metrics: final metrics, name -> value.
        command: the command line that reproduces the run.
        notes: further sentences (e.g. calibration, what cannot be reproduced).
    """

    base_model: str | None = None
    architecture: str | None = None
    kind: str = "causal_lm"
    adapter: bool = False
    stage: str | None = None
    trained_by: str | None = None
    datasets: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    command: str | None = None
    notes: list[str] = field(default_factory=list)

    def header(self) -> dict[str, Any]:
        """The YAML metadata block."""
        tags = [
            LIBRARY_TAG,
            *([self.stage] if self.stage else []),
            *(["lora"] if self.adapter else []),
        ]
        meta: dict[str, Any] = {}
        if self.base_model and _is_hub_id(self.base_model):
            meta["base_model"] = self.base_model
        meta["library_name"] = "peft" if self.adapter else "transformers"
        meta["pipeline_tag"] = "text-classification" if self.kind == "reward" else "text-generation"
        meta["tags"] = tags
        hub_datasets = [d for d in self.datasets if _is_hub_id(d) and d != "demo"]
        if hub_datasets:
            meta["datasets"] = hub_datasets
        return meta

    def render(self, title: str = "model") -> str:
        """The whole README.md."""
        meta = yaml.safe_dump(self.header(), sort_keys=False).strip()
        parts = [f"---\n{meta}\n---\n", f"# {title}\n", self._summary()]
        if self.config:
            rows = "\n".join(f"| `{k}` | `{_short(v)}` |" for k, v in self.config.items())
            parts.append(f"## Training settings\n\n| setting | value |\n|---|---|\n{rows}\n")
        if self.metrics:
            rows = "\n".join(f"| `{k}` | {_number(v)} |" for k, v in sorted(self.metrics.items()))
            parts.append(f"## Final metrics\n\n| metric | value |\n|---|---|\n{rows}\n")
        if self.command:
            parts.append(f"## Reproduce\n\n```bash\n{self.command}\n```\n")
        parts.append(f"## Use\n\n```python\n{self._usage()}\n```\n")
        return "\n".join(parts)

    def _summary(self) -> str:
        if self.base_model:
            start = f"`{self.base_model}`"
        elif self.architecture:
            start = f"randomly initialised weights ({self.architecture})"
        else:
            start = "an unrecorded starting point"
        what = {"reward": "A reward model", "value_head": "A policy with a PPO value head"}.get(
            self.kind, "A causal language model"
        )
        how = f"trained with the `{self.stage}` stage" if self.stage else "exported"
        by = f" (`{self.trained_by}`)" if self.trained_by else ""
        lines = [f"{what} {how}{by} of [rlhf_lightning], starting from {start}."]
        if self.adapter:
            lines.append("This directory holds a LoRA adapter; its base model loads with it.")
        if self.datasets:
            lines.append("Data: " + ", ".join(f"`{d}`" for d in self.datasets) + ".")
        lines += self.notes
        return "\n".join(lines) + "\n\n[rlhf_lightning]: https://pypi.org/project/rlhf-lightning/\n"

    def _usage(self) -> str:
        if self.kind == "reward":
            return (
                "from rlhf_lightning.rewards import ModelReward\n\n"
                'reward = ModelReward.from_pretrained("<this directory>")\n'
                'scores = reward(["The new phone"], [" is wonderful"])  # one score per completion'
            )
        if self.kind == "value_head":
            return (
                "from rlhf_lightning.models import CausalLMWithValueHead\n\n"
                'model = CausalLMWithValueHead.from_pretrained("<this directory>")  # policy + value head'
            )
        auto = "AutoPeftModelForCausalLM" if self.adapter else "AutoModelForCausalLM"
        source = "peft" if self.adapter else "transformers"
        return (
            f"from {source} import {auto}\nfrom transformers import AutoTokenizer\n\n"
            f'model = {auto}.from_pretrained("<this directory>")\n'
            'tokenizer = AutoTokenizer.from_pretrained("<this directory>")'
        )


def card_for_model(model: nn.Module) -> ModelCard:
    """The card an export can write knowing only the model object."""
    lm: Any = getattr(model, "pretrained_model", model)  # a transformers or peft model
    adapter = is_peft_model(lm)
    config = getattr(lm, "config", None)
    base = None
    if adapter:
        base = next(iter(lm.peft_config.values())).base_model_name_or_path
    elif config is not None:
        base = getattr(config, "_name_or_path", None)
    architectures = list(getattr(config, "architectures", None) or [])
    kind = "value_head" if hasattr(model, "v_head") else "causal_lm"
    if any(a.endswith("ForSequenceClassification") for a in architectures) or (
        type(lm).__name__.endswith("ForSequenceClassification")
    ):
        kind = "reward"
    architecture = getattr(config, "model_type", None) if not base else None
    return ModelCard(base_model=base or None, architecture=architecture, kind=kind, adapter=adapter)


def write_model_card(directory: str | Path, card: ModelCard, title: str | None = None) -> Path:
    """Write ``README.md`` into `directory` (replacing peft's template); returns its path.

    Args:
        title: the card's heading; None: the directory's name.
    """
    path = Path(directory) / CARD_NAME
    path.write_text(card.render(title=title or Path(directory).resolve().name), encoding="utf-8")
    return path


def _is_hub_id(name: str) -> bool:
    return bool(_HUB_ID.match(name)) and not Path(name).expanduser().exists()


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _number(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
