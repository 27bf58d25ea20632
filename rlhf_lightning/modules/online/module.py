"""`OnlineRLModule`: PPO, GRPO, RLOO, REINFORCE++, GSPO, ... as one LightningModule.

Each training step is one iteration: sample, score, build the experience, optimise (manual
optimisation), log. What differs between the algorithms is the ``RLAlgorithm`` it is given.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from rlhf_lightning.data.prompts import PromptDataModule
from rlhf_lightning.deadline import checked_timeout
from rlhf_lightning.distributed import all_reduce_sum, rank_and_world
from rlhf_lightning.envs import Environment, TurnLimits
from rlhf_lightning.envs.evaluation import EnvEvaluator
from rlhf_lightning.errors import ConfigError
from rlhf_lightning.models import (
    build_reference,
    disable_dropout,
    export_model,
)
from rlhf_lightning.models.reference import ReferenceMode
from rlhf_lightning.modules.evaluation import EvalResult, Evaluator, write_eval_summary
from rlhf_lightning.modules.guards import (
    NonFiniteGuard,
    clip_if_finite,
    optimized_parameters,
    plain_gradients,
)
from rlhf_lightning.modules.online.ahead import RolloutsAhead
from rlhf_lightning.modules.online.algorithm import RLAlgorithm
from rlhf_lightning.modules.online.core import Experience, OnlineRLCore
from rlhf_lightning.modules.online.critic import Critic, with_critic
from rlhf_lightning.modules.online.environment import EnvironmentSteps, rows_of
from rlhf_lightning.modules.online.evaluation_hooks import HeldOutEvaluation
from rlhf_lightning.modules.online.records import (
    append_rows,
    compare_with_reference,
    extra_metrics,
    iteration_metrics,
    sample_rows,
    write_samples,
)
from rlhf_lightning.modules.optim import OptimizerFactory, SchedulerFactory, configure_optimizers
from rlhf_lightning.rewards.base import RewardSource, score_within
from rlhf_lightning.rollout import HFBackend, RolloutBackend, RolloutBatch, SamplingConfig

log = logging.getLogger(__name__)


class OnlineRLModule(EnvironmentSteps, HeldOutEvaluation, L.LightningModule):
    """Online RL on prompts: one iteration (rollout, scoring, updates) per training step.

    Args:
        model: the causal LM being trained (optionally LoRA-wrapped); dropout is turned off,
            since the rollout and every training forward must compute the same function.
        tokenizer: its tokenizer.
        algorithm: the composed algorithm (advantage, policy loss, aggregation, KL placement).
        reward: any reward source; extra prompt columns reach it as keyword arguments. With
            an environment it may be None (the environment's rewards alone) or is added to them.
        reward_timeout_s: seconds per scoring call (``score_within``); None: unbounded.
        sampling: how responses are sampled (its temperature is used for every log-prob).
        optimizer / scheduler: factories (Hydra ``_partial_``); the schedule steps per
            optimizer step, planned from ``iterations``.
        iterations: rollouts before the run stops.
        reference: ``auto`` (the adapter-off base for a LoRA policy, else a frozen copy),
            ``copy`` or ``adapter_off``; held only when ``algorithm.kl_coef > 0``.
        critic: ``shared`` (a value head on the policy's trunk), ``separate`` (a value model
            initialised from ``critic_init``, a reward model) or ``none``.
        critic_init: the reward model a separate critic starts from.
        rollout: the rollout backend; None samples with the policy itself (``HFBackend``).
        max_staleness: generate rollouts this many iterations ahead, while earlier ones
            optimise (``modules/online/ahead.py``); 0 is synchronous.
        samples_path / sample_every: where and every how many iterations sample rows go.
        compare_prompts: prompts the starting and the trained policy both answer at the end.
        evaluator: held-out evaluation (``data.eval_split``) before the first iteration, every
            ``evaluator.every`` iterations and after the last (``eval/*`` metrics); answers go
            to ``eval_samples.jsonl`` and the last result to ``eval.json`` beside samples_path.
        max_consecutive_bad_steps: skipped non-finite updates in a row before the run stops.
        packing: training, old-log-prob, reference and critic forwards run padding-free
            (sequences packed into rows; same numbers as padded, see ``OnlineRLCore``).
        seed: the run's seed; rollouts sample from (seed, iteration).
        env: an environment (``env=``): each rollout is a multi-turn episode per prompt row
            (``modules/online/environment.py``); None: one response per prompt.
        turns: the limits of an episode (turns, tokens) and what a rewriting template does.
        env_eval: held-out evaluation in the environment (``eval/success_rate``).
    """

    model_head = "causal_lm"
    datamodule_class = PromptDataModule

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        algorithm: RLAlgorithm,
        reward: RewardSource | None,
        sampling: SamplingConfig,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        *,
        iterations: int,
        reference: ReferenceMode = "auto",
        critic: Critic = "none",
        critic_init: str | None = None,
        rollout: RolloutBackend | None = None,
        max_staleness: int = 0,
        samples_path: str | Path | None = None,
        sample_every: int = 10,
        compare_prompts: int = 16,
        evaluator: Evaluator | None = None,
        max_consecutive_bad_steps: int = 10,
        packing: bool = True,
        seed: int = 0,
        reward_timeout_s: float | None = 300.0,
        env: Environment | None = None,
        turns: TurnLimits | None = None,
        env_eval: EnvEvaluator | None = None,
    ) -> None:
        super().__init__()
        self.reward_timeout_s = checked_timeout(reward_timeout_s, "stage.reward_timeout_s")
        if iterations < 1:
            raise ConfigError(f"stage.iterations={iterations}: nothing would run. Fix: >= 1.")
        model, critic_model = with_critic(disable_dropout(model), critic, critic_init)
        self.policy = model
        self.reference = build_reference(model, reference) if algorithm.needs_reference else None
        attach = getattr(reward, "attach", None)
        if attach is not None:  # a reward that shares the policy's weights (AdapterReward)
            attach(model)
        self.critic = critic_model
        self.tokenizer = tokenizer
        self.algorithm = algorithm
        self.reward = reward
        self.sampling = sampling
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.iterations = iterations
        self.rollout_backend = rollout or HFBackend()
        if max_staleness and not getattr(self.rollout_backend, "holds_own_weights", False):
            raise ConfigError(
                f"stage.max_staleness={max_staleness} generates rollouts while the policy "
                "trains, so the sampler needs weights of its own. Fix: rollout=vllm, or "
                "rollout=hf stage.rollout.own_copy=true (a second copy of the weights)."
            )
        expect_overlap = getattr(self.rollout_backend, "expect_overlap", None)
        if expect_overlap is not None:  # an engine sizes its threads by whether it runs alone
            expect_overlap(max_staleness > 0)
        self.ahead = RolloutsAhead(max_staleness, self._rollout_for_iteration)
        self.setup_environment(env, turns, env_eval, max_staleness)
        self.samples_path = Path(samples_path) if samples_path is not None else None
        self.sample_every = sample_every
        self.compare_prompts = compare_prompts
        self.evaluator = evaluator
        self.last_eval: EvalResult | None = None
        self.seed = seed
        self.core = OnlineRLCore(
            model, self.reference, algorithm, sampling.temperature, sampling.max_new_tokens,
            critic=critic_model, packing=packing,
        )  # fmt: skip
        self.automatic_optimization = False
        self.iteration = 0
        self._phase_seconds: dict[str, float] = {}
        # Non-finite gradients (from a NaN loss, reward or advantage) skip that step.
        self.guard = NonFiniteGuard(max_consecutive_bad_steps)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """One iteration (the steps of ``modules/online/core.py``)."""
        start = time.perf_counter()
        prompts, columns = self.expand_groups(batch)
        with self.phase("rollout"):  # 1. the policy answers each prompt (group_size times)
            rollout = self.ahead.take(self.iteration) or self.collect_rollout(prompts, columns)
        with self.phase("scoring"):  # 2. the reward source (or the environment) scores them
            scores = self.score_rollout(rollout, columns)
        if not self.scores_are_finite(scores):  # 3. a NaN reward drops the iteration
            return
        with self.phase("experience"):  # 4. log-probs, values, KL-shaped rewards, advantages
            experience = self.core.make_experience(rollout, scores)
        self.ahead.start(self.iteration, last=self.iterations)  # later rollouts, meanwhile
        with self.phase("optimising"):  # 5. passes of clipped updates over minibatches
            stats = self.core.optimise(experience, self.manual_backward, self._optimizer_step)
        with self.phase("sync"):  # 6. a sampler with weights of its own catches up
            self.ahead.finish()
            self.rollout_backend.sync(self.policy, self.iteration + 1)
        mean_kl = self.core.update_kl_controller(experience)  # 7. KL control
        elapsed = time.perf_counter() - start
        self._log_iteration(rollout, experience, scores, stats, mean_kl, elapsed)  # 8. metrics
        self._record_samples(rollout, scores, experience.sequence_kl)
        self._finish_iteration()

    def score(self, prompts: list[str], completions: list[str], **columns: Any) -> torch.Tensor:
        """The reward source's scores, within ``reward_timeout_s`` (``score_within``)."""
        return score_within(self.reward, prompts, completions, columns, self.reward_timeout_s)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        # Resumed with every iteration done (to finish and export): no further iteration.
        self.trainer.should_stop = self.trainer.should_stop or self.iteration >= self.iterations
        if self.trainer.should_stop:
            return -1
        super().on_train_batch_start(batch, batch_idx)  # the held-out evaluation when due
        self.evaluate_in_env_if_due()  # held-out games (stage.env_eval)
        return None

    def expand_groups(self, batch: dict[str, Any]) -> tuple[list[str], dict[str, list]]:
        """Each prompt (and its extra columns) ``group_size`` times, prompt-major."""
        group = self.algorithm.group_size
        prompts = [p for p in batch["prompts"] for _ in range(group)]
        columns = {
            k: [v for v in vs for _ in range(group)] for k, vs in batch.items() if k != "prompts"
        }
        return prompts, columns

    def collect_rollout(
        self, prompts: list[str], columns: dict | None = None, iteration: int | None = None
    ) -> RolloutBatch:
        """Sample one response per prompt, or with an environment play one episode per prompt
        row (its columns too); the seed follows the iteration so resume is exact."""
        seed = self.rollout_seed(self.iteration if iteration is None else iteration)
        keys = self.rollout_row_keys(len(prompts))
        if self.env is not None:
            return self.play(rows_of(prompts, columns or {}), seed, keys)
        rollout = self.rollout_backend.generate(
            self.policy, self.tokenizer, prompts, self.sampling, seed=seed, row_keys=keys,
            record_values=self.core.records_values_while_sampling,
        )  # fmt: skip
        return rollout.to(self.device)

    def _rollout_for_iteration(self, iteration: int) -> RolloutBatch:
        """A later iteration's rollout: the prompts its batch will hold (`batch_at`)."""
        prompts, _ = self.expand_groups(self.trainer.datamodule.batch_at(iteration))
        return self.collect_rollout(prompts, iteration=iteration)

    def rollout_seed(self, iteration: int) -> int:
        """This iteration's sampling seed: a pure function of (run seed, iteration).

        `hash()` of a string changes with every Python process, so it cannot be used here: a
        resumed run must draw the same samples as one that never stopped. (The tags are those
        earlier versions used, so a seed reproduces their rollouts.)
        """
        tag = "ppo" if self.algorithm.group_size == 1 else "group"
        return zlib.crc32(f"{tag}:{self.seed}:{iteration}".encode()) % (2**31)

    def rollout_row_keys(self, rows: int) -> torch.Tensor:
        """Each rollout row's index in the global batch (rank r holds [r*rows, (r+1)*rows)), so
        a row's sample does not depend on how the batch is split across processes."""
        return torch.arange(rows) + self.global_rank * rows

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
        """False (and the iteration counted as skipped) when any reward is NaN/Inf: it would
        reach the advantages, the running statistics and the KL controller."""
        # Decided over every rank's scores: all ranks drop the iteration or none does.
        if not bool(all_reduce_sum((~torch.isfinite(scores)).sum())):
            return True
        self.guard.record_skip()
        self.log("train/skipped_steps", float(self.guard.skipped))
        self._finish_iteration()
        return False

    def _optimizer_step(self) -> None:
        optimizer = self.optimizers()
        parameters = optimized_parameters(optimizer)
        max_norm = self.algorithm.max_grad_norm
        if max_norm is not None and plain_gradients(self.trainer):
            finite = clip_if_finite(self.guard, parameters, max_norm)  # one norm for both
        else:
            finite = self.guard.update_is_finite(None, parameters)
            if finite and max_norm is not None:  # sharded or scaled: the strategy clips
                self.clip_gradients(
                    optimizer, gradient_clip_val=max_norm, gradient_clip_algorithm="norm"
                )
        if not finite:
            optimizer.zero_grad(set_to_none=True)  # weights and optimizer moments untouched
            return
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()

    def _log_iteration(
        self,
        rollout: RolloutBatch,
        experience: Experience | None,
        scores: torch.Tensor,
        stats: list[dict[str, torch.Tensor]],
        mean_kl: torch.Tensor,
        elapsed: float,
    ) -> None:
        kl_coef = self.core.kl_controller.value
        metrics = iteration_metrics(rollout, scores, stats, mean_kl, kl_coef, elapsed)
        metrics |= extra_metrics(experience, scores, self.reward, self._phase_seconds)
        metrics |= self.env_metrics()
        if experience is not None and self.algorithm.dynamic_sampling:
            # Groups the loss left out, over the whole batch.
            dropped = all_reduce_sum((~experience.kept).sum()) / self.algorithm.group_size
            metrics["rollout/dropped_groups"] = dropped.float().cpu()
        metrics["train/skipped_steps"] = float(self.guard.skipped)
        self._phase_seconds = {}
        self.log_dict(metrics, sync_dist=rank_and_world()[1] > 1)
        self.log("reward", metrics["rollout/reward_mean"], prog_bar=True, logger=False)

    def _record_samples(
        self, rollout: RolloutBatch, scores: torch.Tensor, sequence_kl: torch.Tensor
    ) -> None:
        """Every `sample_every` iterations: rows to samples.jsonl and, with W&B, a table."""
        if self.samples_path is None or self.iteration % self.sample_every:
            return
        if self.trainer.is_global_zero:  # rank 0's rows stand for the batch
            rows = self.add_conversations(sample_rows(rollout, scores, sequence_kl))
            write_samples(self.samples_path, rows, self.iteration, self.global_step, self.loggers)

    def _finish_iteration(self) -> None:
        self.iteration += 1
        if self.iteration >= self.iterations:
            # Iterations, not optimizer steps, end these runs (early KL stops skip steps).
            self.trainer.should_stop = True

    def finish(self) -> list[dict[str, Any]]:
        """After fit: the starting and the trained policy answer the same prompts (same seed);
        both answers are scored and appended to samples.jsonl. Returns the rows ([] without a
        reference, a samples file or prompts to compare on). The last held-out evaluation goes
        to eval.json and eval.md."""
        if self.last_eval is not None and self.samples_path is not None:
            write_eval_summary(self.samples_path.parent, self.last_eval, step=self.iteration)
        if self.reference is None or self.samples_path is None or not self.compare_prompts:
            return []
        batch = self.trainer.datamodule.first_batch(self.compare_prompts)
        prompts = list(batch["prompts"])
        columns = {k: v for k, v in batch.items() if k != "prompts"}
        if self.env is not None:  # both policies play the same games
            rows = self.compare_episodes(rows_of(prompts, columns), self.seed)
        else:
            rows = compare_with_reference(
                self.policy, self.reference, self.tokenizer, self.score, prompts, self.sampling,
                self.seed, columns,
            )  # fmt: skip
        at = {"step": self.iteration, "global_step": self.global_step}
        append_rows(self.samples_path, rows, **at, kind="final_comparison")
        return rows

    def export(self, out_dir: Path, merge_lora: bool = False) -> None:
        """The policy (the value head beside it), its tokenizer, and a separate critic in
        ``critic/``: a Hugging Face directory."""
        parts = {"critic": self.critic} if self.critic is not None else None
        export_model(self.policy, self.tokenizer, out_dir, merge_lora=merge_lora, parts=parts)

    def teardown(self, stage: str) -> None:
        self.ahead.close()
        close = getattr(self.rollout_backend, "close", None)
        if close is not None:  # an inference engine this stage started
            close()

    def configure_optimizers(self):
        # The policy (and a separate critic); the frozen reference is filtered out.
        return configure_optimizers(
            self,
            self.optimizer_factory,
            self.scheduler_factory,
            self.iterations * self.algorithm.optimizer_steps_per_iteration,
            precision=str(self.trainer.precision),
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["online_rl"] = {
            "iteration": self.iteration,
            "non_finite_guard": self.guard.state_dict(),
            "core": self.core.state_dict(),
            "rollouts_ahead": self.ahead.state_dict(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["online_rl"]
        self.iteration = state["iteration"]
        self.guard.load_state_dict(state["non_finite_guard"])
        self.core.load_state_dict(state["core"])
        self.ahead.load_state_dict(state.get("rollouts_ahead", {}))
