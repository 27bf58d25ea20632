"""The model's layer classes FSDP wraps one unit around (``wrap: decoder_layers`` or names).

The decoder layer classes come from the model's ``_no_split_modules`` (through LoRA and
value-head wrappers); a named class is looked up in the model, or among the transformers
modules already imported.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from torch import nn

from rlhf_lightning.errors import ConfigError

DECODER_LAYERS = "decoder_layers"


def decoder_layer_classes(model: nn.Module) -> set[type[nn.Module]]:
    """The classes of `model`'s decoder layers, from transformers' ``_no_split_modules``.

    Every transformers ``PreTrainedModel`` among ``model.modules()`` (so through peft wrappers,
    value heads and LightningModules alike) lists the blocks that must stay on one device in
    ``_no_split_modules`` (``GPT2Block``, ``LlamaDecoderLayer``, ...); those names are mapped to
    the classes actually present in `model`.

    Raises:
        ConfigError: If no listed class is present (a model that is not from transformers,
            or one that lists none).
    """
    from transformers import PreTrainedModel

    names: set[str] = set()
    owners: list[str] = []
    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            owners.append(type(module).__name__)
            names.update(getattr(module, "_no_split_modules", None) or ())
    present = _classes_by_name(model)
    found = {cls for name in names for cls in present.get(name, ())}
    if not found:
        where = (
            f"its transformers models ({', '.join(sorted(set(owners)))}) list {sorted(names)} "
            "in _no_split_modules, none of which it contains"
            if owners
            else "it contains no transformers PreTrainedModel"
        )
        raise ConfigError(
            f"trainer.strategy.wrap=decoder_layers: no decoder layer classes found in "
            f"{type(model).__name__}: {where}. Fix: name the layer classes, e.g. "
            f"trainer.strategy.wrap=[{_example_layer_name(present)}], or "
            "trainer.strategy.wrap=null to shard the model as one unit."
        )
    return found


def layer_classes(wrap: Any, model: nn.Module | None, key: str) -> set[type[nn.Module]]:
    """Resolve ``decoder_layers`` or a list of class names to module classes.

    Args:
        wrap: ``"decoder_layers"``, a class name, or a list of class names (or classes).
        model: Where to look for the classes; without it, names are looked up in the
            transformers modeling modules already imported.
        key: The config key, for messages (``trainer.strategy.wrap``).

    Raises:
        ConfigError: If `model` is needed but missing, or a named class is not found.
    """
    if isinstance(wrap, str) and wrap == DECODER_LAYERS:
        if model is None:
            raise ConfigError(
                f"{key}=decoder_layers needs the model to find its decoder layer classes, and "
                "build_strategy was called without one. Fix: pass it, "
                "build_strategy(cfg.trainer.strategy, model=module), or name the classes, e.g. "
                f"{key}=[GPT2Block] or {key}=[LlamaDecoderLayer]."
            )
        return decoder_layer_classes(model)
    items = [wrap] if isinstance(wrap, (str, type)) else list(wrap or ())
    classes: set[type[nn.Module]] = set()
    names: list[str] = []
    for item in items:
        if isinstance(item, type) and issubclass(item, nn.Module):
            classes.add(item)
        else:
            names.append(str(item))
    present = _classes_by_name(model) if model is not None else _loaded_transformers_classes()
    missing = [name for name in names if name not in present]
    if missing:
        where = (
            f"the model ({type(model).__name__})"
            if model is not None
            else "the transformers modules imported so far (no model was passed)"
        )
        hint = (
            f"; its decoder layers are {sorted(c.__name__ for c in _decoder_classes_or_empty(model))}"
            if model is not None and _decoder_classes_or_empty(model)
            else ""
        )
        raise ConfigError(
            f"{key}: no module class named {', '.join(missing)} in {where}{hint}. Fix: use "
            f"{key}=decoder_layers, or the exact class names of the layers to wrap."
        )
    for name in names:
        classes.update(present[name])
    return classes


def _classes_by_name(model: nn.Module) -> dict[str, set[type[nn.Module]]]:
    present: dict[str, set[type[nn.Module]]] = {}
    for module in model.modules():
        present.setdefault(type(module).__name__, set()).add(type(module))
    return present


def _loaded_transformers_classes() -> dict[str, set[type[nn.Module]]]:
    """Module classes defined in the transformers modeling modules imported so far."""
    present: dict[str, set[type[nn.Module]]] = {}
    for module_name, module in list(sys.modules.items()):
        if not module_name.startswith("transformers.models.") or module is None:
            continue
        for attr, value in list(vars(module).items()):
            if isinstance(value, type) and issubclass(value, nn.Module):
                present.setdefault(attr, set()).add(value)
    return present


def _decoder_classes_or_empty(model: nn.Module | None) -> set[type[nn.Module]]:
    if model is None:
        return set()
    try:
        return decoder_layer_classes(model)
    except ConfigError:
        return set()


def _example_layer_name(present: Mapping[str, Any]) -> str:
    for name in present:
        if name.endswith(("Block", "Layer", "DecoderLayer")):
            return name
    return "GPT2Block"
