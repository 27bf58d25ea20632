"""Held-out evaluation on a task with a verifier: what `stage=eval` reports and what the RL
stages log every ``every`` iterations (``eval/*`` metrics).

For each problem (a prompt and its columns, e.g. the reference ``answer``):

1. the policy answers greedily; the verifier (any reward source) scores the answer, and a
   score of at least ``correct_reward`` counts as correct: ``accuracy``, ``reward_mean``,
   ``response_length`` (tokens, the stop token included), ``truncation_rate`` (answers that
   hit ``max_new_tokens`` without a stop token);
2. with ``num_samples`` = n > 0, n answers are sampled at ``temperature``; with c of them
   correct, ``pass@k`` is the unbiased estimator of Chen et al. 2021
   (``functional.pass_at_k``) for each k in ``pass_k`` (k <= n), averaged over problems.

Sampling is seeded per problem (the prompt's CRC and the sample index key the noise), so an
evaluation gives the same answers whatever the batch size, the number of processes or where
it sits in a training run, and the training run's random streams are left untouched.

Data parallel: each process evaluates its contiguous share of the problems and the sums are
added over processes, so N processes report exactly what one process reports.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from rlhf_lightning.distributed import all_reduce_sum, rank_and_world
from rlhf_lightning.errors import ConfigError
from rlhf_lightning.functional import pass_at_k
from rlhf_lightning.rewards.base import RewardSource
from rlhf_lightning.rollout import SamplingConfig, generate_rollout
from rlhf_lightning.rundir import atomic_write_text

# The sums an evaluation adds up over problems (and processes), in a fixed order.
_GREEDY_SUMS = ("problems", "correct", "reward", "length", "truncated")


@dataclass
class EvalResult:
    """One evaluation.

    Attributes:
        metrics: ``accuracy``, ``reward_mean``, ``response_length``, ``truncation_rate``,
            ``pass@k`` for each k, ``num_problems`` (over every process).
        rows: this process's first ``sample_rows`` problems: prompt, greedy completion,
            reward, correct, and with sampling the sampled completions and their correct count.
    """

    metrics: dict[str, float]
    rows: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Evaluator:
    """Greedy accuracy and sampled pass@k of a policy on held-out problems.

    Attributes:
        every: RL stages evaluate before the first iteration, after every ``every``
            iterations and after the last; 0 evaluates only before the first and after the last.
        num_problems: the first this many problems of the held-out split (in dataset order);
            None: all of them.
        batch_size: answers generated per call.
        max_new_tokens: the answer budget; None: the stage's sampling budget (or 32).
        num_samples: n, sampled answers per problem for pass@k; 0 samples nothing.
        pass_k: the k of each ``pass@k`` reported (those above ``num_samples`` are left out).
        temperature: of the sampled answers.
        correct_reward: a score at least this counts as correct (the verifiers give 1.0 for a
            right answer; ``reward=code`` in ``fraction`` mode gives 1.0 when every test passes).
        reward: the verifier; None uses the stage's reward source.
        seed: seeds the sampled answers.
        sample_rows: problems whose answers are kept in ``EvalResult.rows``.
    """

    every: int = 10
    num_problems: int | None = None
    batch_size: int = 64
    max_new_tokens: int | None = None
    num_samples: int = 0
    pass_k: list[int] = field(default_factory=lambda: [1])
    temperature: float = 1.0
    correct_reward: float = 1.0
    reward: RewardSource | None = None
    seed: int = 0
    sample_rows: int = 16

    def __post_init__(self) -> None:
        if self.every < 0 or self.batch_size < 1 or self.num_samples < 0:
            raise ConfigError(
                f"evaluator.every={self.every}, batch_size={self.batch_size}, num_samples="
                f"{self.num_samples}: need every >= 0, batch_size >= 1, num_samples >= 0."
            )
        if any(k < 1 for k in self.pass_k):
            raise ConfigError(f"evaluator.pass_k={self.pass_k}: every k must be >= 1.")

    def due(self, iteration: int) -> bool:
        """Whether the policy after `iteration` iterations is evaluated (the last one aside)."""
        return iteration == 0 or (self.every > 0 and iteration % self.every == 0)

    @property
    def reported_k(self) -> list[int]:
        return sorted({k for k in self.pass_k if k <= self.num_samples})

    @torch.no_grad()
    def evaluate(
        self,
        policy: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        problems: dict[str, list],
        reward: RewardSource | None = None,
        max_new_tokens: int = 32,
    ) -> EvalResult:
        """Evaluate `policy` on `problems` (every process passes the same problems).

        Args:
            policy: a causal LM (or a value-head wrapper around one).
            tokenizer: its tokenizer.
            problems: ``{"prompts": [...], <column>: [...], ...}``, one entry per problem.
            reward: the stage's reward source, used when ``self.reward`` is None.
            max_new_tokens: the budget when ``self.max_new_tokens`` is None.
        """
        verifier = self.reward if self.reward is not None else reward
        if verifier is None:
            raise ConfigError("evaluator: no reward source to verify answers with. Fix: set one.")
        budget = self.max_new_tokens or max_new_tokens
        mine = _this_rank_share(_first(problems, self.num_problems))
        greedy = SamplingConfig(max_new_tokens=budget, do_sample=False)
        sums = dict.fromkeys([*_GREEDY_SUMS, *(f"pass@{k}" for k in self.reported_k)], 0.0)
        rows: list[dict[str, Any]] = []
        for chunk in _chunks(mine, self.batch_size):
            prompts, columns = chunk["prompts"], {k: v for k, v in chunk.items() if k != "prompts"}
            answers = generate_rollout(policy, tokenizer, prompts, config=greedy)
            scores = verifier(prompts, answers.completions, **columns).float()
            correct = scores >= self.correct_reward
            sums["problems"] += len(prompts)
            sums["correct"] += float(correct.sum())
            sums["reward"] += float(scores.sum())
            sums["length"] += float(answers.response_lengths.sum())
            sums["truncated"] += float((~answers.contains_stop).sum())
            room = max(0, self.sample_rows - len(rows))
            rows += [
                {
                    "prompt": prompts[i],
                    "completion": answers.completions[i],
                    "reward": float(scores[i]),
                    "correct": bool(correct[i]),
                }
                for i in range(min(room, len(prompts)))
            ]
        if self.num_samples:
            self._sample(policy, tokenizer, mine, verifier, budget, sums, rows)
        return EvalResult(_metrics(all_reduce_sum(torch.tensor(list(sums.values()))), sums), rows)

    def _sample(
        self,
        policy: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        problems: dict[str, list],
        verifier: RewardSource,
        budget: int,
        sums: dict[str, float],
        rows: list[dict[str, Any]],
    ) -> None:
        """n sampled answers per problem; adds each problem's pass@k to `sums`."""
        n = self.num_samples
        config = SamplingConfig(max_new_tokens=budget, temperature=self.temperature)
        done = 0
        for chunk in _chunks(problems, max(1, self.batch_size // n)):
            prompts = [p for p in chunk["prompts"] for _ in range(n)]  # prompt-major groups
            columns = {
                k: [x for x in v for _ in range(n)] for k, v in chunk.items() if k != "prompts"
            }
            keys = torch.tensor(
                [zlib.crc32(p.encode()) * n + j for p in chunk["prompts"] for j in range(n)]
            )
            answers = generate_rollout(
                policy, tokenizer, prompts, config=config, generator_seed=self.seed, row_keys=keys
            )
            scores = verifier(prompts, answers.completions, **columns).float()
            correct = (scores >= self.correct_reward).view(-1, n)  # (problems, n)
            counts = correct.sum(dim=1)
            for k in self.reported_k:
                sums[f"pass@{k}"] += float(pass_at_k(n, counts, k).sum())
            for i in range(len(chunk["prompts"])):
                if done + i < len(rows):
                    rows[done + i]["samples"] = answers.completions[i * n : (i + 1) * n]
                    rows[done + i]["samples_correct"] = int(counts[i])
            done += len(chunk["prompts"])


def _metrics(totals: torch.Tensor, sums: dict[str, float]) -> dict[str, float]:
    """Means over problems from the summed tallies (in the order of `sums`)."""
    total = dict(zip(sums, totals.tolist(), strict=True))
    n = max(total["problems"], 1.0)
    metrics = {
        "accuracy": total["correct"] / n,
        "reward_mean": total["reward"] / n,
        "response_length": total["length"] / n,
        "truncation_rate": total["truncated"] / n,
    }
    metrics |= {key: value / n for key, value in total.items() if key.startswith("pass@")}
    metrics["num_problems"] = total["problems"]
    return metrics


def _first(problems: dict[str, list], n: int | None) -> dict[str, list]:
    return problems if n is None else {k: list(v)[:n] for k, v in problems.items()}


def _this_rank_share(problems: dict[str, list]) -> dict[str, list]:
    """This process's contiguous share (shares differ by at most one problem, none repeated)."""
    rank, world = rank_and_world()
    total = len(problems["prompts"])
    start, stop = rank * total // world, (rank + 1) * total // world
    return {k: list(v)[start:stop] for k, v in problems.items()}


def _chunks(problems: dict[str, list], size: int):
    total = len(problems["prompts"])
    for start in range(0, total, size):
        yield {k: v[start : start + size] for k, v in problems.items()}


def write_eval_summary(
    run_dir: Path, result: EvalResult, step: int, about: dict[str, Any] | None = None
) -> None:
    """``eval.json`` (the metrics, the step evaluated at, and `about`) and ``eval.md`` (a
    page with the metrics and the kept answers) in `run_dir`."""
    summary = {**result.metrics, "step": step, **(about or {})}
    atomic_write_text(run_dir / "eval.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(run_dir / "eval.md", eval_page(summary, result.rows))


def eval_page(summary: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """A Markdown page: the metrics, then each kept problem's greedy answer."""
    lines = ["# Evaluation", "", "| metric | value |", "|---|---:|"]
    for key, value in summary.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        lines.append(f"| {key} | {shown} |")
    episodes = any("conversation" in row for row in rows)  # an environment's games
    lines += [
        "",
        "## Episodes" if episodes else "## Greedy answers",
        "",
        "| prompt | answer | reward | correct |",
        "|---|---|---:|:-:|",
    ]
    for row in rows:
        cells = [_cell(row["prompt"]), _cell(row["completion"]), f"{row['reward']:.3g}"]
        mark = "yes" if row["correct"] else "no"
        if "samples_correct" in row:
            mark += f" ({row['samples_correct']}/{len(row['samples'])} sampled)"
        lines.append("| " + " | ".join([*cells, mark]) + " |")
    return "\n".join(lines) + "\n"


def _cell(text: str, limit: int = 160) -> str:
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return text.replace("|", "\\|").replace("\n", "<br>")
