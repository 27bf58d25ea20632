"""A separate critic for PPO: a reward model's score head applied at every position.

The other layout, a value head on the policy's own trunk, is
:class:`~rlhf_lightning.models.value_head.CausalLMWithValueHead`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from peft import AutoPeftModelForSequenceClassification, PeftModel
from torch import Tensor, nn
from transformers import AutoModelForSequenceClassification

from rlhf_lightning.errors import ModelError
from rlhf_lightning.functional import position_ids_from_mask
from rlhf_lightning.models.loading import resolve_model_path
from rlhf_lightning.models.value_head import ADAPTER_CONFIG_NAME, load_adapter, load_hf

log = logging.getLogger(__name__)


class ValueModel(nn.Module):
    """A separate critic: a reward model's score head applied at every position.

    A decoder ``AutoModelForSequenceClassification`` (GPT-2, Llama, ...) computes
    ``score(last_hidden_state)`` for every position and pools the last real token; this
    module returns the unpooled per-position scores as values, so at the last real token the
    value equals the reward model's output (TRL's new PPO initialises the critic this way,
    ALGORITHMS.md §2). The reward stage's calibration (``config.reward_calibration``,
    mean/std) is NOT applied: values are fitted to returns by the value loss from the first
    step on, so a fixed affine rescaling would only change where that fit starts.

    Args:
        model: A sequence classifier with ``num_labels=1`` whose head (``score``, or a Linear
            ``classifier`` on the unpooled hidden states) scores each position; may be a peft
            model wrapping one.

    Raises:
        ModelError: If the model has more than one label or no per-position linear head.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        num_labels = getattr(model.config, "num_labels", None)
        if num_labels != 1:
            raise ModelError(
                f"the value model has num_labels={num_labels}; a critic needs one scalar. "
                "Fix: build it from a reward model (num_labels=1), e.g. a stage=reward export."
            )
        self.model = model
        _score_head(self._classifier)  # fail at construction, not at the first forward

    @property
    def _classifier(self) -> nn.Module:
        """The transformers sequence classifier (inside the peft wrapper, if any)."""
        return self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model

    @property
    def config(self) -> Any:
        return self.model.config

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        position_ids: Tensor | None = None,
    ) -> Tensor:
        """Values for every position.

        Args:
            input_ids: Token ids. Shape (B, T).
            attention_mask: True = real token. Shape (B, T).
            position_ids: None computes them from the mask (:func:`position_ids_from_mask`).
                Shape (B, T).

        Returns:
            Values, fp32. Shape (B, T).
        """
        if position_ids is None:
            position_ids = position_ids_from_mask(attention_mask)
        classifier = self._classifier
        hidden = classifier.base_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
        ).last_hidden_state
        head = _score_head(classifier)
        head_dtype = next(head.parameters()).dtype
        return head(hidden.to(head_dtype)).squeeze(-1).float()

    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> Path:
        """The classifier's ``save_pretrained`` (only the adapter for a peft model)."""
        out = Path(save_directory)
        self.model.save_pretrained(out, **kwargs)
        return out

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **kwargs: Any) -> ValueModel:
        """Load a reward model export as a critic.

        A LoRA reward model (a directory with ``adapter_config.json``) is loaded on its base and
        merged, so the critic is a plain model whose weights all train. A checkpoint without a
        trained score head (e.g. a causal LM) gets a fresh head and a warning.

        Args:
            name_or_path: Directory (e.g. ``<reward run>/model``) or cached hub id.
            **kwargs: Passed to ``from_pretrained`` (e.g. ``dtype``).

        Raises:
            ModelError: If it cannot be loaded or has no usable head.
        """
        path = resolve_model_path(str(name_or_path)) or str(name_or_path)
        directory = Path(path)
        if (directory / ADAPTER_CONFIG_NAME).is_file():
            # The base is usually a causal LM export, whose config has the default 2 labels.
            peft_model = load_adapter(
                AutoPeftModelForSequenceClassification,
                directory,
                False,
                {"num_labels": 1, **kwargs},
            )
            return cls(peft_model.merge_and_unload())
        model, info = load_hf(
            AutoModelForSequenceClassification,
            path,
            {"num_labels": 1, "output_loading_info": True, **kwargs},
        )
        missing = sorted(info.get("missing_keys", ()))
        if missing:
            log.warning(
                "%s lacks %s: the critic starts from a fresh (random) head.", path, missing[:4]
            )
        return cls(model)


def _score_head(classifier: nn.Module) -> nn.Module:
    """The Linear that maps a hidden state to the score, applicable at every position."""
    for name in ("score", "classifier"):
        head = getattr(classifier, name, None)
        if head is None:
            continue
        # peft's SEQ_CLS wraps the head in a ModulesToSaveWrapper that keeps the Linear inside.
        linear = getattr(head, "original_module", head)
        # BERT-style models feed the head a pooled [CLS] state, not each position's state.
        pooled = hasattr(classifier, "pre_classifier") or (
            getattr(classifier.base_model, "pooler", None) is not None
        )
        if isinstance(linear, nn.Linear) and linear.out_features == 1 and not pooled:
            return head
    raise ModelError(
        f"{type(classifier).__name__} has no per-position score head (a Linear `score` or "
        "`classifier` on the last hidden states, with one output); encoder classifiers pool "
        "first, so their head cannot value each token. Fix: use a decoder reward model "
        "(GPT-2, Llama, ... AutoModelForSequenceClassification with num_labels=1), or "
        "ppo.critic=shared."
    )
