"""Batched sampling from a causal LM with the KV cache."""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase


@torch.no_grad()
def sample_completions(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    *,
    max_new_tokens: int = 40,
    temperature: float = 1.0,
    seed: int | None = None,
) -> list[str]:
    """Sample one completion per prompt in a single left-padded batch.

    Pure ancestral sampling (top_k 0, top_p 1): the samples come from the model's own
    distribution. An empty prompt starts from BOS. Returns the completions without the prompt,
    cut at EOS, special tokens removed.
    """
    bos = tokenizer.bos_token or ""
    texts = [p if p else bos for p in prompts]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues from the right end of each row
    try:
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        out = model.generate(
            **batch,
            do_sample=True,
            temperature=temperature,
            top_k=0,
            top_p=1.0,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    model.train(was_training)
    new_tokens = out[:, batch["input_ids"].shape[1] :]
    return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
