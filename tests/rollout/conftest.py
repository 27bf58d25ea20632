"""Tiny GPT-2 and Llama policies on the demo tokenizer, built once per session, offline."""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch
from torch import nn

from rlhf_lightning.models.loading import build_causal_lm

TINY_GPT2 = {"type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 32, "n_positions": 128}
TINY_LLAMA = {
    "type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "max_position_embeddings": 128,
}
ARCHS = {"gpt2": TINY_GPT2, "llama": TINY_LLAMA}


@pytest.fixture(scope="session", params=sorted(ARCHS))
def policy(request, demo_tokenizer):
    """A random tiny causal LM in eval mode (dropout off: scoring must be deterministic)."""
    return build_causal_lm(ARCHS[request.param], demo_tokenizer).eval()


@pytest.fixture(scope="session")
def gpt2(demo_tokenizer):
    return build_causal_lm(TINY_GPT2, demo_tokenizer).eval()


@pytest.fixture
def prompts() -> list[str]:
    """Queries of different lengths, so the batch is left-padded; "" starts from BOS."""
    return ["The movie was long and the ending felt rushed", "Great", "", "I did not expect"]


class ValueHeadOutput(NamedTuple):
    logits: torch.Tensor
    values: torch.Tensor


class ValueHeadWrapper(nn.Module):
    """TRL-style wrapper: the LM as `pretrained_model`, a scalar head on the last hidden state."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.pretrained_model = lm
        self.v_head = nn.Sequential(nn.Dropout(0.1), nn.Linear(lm.config.hidden_size, 1))

    def forward(self, input_ids, attention_mask, position_ids=None, logits_to_keep=0):
        out = self.pretrained_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_hidden_states=True,
        )
        return ValueHeadOutput(out.logits, self.v_head(out.hidden_states[-1]).squeeze(-1))


@pytest.fixture
def value_head_wrapper() -> type[ValueHeadWrapper]:
    """The wrapper class (test modules cannot import from conftest under importlib mode)."""
    return ValueHeadWrapper
