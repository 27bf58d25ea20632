"""A LoRA reward model scored on the policy's own base weights: adapters-only RLHF.

With a LoRA policy, the reference for the KL penalty is the base with the adapter off; a reward
model trained as a LoRA adapter on the same base (``stage=reward model.lora.enabled=true``) can
be a second adapter on that one copy of the weights. :class:`AdapterReward` loads such an
export into the policy's ``PeftModel`` as the adapter ``reward`` and scores with it switched
on; the score head (the export's ``score`` layer) is the only extra tensor. One copy of the base
serves the policy, the reference and the reward model.

It joins the policy when the online-RL module is built (``attach``), so it only works inside
an online-RL stage whose policy is a LoRA model on the base the reward adapter was trained on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file
from torch import Tensor, nn
from transformers import AutoTokenizer
from transformers.modeling_outputs import SequenceClassifierOutput

from rlhf_lightning.errors import RewardError
from rlhf_lightning.models.dropout import eval_mode
from rlhf_lightning.rewards.model import CALIBRATION_FILE, ModelReward

ADAPTER_NAME = "reward"


class AdapterReward:
    """Scores with a LoRA reward adapter switched on in the policy's own model.

    Args:
        path: a LoRA reward-model export (``adapter_config.json``, ``adapter_model.safetensors``
            with the ``score`` head, the tokenizer; ``reward_calibration.json`` when calibrated).
        batch_size / max_length: as in :class:`~rlhf_lightning.rewards.ModelReward`.
    """

    def __init__(self, path: str | Path, batch_size: int = 32, max_length: int = 512) -> None:
        self.path = Path(path)
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            if not (self.path / name).is_file():
                raise RewardError(
                    f"reward.path={path}: no {name}, so this is not a LoRA reward-model export. "
                    "Fix: train one with stage=reward model.lora.enabled=true and point "
                    "reward.path at its <run_dir>/model (or use reward=model for a full model)."
                )
        self.batch_size = batch_size
        self.max_length = max_length
        self._scorer: ModelReward | None = None

    def attach(self, policy: nn.Module) -> None:
        """Load the reward adapter into the policy's ``PeftModel`` (frozen) and get ready to score.

        Raises:
            RewardError: If the policy has no LoRA adapter to share its base with.
        """
        peft_model = getattr(policy, "pretrained_model", policy)
        if not isinstance(peft_model, PeftModel):
            raise RewardError(
                f"reward.path={self.path}: an adapter reward shares the policy's base weights, "
                "but the policy has no LoRA adapter. Fix: model.lora.enabled=true, or "
                "reward=model to load the reward model as a model of its own."
            )
        saved = json.loads((self.path / "adapter_config.json").read_text())
        config = LoraConfig(
            r=saved["r"],
            lora_alpha=saved["lora_alpha"],
            lora_dropout=0.0,
            target_modules=saved["target_modules"],
            task_type="CAUSAL_LM",
        )
        weights = load_file(self.path / "adapter_model.safetensors")
        score = {k: v for k, v in weights.items() if k.endswith("score.weight")}
        lora = {k: v for k, v in weights.items() if "lora_" in k}
        if len(score) != 1:
            raise RewardError(
                f"reward.path={self.path}: expected one score head in the adapter, found "
                f"{sorted(score)}. Fix: export the reward model with stage=reward (LoRA)."
            )
        active = peft_model.active_adapter
        peft_model.add_adapter(ADAPTER_NAME, config)
        set_peft_model_state_dict(peft_model, lora, adapter_name=ADAPTER_NAME)
        peft_model.set_adapter(active)  # the policy's adapter stays the trained one
        for name, parameter in peft_model.named_parameters():
            if f".{ADAPTER_NAME}." in name:
                parameter.requires_grad_(False)
        head = next(iter(score.values()))
        classifier = _AdapterClassifier(peft_model, active, head, self._calibration())
        tokenizer = AutoTokenizer.from_pretrained(self.path)
        self._scorer = ModelReward(
            classifier, tokenizer, batch_size=self.batch_size, max_length=self.max_length
        )

    def _calibration(self) -> dict[str, float] | None:
        file = self.path / CALIBRATION_FILE
        return json.loads(file.read_text()) if file.is_file() else None

    def __call__(self, prompts: list[str], completions: list[str], **columns: Any) -> Tensor:
        """Calibrated scores, float32 on CPU. Shape (B,)."""
        if self._scorer is None:
            raise RewardError(
                f"reward.path={self.path}: the adapter reward has not joined a policy. It only "
                "scores inside an online-RL stage with a LoRA policy (the stage attaches it)."
            )
        return self._scorer(prompts, completions, **columns)


class _AdapterClassifier(nn.Module):
    """A sequence classifier made of the policy's base with the reward adapter on, and a head.

    The policy's model is held outside the module tree on purpose: the reward source's
    ``eval()``, ``to()`` and parameter walks must not reach the policy.
    """

    def __init__(
        self,
        peft_model: PeftModel,
        policy_adapter: str,
        head: Tensor,
        calibration: dict[str, float] | None,
    ) -> None:
        super().__init__()
        object.__setattr__(self, "_peft", peft_model)
        self.policy_adapter = policy_adapter
        self.score = nn.Linear(head.shape[1], 1, bias=False)
        with torch.no_grad():
            self.score.weight.copy_(head)
        self.score.requires_grad_(False)
        self.config = peft_model.get_base_model().config.__class__.from_dict(
            {**peft_model.get_base_model().config.to_dict(), "num_labels": 1}
        )
        if calibration is not None:
            self.config.reward_calibration = calibration

    def get_input_embeddings(self) -> nn.Module:
        return self._peft.get_input_embeddings()

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> SequenceClassifierOutput:
        """Scores at the last real token of each right-padded row. Shape (B, 1)."""
        peft = self._peft
        peft.set_adapter(ADAPTER_NAME)
        try:
            with torch.no_grad(), eval_mode(peft):
                hidden = (
                    peft.get_base_model()
                    .model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
                    .last_hidden_state
                )
        finally:
            peft.set_adapter(self.policy_adapter)  # (re)marks only the policy's adapter trainable
        last = attention_mask.long().sum(dim=1) - 1
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return SequenceClassifierOutput(logits=self.score(pooled.to(self.score.weight.dtype)))
