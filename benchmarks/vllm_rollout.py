"""Rollout throughput: the vLLM backend against the project's HF sampler, same weights.

    python benchmarks/vllm_rollout.py --model DIR [--dtypes float32,bfloat16] [--threads 1,2]

Workload: 16 prompts x 48 new tokens (``min_new_tokens`` = ``max_new_tokens``, so every row
decodes exactly 48), temperature 1, sampled log-probs returned. Each timing is the best of
``--repeats`` after one warm-up batch. Also: engine start time, full-weight and LoRA sync
time. Prints one JSON line per measurement (with the load average) and a table at the end.
Needs the vLLM venv (``python -m rlhf_lightning.rollout.vllm.setup``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhf_lightning.models.lora import LoraSpec, apply_lora
from rlhf_lightning.rollout import SamplingConfig, encode_prompts, generate_rollout
from rlhf_lightning.rollout.queries import pad_token_id
from rlhf_lightning.rollout.vllm import ServerOptions, VLLMBackend

PROMPTS, NEW_TOKENS = 16, 48
TOPICS = ["the sea", "a city at night", "bread", "mathematics", "a long journey", "winter"]


def prompts() -> list[str]:
    return [
        f"<|im_start|>user\nWrite a short paragraph about {TOPICS[i % len(TOPICS)]} "
        f"(version {i}).<|im_end|>\n<|im_start|>assistant\n"
        for i in range(PROMPTS)
    ]


def emit(record: dict) -> dict:
    record["load"] = round(os.getloadavg()[0], 2)
    print(json.dumps(record), flush=True)
    return record


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up: first-batch compilation and allocation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run_vllm(args, tokenizer, rows, dtype: str, threads: int, eager: bool) -> dict:
    options = ServerOptions(
        dtype=dtype, threads=threads, max_model_len=512, max_num_seqs=PROMPTS, enforce_eager=eager
    )
    config = SamplingConfig(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS)
    stop, pad = [tokenizer.eos_token_id], pad_token_id(tokenizer)
    with VLLMBackend(tokenizer, args.model, options=options, startup_timeout=1200) as backend:
        seconds = best_of(lambda: backend.generate(rows, config, 0, pad, stop), args.repeats)
        return emit(
            {
                "engine": "vllm" + ("-eager" if eager else ""),
                "dtype": dtype,
                "threads": threads,
                "start_s": round(backend.server.startup_seconds, 1),
                "batch_s": round(seconds, 2),
                "tok_per_s": round(PROMPTS * NEW_TOKENS / seconds, 1),
            }
        )


def run_hf(args, tokenizer, rows, dtype: str, threads: int) -> dict:
    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=getattr(torch, dtype)).eval()
    config = SamplingConfig(
        max_new_tokens=NEW_TOKENS,
        min_new_tokens=NEW_TOKENS,
        stop_token_ids=[tokenizer.eos_token_id],
    )

    def once():
        generate_rollout(
            model, tokenizer, query_ids=rows, config=config, generator_seed=0, return_logprobs=True
        )

    seconds = best_of(once, args.repeats)
    return emit(
        {
            "engine": "hf generate_rollout",
            "dtype": dtype,
            "threads": threads,
            "batch_s": round(seconds, 2),
            "tok_per_s": round(PROMPTS * NEW_TOKENS / seconds, 1),
        }
    )


def run_sync(args, tokenizer) -> dict:
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    options = ServerOptions(threads=2, enable_lora=True, max_lora_rank=8, enforce_eager=True)
    spec = LoraSpec(enabled=True, r=8, alpha=16)  # every linear layer but the head
    peft_model = apply_lora(copy.deepcopy(model), spec)
    with VLLMBackend(tokenizer, args.model, options=options, startup_timeout=1200) as backend:
        full, lora = [], []
        for version in range(1, 4):
            start = time.perf_counter()
            backend.sync_weights(model, version)
            full.append(time.perf_counter() - start)
            start = time.perf_counter()
            backend.sync_adapter(peft_model, version)
            lora.append(time.perf_counter() - start)
    params = sum(p.numel() for p in model.parameters())
    return emit(
        {
            "engine": "vllm sync",
            "full_sync_s": round(min(full), 2),
            "full_bytes_gib": round(params * 4 / 2**30, 2),
            "lora_sync_s": round(min(lora), 3),
            "lora": "r=8 all linear",
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--eager", action="store_true", help="also time vLLM without compile")
    parser.add_argument("--skip", default="", help="comma list of: vllm,hf,sync")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    rows = encode_prompts(tokenizer, prompts())
    results = []
    for dtype in args.dtypes.split(","):
        for threads in map(int, args.threads.split(",")):
            if "vllm" not in skip:
                results.append(run_vllm(args, tokenizer, rows, dtype, threads, eager=False))
                if args.eager:
                    results.append(run_vllm(args, tokenizer, rows, dtype, threads, eager=True))
            if "hf" not in skip:
                results.append(run_hf(args, tokenizer, rows, dtype, threads))
    if "sync" not in skip:
        results.append(run_sync(args, tokenizer))
    print("\n| engine | dtype | threads | start s | batch s | tok/s | load |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        if "tok_per_s" in r:
            print(
                f"| {r['engine']} | {r['dtype']} | {r['threads']} | {r.get('start_s', '')} | "
                f"{r['batch_s']} | {r['tok_per_s']} | {r['load']} |"
            )


if __name__ == "__main__":  # the vLLM server is a separate process; the guard is for spawn
    main()
