"""Online RL in an environment (``env=``), as a LightningModule mixin: step 1 of an iteration
becomes a multi-turn rollout (``envs/rollout_loop.py``), step 2's scores are the environment's
rewards, and the held-out evaluation (``stage.env_eval``) logs ``eval/success_rate``.

The rest of the iteration is the single-turn story unchanged: the rollout's ``action_mask``
keeps the environment's tokens out of the loss, the KL and the values, and its
``turn_rewards`` reach the advantage estimators (``modules/online/core.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from rlhf_lightning.envs import Environment, EnvRollout, TurnLimits, play_episodes
from rlhf_lightning.envs.evaluation import EnvEvaluator
from rlhf_lightning.errors import ConfigError
from rlhf_lightning.models.reference import Reference
from rlhf_lightning.modules.evaluation import EvalResult
from rlhf_lightning.modules.online.records import record_evaluation
from rlhf_lightning.rewards.base import RewardSource
from rlhf_lightning.rollout import RolloutBackend, RolloutBatch, SamplingConfig


class EnvironmentSteps:
    """Mixin for ``OnlineRLModule``: ``env`` (None: single-turn), ``turns``, ``env_eval``."""

    env: Environment | None
    turns: TurnLimits
    env_eval: EnvEvaluator | None
    last_env_rollout: EnvRollout | None
    rollout_backend: RolloutBackend
    policy: nn.Module
    reference: Reference | None
    tokenizer: PreTrainedTokenizerBase
    reward: RewardSource | None
    sampling: SamplingConfig
    iteration: int
    iterations: int
    trainer: Any
    loggers: Any
    samples_path: Path | None
    device: torch.device
    score: Callable[..., Tensor]  # the reward source within the stage's deadline

    def setup_environment(
        self,
        env: Environment | None,
        turns: TurnLimits | None,
        env_eval: EnvEvaluator | None,
        max_staleness: int,
    ) -> None:
        if env is None and self.reward is None:
            raise ConfigError(
                "stage.reward is null and no environment is set: nothing would score the "
                "rollouts. Fix: pick a reward source (reward=...) or an environment (env=...)."
            )
        if env is not None and max_staleness:
            raise ConfigError(
                f"stage.max_staleness={max_staleness} with an environment: multi-turn rollouts "
                "are generated in their own iteration. Fix: stage.max_staleness=0."
            )
        self.env = env
        self.turns = turns or TurnLimits()
        self.env_eval = env_eval if env is not None else None
        self.last_env_rollout = None

    def play(self, rows: list[dict[str, Any]], seed: int, row_keys: Tensor) -> RolloutBatch:
        """Step 1 with an environment: one episode per row (multi-turn, token ids only)."""
        assert self.env is not None
        self.last_env_rollout = play_episodes(
            self.rollout_backend, self.policy, self.tokenizer, self.env, rows, self.sampling,
            self.turns, seed=seed, row_keys=row_keys,
        )  # fmt: skip
        return self.last_env_rollout.batch.to(self.device)

    def score_rollout(self, rollout: RolloutBatch, columns: dict[str, list]) -> Tensor:
        """Step 2: the reward source's scores; with an environment, each episode's summed turn
        rewards, plus the reward source's score of its transcript when one is set too (within
        the stage's reward deadline either way)."""
        if rollout.turn_rewards is None:
            return self.score(rollout.prompts, rollout.completions, **columns)
        scores = rollout.turn_rewards.sum(dim=1)
        if self.reward is not None:
            extra = self.score(rollout.prompts, rollout.completions, **columns)
            scores = scores + extra.to(scores.device)
        return scores

    def env_metrics(self) -> dict[str, float]:
        """``env/*`` of the iteration's rollout ({} without an environment)."""
        return self.last_env_rollout.metrics() if self.last_env_rollout is not None else {}

    def add_conversations(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Sample rows with each episode's conversation, turns and success added."""
        played = self.last_env_rollout
        if played is None:
            return rows
        for i, row in enumerate(rows):
            row["conversation"] = played.conversations[i]
            row["turns"] = int(played.turns[i])
            row["success"] = bool(played.success[i])
        return rows

    @torch.no_grad()
    def compare_episodes(self, rows: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
        """The end-of-run comparison with an environment: the trained and the starting policy
        play the same games with the same seed."""
        assert self.env is not None and self.reference is not None
        keys = torch.arange(len(rows))
        after = play_episodes(
            self.rollout_backend, self.policy, self.tokenizer, self.env, rows, self.sampling,
            self.turns, seed=seed, row_keys=keys,
        )  # fmt: skip
        with self.reference.generation_model() as reference_lm:
            before = play_episodes(
                self.rollout_backend, reference_lm, self.tokenizer, self.env, rows,
                self.sampling, self.turns, seed=seed, row_keys=keys,
            )  # fmt: skip
        reward, ref_reward = (self.score_rollout(p.batch, _columns(rows)) for p in (after, before))
        return [
            {
                "prompt": after.batch.prompts[i],
                "completion": after.batch.completions[i],
                "reward": float(reward[i]),
                "ref_completion": before.batch.completions[i],
                "ref_reward": float(ref_reward[i]),
                "conversation": after.conversations[i],
                "ref_conversation": before.conversations[i],
            }
            for i in range(len(rows))
        ]

    # -- held-out evaluation (stage.env_eval) ----------------------------------------------

    def evaluate_in_env_if_due(self) -> None:
        """Before an iteration: the policy after `iteration` iterations, when it is due."""
        if self.env_eval is not None and self.env_eval.due(self.iteration):
            self.evaluate_in_env()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)  # type: ignore[misc]
        if self.env_eval is not None and self.iteration == self.iterations:
            self.evaluate_in_env()  # the trained policy

    def evaluate_in_env(self) -> EvalResult:
        """``eval/success_rate`` (and ``eval/reward_mean``, ``eval/turns``) on held-out games,
        logged at step `iteration` like the held-out evaluation of single-turn tasks, the first
        episodes' conversations to ``eval_samples.jsonl``; every process takes part."""
        assert self.env is not None and self.env_eval is not None
        start = time.perf_counter()
        rows = self.env_eval.rows(self.trainer.datamodule.path)
        metrics, played = self.env_eval.evaluate(
            self.rollout_backend, self.policy, self.tokenizer, self.env, rows, self.sampling,
            self.turns,
        )  # fmt: skip
        result = episodes_result(metrics, played, self.env_eval.sample_rows)
        path = self.samples_path if self.trainer.is_global_zero else None  # rank 0 writes
        record_evaluation(result, self.loggers, self.iteration, path, time.perf_counter() - start)
        return result


def episodes_result(metrics: dict[str, float], played: EnvRollout | None, kept: int) -> EvalResult:
    """An environment evaluation as an :class:`EvalResult`: the ``eval/`` metrics without their
    prefix and the first `kept` episodes (prompt, readable conversation, summed reward,
    success)."""
    rows = []
    if played is not None and played.batch.turn_rewards is not None:
        rows = [
            {
                "prompt": played.batch.prompts[i],
                "conversation": played.conversations[i],
                "reward": float(played.batch.turn_rewards[i].sum()),
                "success": bool(played.success[i]),
            }
            for i in range(min(kept, len(played.conversations)))
        ]
    return EvalResult({name.removeprefix("eval/"): value for name, value in metrics.items()}, rows)


def rows_of(prompts: list[str], columns: dict[str, list]) -> list[dict[str, Any]]:
    """A batch's prompts and columns as one dataset row per prompt (what ``env.reset`` gets)."""
    return [{"prompt": p, **{k: v[i] for k, v in columns.items()}} for i, p in enumerate(prompts)]


def _columns(rows: list[dict[str, Any]]) -> dict[str, list]:
    """Rows -> columns, the prompt left out (it is the reward source's first argument)."""
    keys = [k for k in rows[0] if k != "prompt"] if rows else []
    return {k: [row[k] for row in rows] for k in keys}
