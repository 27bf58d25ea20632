"""PPO as a LightningModule: manual optimisation over one rollout buffer per training step."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from rlhf_lightning.models.reference import Reference
from rlhf_lightning.modules.online_rl import OnlineRLModule
from rlhf_lightning.modules.optim import OptimizerFactory, SchedulerFactory, configure_optimizers
from rlhf_lightning.modules.ppo_core import PPOConfig, PPOCore
from rlhf_lightning.rewards import RewardSource
from rlhf_lightning.rollout import RolloutBatch, SamplingConfig, generate_rollout


class PPOModule(OnlineRLModule):
    """Rollout → evaluation → optimisation, one PPO iteration per batch of prompts.

    Args:
        policy: a `CausalLMWithValueHead`; its `v_head` is the value head.
        reference: the frozen reference (copy, or the adapter-off base with LoRA).
        reward: any `RewardSource`; extra batch columns reach it as keyword arguments.
        tokenizer: the policy tokenizer.
        config: PPO hyper-parameters.
        sampling: rollout sampling settings (top_k 0, top_p 1 keep the KL estimate honest).
        optimizer / scheduler: factories (Hydra `_partial_`); the schedule steps per optimizer step.
        samples_path: where every `sample_every`-th iteration appends prompt/completion/reward/kl.
        sample_every: iterations between sample records.
        critic: a separate value model (`ValueModel`); None uses the policy's value head.
        total_iterations: stop after this many PPO iterations (None: the Trainer's limits).
        max_consecutive_bad_steps: non-finite updates in a row before the run stops.
        seed: the run's seed; rollouts sample from (seed, iteration).
    """

    checkpoint_key = "ppo"

    def __init__(
        self,
        policy: nn.Module,
        reference: Reference,
        reward: RewardSource,
        tokenizer: PreTrainedTokenizerBase,
        config: PPOConfig,
        sampling: SamplingConfig,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        samples_path: Path | None = None,
        sample_every: int = 10,
        critic: nn.Module | None = None,
        total_iterations: int | None = None,
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
        self.critic = critic
        self.core = PPOCore(policy, reference, config, critic=critic)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """One PPO iteration (the steps of `rlhf_lightning.modules.ppo_core`)."""
        start = time.perf_counter()
        prompts, columns = batch["prompts"], {k: v for k, v in batch.items() if k != "prompts"}
        with self.phase("rollout"):  # 1. the policy answers each prompt
            rollout = self.collect_rollout(prompts)
        with self.phase("scoring"):  # 2. evaluation
            scores = self.reward(rollout.prompts, rollout.completions, **columns)
        if not self.scores_are_finite(scores):
            return
        with self.phase("experience"):  # 3-4. log-probs, rewards, GAE
            experience = self.core.make_experience(rollout, scores)
        with self.phase("optimising"):  # 5. PPO epochs over minibatches
            stats = self.core.optimise(experience, self.manual_backward, self._optimizer_step)
        mean_kl = self.core.update_kl_controller(experience)  # 6. KL control
        kl_coef = self.core.kl_controller.value
        self._log_iteration(rollout, scores, stats, mean_kl, kl_coef, time.perf_counter() - start)
        self._record_samples(rollout, scores, experience.kl.sum(1))
        self._finish_iteration()

    def collect_rollout(self, prompts: list[str]) -> RolloutBatch:
        """Sample one response per prompt; the seed follows the iteration so resume is exact."""
        rollout = generate_rollout(
            self.policy,
            self.tokenizer,
            prompts=prompts,
            config=self.sampling,
            generator_seed=self.rollout_seed("ppo"),
            row_keys=self.rollout_row_keys(len(prompts)),
            record_values=self.core.records_values_while_sampling,
        )
        return rollout.to(self.device)

    def configure_optimizers(self):
        # The policy (and a separate critic); the frozen reference is filtered out.
        return configure_optimizers(
            self,
            self.optimizer_factory,
            self.scheduler_factory,
            self._planned_optimizer_steps(),
            precision=str(self.trainer.precision),
        )

    def _planned_optimizer_steps(self) -> int:
        cfg = self.config
        if self.total_iterations is None:
            return int(self.trainer.estimated_stepping_batches)
        per_iteration = cfg.ppo_epochs * cfg.num_minibatches // cfg.gradient_accumulation_steps
        return self.total_iterations * per_iteration

    def extra_state(self) -> dict[str, Any]:
        return {"core": self.core.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.core.load_state_dict(state["core"])
