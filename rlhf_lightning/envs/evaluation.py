"""Held-out evaluation in an environment: ``eval/success_rate`` (``stage.env_eval``).

The policy plays every game of a held-out split (``data.path``'s ``validation``) once,
greedily by default, through the same multi-turn rollout as training; ``eval/success_rate`` is
the share of episodes whose last step reported ``info["success"]``, beside ``eval/reward_mean``
(the episode's summed turn rewards) and ``eval/turns``.

Every game has a fixed row key (its index in the split) and the evaluation a fixed seed, so
the answers do not depend on when it runs or on the number of processes: each process plays
its share and the sums are added over processes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from rlhf_lightning.data.loading import load_table
from rlhf_lightning.distributed import all_reduce_sum, rank_and_world
from rlhf_lightning.envs.base import Environment
from rlhf_lightning.envs.rollout_loop import EnvRollout, TurnLimits, play_episodes
from rlhf_lightning.rollout import RolloutBackend, SamplingConfig


@dataclass
class EnvEvaluator:
    """Success of the policy on held-out games.

    Attributes:
        every: Evaluate before the first iteration, after every ``every`` iterations and after
            the last; 0: before the first and after the last only.
        split: The held-out split of ``data.path``.
        num_rows: The first this many games of the split; None: all of them.
        greedy: Play greedily (the policy's most likely turn); False samples at the stage's
            temperature.
        seed: Seeds sampled play.
        sample_rows: Episodes whose conversations go to ``eval_samples.jsonl``.
        repeats: Plays of each game (sampled play: more plays, a less noisy rate).
    """

    every: int = 10
    split: str = "validation"
    num_rows: int | None = None
    greedy: bool = True
    seed: int = 0
    sample_rows: int = 8
    repeats: int = 1

    def due(self, iteration: int) -> bool:
        """Whether the policy after `iteration` iterations is evaluated (the last one aside)."""
        return iteration == 0 or (self.every > 0 and iteration % self.every == 0)

    def rows(self, path: str) -> list[dict[str, Any]]:
        """The held-out games of ``data.path``."""
        table = load_table(path, self.split)
        count = len(table) if self.num_rows is None else min(self.num_rows, len(table))
        return [dict(row) for row in table.select(range(count)) for _ in range(self.repeats)]

    def evaluate(
        self,
        backend: RolloutBackend,
        policy: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        env: Environment,
        rows: list[dict[str, Any]],
        sampling: SamplingConfig,
        limits: TurnLimits,
    ) -> tuple[dict[str, float], EnvRollout | None]:
        """``eval/*`` over every process's games, and this process's episodes (None when it
        had no games)."""
        rank, world = rank_and_world()
        mine = list(range(rank, len(rows), world))
        sums = torch.zeros(4, dtype=torch.float64)  # successes, rewards, turns, episodes
        played = None
        if mine:
            config = dataclasses.replace(sampling, do_sample=not self.greedy)
            played = play_episodes(
                backend, policy, tokenizer, env, [rows[i] for i in mine], config, limits,
                seed=self.seed, row_keys=torch.tensor(mine),
            )  # fmt: skip
            rewards = played.batch.turn_rewards
            total = rewards.sum() if rewards is not None else torch.tensor(0.0)
            sums += torch.tensor(
                [float(played.success.sum()), float(total), float(played.turns.sum()), len(mine)],
                dtype=torch.float64,
            )
        sums = all_reduce_sum(sums.to(_device(policy))).cpu()
        n = max(float(sums[3]), 1.0)
        metrics = {
            "eval/success_rate": float(sums[0]) / n,
            "eval/reward_mean": float(sums[1]) / n,
            "eval/turns": float(sums[2]) / n,
        }
        return metrics, played


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
