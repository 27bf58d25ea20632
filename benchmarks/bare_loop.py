"""The SFT benchmark's work in a plain PyTorch loop: the floor this project's SFT stage is held to.

    python benchmarks/bare_loop.py [--threads 1] [--out result.json]

Same model (loaded from the same directory), same batches (the SFT rows tokenised by the same
tokenizer, cut to SFT_LENGTH tokens, batch size and step counts from `workload.STAGES["sft"]`),
the same step: forward (no KV cache), next-token cross-entropy over every target token,
backward, gradient clipping to 1.0, AdamW with this project's defaults (betas 0.9/0.95, fused),
zero_grad. No data loader, logging, callbacks, schedulers or checks: what is left is the
arithmetic, done the fastest way this project does it. The timed window is the same as the
runners' (end of the warm-up steps to the end of the last).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workload  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out")
    parser.add_argument("--workdir", type=Path, default=workload.WORKDIR)
    args = parser.parse_args()
    workload.set_threads(args.threads)
    stage = workload.STAGES["sft"]
    work = workload.build(args.workdir)

    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(work / "policy")
    model = AutoModelForCausalLM.from_pretrained(work / "policy")
    model.train()
    steps = stage.warmup + stage.steps
    rows = [json.loads(line)["text"] for line in (work / "sft.jsonl").open()]
    rows = rows[: steps * stage.batch]
    ids = tokenizer(rows, truncation=True, max_length=workload.SFT_LENGTH, return_tensors="pt")
    batches = [
        (ids.input_ids[i : i + stage.batch], ids.attention_mask[i : i + stage.batch])
        for i in range(0, len(rows), stage.batch)
    ]
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=workload.LR, betas=(0.9, 0.95), weight_decay=0.0, fused=True
    )
    window = workload.StepWindow(stage.warmup, stage.steps)
    for input_ids, attention_mask in batches:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        loss = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1)
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), workload.MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        window.step_end()
    res = workload.result(stage, "bare_pytorch", torch.__version__, window)
    res["stage"] = "sft_bare"
    res["final_loss"] = float(loss.detach())
    workload.emit(res, args.out)


if __name__ == "__main__":
    main()
