"""Critics for PPO: a value head on the policy's trunk, or a separate value model.

Two layouts (``stage.critic``):

- ``shared``: :class:`CausalLMWithValueHead`, the policy LM plus a scalar :class:`ValueHead` on its
  last hidden state (classic TRL, ALGORITHMS.md §1.3). One forward gives logits and values.
- ``separate``: :class:`ValueModel`, its own network initialised from a reward model
  (TRL's new PPO and "N+ implementation details", ALGORITHMS.md §2).

Both take the same inputs: ``input_ids``, a bool ``attention_mask`` (True = real token) and
optional ``position_ids``. When the positions are not given they are the exclusive cumsum of the
mask (:func:`position_ids_from_mask`), so a left-padded row gets the same logits and values at
its real tokens as the same row without padding (ALGORITHMS.md §5.2).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from peft import AutoPeftModelForCausalLM, PeftModel
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import AutoModelForCausalLM

from rlhf_lightning.errors import ConfigError, ModelError
from rlhf_lightning.functional import position_ids_from_mask
from rlhf_lightning.models.loading import resolve_model_path

log = logging.getLogger(__name__)

HEAD_WEIGHTS_NAME = "value_head.safetensors"
HEAD_CONFIG_NAME = "value_head_config.json"
ADAPTER_CONFIG_NAME = "adapter_config.json"

ValueHeadInit = Literal["default", "zero", "normal"]


def hidden_size_of(config: Any) -> int:
    """Width of the last hidden state of a transformers model with this `config`.

    OPT projects its output to ``word_embed_proj_dim``, so that comes first (as in TRL); GPT-2
    style configs spell the width ``n_embd``.
    """
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in ("word_embed_proj_dim", "hidden_size", "n_embd"):
        value = getattr(text_config, name, None)
        if isinstance(value, int):
            return value
    raise ModelError(
        f"{type(config).__name__} has none of word_embed_proj_dim, hidden_size, n_embd, so the "
        "width of the value head is unknown. Fix: build the ValueHead yourself and pass it as "
        "CausalLMWithValueHead(model, v_head=ValueHead(hidden_size))."
    )


class ValueHead(nn.Module):
    """Scalar value per position: ``Dropout(p) -> Linear(hidden_size, 1) -> squeeze(-1)``.

    TRL's head (``trl/models/modeling_value_head.py``) defaults to dropout 0.1. Here it is 0:
    PPO needs the rollout forward and the training forward to compute the same function (with
    dropout the values of the first minibatch already differ from the rollout's), and every
    other model in the PPO stage has its dropout disabled too (ALGORITHMS.md §2, §5.3).

    Args:
        hidden_size: Width of the hidden states it reads.
        dropout: Dropout probability on the hidden states.
        init: ``"default"`` keeps PyTorch's Linear init (TRL's default); ``"zero"`` starts every
            value at 0 (openai/lm-human-preferences); ``"normal"`` draws the weight from
            N(0, init_std) with bias 0 (TRL ``v_head_init_strategy="normal"``).
        init_std: Standard deviation for ``init="normal"`` (TRL's ``v_head_initializer_range``).
    """

    def __init__(
        self,
        hidden_size: int,
        dropout: float = 0.0,
        init: ValueHeadInit = "default",
        init_std: float = 0.2,
    ) -> None:
        super().__init__()
        if init not in ("default", "zero", "normal"):
            raise ConfigError(
                f"value head init={init!r} is unknown. Fix: one of 'default', 'zero', 'normal'."
            )
        self.dropout = nn.Dropout(dropout)
        # `summary` is TRL's name for this layer, so its weights read the same.
        self.summary = nn.Linear(hidden_size, 1)
        if init == "zero":
            nn.init.zeros_(self.summary.weight)
            nn.init.zeros_(self.summary.bias)
        elif init == "normal":
            nn.init.normal_(self.summary.weight, mean=0.0, std=init_std)
            nn.init.zeros_(self.summary.bias)

    @property
    def hidden_size(self) -> int:
        return self.summary.in_features

    def forward(self, hidden_states: Tensor) -> Tensor:
        """Values from hidden states.

        Args:
            hidden_states: Any dtype; upcast to the head's dtype (fp32 unless cast).
                Shape (B, T, H).

        Returns:
            Values, fp32. Shape (B, T).
        """
        hidden_states = hidden_states.to(self.summary.weight.dtype)
        return self.summary(self.dropout(hidden_states)).squeeze(-1).float()

    def config_dict(self) -> dict[str, Any]:
        """What `value_head_config.json` records (enough to rebuild the module)."""
        return {
            "hidden_size": self.hidden_size,
            "dropout": self.dropout.p,
            "dtype": str(self.summary.weight.dtype).removeprefix("torch."),
        }


class ValueHeadOutput(NamedTuple):
    """Output of :meth:`CausalLMWithValueHead.forward`.

    Attributes:
        logits: Next-token logits, fp32. Shape (B, T, V).
        values: Value of each position, fp32. Shape (B, T).
    """

    logits: Tensor
    values: Tensor


class CausalLMWithValueHead(nn.Module):
    """A causal LM and a value head on its last hidden state (shared-trunk PPO critic).

    The head reads ``hidden_states[-1]`` (``output_hidden_states=True``). For GPT-2, Llama and
    most current decoders that state is taken after the final norm, i.e. exactly what the LM
    head reads, which is the standard choice (TRL, OpenAI lm-human-preferences).

    Args:
        pretrained_model: A transformers causal LM or a peft ``PeftModel`` wrapping one.
        v_head: A trained head; None builds a fresh one from `dropout`, `init`, `init_std`.
        dropout: Dropout of a fresh head (see :class:`ValueHead` for why 0).
        init: Init of a fresh head: ``"default"``, ``"zero"`` or ``"normal"``.
        init_std: Standard deviation for ``init="normal"``.

    Raises:
        ModelError: If `v_head`'s width differs from the LM's hidden size.
    """

    def __init__(
        self,
        pretrained_model: nn.Module,
        v_head: ValueHead | None = None,
        *,
        dropout: float = 0.0,
        init: ValueHeadInit = "default",
        init_std: float = 0.2,
    ) -> None:
        super().__init__()
        hidden_size = hidden_size_of(pretrained_model.config)
        if v_head is None:
            v_head = ValueHead(hidden_size, dropout=dropout, init=init, init_std=init_std)
        elif v_head.hidden_size != hidden_size:
            raise ModelError(
                f"the value head reads {v_head.hidden_size} features but the LM's hidden size is "
                f"{hidden_size}. Fix: use a head saved with this model, or a fresh one."
            )
        self.pretrained_model = pretrained_model
        # The head stays in its own dtype (fp32) even on a bf16 trunk; only the device follows.
        device = next(pretrained_model.parameters()).device
        self.v_head = v_head.to(device)

    @property
    def config(self) -> Any:
        """The LM's transformers config."""
        return self.pretrained_model.config

    @property
    def is_peft(self) -> bool:
        """True when the LM is a peft model (LoRA): only its adapter is saved."""
        return isinstance(self.pretrained_model, PeftModel)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        position_ids: Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> ValueHeadOutput:
        """Logits and values for every position.

        Args:
            input_ids: Token ids. Shape (B, T).
            attention_mask: True = real token; rows may be left- or right-padded. Shape (B, T).
            position_ids: None computes them from the mask (:func:`position_ids_from_mask`).
                Shape (B, T).
            logits_to_keep: logits for the last k positions only (0: all); values always
                cover every position (the head is one linear map of the hidden states).

        Returns:
            ``ValueHeadOutput(logits (B, T or k, V), values (B, T))``, both fp32.
        """
        if position_ids is None:
            position_ids = position_ids_from_mask(attention_mask)
        inputs = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "output_hidden_states": True,
            "use_cache": False,  # a training forward: a KV cache would only cost memory
        }
        if logits_to_keep > 0:
            inputs["logits_to_keep"] = logits_to_keep
        out = self.pretrained_model(**inputs)
        values = self.v_head(out.hidden_states[-1])
        logits = out.logits
        if logits_to_keep > 0 and logits.shape[1] != logits_to_keep:  # a model without it
            logits = logits[:, -logits_to_keep:]
        return ValueHeadOutput(logits=logits.float(), values=values)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """The LM's ``generate`` (the value head plays no part in sampling)."""
        return self.pretrained_model.generate(*args, **kwargs)

    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> Path:
        """Save the LM (only the adapter for a peft model) and the value head.

        Writes what the LM's ``save_pretrained`` writes, plus ``value_head.safetensors`` and
        ``value_head_config.json``. The tokenizer is the caller's to save.

        Args:
            save_directory: Created if missing.
            **kwargs: Passed to the LM's ``save_pretrained``.

        Returns:
            The directory.
        """
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        self.pretrained_model.save_pretrained(out, **kwargs)
        state = {k: v.detach().cpu().contiguous() for k, v in self.v_head.state_dict().items()}
        save_file(state, out / HEAD_WEIGHTS_NAME)
        (out / HEAD_CONFIG_NAME).write_text(json.dumps(self.v_head.config_dict(), indent=2) + "\n")
        return out

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        is_trainable: bool = True,
        dropout: float = 0.0,
        init: ValueHeadInit = "default",
        init_std: float = 0.2,
        **kwargs: Any,
    ) -> CausalLMWithValueHead:
        """Load what :meth:`save_pretrained` wrote, or start from a plain LM export.

        A directory with ``adapter_config.json`` loads as a peft model on its base
        (``AutoPeftModelForCausalLM``); anything else through ``AutoModelForCausalLM``. Without
        ``value_head.safetensors`` (an SFT export, a hub model) the head is fresh, so PPO can
        start from any causal LM; a warning says so.

        Args:
            name_or_path: Directory, hub id cached on this machine, or a built-in name
                (``demo:sft``).
            is_trainable: Load a peft adapter trainable (peft's default is frozen).
            dropout: Dropout of a fresh head; a saved head keeps its own.
            init: Init of a fresh head.
            init_std: Standard deviation of a fresh ``"normal"`` head.
            **kwargs: Passed to ``from_pretrained`` of the LM (e.g. ``dtype``).

        Raises:
            ModelError: If the LM or the head cannot be loaded.
        """
        path = resolve_model_path(str(name_or_path)) or str(name_or_path)
        directory = Path(path)
        if (directory / ADAPTER_CONFIG_NAME).is_file():
            lm = load_adapter(AutoPeftModelForCausalLM, directory, is_trainable, kwargs)
        else:
            lm = load_hf(AutoModelForCausalLM, path, kwargs)
        v_head = _load_value_head(directory)
        if v_head is None:
            log.warning(
                "%s has no %s: starting from a fresh value head (init=%s).",
                path,
                HEAD_WEIGHTS_NAME,
                init,
            )
        return cls(lm, v_head, dropout=dropout, init=init, init_std=init_std)


def load_hf(auto_class: Any, path: str | Path, kwargs: dict[str, Any]) -> nn.Module:
    try:
        return auto_class.from_pretrained(path, **kwargs)
    except (OSError, ValueError, SafetensorError) as err:
        raise ModelError(
            f"{path}: cannot load it with {auto_class.__name__} ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). Fix: point it at a directory "
            "written by save_pretrained (config.json + weights), or a hub id cached here."
        ) from err


def load_adapter(
    auto_class: Any, directory: Path, is_trainable: bool, kwargs: dict[str, Any]
) -> nn.Module:
    """A peft adapter directory, loaded on the base model its config names."""
    adapter_config = json.loads((directory / ADAPTER_CONFIG_NAME).read_text())
    if not adapter_config.get("base_model_name_or_path"):
        raise ModelError(
            f"{directory / ADAPTER_CONFIG_NAME} names no base model, so the adapter has nothing "
            "to load onto (the base was built from model.arch and never saved). Fix: save the "
            "base model with save_pretrained first and load it from there before adding LoRA, "
            "or export with model.lora.merge_on_export=true and load <dir>/merged."
        )
    return load_hf(auto_class, directory, {"is_trainable": is_trainable, **kwargs})


def _load_value_head(directory: Path) -> ValueHead | None:
    """The head saved in `directory`, or None when there is none."""
    weights = directory / HEAD_WEIGHTS_NAME
    if not weights.is_file():
        return None
    config_file = directory / HEAD_CONFIG_NAME
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    state = load_file(weights)
    if "summary.weight" not in state:
        raise ModelError(
            f"{weights} holds {sorted(state)}, not a value head (summary.weight, summary.bias). "
            "Fix: delete it to start from a fresh head, or save with "
            "CausalLMWithValueHead.save_pretrained."
        )
    head = ValueHead(state["summary.weight"].shape[1], dropout=config.get("dropout", 0.0))
    head.to(getattr(torch, config.get("dtype", "float32")))
    head.load_state_dict(state)
    return head
