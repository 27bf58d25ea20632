"""Chat templates, scripted samplers and a tiny policy that ends its turns, for the
multi-turn environment tests (offline, seconds)."""

from __future__ import annotations

import copy
import random

import pytest
import torch
from tokenizers import AddedToken
from torch import nn

from rlhf_lightning.models.loading import build_causal_lm
from rlhf_lightning.rollout import RolloutBatch, left_pad

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Llama 3 style: headers, and <|eot_id|> after every message.
LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
    "<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
# Zephyr style: the turn ends with the EOS text.
ZEPHYR = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
# Qwen3 style: an assistant turn's <think> block is dropped once a later user turn follows,
# so rendering the conversation with a new message rewrites an earlier turn.
THINK_STRIPPING = (
    "{% set ns = namespace(last=-1) %}{% for m in messages %}{% if m['role'] == 'user' %}"
    "{% set ns.last = loop.index0 %}{% endif %}{% endfor %}"
    "{% for m in messages %}{% set c = m['content'] %}"
    "{% if m['role'] == 'assistant' and loop.index0 < ns.last and '</think>' in c %}"
    "{% set c = c.split('</think>')[-1].lstrip() %}{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{{ c }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TEMPLATES = {"chatml": CHATML, "llama3": LLAMA3, "zephyr": ZEPHYR, "think": THINK_STRIPPING}
# Special like Llama 3's; <think> and </think> are plain added tokens, as in Qwen3 (decoding
# with skip_special_tokens keeps them, so the template sees them).
EXTRA_TOKENS = {"<|start_header_id|>": True, "<|end_header_id|>": True, "<|eot_id|>": True}
EXTRA_TOKENS |= {"<think>": False, "</think>": False}


@pytest.fixture(scope="session")
def templated(demo_tokenizer):
    """name -> a copy of the demo tokenizer with that chat template (and its special tokens)."""
    out = {}
    for name, template in TEMPLATES.items():
        tokenizer = copy.deepcopy(demo_tokenizer)
        tokenizer.add_tokens([AddedToken(t, special=sp) for t, sp in EXTRA_TOKENS.items()])
        tokenizer.chat_template = template
        out[name] = tokenizer
    return out


class ScriptedSampler:
    """A rollout backend that "samples" turns from a seeded script, records every call, and
    writes numbers digit by digit: ``12`` as the ids of ``1`` and ``2``, not the tokenizer's
    own ``12`` token, so re-tokenising the text would give other ids than were sampled."""

    def __init__(self, tokenizer, stop_id: int, think: bool = False, seed: int = 0) -> None:
        self.tokenizer, self.stop_id, self.think = tokenizer, stop_id, think
        self.rng = random.Random(seed)
        self.calls: list[tuple[list[list[int]], list[list[int]], list[list[float]]]] = []

    def ids(self, text: str) -> list[int]:
        return [self.tokenizer.convert_tokens_to_ids(self.tokenizer.tokenize(c)[0]) for c in text]

    def turn(self) -> list[int]:
        ids = self.ids(str(self.rng.randint(1, 24)))
        if self.think:
            think = self.tokenizer.convert_tokens_to_ids(["<think>", "</think>"])
            ids = [think[0], *self.ids("hm"), think[1], *ids]
        return [*ids, self.stop_id]

    def generate(self, policy, tokenizer, prompts, sampling, *, seed, row_keys, **kwargs):
        queries = kwargs["query_ids"]
        turns = [self.turn()[: sampling.max_new_tokens] for _ in queries]
        logprobs = [[-self.rng.random() for _ in t] for t in turns]
        self.calls.append(([list(q) for q in queries], turns, logprobs))
        width = max(len(t) for t in turns)
        ids = torch.zeros(len(turns), width, dtype=torch.long)
        mask = torch.zeros(len(turns), width, dtype=torch.bool)
        lps = torch.zeros(len(turns), width)
        for i, (t, lp) in enumerate(zip(turns, logprobs, strict=True)):
            ids[i, : len(t)], mask[i, : len(t)], lps[i, : len(t)] = (
                torch.tensor(t),
                True,
                torch.tensor(lp),
            )
        q_ids, q_mask = left_pad(queries, 0)
        return RolloutBatch(
            q_ids, q_mask, ids, mask, torch.tensor([t[-1] == self.stop_id for t in turns]),
            [""] * len(turns), [""] * len(turns), policy_logprobs=lps,
        )  # fmt: skip

    def sync(self, policy, version):
        pass


@pytest.fixture
def scripted():
    return ScriptedSampler


@pytest.fixture(scope="session")
def turn_ending_policy(demo_tokenizer):
    """A random tiny GPT-2 whose LM head favours ``<|im_end|>`` and digits: its sampled turns
    are short and end, so episodes run several turns (untied head with a bias)."""
    lm = build_causal_lm(
        {"type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 32, "n_positions": 128},
        demo_tokenizer,
    ).eval()
    head = nn.Linear(32, lm.lm_head.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(lm.lm_head.weight)
        head.bias.zero_()
        head.bias[demo_tokenizer.convert_tokens_to_ids("<|im_end|>")] = 6.0
        for digit in "123456789":
            head.bias[demo_tokenizer.convert_tokens_to_ids(digit)] = 5.0
    lm.lm_head = head
    lm.config.tie_word_embeddings = False
    return lm
