"""What an online-RL iteration records: its metrics, sample rows, held-out evaluations, and the
before/after comparison.

At the end of every online RL run the reference (starting) policy and the trained policy answer
the same prompts, sampled with the same seed and settings and scored by the same reward source,
so a user sees what training changed (``samples.jsonl`` rows with ``ref_completion`` and
``ref_reward``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.loggers import Logger, WandbLogger
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from rlhf_lightning.distributed import gather_rows, rank_and_world
from rlhf_lightning.functional import distinct_n, logprob_gap, repeated_prompt_tokens
from rlhf_lightning.models.reference import Reference
from rlhf_lightning.modules.evaluation import EvalResult
from rlhf_lightning.rewards.base import RewardSource
from rlhf_lightning.rollout import RolloutBatch, SamplingConfig, generate_rollout


def iteration_metrics(
    rollout: RolloutBatch,
    scores: Tensor,
    stats: list[dict[str, Tensor]],
    mean_kl: Tensor,
    kl_coef: float,
    elapsed: float,
) -> dict[str, Tensor]:
    """The per-iteration metrics (DESIGN.md names): rollout statistics + minibatch means."""
    scores = scores.float()
    lengths = rollout.response_mask.sum(1).float()
    metrics = {
        "rollout/reward_mean": scores.mean(),
        "rollout/reward_std": scores.std() if scores.numel() > 1 else torch.tensor(0.0),
        "rollout/kl": mean_kl,
        "rollout/response_length": lengths.mean(),
        "rollout/eos_rate": rollout.contains_stop.float().mean(),
        "rollout/distinct_2": torch.tensor(
            distinct_n(rollout.response_ids, rollout.response_mask, 2)
        ),
        "kl_coef": torch.tensor(kl_coef),
        "perf/samples_per_s": torch.tensor(len(rollout) / max(elapsed, 1e-9)),
        "perf/tokens_per_s": torch.tensor(float(rollout.attention_mask.sum()) / max(elapsed, 1e-9)),
    }
    for key in stats[0] if stats else ():
        metrics[key] = torch.stack([s[key].float() for s in stats]).nanmean()
    return {k: v.detach().float().cpu() for k, v in metrics.items()}


def extra_metrics(
    experience: Any, scores: Tensor, reward: RewardSource, phase_seconds: dict[str, float]
) -> dict[str, Tensor | float]:
    """What an iteration logs beyond `iteration_metrics`: the reward's spread over every rank,
    each mixed source's rewards, the sampler-trainer log-prob gap, where the time went.

    Args:
        experience: the iteration's ``Experience``; None for a stage that builds none (online
            DPO), which then logs neither the log-prob gap nor the padding fraction.
    """
    metrics: dict[str, Tensor | float] = {}
    if rank_and_world()[1] > 1 and scores.numel() > 0:
        # Means of equal-sized shares average exactly across ranks (sync_dist); the spread
        # needs the rows themselves.
        metrics["rollout/reward_std"] = gather_rows(scores.float())[0].std().cpu()
    # A weighted mix keeps each source's unweighted rewards: one curve per component.
    for name, values in getattr(reward, "last_components", {}).items():
        metrics[f"rollout/reward/{name}"] = values.float().mean()
    if experience is not None:
        # An engine sampled: how far from the trainer (measured by the first minibatch instead
        # when the engine's log-probs were the old ones: OnlineRLCore.minibatch_loss).
        if experience.sampler_logprobs is not None and not experience.old_from_sampler:
            metrics["rollout/logprob_gap"] = logprob_gap(
                experience.old_logprobs, experience.sampler_logprobs, experience.response_mask
            )
        # The share of the padded (B, T) rollout batch that is padding: what a padded training
        # forward pays for and a packed one (stage.packing) does not.
        metrics["perf/padding_fraction"] = 1.0 - experience.attention_mask.float().mean()
        # The share of its real tokens that repeat another row's prompt (GRPO/RLOO's groups):
        # what a whole-batch forward with shared prompts (stage.packing) computes once.
        repeated = repeated_prompt_tokens(
            experience.input_ids, experience.attention_mask, experience.context_length
        )
        metrics["perf/shared_prompt_fraction"] = repeated / experience.attention_mask.sum()
    # Where the iteration's time went: generation vs scoring vs log-probs vs updates vs sync.
    for name, seconds in phase_seconds.items():
        metrics[f"perf/{name}_s"] = seconds
    return metrics


def sample_rows(
    rollout: RolloutBatch, scores: Tensor, sequence_kl: Tensor, limit: int = 8
) -> list[dict[str, Any]]:
    """The first `limit` rows of an iteration: prompt, completion, reward, sequence KL."""
    version = {} if rollout.policy_version is None else {"policy_version": rollout.policy_version}
    return [
        {
            "prompt": rollout.prompts[i],
            "completion": rollout.completions[i],
            "reward": float(scores[i]),
            "kl": float(sequence_kl[i]),
            **version,
        }
        for i in range(min(len(rollout), limit))
    ]


@torch.no_grad()
def compare_with_reference(
    policy: nn.Module,
    reference: Reference,
    tokenizer: PreTrainedTokenizerBase,
    reward: RewardSource,
    prompts: list[str],
    sampling: SamplingConfig,
    seed: int,
    columns: dict[str, list[Any]] | None = None,
) -> list[dict[str, Any]]:
    """One completion per prompt from each policy, both scored.

    Args:
        policy: the trained policy (a causal LM or a value-head wrapper around one).
        reference: the frozen starting policy (``generation_model()`` gives an LM to sample).
        tokenizer: the policy's tokenizer (shared by the reference).
        reward: scores ``(prompts, completions, **columns) -> (B,)``.
        prompts: B prompt strings.
        sampling: the run's sampling settings.
        seed: one seed for both policies' sampling.
        columns: extra per-prompt columns for the reward source (each a list of B values).

    Returns:
        B rows: ``prompt``, ``completion``, ``reward``, ``ref_completion``, ``ref_reward``.
    """
    columns = columns or {}
    after = generate_rollout(policy, tokenizer, prompts, config=sampling, generator_seed=seed)
    with reference.generation_model() as reference_lm:
        before = generate_rollout(
            reference_lm, tokenizer, prompts, config=sampling, generator_seed=seed
        )
    doubled = {name: list(values) * 2 for name, values in columns.items()}
    scores = reward(prompts * 2, after.completions + before.completions, **doubled)
    scores = scores.float().cpu().tolist()
    n = len(prompts)
    return [
        {
            "prompt": prompts[i],
            "completion": after.completions[i],
            "reward": scores[i],
            "ref_completion": before.completions[i],
            "ref_reward": scores[n + i],
        }
        for i in range(n)
    ]


def write_samples(
    path: Path, rows: list[dict[str, Any]], iteration: int, global_step: int, loggers: list
) -> None:
    """Append an iteration's sample rows to samples.jsonl (``step`` is the iteration, the step
    of its metrics.csv row) and, with W&B, log them as a table."""
    append_rows(path, rows, step=iteration, global_step=global_step)
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            columns = ["step", *rows[0]]
            logger.log_table(
                "samples", columns=columns, data=[[iteration, *r.values()] for r in rows]
            )


def append_rows(path: Path, rows: list[dict[str, Any]], **fields: Any) -> None:
    """Append `rows` to the JSON-lines file `path`, each with `fields` added first."""
    with path.open("a", encoding="utf-8") as f:
        f.writelines(json.dumps({**fields, **row}, ensure_ascii=False) + "\n" for row in rows)


def record_evaluation(
    result: EvalResult,
    loggers: list[Logger],
    iteration: int,
    samples_path: Path | None,
    seconds: float,
) -> None:
    """``eval/*`` (and ``perf/evaluation_s``, its time) to the loggers at step `iteration` (the
    policy after that many iterations) and the kept answers to ``eval_samples.jsonl`` beside
    `samples_path` (None: not written, e.g. on ranks other than 0).

    The loggers are called directly: ``self.log`` inside the iteration would merge these
    values into that iteration's training row, and the final evaluation comes after it.
    """
    metrics = {f"eval/{k}": v for k, v in result.metrics.items() if k != "num_problems"}
    metrics["perf/evaluation_s"] = seconds
    for logger in loggers:
        logger.log_metrics(metrics, step=iteration)
    if samples_path is not None:
        append_rows(samples_path.with_name("eval_samples.jsonl"), result.rows, step=iteration)
