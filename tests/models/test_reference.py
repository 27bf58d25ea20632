"""Reference policy: a frozen copy, or the LoRA policy with its adapter off (no second copy)."""

from __future__ import annotations

import gc

import pytest
import torch
from torch import nn

from rlhf_lightning.errors import ConfigError
from rlhf_lightning.models import (
    AdapterDisabledReference,
    CausalLMWithValueHead,
    FrozenCopyReference,
    LoraSpec,
    apply_lora,
    build_causal_lm,
    build_reference,
    create_reference_model,
    disable_dropout,
    position_ids_from_mask,
)

TINY_GPT2 = {"type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 32, "n_positions": 64}


@pytest.fixture
def batch(demo_tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows, the shorter one left-padded."""
    rows = [demo_tokenizer(t).input_ids for t in ["hello there", "a longer text to pad others"]]
    width = max(len(r) for r in rows)
    ids = torch.full((2, width), demo_tokenizer.pad_token_id)
    mask = torch.zeros(2, width, dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = True
    return ids, mask


def _step(policy: nn.Module, batch, steps: int = 1) -> None:
    """A few Adam steps on a loss that touches the logits (and the values, if any)."""
    opt = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=1e-2)
    ids, mask = batch
    for _ in range(steps):
        if isinstance(policy, CausalLMWithValueHead):
            out = policy(ids, mask)
            loss = out.logits.logsumexp(-1).mean() + out.values.pow(2).mean()
        else:
            loss = policy(input_ids=ids, attention_mask=mask).logits.logsumexp(-1).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _lora_lm(tok) -> nn.Module:
    return apply_lora(build_causal_lm(TINY_GPT2, tok), LoraSpec(enabled=True, r=4))


def _parameter_storage() -> set[int]:
    """Data pointers of every live parameter in the process: a second copy would add some."""
    return {
        obj.untyped_storage().data_ptr()
        for obj in gc.get_objects()
        if type(obj) is nn.Parameter  # isinstance would query deprecated torch objects
    }


def test_copy_reference_is_frozen_and_unchanged_by_policy_steps(demo_tokenizer, batch):
    policy = disable_dropout(CausalLMWithValueHead(build_causal_lm(TINY_GPT2, demo_tokenizer)))
    reference = build_reference(policy, "copy")
    assert isinstance(reference, FrozenCopyReference)
    names = [n for n, _ in reference.named_parameters()]
    assert not any("v_head" in n for n in names)  # only the LM is copied
    assert len(names) == len(list(policy.pretrained_model.parameters()))
    assert not any(p.requires_grad for p in reference.parameters())
    ref_before, policy_before = _snapshot(reference), _snapshot(policy)
    ref_logits = reference.reference_logits(*batch)

    _step(policy, batch)

    assert any(not torch.equal(v, policy.state_dict()[k]) for k, v in policy_before.items())
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in ref_before.items())
    assert torch.equal(reference.reference_logits(*batch), ref_logits)


@pytest.mark.parametrize("mode", ["copy", "adapter_off"])
def test_policy_equals_reference_at_init(demo_tokenizer, batch, mode):
    lm = (
        _lora_lm(demo_tokenizer)
        if mode == "adapter_off"
        else build_causal_lm(TINY_GPT2, demo_tokenizer)
    )
    policy = disable_dropout(CausalLMWithValueHead(lm))
    reference = build_reference(policy, mode)
    logits = reference.reference_logits(*batch)
    assert logits.dtype == torch.float32 and not logits.requires_grad
    assert torch.equal(policy(*batch).logits, logits)


def test_copy_reference_has_dropout_off_even_after_train(demo_tokenizer, batch):
    lm = build_causal_lm(TINY_GPT2, demo_tokenizer)  # GPT-2 configs default to dropout 0.1
    assert any(m.p > 0 for m in lm.modules() if isinstance(m, nn.Dropout))
    reference = create_reference_model(lm.train())
    assert not reference.training
    assert all(m.p == 0 for m in reference.modules() if isinstance(m, nn.Dropout))
    wrapped = FrozenCopyReference(lm)
    nn.ModuleDict({"ref": wrapped}).train()  # what a LightningModule's .train() does
    assert not any(m.training for m in wrapped.modules())
    assert torch.equal(wrapped.reference_logits(*batch), wrapped.reference_logits(*batch))


def test_adapter_off_reference_is_the_untouched_base_without_a_copy(demo_tokenizer, batch):
    base = build_causal_lm(TINY_GPT2, demo_tokenizer).eval()
    ids, mask = batch
    positions = position_ids_from_mask(mask)  # what both forwards use by default
    with torch.no_grad():
        base_logits = base(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    policy = apply_lora(base, LoraSpec(enabled=True, r=4, dropout=0.1)).train()
    base_before = {n: p.detach().clone() for n, p in policy.named_parameters() if "lora_" not in n}
    lora_before = {n: p.detach().clone() for n, p in policy.named_parameters() if "lora_" in n}

    storage_before = _parameter_storage()
    reference = build_reference(policy)  # auto -> adapter_off for a peft policy
    assert isinstance(reference, AdapterDisabledReference)
    assert reference.model is policy
    assert _parameter_storage() == storage_before  # no parameter was copied
    torch.testing.assert_close(reference.reference_logits(*batch), base_logits, rtol=0, atol=0)

    _step(policy, batch, steps=3)

    params = dict(policy.named_parameters())
    assert all(not torch.equal(v, params[n]) for n, v in lora_before.items())
    assert all(torch.equal(v, params[n]) for n, v in base_before.items())
    trained = policy(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    assert not torch.allclose(trained, base_logits, atol=1e-4)
    # Dropout (LoRA's 0.1 included) is off inside the call, and the policy's mode is restored.
    assert torch.equal(reference(*batch), base_logits)
    assert torch.equal(reference(*batch), base_logits)
    assert policy.training and all(m.training for m in policy.modules())


def test_auto_mode_and_clear_errors(demo_tokenizer):
    plain = build_causal_lm(TINY_GPT2, demo_tokenizer)
    assert isinstance(build_reference(plain), FrozenCopyReference)
    wrapped_lora = CausalLMWithValueHead(_lora_lm(demo_tokenizer))
    assert isinstance(build_reference(wrapped_lora), AdapterDisabledReference)
    with pytest.raises(ConfigError, match="needs a LoRA policy.*Fix"):
        build_reference(plain, "adapter_off")
    with pytest.raises(ConfigError, match="unknown.*Fix"):
        build_reference(plain, "shared")
