"""The RL stages' held-out evaluation, as a LightningModule mixin: when it runs and where its
results go. What it measures is ``modules/evaluation.py``.

The policy is evaluated before the first iteration, after every ``evaluator.every`` iterations
and after the last, from the batch hooks (outside ``training_step``'s story). Every process
takes part (each evaluates its share of the problems); rank 0 writes the answers.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from rlhf_lightning.modules.evaluation import EvalResult, Evaluator
from rlhf_lightning.modules.online.records import record_evaluation
from rlhf_lightning.rewards.base import RewardSource
from rlhf_lightning.rollout import SamplingConfig


class HeldOutEvaluation:
    """Mixin for ``OnlineRLModule``: ``evaluator`` (None: nothing runs), ``last_eval``."""

    evaluator: Evaluator | None
    last_eval: EvalResult | None
    iteration: int
    iterations: int
    policy: nn.Module
    tokenizer: PreTrainedTokenizerBase
    reward: RewardSource
    sampling: SamplingConfig
    samples_path: Path | None
    trainer: Any
    loggers: Any

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.evaluator is not None and self.evaluator.due(self.iteration):
            self.evaluate_policy()  # the policy after `iteration` iterations

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.evaluator is not None and self.iteration == self.iterations:
            self.evaluate_policy()  # the trained policy

    def evaluate_policy(self) -> EvalResult:
        """The held-out evaluation of the policy as it is now (every process takes part)."""
        assert self.evaluator is not None
        problems = self.trainer.datamodule.eval_problems()
        start = time.perf_counter()
        result = self.evaluator.evaluate(
            self.policy, self.tokenizer, problems, self.reward, self.sampling.max_new_tokens
        )
        elapsed = time.perf_counter() - start
        rows = self.samples_path if self.trainer.is_global_zero else None  # rank 0 writes
        record_evaluation(result, self.loggers, self.iteration, rows, elapsed)
        self.last_eval = result
        return result
