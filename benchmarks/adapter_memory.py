"""Peak memory of RLHF's three models on SmolLM2-135M: one base with adapters vs separate copies.

Each mode runs in a fresh subprocess so that its peak RSS (`ru_maxrss`) is its own; each loads
the models, then scores 16 prompt+completion texts with the reward model and runs one policy
forward+backward and one reference forward over them (what a PPO iteration holds at once):

- `adapters`: the policy is a LoRA adapter on SmolLM2, the reference is the same model with the
  adapter off, the reward model is a second LoRA adapter on the same base (`AdapterReward`):
  one copy of the base weights;
- `copies`: the same LoRA policy, a frozen copy of it as the reference, and the reward model
  loaded as a model of its own (`ModelReward`, the adapter merged into its own base): three
  copies of the base weights.

The reward adapter is a fresh LoRA + score head on SmolLM2 (its values do not change memory).

    python benchmarks/adapter_memory.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

MB = 1024 * 1024
TEXTS = [f"The new phone number {i} is" for i in range(16)]
COMPLETIONS = [" really great and I love it so much" for _ in range(16)]


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _child(mode: str, reward_dir: Path) -> dict[str, float]:
    import torch

    from rlhf_lightning.builtins import resolve_name
    from rlhf_lightning.models import (
        CausalLMWithValueHead,
        ModelSpec,
        build_reference,
        load_model_and_tokenizer,
    )
    from rlhf_lightning.rewards import AdapterReward, ModelReward

    torch.set_num_threads(1)
    base = resolve_name("smollm2")
    spec = ModelSpec(name_or_path=base, lora={"enabled": True, "r": 16, "alpha": 32})
    lm, tokenizer = load_model_and_tokenizer(spec)
    policy = CausalLMWithValueHead(lm)
    if mode == "adapters":
        reference = build_reference(policy, "adapter_off")
        reward = AdapterReward(reward_dir)
        reward.attach(policy)
    else:
        reference = build_reference(policy, "copy")
        reward = ModelReward.from_pretrained(str(reward_dir))
    loaded = _peak_rss_mb()
    scores = reward(TEXTS, COMPLETIONS)
    batch = tokenizer(
        [t + c for t, c in zip(TEXTS, COMPLETIONS, strict=True)], return_tensors="pt", padding=True
    )
    mask = batch.attention_mask.bool()
    policy(batch.input_ids, mask).logits.float().mean().backward()
    with torch.no_grad():
        reference(batch.input_ids, mask)
    return {"loaded_mb": loaded, "peak_mb": _peak_rss_mb(), "score_mean": float(scores.mean())}


def _reward_adapter(directory: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    from rlhf_lightning.builtins import resolve_name
    from rlhf_lightning.models import LoraSpec, apply_lora, load_tokenizer

    base = resolve_name("smollm2")
    tokenizer = load_tokenizer(base)
    classifier = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    classifier.config.pad_token_id = tokenizer.pad_token_id
    apply_lora(classifier, LoraSpec(enabled=True, r=16, alpha=32), "SEQ_CLS").save_pretrained(
        directory
    )
    tokenizer.save_pretrained(directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=["adapters", "copies"])
    parser.add_argument("--reward-dir", type=Path)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.reward_dir)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        reward_dir = Path(tmp) / "reward"
        _reward_adapter(reward_dir)
        rows = {}
        for mode in ("adapters", "copies"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--reward-dir", str(reward_dir)],
                capture_output=True,
                text=True,
            )
            if out.returncode:
                raise SystemExit(f"{mode} failed:\n{out.stderr[-3000:]}")
            rows[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    print("| mode | RSS after loading (MB) | peak RSS (MB) |")
    print("|---|---:|---:|")
    for mode, row in rows.items():
        print(f"| {mode} | {row['loaded_mb']:.0f} | {row['peak_mb']:.0f} |")
    saved = rows["copies"]["peak_mb"] - rows["adapters"]["peak_mb"]
    print(f"\none base with adapters saves {saved:.0f} MB of peak memory")


if __name__ == "__main__":
    main()
