"""GRPO and RLOO as one LightningModule (manual optimisation), differing only in `GroupCore`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from rlhf_lightning.models.reference import Reference
from rlhf_lightning.modules.group_core import GroupCore, GroupExperience, GroupRLConfig
from rlhf_lightning.modules.optim import OptimizerFactory, SchedulerFactory, configure_optimizers
from rlhf_lightning.modules.ppo_core import distinct_n
from rlhf_lightning.rewards import RewardSource
from rlhf_lightning.rollout import RolloutBatch, SamplingConfig, generate_rollout


class GroupRLModule(L.LightningModule):
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
    """

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
        self.total_iterations = total_iterations
        self.samples_path = samples_path
        self.sample_every = sample_every
        self.core = GroupCore(policy, reference, config)
        self.iteration = 0

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """One iteration: rollout G per prompt, score, group baselines, optimise, log."""
        start = time.perf_counter()
        group = self.config.group_size
        prompts = [p for p in batch["prompts"] for _ in range(group)]  # prompt-major groups
        columns = {
            k: [v for v in vs for _ in range(group)] for k, vs in batch.items() if k != "prompts"
        }
        seed = hash(("group", self.iteration)) % (2**31)
        rollout = generate_rollout(
            self.policy, self.tokenizer, prompts=prompts, config=self.sampling, generator_seed=seed
        ).to(self.device)  # 1. rollout
        scores = self.reward(rollout.prompts, rollout.completions, **columns).to(self.device)  # 2.
        experience = self.core.make_experience(rollout, scores)  # 3. old/ref log-probs, advantages
        stats = self.core.optimise(experience, self.manual_backward, self._optimizer_step)  # 4.
        self._log_iteration(rollout, scores, experience, stats, time.perf_counter() - start)
        self._record_samples(rollout, scores, experience)
        self.iteration += 1
        if self.total_iterations is not None and self.iteration >= self.total_iterations:
            self.trainer.should_stop = True

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
        exp: GroupExperience,
        stats: list[dict[str, torch.Tensor]],
        elapsed: float,
    ) -> None:
        scores = scores.float()
        metrics = {
            "rollout/reward_mean": scores.mean(),
            "rollout/reward_std": scores.std(),
            "rollout/kl": exp.sequence_kl.mean(),
            "rollout/response_length": rollout.response_mask.sum(1).float().mean(),
            "rollout/eos_rate": rollout.contains_stop.float().mean(),
            "rollout/distinct_2": torch.tensor(
                distinct_n(rollout.response_ids, rollout.response_mask, 2)
            ),
            "perf/samples_per_s": torch.tensor(len(rollout) / elapsed),
            "perf/tokens_per_s": torch.tensor(float(rollout.attention_mask.sum()) / elapsed),
        }
        for key in stats[0]:
            metrics[key] = torch.stack([s[key].float() for s in stats]).mean()
        self.log_dict({k: v.detach().float().cpu() for k, v in metrics.items()})
        self.log("reward", metrics["rollout/reward_mean"], prog_bar=True, logger=False)

    def _record_samples(
        self, rollout: RolloutBatch, scores: torch.Tensor, exp: GroupExperience
    ) -> None:
        if self.samples_path is None or self.iteration % self.sample_every:
            return
        rows = [
            {
                "step": self.global_step,
                "prompt": rollout.prompts[i],
                "completion": rollout.completions[i],
                "reward": float(scores[i]),
                "kl": float(exp.sequence_kl[i]),
            }
            for i in range(min(len(rollout), 8))
        ]
        with self.samples_path.open("a", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)

    def configure_optimizers(self):
        cfg = self.config
        per_iteration = cfg.num_iterations * cfg.num_minibatches
        total = (self.total_iterations or 1) * per_iteration
        return configure_optimizers(
            self.policy, self.optimizer_factory, self.scheduler_factory, total
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["group_rl"] = {"iteration": self.iteration}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.iteration = checkpoint["group_rl"]["iteration"]
