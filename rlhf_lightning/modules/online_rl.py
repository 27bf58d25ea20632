"""What the online RL modules (PPO, GRPO, RLOO) share around their algorithm core.

Manual optimisation's optimizer step, per-iteration metrics, sample records, stopping after a
number of iterations, and the iteration counter in checkpoints.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from torch import nn
from transformers import PreTrainedTokenizerBase

from rlhf_lightning.distributed import all_reduce_sum, gather_rows, rank_and_world
from rlhf_lightning.models.reference import Reference
from rlhf_lightning.modules.guards import NonFiniteGuard, optimized_parameters
from rlhf_lightning.modules.optim import OptimizerFactory, SchedulerFactory
from rlhf_lightning.modules.ppo_core import iteration_metrics
from rlhf_lightning.rewards.base import RewardSource
from rlhf_lightning.rollout import RolloutBatch, SamplingConfig
from rlhf_lightning.rollout.compare import append_rows, compare_with_reference


class OnlineRLModule(L.LightningModule):
    """Base of the rollout-based stages (PPO, GRPO, RLOO): what they hold and do alike.

    Args / attributes:
        policy / reference / reward / tokenizer / sampling: what rollouts use (reference may
            be None where the algorithm holds none).
        optimizer / scheduler: factories (Hydra `_partial_`), kept as `optimizer_factory` and
            `scheduler_factory` for `configure_optimizers`.
        max_grad_norm: gradient clipping for each optimizer step; None disables.
        total_iterations: stop after this many rollouts (None: the Trainer's limits).
        samples_path / sample_every: where and how often sample rows are appended.
        max_consecutive_bad_steps: skipped non-finite updates in a row before the run stops.
        seed: the run's seed (`seed=`); rollout sampling draws from (seed, iteration), so runs
            of a seed sweep sample independently.
        checkpoint_key: the checkpoint entry holding the iteration (and `extra_state()`).
    """

    checkpoint_key: str = "online_rl"

    def __init__(
        self,
        policy: nn.Module,
        reference: Reference | None,
        reward: RewardSource,
        tokenizer: PreTrainedTokenizerBase,
        sampling: SamplingConfig,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None,
        max_grad_norm: float | None,
        total_iterations: int | None = None,
        samples_path: Path | None = None,
        sample_every: int = 10,
        max_consecutive_bad_steps: int = 10,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.seed = seed
        self.policy = policy
        self.reference = reference
        self.reward = reward
        self.tokenizer = tokenizer
        self.sampling = sampling
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.max_grad_norm = max_grad_norm
        self.total_iterations = total_iterations
        self.samples_path = samples_path
        self.sample_every = sample_every
        self.automatic_optimization = False
        self.iteration = 0
        self._phase_seconds: dict[str, float] = {}
        # Non-finite gradients (from a NaN loss, reward or advantage) skip that step.
        self.guard = NonFiniteGuard(max_consecutive_bad_steps)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time one phase of an iteration (``perf/<name>_s``) and show it on the progress bar."""
        bar = self.trainer.progress_bar_callback if self._trainer is not None else None
        if bar is not None and hasattr(bar, "set_phase"):
            bar.set_phase(name)
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self._phase_seconds[name] = self._phase_seconds.get(name, 0.0) + elapsed

    def scores_are_finite(self, scores: torch.Tensor) -> bool:
        """False (and the iteration counted as skipped) when any reward is NaN/Inf.

        A non-finite score would reach the advantages, the running reward statistics and the
        KL controller; the whole iteration is dropped instead.
        """
        # Decided over every rank's scores: all ranks drop the iteration or none does.
        if not bool(all_reduce_sum((~torch.isfinite(scores)).sum())):
            return True
        self.guard.record_skip()
        self.log("train/skipped_steps", float(self.guard.skipped))
        self._finish_iteration()
        return False

    def _optimizer_step(self) -> None:
        optimizer = self.optimizers()
        if not self.guard.update_is_finite(None, optimized_parameters(optimizer)):
            optimizer.zero_grad(set_to_none=True)  # weights and optimizer moments untouched
            return
        if self.max_grad_norm is not None:
            self.clip_gradients(
                optimizer, gradient_clip_val=self.max_grad_norm, gradient_clip_algorithm="norm"
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
        kl_coef: float,
        elapsed: float,
    ) -> None:
        metrics = iteration_metrics(rollout, scores, stats, mean_kl, kl_coef, elapsed)
        _, world = rank_and_world()
        if world > 1 and scores.numel() > 0:
            # Means of equal-sized shares average exactly across ranks (sync_dist below); the
            # spread needs the rows themselves.
            metrics["rollout/reward_std"] = gather_rows(scores.float())[0].std().cpu()
        # A weighted mix keeps each source's unweighted rewards: one curve per component.
        for name, values in getattr(self.reward, "last_components", {}).items():
            metrics[f"rollout/reward/{name}"] = values.float().mean()
        metrics["train/skipped_steps"] = float(self.guard.skipped)
        # Where the iteration's time went: generation vs scoring vs log-probs vs updates.
        for name, seconds in self._phase_seconds.items():
            metrics[f"perf/{name}_s"] = seconds
        self._phase_seconds = {}
        self.log_dict(metrics, sync_dist=world > 1)
        self.log("reward", metrics["rollout/reward_mean"], prog_bar=True, logger=False)

    def _record_samples(
        self, rollout: RolloutBatch, scores: torch.Tensor, sequence_kl: torch.Tensor
    ) -> None:
        """Every `sample_every` iterations: rows to samples.jsonl and, with W&B, a table."""
        if self.samples_path is None or self.iteration % self.sample_every:
            return
        if not self.trainer.is_global_zero:
            return  # rank 0's rows stand for the batch
        rows = [
            {
                # The iteration: the `step` of this iteration's metrics.csv row.
                "step": self.iteration,
                "global_step": self.global_step,
                "prompt": rollout.prompts[i],
                "completion": rollout.completions[i],
                "reward": float(scores[i]),
                "kl": float(sequence_kl[i]),
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

    def write_comparison(self, batch: dict[str, list], seed: int) -> list[dict[str, Any]]:
        """Before/after rows for `batch` (a prompt batch) appended to samples.jsonl.

        The reference (starting) policy and the trained one answer the same prompts with the
        same seed; both answers are scored. Returns the rows ([] without a reference, e.g. GRPO
        with beta 0, or without a samples file).
        """
        if self.reference is None or self.samples_path is None:
            return []
        prompts = list(batch["prompts"])
        columns = {k: v for k, v in batch.items() if k != "prompts"}
        rows = compare_with_reference(
            self.policy,
            self.reference,
            self.tokenizer,
            self.reward,
            prompts,
            self.sampling,
            seed,
            columns,
        )
        append_rows(
            self.samples_path,
            rows,
            step=self.iteration,
            global_step=self.global_step,
            kind="final_comparison",
        )
        return rows

    def rollout_row_keys(self, rows: int) -> torch.Tensor:
        """Each rollout row's index in the global batch (rank r holds [r*rows, (r+1)*rows)).

        With keyed sampling these make a row's sample independent of how the batch is split
        across processes (`rlhf_lightning.rollout.keyed_sampling`).
        """
        return torch.arange(rows) + self.global_rank * rows

    def rollout_seed(self, tag: str) -> int:
        """The sampling seed of this iteration's rollout: a pure function of (tag, run seed,
        iteration).

        `hash()` of a string changes with every Python process, so it cannot be used here: a
        resumed run must draw the same samples as one that never stopped.
        """
        return zlib.crc32(f"{tag}:{self.seed}:{self.iteration}".encode()) % (2**31)

    def _finish_iteration(self) -> None:
        self.iteration += 1
        if self.total_iterations is not None and self.iteration >= self.total_iterations:
            # Iterations, not optimizer steps, end these runs (early KL stops skip steps).
            self.trainer.should_stop = True

    def extra_state(self) -> dict[str, Any]:
        """Algorithm state beyond the weights (KL controller, running moments, ...)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what `extra_state` returned."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[self.checkpoint_key] = {
            "iteration": self.iteration,
            "non_finite_guard": self.guard.state_dict(),
            **self.extra_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint[self.checkpoint_key]
        self.iteration = state["iteration"]
        if "non_finite_guard" in state:
            self.guard.load_state_dict(state["non_finite_guard"])
        self.load_extra_state(state)
