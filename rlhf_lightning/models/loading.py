"""Build or load a causal LM and its tokenizer from one `ModelSpec`.

A spec names either a pretrained model (`name_or_path`: hub id or local directory, or with
`gguf_file` a GGUF file in that directory, converted once into a cached directory) or an
architecture to build from scratch (`arch`: a `model_type` plus config fields, e.g. a small
GPT-2 or Llama). LoRA and gradient checkpointing are applied on top of either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.activations import GELUTanh, NewGELUActivation

from rlhf_lightning.errors import ConfigError, ModelError
from rlhf_lightning.models.lora import LoraSpec, apply_lora
from rlhf_lightning.models.tokenizer import load_tokenizer

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


@dataclass
class ModelSpec:
    """What `model=` in the config describes.

    Attributes:
        name_or_path: hub id or local directory of a pretrained model; None builds `arch`.
        gguf_file: a GGUF file (name inside `name_or_path`, or a path): dequantised once into
            a cached Hugging Face directory (`rlhf_lightning.models.gguf.gguf_model_dir`),
            whose tokenizer is used unless `tokenizer` is set.
        tokenizer: tokenizer hub id / directory, or `demo`; None means `name_or_path`.
        arch: for models built from scratch: `{"type": "gpt2", "n_layer": 4, ...}`; any
            `transformers` model type works, the other keys are its config fields.
        dtype: weight dtype when loading (`float32`, `bfloat16`, `float16`); None keeps fp32.
        trust_remote_code: run model code shipped with a checkpoint; off unless set.
        gradient_checkpointing: trade compute for activation memory.
        chat_template: a Jinja chat template overriding the tokenizer's.
        pad_token: None reuses an unused special token when pad == EOS and grows the
            vocabulary only when there is none; a token string forces that pad, added (and the
            embeddings grown) when the vocabulary lacks it (see `models.tokenizer`).
        lora: LoRA adapter settings (`enabled: false` trains all weights).
        seed: seed for the random initialisation of models built from `arch`.
    """

    name_or_path: str | None = None
    gguf_file: str | None = None
    tokenizer: str | None = None
    arch: dict[str, Any] | None = None
    dtype: str | None = None
    trust_remote_code: bool = False
    gradient_checkpointing: bool = False
    chat_template: str | None = None
    pad_token: str | None = None
    lora: LoraSpec | dict[str, Any] = field(default_factory=LoraSpec)
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.lora, dict):
            self.lora = LoraSpec(**self.lora)
        if self.name_or_path is None and not self.arch and self.gguf_file is None:
            raise ConfigError(
                "model: neither model.name_or_path nor model.arch is set. Fix: pass "
                "model.name_or_path=<hub id or local dir>, or pick model=demo / model=tiny."
            )
        if self.dtype is not None and self.dtype not in _DTYPES:
            raise ConfigError(
                f"model.dtype={self.dtype}: unknown dtype. Fix: one of {sorted(_DTYPES)} or null."
            )

    @property
    def tokenizer_name(self) -> str:
        name = self.tokenizer or self.name_or_path
        if name is None:
            raise ConfigError(
                "model.tokenizer is not set for a model built from model.arch. Fix: "
                "model.tokenizer=demo or a tokenizer directory."
            )
        return name


Head = Literal["causal_lm", "reward"]
_AUTO_CLASSES = {"causal_lm": AutoModelForCausalLM, "reward": AutoModelForSequenceClassification}


def load_model_and_tokenizer(
    spec: ModelSpec, head: Head = "causal_lm"
) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """Load (or build) the model described by `spec`, with LoRA applied when enabled.

    `head="causal_lm"` gives a language model; `head="reward"` a sequence classifier with one
    output (a fresh scalar head on any backbone: a causal LM checkpoint, an encoder, ...).
    """
    name_or_path = resolve_model_path(spec.name_or_path)
    if spec.gguf_file is not None:
        from rlhf_lightning.models.gguf import gguf_model_dir

        name_or_path = str(gguf_model_dir(name_or_path, spec.gguf_file))
    # A converted GGUF directory holds the file's own tokenizer.
    use_gguf_tokenizer = spec.gguf_file is not None and spec.tokenizer is None
    tokenizer = load_tokenizer(
        name_or_path
        if use_gguf_tokenizer
        else resolve_model_path(spec.tokenizer_name) or spec.tokenizer_name,
        trust_remote_code=spec.trust_remote_code,
        chat_template=spec.chat_template,
        pad_token=spec.pad_token,
    )
    if name_or_path is not None:
        model = load_pretrained(name_or_path, head, spec.dtype, spec.trust_remote_code)
    else:
        model = build_from_arch(spec.arch or {}, tokenizer, head, seed=spec.seed)
    align_embeddings(model, tokenizer)
    fuse_tanh_gelu(model)
    # from_pretrained returns eval mode and from_config train mode; Lightning keeps whatever
    # mode it is given, so start both the same way (stages that need dropout off set p=0).
    model.train()
    if spec.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if spec.lora.enabled:
        model = apply_lora(
            model, spec.lora, task_type="SEQ_CLS" if head == "reward" else "CAUSAL_LM"
        )
    return model, tokenizer


def resolve_model_path(name_or_path: str | None) -> str | None:
    """Check that a local-looking path exists (a hub id passes through); a run directory
    (no ``config.json``, but a ``model/`` export holding one) stands for its ``model/``.

    Built-in names (``demo:sft``, ...) are resolved to directories before anything is built
    (``rlhf_lightning.builtins``); one reaching here means the config skipped that step.
    """
    if name_or_path is None:
        return None
    if ":" in name_or_path and not Path(name_or_path).exists():
        raise ModelError(
            f"{name_or_path}: a built-in model name that was not resolved to a directory. Fix: "
            "run through the CLI or rlhf_lightning.api (they resolve built-in names), or pass "
            "rlhf_lightning.builtins.resolve_name(name)."
        )
    _check_local_path(name_or_path)
    path = Path(name_or_path).expanduser()
    if not (path / "config.json").exists() and (path / "model" / "config.json").is_file():
        return str(path / "model")
    return name_or_path


def check_context_length(model: nn.Module, max_length: int | None, key: str) -> None:
    """Refuse sequences longer than the model's position table (an IndexError deep inside the
    embedding otherwise).

    Raises:
        ConfigError: naming `key`, when `max_length` exceeds the model's positions.
    """
    config = getattr(model, "config", None)
    positions = getattr(config, "max_position_embeddings", None) or getattr(
        config, "n_positions", None
    )
    if max_length is not None and isinstance(positions, int) and max_length > positions:
        raise ConfigError(
            f"{key}={max_length}: longer than the model's {positions} positions. Fix: "
            f"{key}={positions} or less (or a model with a longer context)."
        )


def load_pretrained(
    name_or_path: str,
    head: Head = "causal_lm",
    dtype: str | None = None,
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """`AutoModelFor*.from_pretrained` with one clear error when it cannot load."""
    _check_local_path(name_or_path)
    extra = {"num_labels": 1} if head == "reward" else {}
    try:
        return _AUTO_CLASSES[head].from_pretrained(
            name_or_path,
            dtype=_DTYPES[dtype] if dtype else torch.float32,
            trust_remote_code=trust_remote_code,
            **extra,
        )
    except (OSError, ValueError, SafetensorError) as err:
        if "custom code" in str(err):
            # transformers refused before importing anything from the checkpoint.
            raise ModelError(
                f"model.name_or_path={name_or_path}: the checkpoint ships its own model code, "
                "which is not run unless asked for. Fix: read the .py files it ships; if you "
                "trust them, set model.trust_remote_code=true (reward.trust_remote_code=true "
                "for a reward model)."
            ) from err
        if isinstance(err, SafetensorError):
            raise ModelError(
                f"model.name_or_path={name_or_path}: its weights file is damaged ({err}): cut "
                "short, or not safetensors. Fix: export or copy the model again."
            ) from err
        raise ModelError(
            f"model.name_or_path={name_or_path}: cannot load a causal LM "
            f"({err.__class__.__name__}: {str(err).splitlines()[0]}). Fix: point it at a "
            "directory written by save_pretrained (config.json + weights), or at a hub id "
            "cached on this machine."
        ) from err


def build_from_arch(
    arch: dict[str, Any],
    tokenizer: PreTrainedTokenizerBase,
    head: Head = "causal_lm",
    seed: int = 0,
) -> PreTrainedModel:
    """Build a randomly initialised model from `arch` sized to `tokenizer`'s vocabulary."""
    fields = dict(arch)
    model_type = fields.pop("type", None)
    if model_type is None:
        raise ConfigError("model.arch.type is missing. Fix: e.g. model.arch.type=gpt2 (or llama).")
    try:
        config = AutoConfig.for_model(
            model_type,
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **({"num_labels": 1} if head == "reward" else {}),
            **fields,
        )
    except ValueError as err:
        raise ConfigError(
            f"model.arch.type={model_type}: {err}. Fix: use a transformers model type."
        ) from err
    # The init RNG is forked so that building a model does not shift the global stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _AUTO_CLASSES[head].from_config(config)
    return model


def build_causal_lm(
    arch: dict[str, Any], tokenizer: PreTrainedTokenizerBase, seed: int = 0
) -> PreTrainedModel:
    """A randomly initialised causal LM from `arch` (see `build_from_arch`)."""
    return build_from_arch(arch, tokenizer, "causal_lm", seed=seed)


def load_pretrained_causal_lm(
    name_or_path: str, dtype: str | None = None, trust_remote_code: bool = False
) -> PreTrainedModel:
    """A pretrained causal LM (see `load_pretrained`)."""
    return load_pretrained(name_or_path, "causal_lm", dtype, trust_remote_code)


def fuse_tanh_gelu(model: nn.Module) -> None:
    """Run GPT-2's tanh GELU (``gelu_new``) as PyTorch's fused op, in place.

    ``gelu_new`` evaluates its tanh formula as a chain of Python-level tensor ops (about 13% of
    a training step of the demo GPT-2 on CPU); ``gelu(approximate="tanh")`` is the same
    function in one kernel (equal to float32 rounding, ~2e-7). The config is left as it was,
    so a saved model is unchanged.
    """
    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is NewGELUActivation:
                setattr(module, name, GELUTanh())


def align_embeddings(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Grow the embeddings when the tokenizer gained tokens (e.g. a new pad token)."""
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.bos_token_id = tokenizer.bos_token_id


def _check_local_path(name_or_path: str) -> None:
    looks_local = name_or_path.startswith((".", "/", "~")) or Path(name_or_path).exists()
    if looks_local and not Path(name_or_path).expanduser().is_dir():
        raise ModelError(
            f"model.name_or_path={name_or_path}: no such directory. Fix: give the directory "
            "that save_pretrained wrote (for a finished run: <run_dir>/model)."
        )
