"""One SmolLM2 + LoRA r16 minibatch forward + backward three ways: padded, packed as rows, and
with each group's prompt once (`functional.shared_prefix_layout`); CPU seconds, 1 thread.

    OMP_NUM_THREADS=1 python benchmarks/shared_prompt_minibatch.py

8 rows: 2 random prompts of 43 and 38 tokens x 4 completions of 12-64 tokens (a GRPO
minibatch of the realistic workload's shape).
"""

from __future__ import annotations

import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from rlhf_lightning.demo.smollm2 import smollm2_dir
from rlhf_lightning.functional import pack_layout
from rlhf_lightning.rollout import score_tokens, scoring

Q, A = 60, 64
PROMPTS = [43, 43, 43, 43, 38, 38, 38, 38]
RESPONSES = [30, 12, 64, 25, 41, 18, 33, 27]
MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main() -> None:
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_pretrained(str(smollm2_dir()), dtype=torch.float32)
    lm = get_peft_model(lm, LoraConfig(r=16, lora_alpha=32, target_modules=MODULES)).train()
    prompts = {n: torch.randint(100, 40000, (n,)) for n in set(PROMPTS)}
    ids = torch.zeros(8, Q + A, dtype=torch.long)
    mask = torch.zeros(8, Q + A, dtype=torch.bool)
    for b, (p, r) in enumerate(zip(PROMPTS, RESPONSES, strict=True)):
        ids[b, Q - p : Q], mask[b, Q - p : Q] = prompts[p], True
        ids[b, Q : Q + r], mask[b, Q : Q + r] = torch.randint(100, 40000, (r,)), True
    shared = scoring._packed_layout

    def rows_only(model, input_ids, real, start, capacity):  # noqa: ANN001, ANN202
        return pack_layout(real, capacity)

    def seconds(mode: str) -> float:
        scoring._packed_layout = shared if mode == "shared" else rows_only
        lm.zero_grad(set_to_none=True)
        started = time.process_time()
        scored = score_tokens(lm, ids, mask, Q, packed=mode != "padded", only=mask[:, Q:])
        scored.logprobs.sum().backward()
        return time.process_time() - started

    once = int(mask.sum()) - sum(PROMPTS) + sum(set(PROMPTS))
    print(f"padded slots {mask.numel()}, real tokens {int(mask.sum())}, shared {once}")
    for repeat in range(2):
        print(repeat, {m: round(seconds(m), 2) for m in ("padded", "packed", "shared")})


if __name__ == "__main__":
    main()
