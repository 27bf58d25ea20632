"""PPO as a LightningModule: manual optimisation over one rollout buffer per training step."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from torch import nn
from transformers import PreTrainedTokenizerBase

from rlhf_lightning.models.reference import Reference
from rlhf_lightning.modules.optim import OptimizerFactory, SchedulerFactory, configure_optimizers
from rlhf_lightning.modules.ppo_core import Experience, PPOConfig, PPOCore, iteration_metrics
from rlhf_lightning.rewards import RewardSource
from rlhf_lightning.rollout import RolloutBatch, SamplingConfig, generate_rollout


class PPOModule(L.LightningModule):
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
    """

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
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.policy = policy
        self.reference = reference
        self.reward = reward
        self.tokenizer = tokenizer
        self.config = config
        self.sampling = sampling
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.samples_path = samples_path
        self.sample_every = sample_every
        self.critic = critic
        self.total_iterations = total_iterations
        self.core = PPOCore(policy, reference, config, critic=critic)
        self.iteration = 0

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """One PPO iteration (the steps of `rlhf_lightning.modules.ppo_core`)."""
        start = time.perf_counter()
        prompts, columns = batch["prompts"], {k: v for k, v in batch.items() if k != "prompts"}
        rollout = self.collect_rollout(prompts)  # 1. the policy answers each prompt
        scores = self.reward(rollout.prompts, rollout.completions, **columns)  # 2. evaluation
        experience = self.core.make_experience(rollout, scores)  # 3-4. log-probs, rewards, GAE
        stats = self.core.optimise(experience, self.manual_backward, self._optimizer_step)  # 5.
        mean_kl = self.core.update_kl_controller(experience)  # 6. KL control
        self._log_iteration(rollout, scores, stats, mean_kl, time.perf_counter() - start)
        self._record_samples(rollout, scores, experience)
        self.iteration += 1
        if self.total_iterations is not None and self.iteration >= self.total_iterations:
            # Iterations, not optimizer steps, end a PPO run (early KL stops skip steps).
            self.trainer.should_stop = True

    def collect_rollout(self, prompts: list[str]) -> RolloutBatch:
        """Sample one response per prompt; the seed follows the iteration so resume is exact."""
        seed = hash((self.iteration, self.global_step)) % (2**31)
        rollout = generate_rollout(
            self.policy, self.tokenizer, prompts=prompts, config=self.sampling, generator_seed=seed
        )
        return rollout.to(self.device)

    def _optimizer_step(self) -> None:
        optimizer = self.optimizers()
        if self.config.max_grad_norm is not None:
            self.clip_gradients(
                optimizer,
                gradient_clip_val=self.config.max_grad_norm,
                gradient_clip_algorithm="norm",
            )
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()

    def _log_iteration(
        self,
        rollout: RolloutBatch,
        scores: torch.Tensor,
        stats: list[dict[str, torch.Tensor]],
        mean_kl: torch.Tensor,
        elapsed: float,
    ) -> None:
        kl_coef = self.core.kl_controller.value
        metrics = iteration_metrics(rollout, scores, stats, mean_kl, kl_coef, elapsed)
        self.log_dict(metrics)
        self.log("reward", metrics["rollout/reward_mean"], prog_bar=True, logger=False)

    def _record_samples(self, rollout: RolloutBatch, scores: torch.Tensor, exp: Experience) -> None:
        """Every `sample_every` iterations: rows to samples.jsonl and, with W&B, a table."""
        if self.samples_path is None or self.iteration % self.sample_every:
            return
        kl = exp.kl.sum(1)
        rows = [
            {
                "step": self.global_step,
                "prompt": rollout.prompts[i],
                "completion": rollout.completions[i],
                "reward": float(scores[i]),
                "kl": float(kl[i]),
            }
            for i in range(min(len(rollout), 8))
        ]
        with self.samples_path.open("a", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        for logger in self.loggers:
            if isinstance(logger, WandbLogger):
                columns = list(rows[0])
                logger.log_table(
                    "samples", columns=columns, data=[[r[c] for c in columns] for r in rows]
                )

    def configure_optimizers(self):
        # The policy (and a separate critic); the frozen reference is filtered out.
        return configure_optimizers(
            self, self.optimizer_factory, self.scheduler_factory, self._planned_optimizer_steps()
        )

    def _planned_optimizer_steps(self) -> int:
        cfg = self.config
        if self.total_iterations is None:
            return int(self.trainer.estimated_stepping_batches)
        per_iteration = cfg.ppo_epochs * cfg.num_minibatches // cfg.gradient_accumulation_steps
        return self.total_iterations * per_iteration

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ppo"] = {"core": self.core.state_dict(), "iteration": self.iteration}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.core.load_state_dict(checkpoint["ppo"]["core"])
        self.iteration = checkpoint["ppo"]["iteration"]
