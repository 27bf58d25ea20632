"""Does the vLLM rollout backend sample from the distribution it reports? (issue #18)

For fixed prompts, draws N one-token samples through ``VLLMBackend`` with the seeds the GRPO
stage makes (one iteration seed, row keys 0..N-1, ``row_seed``), and N through the HF backend
(``generate_rollout`` with the same seed and keys), and compares each with the HF model's
softmax: total-variation distance against its spread under multinomial noise alone, a
chi-square test (tokens expected >= 5 times, the rest pooled), and the mean log-prob of the
sampled tokens against minus the entropy. Then the seeds: how often the same key draws the
same token in two iterations, and neighbouring keys in one, against sum(p^2) (independent
draws). Then the decode steps: 3-token samples, the 2nd and 3rd token given the most common
prefixes against the softmax after that prefix. Last, n/4 8-token samples from each backend,
scored by the HF model: their mean sequence log-prob estimates minus the entropy of the same
8-token distribution, so the two should agree within noise. SmolLM2-135M-Instruct, fp32,
temperature 1, base weights.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/vllm_sampling_fidelity.py --n 3000

Results go to stdout (one JSON line per check). Nothing is written. About 8 minutes with
--n 3000 on 2 busy cores; the engine needs 2-4 GB.
"""

from __future__ import annotations

import argparse
import collections
import json
import zlib

import torch
from scipy import stats
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhf_lightning.demo.smollm2 import smollm2_dir
from rlhf_lightning.rollout import SamplingConfig, encode_prompts, generate_rollout, score_tokens
from rlhf_lightning.rollout.queries import pad_token_id
from rlhf_lightning.rollout.vllm import ServerOptions, VLLMBackend

PROMPTS = ["If itchy: antihistamins", "The movie was"]


def iteration_seed(iteration: int) -> int:
    """As ``OnlineRLModule.rollout_seed`` makes it for a GRPO run with seed=0."""
    return zlib.crc32(f"group:0:{iteration}".encode()) % (2**31)


def next_token_probs(model, ids: list[int], pad: int) -> torch.Tensor:
    """softmax of the next-token logits, pad banned as both backends ban it. Shape (V,)."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1].float()
    logits[pad] = -float("inf")
    return torch.softmax(logits, -1)


def compare(label: str, tokens: list[int], p: torch.Tensor, reported=None) -> dict:
    """Frequencies of `tokens` (N ids) against `p` (V,); `reported`: their log-probs (N,)."""
    n = len(tokens)
    p = p.double()
    counts = torch.bincount(torch.tensor(tokens), minlength=p.numel()).double()
    tv = 0.5 * (counts / n - p).abs().sum().item()
    gen = torch.Generator().manual_seed(123)
    null = torch.tensor(
        [
            0.5
            * (
                torch.bincount(
                    torch.multinomial(p, n, replacement=True, generator=gen), minlength=p.numel()
                ).double()
                / n
                - p
            )
            .abs()
            .sum()
            .item()
            for _ in range(200)
        ]
    )
    expected = p * n
    big = expected >= 5
    observed = torch.cat([counts[big], counts[~big].sum().view(1)])
    expected = torch.cat([expected[big], expected[~big].sum().view(1)])
    chi2 = (((observed - expected) ** 2) / expected).sum().item()
    dof = len(observed) - 1
    logp = torch.log(p.clamp_min(1e-300))
    sampled = logp[torch.tensor(tokens)]
    out = {
        "check": label,
        "n": n,
        "tv": round(tv, 4),
        "tv_noise_mean": round(null.mean().item(), 4),
        "tv_noise_p95": round(null.quantile(0.95).item(), 4),
        "chi2": round(chi2, 1),
        "dof": dof,
        "chi2_p": float(f"{stats.chi2.sf(chi2, dof):.3g}"),
        "minus_entropy": round((p * logp).sum().item(), 4),
        "mean_logp_sampled": round(sampled.mean().item(), 4),
        "se": round(sampled.std().item() / n**0.5, 4),
    }
    if reported is not None:
        gap = (torch.tensor(reported, dtype=torch.float64) - sampled).abs().max().item()
        out["max_reported_minus_hf"] = float(f"{gap:.2e}")
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="draws per check")
    args = parser.parse_args()
    n = args.n
    torch.set_num_threads(1)  # the engine has the other core
    model_dir = smollm2_dir()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    pad = pad_token_id(tokenizer)
    stops = SamplingConfig().resolved_stop_ids(tokenizer)
    one = SamplingConfig(max_new_tokens=1, temperature=1.0)
    options = ServerOptions(
        dtype="float32", threads=1, max_model_len=512, max_num_seqs=64, enforce_eager=True
    )
    with VLLMBackend(tokenizer, model_dir, options=options, startup_timeout=900) as backend:
        for prompt in PROMPTS:
            ids = encode_prompts(tokenizer, [prompt])[0]
            p = next_token_probs(model, ids, pad)
            draws = {}
            for iteration in (0, 1):
                batch = backend.generate(
                    [ids] * n, one, iteration_seed(iteration), pad, stops, [prompt] * n,
                    row_keys=list(range(n)),
                )  # fmt: skip
                draws[iteration] = batch.response_ids[:, 0]
                compare(
                    f"vllm iteration {iteration} {prompt!r}",
                    batch.response_ids[:, 0].tolist(),
                    p,
                    batch.logprobs[:, 0].tolist(),
                )
            a, b = draws[0], draws[1]
            same = {
                "check": f"seed independence {prompt!r}",
                "independent_sum_p2": round((p.double() ** 2).sum().item(), 4),
                "same_key_two_iterations": round((a == b).double().mean().item(), 4),
                "keys_k_k+1": round((a[1:] == a[:-1]).double().mean().item(), 4),
                "keys_k_k+2": round((a[2:] == a[:-2]).double().mean().item(), 4),
            }
            print(json.dumps(same), flush=True)
            tokens, logprobs = [], []
            for start in range(0, n, 250):
                rows = min(250, n - start)
                rollout = generate_rollout(
                    model, tokenizer, query_ids=[ids] * rows,
                    config=SamplingConfig(max_new_tokens=1, temperature=1.0, stop_token_ids=stops),
                    generator_seed=iteration_seed(0), row_keys=torch.arange(start, start + rows),
                    return_logprobs=True,
                )  # fmt: skip
                tokens += rollout.response_ids[:, 0].tolist()
                logprobs += rollout.logprobs[:, 0].tolist()
            compare(f"hf iteration 0 {prompt!r}", tokens, p, logprobs)
            # Decode steps: the 2nd and 3rd tokens given their most common prefixes.
            batch = backend.generate(
                [ids] * n, SamplingConfig(max_new_tokens=3, temperature=1.0),
                iteration_seed(7), pad, stops, [prompt] * n, row_keys=list(range(n)),
            )  # fmt: skip
            full = batch.response_mask.sum(dim=1) >= 3  # no stop token among the three
            rows = [
                r[:3] for r, keep in zip(batch.response_ids.tolist(), full, strict=True) if keep
            ]
            for y1, _ in collections.Counter(r[0] for r in rows).most_common(3):
                compare(
                    f"vllm step 2 {prompt!r} + {tokenizer.decode([y1])!r}",
                    [r[1] for r in rows if r[0] == y1],
                    next_token_probs(model, ids + [y1], pad),
                )
            for prefix, _ in collections.Counter((r[0], r[1]) for r in rows).most_common(2):
                compare(
                    f"vllm step 3 {prompt!r} + {tokenizer.decode(list(prefix))!r}",
                    [r[2] for r in rows if tuple(r[:2]) == prefix],
                    next_token_probs(model, ids + list(prefix), pad),
                )
        few_tokens(backend, model, tokenizer, max(100, n // 4), pad, stops)


def few_tokens(backend, model, tokenizer, n: int, pad: int, stops: list[int], new: int = 8):
    """Mean log-prob of n `new`-token samples under the HF model, from each backend."""
    prompt = PROMPTS[0]
    ids = encode_prompts(tokenizer, [prompt])[0]
    seed = iteration_seed(5)
    batches = {
        "vllm": [
            backend.generate(
                [ids] * n, SamplingConfig(max_new_tokens=new, temperature=1.0), seed, pad,
                stops, [prompt] * n, row_keys=list(range(n)),
            )
        ],
        "hf": [
            generate_rollout(
                model, tokenizer, query_ids=[ids] * min(100, n - start),
                config=SamplingConfig(max_new_tokens=new, temperature=1.0, stop_token_ids=stops),
                generator_seed=seed, row_keys=torch.arange(start, min(start + 100, n)),
            )
            for start in range(0, n, 100)
        ],
    }  # fmt: skip
    for name, parts in batches.items():
        sums = []
        for batch in parts:
            with torch.no_grad():
                logprobs = score_tokens(
                    model, batch.input_ids, batch.attention_mask, batch.context_length
                ).logprobs
            sums.append(torch.where(batch.response_mask, logprobs, 0.0).sum(dim=1))
        total = torch.cat(sums).double()
        print(
            json.dumps(
                {
                    "check": f"{name} {new}-token samples {prompt!r}",
                    "n": total.numel(),
                    "mean_sequence_logp": round(total.mean().item(), 3),
                    "se": round(total.std().item() / total.numel() ** 0.5, 3),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
