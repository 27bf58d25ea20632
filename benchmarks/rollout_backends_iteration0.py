"""Iteration 0 of GRPO on SmolLM2 with each rollout backend: the same prompts, the same policy.

Builds the policy (SmolLM2-135M-Instruct with its fresh LoRA adapter), the prompt data and the
sampling settings from the stage's own config (``stage=grpo model=smollm2 reward=sentiment``),
takes the prompts of the first ``--batches`` batches, each ``group_size`` times, and samples one
rollout per seed with each backend (row keys 0..B-1, as the stage does). Every response is
scored by the trainer (``score_tokens``): the log-prob of each drawn token and the entropy of
the distribution it was drawn from. For an exact sampler E[sum_t (log p_t + H_t)] = 0 over a
response, so the mean of that sum is a test of the sampler on full-length trajectories. Also:
length, how many end at a stop token and which, the VADER reward, and for the engine the
largest per-token gap between its log-probs and the trainer's.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/rollout_backends_iteration0.py \\
        --seeds 21,22,23,24,25,26,27,28 --batches 4 --backends vllm,hf

One line per backend on stdout; ``--out FILE`` also writes every response as JSON. 512
responses per backend took ~10 min (vLLM, engine start included) and ~13 min (HF) on 2 busy
cores (load 5-7).
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import time

import torch
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from rlhf_lightning.api import compose_config
from rlhf_lightning.models import ModelSpec
from rlhf_lightning.models.loading import load_model_and_tokenizer
from rlhf_lightning.rewards.sentiment import vader_compound
from rlhf_lightning.rollout.scoring import score_tokens

BASE = ["model=smollm2", "reward=sentiment", "seed=0"]


def rollouts(backend_name: str, model, tokenizer, prompts, sampling, seeds) -> list[dict]:
    """One rollout per seed from one backend, each response scored by the trainer."""
    cfg = compose_config("grpo", [*BASE, f"rollout={backend_name}"])
    backend = instantiate(OmegaConf.to_container(cfg.stage.rollout, resolve=True), _convert_="all")
    rows = []
    try:
        for seed in seeds:
            batch = backend.generate(
                model, tokenizer, prompts, sampling, seed=seed, row_keys=torch.arange(len(prompts))
            )
            with torch.no_grad():
                scored = score_tokens(
                    model, batch.input_ids, batch.attention_mask, batch.context_length,
                    temperature=sampling.temperature, entropy=True,
                )  # fmt: skip
            rewards = vader_compound(batch.completions)
            for i, mask in enumerate(batch.response_mask):
                lp, ent = scored.logprobs[i][mask], scored.entropy[i][mask]
                gap = None
                if batch.logprobs is not None:
                    gap = float((batch.logprobs[i][mask] - lp).abs().max())
                rows.append({
                    "seed": seed, "row": i, "length": int(mask.sum()),
                    "stopped": bool(batch.contains_stop[i]),
                    "last": int(batch.response_ids[i][mask][-1]),
                    "logprob": float(lp.sum()), "entropy": float(ent.sum()),
                    "reward": float(rewards[i]), "completion": batch.completions[i], "gap": gap,
                })  # fmt: skip
    finally:
        close = getattr(backend, "close", None)
        if close is not None:
            close()
    return rows


def summary(name: str, rows: list[dict], seconds: float) -> str:
    n = len(rows)

    def mean_se(values: list[float]) -> str:
        return f"{statistics.mean(values):.4f} +- {statistics.stdev(values) / n**0.5:.4f}"

    stops = collections.Counter(r["last"] for r in rows if r["stopped"])
    gaps = [r["gap"] for r in rows if r["gap"] is not None]
    return (
        f"{name}: {n} responses in {seconds:.0f} s | reward {mean_se([r['reward'] for r in rows])}"
        f" | length {mean_se([r['length'] for r in rows])}"
        f" | stopped {sum(r['stopped'] for r in rows)} (stop ids {dict(stops)})"
        f" | log-prob {mean_se([r['logprob'] for r in rows])}"
        f" | entropy {mean_se([r['entropy'] for r in rows])}"
        f" | log-prob + entropy {mean_se([r['logprob'] + r['entropy'] for r in rows])}"
        + (f" | max token gap {max(gaps):.1e}" if gaps else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="21,22,23,24,25,26,27,28")
    parser.add_argument("--batches", type=int, default=4, help="data batches of prompts")
    parser.add_argument("--backends", default="vllm,hf")
    parser.add_argument("--out", help="write every response here (JSON)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = compose_config("grpo", BASE)
    module_class = get_class(cfg.stage._target_)
    spec = instantiate(cfg.model, _convert_="all")
    assert isinstance(spec, ModelSpec)
    model, tokenizer = load_model_and_tokenizer(spec, head=module_class.model_head)
    data = instantiate(cfg.data, _convert_="all", tokenizer=tokenizer)
    data.setup("fit")
    group = cfg.stage.algorithm.group_size
    prompts = [
        p for k in range(args.batches) for p in data.batch_at(k)["prompts"] for _ in range(group)
    ]
    sampling = instantiate(cfg.stage.sampling)
    seeds = [int(s) for s in args.seeds.split(",")]
    everything = {}
    for name in args.backends.split(","):
        start = time.monotonic()
        everything[name] = rows = rollouts(name, model, tokenizer, prompts, sampling, seeds)
        print(summary(name, rows, time.monotonic() - start), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(everything, f)


if __name__ == "__main__":
    main()
