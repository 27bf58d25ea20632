"""Peak memory of PPO with a frozen-copy reference vs the LoRA adapter-off reference.

Each mode runs in a fresh subprocess so that its peak RSS (`ru_maxrss`) is its own:

- `baseline`: imports + tokenizer + model built from the arch, nothing else;
- `full_copy`: full fine-tuning, reference = frozen deep copy of the policy LM;
- `lora_copy`: LoRA policy, reference = frozen deep copy (base + adapter);
- `lora_adapter_off`: LoRA policy, reference = the same model with its adapter disabled.

Every PPO mode builds the same randomly initialised GPT-2 from `--n-layer/--n-embd` with the
demo tokenizer and runs `--iterations` x (`PPOTrainer.generate` on `--batch` prompts,
`letter_rate` reward, `PPOTrainer.step`).

    python benchmarks/ppo_reference_memory.py --n-layer 6 --n-embd 512 --iterations 3 --batch 16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
MODES = {
    # name: (lora enabled, reference mode)
    "full_copy": (False, "copy"),
    "lora_copy": (True, "copy"),
    "lora_adapter_off": (True, "adapter_off"),
}
PROMPTS = [
    "Once upon a time",
    "The weather today is",
    "My favourite food is",
    "I went to the market and",
    "The best thing about summer",
    "Yesterday my friend said",
    "In the morning I like to",
    "The little dog ran",
    "She opened the door and",
    "We never expected the",
    "After the game we",
    "The old house on the hill",
    "He looked at the sky and",
    "Every evening they",
    "The teacher asked us to",
    "When the rain stopped",
]
MB = 1024 * 1024


# ----------------------------------------------------------------------------- child side


def _peak_rss_mb() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / MB if sys.platform == "darwin" else peak / 1024


def _unique_storage_bytes(tensors) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def _module_tensors(module) -> list:
    return [*module.parameters(), *module.buffers()]


def _build(args: argparse.Namespace, lora: bool):
    from rlhf_lightning.demo.tokenizer import ensure_demo_tokenizer
    from rlhf_lightning.models.loading import ModelSpec, load_model_and_tokenizer

    spec = ModelSpec(
        tokenizer=str(ensure_demo_tokenizer()),
        arch={
            "type": "gpt2",
            "n_layer": args.n_layer,
            "n_embd": args.n_embd,
            "n_head": args.n_head,
        },
        lora={"enabled": lora, "r": args.lora_r},
    )
    return load_model_and_tokenizer(spec)


def run_child(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from rlhf_lightning.ppo_api import PPOConfig, PPOTrainer
    from rlhf_lightning.rewards.examples import letter_rate

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if mode in ("prepare", "baseline"):
        model, _ = _build(args, lora=False)
        n_params = sum(p.numel() for p in model.parameters())
        return {
            "mode": mode,
            "params_total": n_params,
            "weights_held_mb": _unique_storage_bytes(_module_tensors(model)) / MB,
            "peak_rss_mb": _peak_rss_mb(),
        }

    lora, reference = MODES[mode]
    model, tokenizer = _build(args, lora=lora)
    config = PPOConfig(learning_rate=1e-5)
    trainer = PPOTrainer(config, model, tokenizer=tokenizer, reference=reference)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.batch)]
    times = []
    for it in range(args.iterations):
        start = time.perf_counter()
        responses = trainer.generate(prompts, seed=it, max_new_tokens=args.max_new_tokens)
        scores = letter_rate(prompts, responses)
        trainer.step(prompts, responses, scores)
        times.append(time.perf_counter() - start)

    policy_tensors = _module_tensors(trainer.policy)
    ref = trainer.reference
    ref_module = ref if isinstance(ref, torch.nn.Module) else ref.model
    optim_tensors = [
        v for state in trainer.optimizer.state.values() for v in state.values() if v.dim() > 0
    ]
    return {
        "mode": mode,
        "reference": type(ref).__name__,
        "params_total": sum(p.numel() for p in trainer.policy.parameters()),
        "params_trainable": sum(p.numel() for p in trainer.policy.parameters() if p.requires_grad),
        "policy_weights_mb": _unique_storage_bytes(policy_tensors) / MB,
        "weights_held_mb": _unique_storage_bytes(policy_tensors + _module_tensors(ref_module)) / MB,
        "optimizer_state_mb": _unique_storage_bytes(optim_tensors) / MB,
        "peak_rss_mb": _peak_rss_mb(),
        "s_per_iter": sum(times) / len(times),
    }


# ----------------------------------------------------------------------------- parent side


def _spawn(mode: str, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    flags = ("n_layer", "n_embd", "n_head", "iterations", "batch", "max_new_tokens", "lora_r")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode]
    for name in (*flags, "threads"):
        cmd += ["--" + name.replace("_", "-"), str(getattr(args, name))]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"child {mode} failed (exit {proc.returncode})")
    return json.loads(lines[-1][len("RESULT ") :])


def _table(baseline: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    head = (
        "| mode | reference | params total | trainable | weights held MB (x policy) "
        "| Adam state MB | peak RSS MB | above baseline MB | s/iter |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for r in rows:
        ratio = r["weights_held_mb"] / r["policy_weights_mb"]
        lines.append(
            f"| {r['mode']} | {r['reference']} | {r['params_total'] / 1e6:.2f} M "
            f"| {r['params_trainable'] / 1e6:.3f} M "
            f"| {r['weights_held_mb']:.0f} ({ratio:.2f}x) | {r['optimizer_state_mb']:.1f} "
            f"| {r['peak_rss_mb']:.0f} | {r['above_baseline_mb']:.0f} "
            f"| {r['s_per_iter']:.2f} |"
        )
    lines.append(
        f"| baseline (imports + model) | - | {baseline['params_total'] / 1e6:.2f} M | - "
        f"| {baseline['weights_held_mb']:.0f} | - | {baseline['peak_rss_mb']:.0f} | 0 | - |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-layer", type=int, default=6)
    parser.add_argument("--n-embd", type=int, default=512)
    parser.add_argument("--n-head", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "benchmarks/results/ppo_reference_memory.json"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per child (1: steady timings)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print("RESULT " + json.dumps(run_child(args.child, args)), flush=True)
        return

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = str(args.threads)
    tmp = None
    if not env.get("RLHF_LIGHTNING_CACHE"):
        tmp = tempfile.TemporaryDirectory(prefix="rlhf_lightning_cache_")
        env["RLHF_LIGHTNING_CACHE"] = tmp.name
    try:
        _spawn("prepare", args, env)  # trains/caches the demo tokenizer outside the measurements
        baseline = _spawn("baseline", args, env)
        rows = []
        for mode in MODES:
            print(f"running {mode} ...", file=sys.stderr, flush=True)
            row = _spawn(mode, args, env)
            row["above_baseline_mb"] = row["peak_rss_mb"] - baseline["peak_rss_mb"]
            rows.append(row)
    finally:
        if tmp is not None:
            tmp.cleanup()

    table = _table(baseline, rows)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in vars(args).items() if k not in ("out", "child")}
    args.out.write_text(
        json.dumps({"config": config, "baseline": baseline, "modes": rows}, indent=2) + "\n"
    )
    print(f"\nwritten to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
