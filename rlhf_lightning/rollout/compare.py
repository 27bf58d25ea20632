"""Before/after samples: the reference (starting) policy and the trained policy on the same prompts.

Written at the end of every online RL run into ``samples.jsonl`` (rows with ``ref_completion``
and ``ref_reward``), so a user sees what training changed on identical prompts, sampled with the
same seed and the same sampling settings, and scored by the same reward source.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from rlhf_lightning.models.reference import Reference
from rlhf_lightning.rewards.base import RewardSource
from rlhf_lightning.rollout.generation import SamplingConfig, generate_rollout


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


def append_rows(path: Path, rows: list[dict[str, Any]], **fields: Any) -> None:
    """Append `rows` to the JSON-lines file `path`, each with `fields` added first."""
    with path.open("a", encoding="utf-8") as f:
        f.writelines(json.dumps({**fields, **row}, ensure_ascii=False) + "\n" for row in rows)
