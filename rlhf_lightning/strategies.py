"""``trainer.strategy`` config -> what ``lightning.Trainer(strategy=...)`` accepts.

The config value takes one of two forms:

- a string, passed through to Lightning unchanged: ``auto``, ``ddp``, ``ddp_spawn``, ``fsdp``,
  ``deepspeed_stage_2``, ... (any name in Lightning's strategy registry);
- a mapping with a ``name`` key, turned into the Lightning strategy object:

  .. code-block:: yaml

      strategy:                    # conf/trainer/fsdp.yaml
        name: fsdp                 # -> lightning.pytorch.strategies.FSDPStrategy
        wrap: decoder_layers       # one FSDP unit per decoder layer (or [GPT2Block, ...], or null)
        sharding_strategy: FULL_SHARD
        state_dict_type: sharded   # each rank writes its shard; resume with ckpt_path=<dir>
        activation_checkpointing: false
        cpu_offload: false

      strategy:                    # conf/trainer/deepspeed_zero3.yaml
        name: deepspeed            # -> lightning.pytorch.strategies.DeepSpeedStrategy
        stage: 3
        offload_optimizer: false

      strategy: {name: ddp, find_unused_parameters: true}   # -> DDPStrategy

  Other keys are passed to the strategy's constructor (and, for FSDP and DDP, through it to
  torch's ``FullyShardedDataParallel`` / ``DistributedDataParallel``); a key none of them takes
  is a :class:`~rlhf_lightning.errors.ConfigError`.

Only Lightning's own strategies are built here: the processes are launched by Lightning itself,
by ``torchrun`` or by SLURM ``srun`` (docs/scaling.md), never by this package.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from lightning.pytorch.strategies import (
    DDPStrategy,
    DeepSpeedStrategy,
    FSDPStrategy,
    Strategy,
    StrategyRegistry,
)
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from rlhf_lightning.errors import ConfigError
from rlhf_lightning.strategy_layers import DECODER_LAYERS, layer_classes

_MAPPING_NAMES = ("fsdp", "deepspeed", "ddp")
_SHARDING_STRATEGIES = (
    "FULL_SHARD",
    "SHARD_GRAD_OP",
    "NO_SHARD",
    "HYBRID_SHARD",
    "_HYBRID_SHARD_ZERO2",
)
_STATE_DICT_TYPES = ("full", "sharded")
_CUDA_ONLY = "fsdp", "deepspeed"


def build_strategy(
    strategy_cfg: Any,
    model: nn.Module | None = None,
    *,
    accelerator: Any = None,
) -> str | Strategy:
    """The ``strategy=`` argument for ``lightning.Trainer`` from the ``trainer.strategy`` value.

    Args:
        strategy_cfg: A strategy name (``"auto"``, ``"ddp"``, ``"deepspeed_stage_2"``, ...;
            None means ``"auto"``), or a mapping (dict or ``DictConfig``) with a ``name`` key
            (``fsdp``, ``deepspeed`` or ``ddp``) and that strategy's settings (module docstring).
        model: The module to be trained, used to resolve FSDP's ``wrap: decoder_layers`` (and
            named classes) to layer classes: anything whose ``modules()`` include the
            transformers model, e.g. the stage's LightningModule, a peft ``PeftModel`` or a
            ``CausalLMWithValueHead``. Only needed for FSDP with ``wrap`` set.
        accelerator: ``trainer.accelerator`` (``"cpu"``, ``"gpu"``, ``"cuda"``, ``"auto"`` or an
            Accelerator instance). When given, FSDP and DeepSpeed are refused up front, with the
            fix, where Lightning would refuse them later: on the CPU accelerator, or ``"auto"``
            on a machine without CUDA. None skips that check.

    Returns:
        The string unchanged, or a ``FSDPStrategy`` / ``DeepSpeedStrategy`` / ``DDPStrategy``.

    Raises:
        ConfigError: An unknown strategy name or key, decoder layer classes that cannot be
            found in `model`, DeepSpeed without the ``deepspeed`` package, or FSDP/DeepSpeed
            on the CPU accelerator.
    """
    if isinstance(strategy_cfg, (DictConfig, ListConfig)):
        strategy_cfg = OmegaConf.to_container(strategy_cfg, resolve=True)
    if strategy_cfg is None:
        return "auto"
    if isinstance(strategy_cfg, Strategy):
        return strategy_cfg
    if isinstance(strategy_cfg, str):
        name = _check_string(strategy_cfg)
        _check_support(name, accelerator)
        return strategy_cfg
    if not isinstance(strategy_cfg, Mapping):
        raise ConfigError(
            f"trainer.strategy={strategy_cfg!r}: expected a strategy name or a mapping with a "
            "`name` key. Fix: e.g. trainer.strategy=ddp, or trainer=fsdp / trainer=deepspeed_zero2."
        )
    settings = dict(strategy_cfg)
    name = str(settings.pop("name", "") or "").lower()
    if name not in _MAPPING_NAMES:
        shown = f"name={name!r}" if name else "has no `name` key"
        raise ConfigError(
            f"trainer.strategy {shown}: a strategy mapping needs name: one of "
            f"{', '.join(_MAPPING_NAMES)}. Fix: e.g. trainer=fsdp, trainer=deepspeed_zero3, "
            "or a plain name such as trainer.strategy=ddp."
        )
    _check_support(name, accelerator)
    if name == "fsdp":
        return _fsdp(settings, model)
    if name == "deepspeed":
        return _deepspeed(settings)
    _check_keys("ddp", settings, DDPStrategy, _ddp_kwargs())
    return DDPStrategy(**settings)


def strategy_name(strategy_cfg: Any) -> str:
    """The strategy's name: the string itself, the mapping's ``name``, or the object's.

    E.g. to decide whether a single-file CheckpointIO applies (``auto``/``ddp*``/``single*``)
    or the strategy writes its own sharded checkpoints (``fsdp``, ``deepspeed*``).
    """
    if isinstance(strategy_cfg, (DictConfig, Mapping)):
        return str(strategy_cfg.get("name", "")).lower()
    if isinstance(strategy_cfg, Strategy):
        return str(getattr(strategy_cfg, "strategy_name", type(strategy_cfg).__name__)).lower()
    return str(strategy_cfg or "auto").lower()


def deepspeed_available() -> bool:
    """True when the ``deepspeed`` package can be imported."""
    return importlib.util.find_spec("deepspeed") is not None


def _fsdp(settings: dict[str, Any], model: nn.Module | None) -> FSDPStrategy:
    wrap = settings.pop("wrap", DECODER_LAYERS)
    if "auto_wrap_policy" in settings:
        raise ConfigError(
            "trainer.strategy.auto_wrap_policy: set trainer.strategy.wrap instead "
            "(decoder_layers, a list of layer class names, or null)."
        )
    sharding = str(settings.get("sharding_strategy", "FULL_SHARD")).upper()
    if sharding not in _SHARDING_STRATEGIES:
        raise ConfigError(
            f"trainer.strategy.sharding_strategy={settings['sharding_strategy']!r} is unknown. "
            f"Fix: one of {', '.join(_SHARDING_STRATEGIES[:4])}."
        )
    settings["sharding_strategy"] = sharding
    state_dict_type = str(settings.get("state_dict_type", "full")).lower()
    if state_dict_type not in _STATE_DICT_TYPES:
        raise ConfigError(
            f"trainer.strategy.state_dict_type={settings['state_dict_type']!r} is unknown. "
            "Fix: sharded (each rank writes its shard, a checkpoint directory) or full (one file "
            "gathered on rank 0)."
        )
    settings["state_dict_type"] = state_dict_type
    settings["cpu_offload"] = bool(settings.get("cpu_offload", False))
    checkpointing = settings.pop("activation_checkpointing", False)
    _check_keys("fsdp", settings, FSDPStrategy, _fsdp_kwargs())

    policy = None
    if wrap is not None and wrap is not False and wrap != []:
        policy = layer_classes(wrap, model, "trainer.strategy.wrap")
    if checkpointing is True:
        if policy is None:
            raise ConfigError(
                "trainer.strategy.activation_checkpointing=true checkpoints the wrapped layers, "
                "but trainer.strategy.wrap is null. Fix: set trainer.strategy.wrap=decoder_layers, "
                "or give activation_checkpointing a list of layer class names."
            )
        settings["activation_checkpointing_policy"] = set(policy)
    elif checkpointing:
        settings["activation_checkpointing_policy"] = layer_classes(
            checkpointing, model, "trainer.strategy.activation_checkpointing"
        )
    return FSDPStrategy(auto_wrap_policy=policy, **settings)


def _deepspeed(settings: dict[str, Any]) -> DeepSpeedStrategy:
    _require_deepspeed("trainer.strategy.name=deepspeed")
    stage = settings.get("stage", 2)
    if stage not in (0, 1, 2, 3):
        raise ConfigError(
            f"trainer.strategy.stage={stage!r}: DeepSpeed ZeRO stages are 0, 1, 2 and 3. Fix: "
            "trainer=deepspeed_zero2 (optimizer state + gradients sharded) or "
            "trainer=deepspeed_zero3 (parameters too)."
        )
    _check_keys("deepspeed", settings, DeepSpeedStrategy, ())
    try:
        return DeepSpeedStrategy(**settings)
    except ImportError as err:  # Lightning checks the installed deepspeed's version
        raise ConfigError(f"trainer.strategy.name=deepspeed: {err}") from err


def _check_string(strategy: str) -> str:
    name = strategy.lower()
    if name != "auto" and name not in StrategyRegistry:
        known = ", ".join(["auto", *StrategyRegistry.available_strategies()])
        raise ConfigError(
            f"trainer.strategy={strategy}: unknown strategy. Fix: one of {known}; or a "
            "preset: trainer=ddp_gpu|fsdp|deepspeed_zero2|deepspeed_zero3|multinode."
        )
    return name


def _check_support(name: str, accelerator: Any) -> None:
    """Refuse, with the fix, what Lightning would refuse later (or only at fit time)."""
    family = next((f for f in _CUDA_ONLY if name.startswith(f)), None)
    if family is None:
        return
    if family == "deepspeed":
        _require_deepspeed(f"trainer.strategy={name}")
    if accelerator is None:
        return
    accel = (
        type(accelerator).__name__.removesuffix("Accelerator").lower()
        if not isinstance(accelerator, str)
        else accelerator.lower()
    )
    on_cpu = accel == "cpu" or (accel == "auto" and not torch.cuda.is_available())
    if on_cpu or accel not in ("auto", "gpu", "cuda"):
        why = (
            "Lightning's FSDPStrategy requires a CUDA accelerator (and torch's FSDP a non-CPU "
            "device)"
            if family == "fsdp"
            else "Lightning's DeepSpeedStrategy runs on CUDA GPUs only"
        )
        seen = f"trainer.accelerator={accel}" + (
            " and no CUDA GPU is visible" if accel == "auto" else ""
        )
        raise ConfigError(
            f"trainer.strategy={name} with {seen}: {why}. Fix: run it on a machine with CUDA "
            "GPUs (trainer.accelerator=gpu), or train data-parallel on CPU with trainer=ddp_cpu."
        )


def _require_deepspeed(key: str) -> None:
    if not deepspeed_available():
        raise ConfigError(
            f"{key}: the `deepspeed` package is not installed. Fix: pip install deepspeed "
            "(on a machine with CUDA and a compiler; Lightning needs deepspeed>=0.16 with "
            "torch>=2.6), or use trainer=fsdp, which needs nothing beyond torch."
        )


def _check_keys(
    name: str, settings: Mapping[str, Any], strategy_cls: type, extra: Iterable[str]
) -> None:
    allowed = set(_parameters(strategy_cls.__init__)) | set(extra)
    allowed -= {"self", "accelerator", "parallel_devices", "cluster_environment"}
    allowed -= {"checkpoint_io", "precision_plugin", "kwargs", "args"}
    unknown = sorted(set(settings) - allowed)
    if unknown:
        ours = {"fsdp": ["wrap", "activation_checkpointing"]}.get(name, [])
        raise ConfigError(
            f"trainer.strategy ({name}): unknown key(s) {', '.join(unknown)}. Fix: remove them, "
            f"or use one of {', '.join(sorted(allowed | set(ours)))}."
        )


def _parameters(function: Any) -> list[str]:
    return [
        p.name
        for p in inspect.signature(function).parameters.values()
        if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]


def _fsdp_kwargs() -> list[str]:
    """What FSDPStrategy passes on to torch's FullyShardedDataParallel."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    taken = {"module", "process_group", "cpu_offload", "sharding_strategy", "device_id"}
    return [p for p in _parameters(FullyShardedDataParallel.__init__) if p not in taken]


def _ddp_kwargs() -> list[str]:
    """What DDPStrategy passes on to torch's DistributedDataParallel."""
    from torch.nn.parallel import DistributedDataParallel

    taken = {"module", "device_ids", "output_device", "process_group"}
    return [p for p in _parameters(DistributedDataParallel.__init__) if p not in taken]
