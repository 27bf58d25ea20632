"""The frozen reference policy for the KL penalty: a copy, or the LoRA policy with its adapter off.

Two kinds, one interface (:class:`Reference`): ``reference_logits(input_ids, attention_mask,
position_ids) -> (B, T, V) fp32`` (also its ``__call__``) under ``torch.no_grad()``, with the same default positions as
the policy (:func:`~rlhf_lightning.models.value_head.position_ids_from_mask`), so a policy equal
to its reference gives KL exactly 0 (ALGORITHMS.md §5.5).

- :class:`FrozenCopyReference`: a deep copy of the policy LM (TRL ``create_reference_model``,
  ALGORITHMS.md §1.3). Costs a second set of weights.
- :class:`AdapterDisabledReference`: for a LoRA policy the frozen base IS the reference, so
  the same ``PeftModel`` is run inside ``disable_adapter()``; no weights are copied.

:func:`build_reference` picks one (``"auto"``: adapter_off for a peft policy, else copy).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal, Protocol

import torch
from peft import PeftModel
from torch import Tensor, nn

from rlhf_lightning.errors import ConfigError
from rlhf_lightning.models.dropout import disable_dropout, eval_mode
from rlhf_lightning.models.logits import causal_lm_logits
from rlhf_lightning.models.value_head import CausalLMWithValueHead, position_ids_from_mask

ReferenceMode = Literal["copy", "adapter_off", "auto"]


class Reference(Protocol):
    """What the online-RL and DPO stages need from a reference policy.

    Calling it is ``reference_logits`` (the scoring path's call convention,
    ``rollout.score_tokens``).
    """

    def __call__(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        position_ids: Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> Tensor: ...

    def reference_logits(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        position_ids: Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> Tensor: ...

    def generation_model(self) -> contextlib.AbstractContextManager[nn.Module]:
        """A context giving a causal LM that samples as the reference (before/after samples)."""
        ...


def _policy_lm(policy: nn.Module) -> nn.Module:
    """The causal LM inside `policy` (the reference needs no value head)."""
    return policy.pretrained_model if isinstance(policy, CausalLMWithValueHead) else policy


def create_reference_model(model: nn.Module) -> nn.Module:
    """A frozen deep copy of the policy LM: no gradients, eval mode, every dropout p=0.

    For a :class:`CausalLMWithValueHead` only the LM is copied. Dropout is set to 0 as well as
    switching to eval mode because a parent's ``.train()`` (Lightning calls it every epoch)
    turns eval mode off again.

    Args:
        model: A transformers causal LM, a peft model, or a ``CausalLMWithValueHead``.

    Returns:
        The copy, on the policy's device.
    """
    reference = copy.deepcopy(_policy_lm(model))
    reference.requires_grad_(False)
    disable_dropout(reference)
    return reference.eval()


def _lm_logits(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    position_ids: Tensor | None,
    logits_to_keep: int = 0,
) -> Tensor:
    """Logits of `model` computed as the policy computes them, for the last `logits_to_keep`
    positions (0: all). Shape (B, T or logits_to_keep, V), fp32."""
    if position_ids is None:
        position_ids = position_ids_from_mask(attention_mask)
    return causal_lm_logits(
        model,
        logits_to_keep,
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=False,
    ).float()


class FrozenCopyReference(nn.Module):
    """Reference = a frozen copy of the policy LM taken at construction.

    It is an ``nn.Module`` so it follows the LightningModule to its device; it stays in eval
    mode whatever ``.train()`` is called with. Its weights never change, so a stage may leave it
    out of checkpoints and rebuild it from the initial policy.

    Args:
        policy: The policy (LM, peft model or ``CausalLMWithValueHead``) at its initial weights.
        copy: False when `policy` already is a copy of its own (e.g. TRL's
            ``create_reference_model``): it is frozen in place, not copied again.
    """

    def __init__(self, policy: nn.Module, *, copy: bool = True) -> None:
        super().__init__()
        if copy:
            self.model = create_reference_model(policy)
        else:
            self.model = disable_dropout(_policy_lm(policy).requires_grad_(False)).eval()

    def train(self, mode: bool = True) -> FrozenCopyReference:
        return super().train(False)

    @torch.no_grad()
    def reference_logits(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        position_ids: Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> Tensor:
        """Reference logits.

        Args:
            input_ids: Token ids. Shape (B, T).
            attention_mask: True = real token. Shape (B, T).
            position_ids: None computes them from the mask. Shape (B, T).

        Returns:
            Logits, fp32, no grad. Shape (B, T, V), or (B, logits_to_keep, V) for the last
            positions only (the response's: the LM head skips the prompt).
        """
        return _lm_logits(self.model, input_ids, attention_mask, position_ids, logits_to_keep)

    forward = reference_logits

    @contextmanager
    def generation_model(self) -> Iterator[nn.Module]:
        """The frozen copy itself."""
        yield self.model


class AdapterDisabledReference:
    """Reference = the LoRA policy's own base model, run with the adapter disabled.

    Nothing is copied: the object keeps a handle to the policy's ``PeftModel`` and runs it
    under ``torch.no_grad()``, ``disable_adapter()`` and eval mode (the policy's modes are
    restored afterwards). LoRA never changes the base weights, so this equals the initial
    policy for as long as the adapter starts at zero effect (peft's default init). It is
    deliberately not an ``nn.Module``: registered on a LightningModule it would list the
    policy's parameters twice in checkpoints.

    Args:
        policy: A ``PeftModel``, or a ``CausalLMWithValueHead`` wrapping one.

    Raises:
        ConfigError: If the policy has no adapter.
    """

    def __init__(self, policy: nn.Module) -> None:
        lm = _policy_lm(policy)
        if not isinstance(lm, PeftModel):
            raise ConfigError(
                f"reference=adapter_off needs a LoRA policy, but the policy is "
                f"{type(lm).__name__}. Fix: enable model.lora.enabled=true, or use "
                "reference=copy (or auto)."
            )
        self.model = lm

    def reference_logits(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        position_ids: Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> Tensor:
        """Logits of the base model (adapter off).

        Args:
            input_ids: Token ids. Shape (B, T).
            attention_mask: True = real token. Shape (B, T).
            position_ids: None computes them from the mask. Shape (B, T).

        Returns:
            Logits, fp32, no grad. Shape (B, T, V), or (B, logits_to_keep, V) for the last
            positions only (the response's: the LM head skips the prompt).
        """
        with torch.no_grad(), self.model.disable_adapter(), eval_mode(self.model):
            return _lm_logits(self.model, input_ids, attention_mask, position_ids, logits_to_keep)

    __call__ = reference_logits

    @contextmanager
    def generation_model(self) -> Iterator[nn.Module]:
        """The policy's peft model with its adapter disabled for the duration."""
        with self.model.disable_adapter():
            yield self.model


def build_reference(
    policy: nn.Module, mode: ReferenceMode = "auto"
) -> FrozenCopyReference | AdapterDisabledReference:
    """The reference policy for `policy`, taken now (call it before training starts).

    Args:
        policy: A causal LM, a peft model, or a ``CausalLMWithValueHead`` around either.
        mode: ``"copy"`` (frozen deep copy), ``"adapter_off"`` (LoRA policies: the same model
            with the adapter disabled, no extra memory) or ``"auto"`` (adapter_off when the
            policy LM is a ``PeftModel``, else copy).

    Raises:
        ConfigError: If `mode` is unknown, or adapter_off is asked of a policy without LoRA.
    """
    if resolve_mode(policy, mode) == "copy":
        return FrozenCopyReference(policy)
    return AdapterDisabledReference(policy)


def resolve_mode(policy: nn.Module, mode: ReferenceMode) -> str:
    """``copy`` or ``adapter_off``: ``auto`` picks adapter_off for a peft policy.

    Raises:
        ConfigError: If `mode` is unknown.
    """
    if mode == "auto":
        return "adapter_off" if isinstance(_policy_lm(policy), PeftModel) else "copy"
    if mode in ("copy", "adapter_off"):
        return mode
    raise ConfigError(
        f"reference mode {mode!r} is unknown. Fix: one of 'copy', 'adapter_off', 'auto'."
    )


class InitialPolicyReference:
    """Reference = the policy itself, valid only while it still has its initial weights.

    For work done before training starts (DPO's precomputed reference log-probs): the policy
    then equals a frozen copy of itself, so the copy need not be made. Runs under
    ``torch.no_grad()`` and eval mode, restoring the policy's modes afterwards.

    Args:
        policy: A causal LM, a peft model, or a ``CausalLMWithValueHead`` around either.
    """

    def __init__(self, policy: nn.Module) -> None:
        self.model = _policy_lm(policy)

    def reference_logits(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        position_ids: Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> Tensor:
        """Logits of the (untrained) policy: (B, T, V) fp32, no grad; arguments as above."""
        with torch.no_grad(), eval_mode(self.model):
            return _lm_logits(self.model, input_ids, attention_mask, position_ids, logits_to_keep)

    __call__ = reference_logits

    @contextmanager
    def generation_model(self) -> Iterator[nn.Module]:
        """The policy LM itself."""
        yield self.model


def initial_reference(
    policy: nn.Module, mode: ReferenceMode = "auto"
) -> InitialPolicyReference | AdapterDisabledReference:
    """A reference for use before training only, holding no copy of the weights.

    ``adapter_off`` (and ``auto`` with a LoRA policy) is the adapter-disabled base as in
    :func:`build_reference`; ``copy`` (and ``auto`` otherwise) is the policy itself.
    """
    if resolve_mode(policy, mode) == "copy":
        return InitialPolicyReference(policy)
    return AdapterDisabledReference(policy)
