"""Why GRPO does or does not raise held-out accuracy on the arithmetic task: the measurements
behind docs/rlvr.md ("What it took: measured on the warm-up"), on any exported policy of the task.

1. Signal: greedy held-out accuracy; sampled accuracy, pass@G and the share of groups of G
   whose rewards differ (the groups GRPO learns from), at temperature 1 and 0.7; answer
   length and truncation.
2. The update: one GRPO iteration as `experiment=rlvr_arithmetic` composes it, on 16 training
   prompts x G: do the advantages follow the scores, is the loss masked to the kept response
   tokens, do the positive-advantage answers gain log-probability and the others lose it.
3. Drift: `--iterations N` more iterations on fresh training prompts, printing every 10 the
   mean probability of the exact right answer on the held-out problems (a smooth measure,
   where greedy accuracy on 200 problems moves by +-0.025 from noise alone).

    PYTHONPATH=. python benchmarks/rlvr_diagnostics.py <run>/sft/model --lr 1e-4 --iterations 30

Results go to stdout. Nothing is written.
"""

from __future__ import annotations

import argparse
import time

import torch
from hydra.utils import instantiate

from rlhf_lightning.api import compose_config
from rlhf_lightning.data.collate import pad_batch
from rlhf_lightning.data.formats import tokenize_prompt_completion
from rlhf_lightning.data.tasks.arithmetic import build_arithmetic
from rlhf_lightning.models import ModelSpec, build_reference, load_model_and_tokenizer
from rlhf_lightning.modules.evaluation import Evaluator
from rlhf_lightning.modules.online import OnlineRLCore
from rlhf_lightning.rewards import MathReward
from rlhf_lightning.rollout import SamplingConfig, generate_rollout, score_tokens

BUDGET = 20  # the recipe's stage.sampling.max_new_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="an exported policy directory, e.g. <run>/sft/model")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=32, help="prompts per drift iteration")
    parser.add_argument("--iterations", type=int, default=0, help="drift iterations")
    parser.add_argument("--problems", type=int, default=200, help="held-out problems")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    task = build_arithmetic(max_digits=2, operations="+-")  # the recipe's data.path
    held_out = task["validation"][: args.problems]
    train = task["train"].shuffle(seed=1)
    verifier = MathReward(symbolic=False)
    policy, tokenizer = load_model_and_tokenizer(ModelSpec(name_or_path=args.model))
    g = args.group

    evaluator = Evaluator(max_new_tokens=BUDGET)  # greedy, as the stage's eval/accuracy
    problems = {"prompts": held_out["prompt"], "answer": held_out["answer"]}  # a prompt batch

    def greedy_accuracy() -> float:
        return evaluator.evaluate(policy, tokenizer, problems, verifier).metrics["accuracy"]

    def sample(rows: dict, temperature: float, seed: int):
        prompts, columns = _groups(rows, g)
        config = SamplingConfig(max_new_tokens=BUDGET, temperature=temperature)
        rollout = generate_rollout(
            policy, tokenizer, prompts, config=config, generator_seed=seed,
            row_keys=torch.arange(len(prompts)), share_prefill=True,
        )  # fmt: skip
        return rollout, verifier(prompts, rollout.completions, **columns)

    def p_right(rows: dict) -> float:
        """Mean probability of the exact reference completion (teacher-forced)."""
        examples = [
            tokenize_prompt_completion(p, c, tokenizer, None)
            for p, c in zip(rows["prompt"], rows["completion"], strict=True)
        ]
        batch = pad_batch(examples, tokenizer.pad_token_id)
        with torch.no_grad():
            logprobs = score_tokens(policy, batch["input_ids"], batch["attention_mask"], 1).logprobs
        return float((logprobs * batch["loss_mask"][:, 1:]).sum(1).exp().mean())

    start = time.perf_counter()
    print(f"greedy held-out accuracy {greedy_accuracy():.3f}")
    for temperature in (1.0, 0.7):
        rollout, scores = sample(held_out, temperature, seed=1)
        grouped = scores.view(-1, g)
        print(
            f"T={temperature}: sampled accuracy {float(scores.mean()):.3f}, "
            f"pass@{g} {float((grouped.amax(1) > 0).float().mean()):.3f}, groups with unequal "
            f"rewards {float((grouped.amax(1) > grouped.amin(1)).float().mean()):.3f}, length "
            f"{float(rollout.response_lengths.float().mean()):.1f}, truncated "
            f"{float((~rollout.contains_stop).float().mean()):.3f}"
        )

    cfg = compose_config(
        "grpo", ["experiment=rlvr_arithmetic", f"model.name_or_path={args.model}",
                 f"stage.algorithm.group_size={g}"],
    )  # fmt: skip
    algorithm = instantiate(cfg.stage.algorithm, _convert_="all")
    reference = build_reference(policy, "copy") if algorithm.needs_reference else None
    core = OnlineRLCore(policy, reference, algorithm, 1.0, BUDGET, packing=True)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)

    def iterate(rows: dict, seed: int):
        rollout, scores = sample(rows, 1.0, seed)
        experience = core.make_experience(rollout, scores)
        policy.train()
        stats = core.optimise(experience, lambda loss: loss.backward(), step)
        policy.eval()
        return experience, scores, stats

    def step() -> None:
        torch.nn.utils.clip_grad_norm_(params, algorithm.max_grad_norm or float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sequence_logprobs(experience) -> torch.Tensor:
        with torch.no_grad():
            scored = score_tokens(
                policy, experience.input_ids, experience.attention_mask,
                experience.context_length,
            )  # fmt: skip
        return (scored.logprobs * experience.response_mask).sum(1)

    # 2. one iteration on 16 prompts, checked
    rows = train[:16]
    rollout, scores = sample(rows, 1.0, seed=3)
    experience = core.make_experience(rollout, scores)
    advantages, kept = experience.advantages, experience.kept
    before = sequence_logprobs(experience)
    policy.train()
    stats = core.optimise(experience, lambda loss: loss.backward(), step)
    policy.eval()
    change = sequence_logprobs(experience) - before
    masked_right = bool((experience.loss_mask == (experience.response_mask & kept[:, None])).all())
    print(
        f"one iteration: reward {float(scores.mean()):.3f}, kept groups {int(kept.sum()) // g}"
        f"/16, corr(advantage, score) {_corr(advantages, scores)}, loss mask = kept response "
        f"tokens: {masked_right}; sequence log-prob change, positive advantages "
        f"{float(change[(advantages > 0) & kept].mean()):+.3f}, negative "
        f"{float(change[(advantages < 0) & kept].mean()):+.3f}; last minibatch "
        + ", ".join(f"{k.split('/')[-1]} {float(v):.4f}" for k, v in stats[-1].items())
    )

    # 3. drift over further iterations
    print(f"held-out P(right answer) {p_right(held_out):.4f}")
    for i in range(args.iterations):
        rows = train[16 + i * args.prompts : 16 + (i + 1) * args.prompts]
        experience, scores, _ = iterate(rows, seed=1000 + i)
        if (i + 1) % 10 == 0:
            print(
                f"iteration {i + 1}: reward {float(scores.mean()):.3f}, kept groups "
                f"{int(experience.kept.sum()) // g}/{args.prompts}, held-out P(right answer) "
                f"{p_right(held_out):.4f}, greedy accuracy {greedy_accuracy():.3f} "
                f"({time.perf_counter() - start:.0f} s)"
            )


def _groups(rows: dict, g: int) -> tuple[list[str], dict[str, list]]:
    """Each prompt and its answer G times, prompt-major (as the RL stages expand them)."""
    prompts = [p for p in rows["prompt"] for _ in range(g)]
    return prompts, {"answer": [a for a in rows["answer"] for _ in range(g)]}


def _corr(a: torch.Tensor, b: torch.Tensor) -> str:
    if a.std() == 0 or b.std() == 0:
        return "undefined (no spread)"
    return f"{float(torch.corrcoef(torch.stack([a, b.float()]))[0, 1]):.2f}"


if __name__ == "__main__":
    main()
