"""GRPO and RLOO as one LightningModule (manual optimisation), differing only in `GroupCore`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from rlhf_lightning.models.reference import Reference
from rlhf_lightning.modules.group_core import GroupCore, GroupRLConfig
from rlhf_lightning.modules.online_rl import OnlineRLModule
from rlhf_lightning.modules.optim import OptimizerFactory, SchedulerFactory, configure_optimizers
from rlhf_lightning.rewards import RewardSource
from rlhf_lightning.rollout import SamplingConfig, generate_rollout


class GroupRLModule(OnlineRLModule):
    """GRPO (`config.algorithm="grpo"`) or RLOO (`"rloo"`): G samples per prompt.

    Args:
        policy: the causal LM being trained (optionally LoRA-wrapped).
        reference: the frozen reference; None when GRPO's beta is 0.
        reward: any `RewardSource` (a `WeightedReward` mixes several).
        tokenizer: the policy tokenizer.
        config: algorithm settings.
        sampling: rollout sampling settings.
        optimizer / scheduler: factories (Hydra `_partial_`).
        total_iterations: stop after this many rollouts.
        samples_path / sample_every: sample records, as in PPO.
        max_consecutive_bad_steps: non-finite updates in a row before the run stops.
        seed: the run's seed; rollouts sample from (seed, iteration).
    """

    checkpoint_key = "group_rl"

    def __init__(
        self,
        policy: nn.Module,
        reference: Reference | None,
        reward: RewardSource,
        tokenizer: PreTrainedTokenizerBase,
        config: GroupRLConfig,
        sampling: SamplingConfig,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        total_iterations: int | None = None,
        samples_path: Path | None = None,
        sample_every: int = 10,
        max_consecutive_bad_steps: int = 10,
        seed: int = 0,
    ) -> None:
        super().__init__(
            policy,
            reference,
            reward,
            tokenizer,
            sampling,
            optimizer,
            scheduler,
            max_grad_norm=config.max_grad_norm,
            total_iterations=total_iterations,
            samples_path=samples_path,
            sample_every=sample_every,
            max_consecutive_bad_steps=max_consecutive_bad_steps,
            seed=seed,
        )
        self.config = config
        self.core = GroupCore(policy, reference, config)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """One iteration: rollout G per prompt, score, group baselines, optimise, log."""
        start = time.perf_counter()
        group = self.config.group_size
        prompts = [p for p in batch["prompts"] for _ in range(group)]  # prompt-major groups
        columns = {
            k: [v for v in vs for _ in range(group)] for k, vs in batch.items() if k != "prompts"
        }
        seed = self.rollout_seed("group")
        with self.phase("rollout"):  # 1. G samples per prompt
            rollout = generate_rollout(
                self.policy,
                self.tokenizer,
                prompts=prompts,
                config=self.sampling,
                generator_seed=seed,
                row_keys=self.rollout_row_keys(len(prompts)),
            ).to(self.device)
        with self.phase("scoring"):  # 2. evaluation
            scores = self.reward(rollout.prompts, rollout.completions, **columns).to(self.device)
        if not self.scores_are_finite(scores):
            return
        with self.phase("experience"):  # 3. old/ref log-probs, advantages
            experience = self.core.make_experience(rollout, scores)
        with self.phase("optimising"):  # 4. clipped updates
            stats = self.core.optimise(experience, self.manual_backward, self._optimizer_step)
        mean_kl = experience.sequence_kl.mean()
        beta = self.config.beta
        self._log_iteration(rollout, scores, stats, mean_kl, beta, time.perf_counter() - start)
        self._record_samples(rollout, scores, experience.sequence_kl)
        self._finish_iteration()

    def configure_optimizers(self):
        cfg = self.config
        per_iteration = cfg.num_iterations * cfg.num_minibatches
        total = (self.total_iterations or 1) * per_iteration
        return configure_optimizers(
            self.policy,
            self.optimizer_factory,
            self.scheduler_factory,
            total,
            precision=str(self.trainer.precision),
        )
