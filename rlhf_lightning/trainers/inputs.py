"""What a trainer class is given, turned into what the stage's config names.

A config names models and data by path and reward functions by import path, and the runner
builds every object from it (config stops at the constructor). So a model object is saved to
``<run_dir>/input_model`` first: the saved config then names a directory that holds exactly the
weights training started from, and LoRA, the pad token and dtype are applied by the one loading
path every run uses. An in-memory dataset goes to the runner as it is. A reward function that is
importable by name goes into the config by that name; any other reward (a lambda, a reward
object, several with weights) is handed over in-process (``reward=inprocess``).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import datasets
from torch import nn

from rlhf_lightning.errors import ConfigError
from rlhf_lightning.rewards import CallableReward, ModelReward, WeightedReward
from rlhf_lightning.rewards.inprocess import register
from rlhf_lightning.trainers.configs import override_value

log = logging.getLogger(__name__)

ModelInput = str | Path | nn.Module
DatasetInput = datasets.Dataset | datasets.DatasetDict | str | Path | None


def model_argument(model: ModelInput, tokenizer: Any, run_dir: Path, who: str) -> str:
    """A model name or directory for the config; an object is saved under `run_dir` first."""
    if isinstance(model, (str, Path)):
        return str(model)
    if tokenizer is None:
        raise ConfigError(
            f"{who}(model=<{type(model).__name__} object>) needs its tokenizer. Fix: pass "
            "processing_class=tokenizer (tokenizer= works too), or the model's directory."
        )
    directory = run_dir / "input_model"
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    log.info("%s: the model object was saved to %s, where the run starts from.", who, directory)
    return str(directory)


def copy_trained_weights(target: nn.Module, trained: nn.Module) -> bool:
    """Load `trained`'s weights into the object the user passed, as TRL trains it in place.

    Returns False (and leaves `target` alone) when the two differ in shape, e.g. a LoRA run
    (adapter weights) or a vocabulary grown for a pad token.
    """
    source = getattr(trained, "pretrained_model", trained).state_dict()
    own = getattr(target, "pretrained_model", target).state_dict()
    if source.keys() != own.keys() or any(source[k].shape != own[k].shape for k in own):
        return False
    getattr(target, "pretrained_model", target).load_state_dict(source)
    if hasattr(target, "v_head") and hasattr(trained, "v_head"):
        target.v_head.load_state_dict(trained.v_head.state_dict())
    return True


def dataset_argument(
    train: DatasetInput,
    eval_dataset: datasets.Dataset | None,
    formatting_func: Callable[..., Any] | None = None,
) -> tuple[DatasetInput, list[str]]:
    """The dataset for the runner and the overrides it needs (a validation split)."""
    if formatting_func is not None:
        train = format_texts(_loaded(train), formatting_func)
        if eval_dataset is not None:
            eval_dataset = format_texts(eval_dataset, formatting_func)
    if eval_dataset is None:
        return train, []
    splits = _loaded(train)
    if isinstance(splits, datasets.DatasetDict):
        splits = splits["train"]
    pair = datasets.DatasetDict({"train": splits, "validation": eval_dataset})
    return pair, ["data.split=train", "data.val_split=validation"]


def format_texts(
    dataset: datasets.Dataset | datasets.DatasetDict, formatting_func: Callable[..., Any]
) -> datasets.Dataset | datasets.DatasetDict:
    """A ``text`` column from `formatting_func`, the other columns dropped.

    The function takes one example and returns its text (TRL now), or a batch and returns a
    list of texts (TRL 0.5); a batch of one tells which.
    """
    if isinstance(dataset, datasets.DatasetDict):
        return datasets.DatasetDict(
            {k: format_texts(v, formatting_func) for k, v in dataset.items()}
        )
    probe = formatting_func(dataset[:1])
    batched = isinstance(probe, (list, tuple)) and len(probe) == 1
    if batched:
        return dataset.map(
            lambda batch: {"text": list(formatting_func(batch))},
            batched=True,
            remove_columns=dataset.column_names,
        )
    return dataset.map(
        lambda row: {"text": formatting_func(row)}, remove_columns=dataset.column_names
    )


def _loaded(dataset: DatasetInput) -> datasets.Dataset | datasets.DatasetDict:
    if dataset is None:
        raise ConfigError(
            "formatting_func and eval_dataset need a train_dataset. Fix: pass train_dataset="
        )
    if isinstance(dataset, (str, Path)):
        from rlhf_lightning.data.loading import load_table

        return load_table(str(dataset), split=None)
    return dataset


def peft_overrides(peft_config: Any) -> list[str]:
    """``model.lora.*`` overrides from a ``peft.LoraConfig``."""
    if peft_config is None:
        return []
    named = {
        "model.lora.r": getattr(peft_config, "r", None),
        "model.lora.alpha": getattr(peft_config, "lora_alpha", None),
        "model.lora.dropout": getattr(peft_config, "lora_dropout", None),
        "model.lora.target_modules": _as_list(getattr(peft_config, "target_modules", None)),
    }
    return ["model.lora.enabled=true"] + [
        f"{key}={override_value(value)}" for key, value in named.items() if value is not None
    ]


def _as_list(value: Any) -> list[str] | None:
    if value is None or isinstance(value, str):
        return None if value is None else [value]
    return sorted(value)


def reward_overrides(
    reward_funcs: Any, weights: Sequence[float] | None = None, tokenizers: Any = None
) -> list[str]:
    """``reward=...`` overrides for TRL's ``reward_funcs`` (one or a list).

    Each item is an import path ``package.module:function``, a reward model directory or hub
    id, a Python callable ``(prompts, completions, **columns)`` or TRL's
    ``(completions, **kwargs)``, a reward source of this project, or a sequence-classification
    model object (its tokenizer in `tokenizers`).
    """
    items = list(reward_funcs) if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
    if weights is not None and len(weights) != len(items):
        raise ConfigError(
            f"reward_weights has {len(weights)} weights for {len(items)} reward functions. "
            "Fix: one weight per function."
        )
    if len(items) == 1 and weights is None:
        item = items[0]
        if isinstance(item, str) and ":" in item:
            return ["reward=callable", f"reward.function={override_value(item)}"]
        if isinstance(item, (str, Path)):
            return ["reward=model", f"reward.path={override_value(str(item))}"]
        name = _import_name(item)
        if name is not None:
            return ["reward=callable", f"reward.function={override_value(name)}"]
    tokenizers = tokenizers if isinstance(tokenizers, (list, tuple)) else [tokenizers] * len(items)
    sources = [as_source(item, tok) for item, tok in zip(items, tokenizers, strict=True)]
    if len(sources) == 1:
        source, label = sources[0], _label(items[0])
    else:
        names = [f"{i}_{_label(item)}" for i, item in enumerate(items)]
        source = WeightedReward(
            dict(zip(names, sources, strict=True)),
            dict(zip(names, weights or [1.0] * len(items), strict=True)),
        )
        label = "mix"
    return ["reward=inprocess", f"reward.name={register(source, label)}"]


def as_source(item: Any, tokenizer: Any = None) -> Any:
    """A reward source object for one of ``reward_funcs``."""
    if isinstance(item, str) and ":" in item:
        return CallableReward(item)
    if isinstance(item, (str, Path)):
        return ModelReward.from_pretrained(str(item))
    if isinstance(item, nn.Module):
        if tokenizer is None:
            raise ConfigError(
                "reward_funcs holds a model object without its tokenizer. Fix: pass "
                "reward_processing_classes=[tokenizer], or the reward model's directory."
            )
        return ModelReward(item, tokenizer)
    if type(item).__module__.startswith("rlhf_lightning.rewards"):
        return item  # already a reward source (keeps what it logs, e.g. a mix's components)
    if not callable(item):
        raise ConfigError(
            f"reward_funcs: {item!r} is neither a function, a reward source nor a model. Fix: "
            "pass a function (prompts, completions, **columns) -> one float each."
        )
    return CallableReward(item)


def _import_name(function: Any) -> str | None:
    """``package.module:function`` when `function` imports back by that name, else None."""
    if not (inspect.isfunction(function) or inspect.isbuiltin(function)):
        return None
    from rlhf_lightning.rewards.callable import function_name, resolve_function

    name = function_name(function)
    if "<" in name or name.startswith("__main__:"):
        return None  # a lambda, a nested function, or one defined in a script or notebook
    try:
        return name if resolve_function(name) is function else None
    except Exception:  # any import failure means the same: not reachable by its name
        return None


def _label(item: Any) -> str:
    if isinstance(item, (str, Path)):
        return Path(str(item).split(":")[-1]).name
    return getattr(item, "__name__", type(item).__name__)
