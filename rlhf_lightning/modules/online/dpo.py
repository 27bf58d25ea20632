"""Online DPO: pairs sampled from the current policy, ranked by a reward source, the DPO loss.

Guo et al. 2024 (arXiv:2402.04792): each iteration the policy answers every prompt twice, a
reward source (reward model, function, HTTP endpoint, mix: any ``RewardSource``) scores both
answers, the higher-scored one is the chosen completion, and one DPO update against the frozen
reference follows. It is the online-RL stage with its sampling, scoring, seeds, checkpointing
and logging (``OnlineRLModule``), and the update of offline DPO (``functional.dpo_loss``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from rlhf_lightning.distributed import gather_rows
from rlhf_lightning.errors import ConfigError
from rlhf_lightning.functional import DPOLossOutput, dpo_loss, rank_pairs
from rlhf_lightning.models.reference import ReferenceMode
from rlhf_lightning.modules.online.algorithm import RLAlgorithm, ScoreShaping
from rlhf_lightning.modules.online.module import OnlineRLModule
from rlhf_lightning.modules.optim import OptimizerFactory, SchedulerFactory
from rlhf_lightning.modules.preference import completion_logps, pair_statistics
from rlhf_lightning.rewards.base import RewardSource
from rlhf_lightning.rollout import RolloutBackend, RolloutBatch, SamplingConfig


def _unused_part(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError(
        "online DPO updates with the DPO loss; the policy-gradient parts of its RLAlgorithm "
        "are never called."
    )


class OnlineDPOModule(OnlineRLModule):
    """Online DPO: one iteration (two samples per prompt, scores, one DPO step) per training step.

    Rows are prompt-major pairs (rows 2i and 2i+1 answer prompt i). The chosen answer is the
    one with the higher score after the missing-stop penalty; a tie keeps the first, as TRL's
    ``OnlineDPOTrainer``. Log-probs for the loss are the policy's own (temperature 1, whatever
    the sampling temperature), summed over the response tokens (IPO: averaged), as DPO's.

    Logged per iteration: the ``rollout/*`` metrics of the online stages (``rollout/kl`` is the
    k1 estimate of each answer's KL to the reference at temperature 1), and ``train/loss``,
    ``train/accuracy``, ``train/margin``, ``train/rewards_chosen``, ``train/rewards_rejected``
    (DPO's implicit rewards), ``train/score_margin`` (chosen minus rejected score) and
    ``train/tie_rate``.

    Args:
        model / tokenizer / reward / sampling / optimizer / scheduler / iterations / rollout /
            samples_path / sample_every / compare_prompts / max_consecutive_bad_steps / seed:
            as ``OnlineRLModule``.
        beta: DPO's β (> 0); also the logged ``kl_coef``.
        loss_type: ``sigmoid`` (with ``label_smoothing``), ``hinge`` or ``ipo``.
        label_smoothing: cDPO label-flip probability (sigmoid only).
        missing_stop_penalty: subtracted from the score of an answer that never stopped before
            ranking (TRL ``missing_eos_penalty``); None disables.
        max_grad_norm: gradient clipping per update; None disables.
        reference: ``auto`` | ``copy`` | ``adapter_off``.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        reward: RewardSource,
        sampling: SamplingConfig,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        *,
        iterations: int,
        beta: float = 0.1,
        loss_type: Literal["sigmoid", "hinge", "ipo"] = "sigmoid",
        label_smoothing: float = 0.0,
        missing_stop_penalty: float | None = None,
        max_grad_norm: float | None = 1.0,
        reference: ReferenceMode = "auto",
        rollout: RolloutBackend | None = None,
        samples_path: str | Path | None = None,
        sample_every: int = 10,
        compare_prompts: int = 16,
        max_consecutive_bad_steps: int = 10,
        seed: int = 0,
    ) -> None:
        if beta <= 0:
            raise ConfigError(f"stage.beta={beta}: DPO's β must be > 0. Fix: e.g. 0.1.")
        # Two answers per prompt and one update per iteration; kl_coef = β makes the online
        # stage hold the reference the loss needs.
        algorithm = RLAlgorithm(
            advantage=_unused_part,
            policy_loss=_unused_part,
            aggregation=_unused_part,
            kl_coef=beta,
            group_size=2,
            shaping=ScoreShaping(missing_stop_penalty=missing_stop_penalty),
            max_grad_norm=max_grad_norm,
        )
        super().__init__(
            model, tokenizer, algorithm, reward, sampling, optimizer, scheduler,
            iterations=iterations, reference=reference, rollout=rollout,
            samples_path=samples_path, sample_every=sample_every,
            compare_prompts=compare_prompts, max_consecutive_bad_steps=max_consecutive_bad_steps,
            seed=seed,
        )  # fmt: skip
        self.beta = beta
        self.loss_type = loss_type
        self.label_smoothing = label_smoothing

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """One iteration: sample two answers per prompt, score, rank, one DPO update."""
        start = time.perf_counter()
        prompts, columns = self.expand_groups(batch)
        with self.phase("rollout"):  # 1. the policy answers each prompt twice
            rollout = self.collect_rollout(prompts)
        with self.phase("scoring"):  # 2. the reward source scores every answer
            scores = self.score(rollout.prompts, rollout.completions, **columns)
        if not self.scores_are_finite(scores):  # 3. a NaN score drops the iteration
            return
        with self.phase("optimising"):  # 4. rank each pair, DPO loss, one optimizer step
            stats, sequence_kl = self.pair_update(rollout, scores)
        self.rollout_backend.sync(self.policy, self.iteration + 1)  # 5. the sampler catches up
        mean_kl = gather_rows(sequence_kl)[0].mean()
        self._log_iteration(rollout, None, scores, [stats], mean_kl, time.perf_counter() - start)
        self._record_samples(rollout, scores, sequence_kl)
        self._finish_iteration()

    def pair_update(
        self, rollout: RolloutBatch, scores: Tensor
    ) -> tuple[dict[str, Tensor], Tensor]:
        """Rank each prompt's two answers and take one DPO step.

        Returns:
            The step's statistics and each answer's sequence KL to the reference (k1). (2P,)
        """
        ids, mask, ctx = rollout.input_ids, rollout.attention_mask, rollout.context_length
        targets = rollout.response_mask
        scores = self.core.shaper(scores.to(ids.device), rollout.contains_stop, targets.sum(1))
        policy = completion_logps(self.policy, ids, mask, targets, ctx)  # (2P,) sums
        with torch.no_grad():
            reference = completion_logps(self.reference, ids, mask, targets, ctx)
        scale = targets.sum(1).clamp_min(1) if self.loss_type == "ipo" else 1.0
        out, score_margin = self._ranked_loss(policy / scale, reference / scale, scores)
        self.manual_backward(out.loss)
        self._optimizer_step()
        pairs = scores.view(-1, 2)
        stats = {
            "train/loss": out.loss.detach(),
            **{f"train/{k}": v for k, v in pair_statistics(out).items()},
            "train/score_margin": score_margin,
            "train/tie_rate": (pairs[:, 0] == pairs[:, 1]).float().mean(),
        }
        return stats, (policy.detach() - reference).float()

    def _ranked_loss(
        self, policy: Tensor, reference: Tensor, scores: Tensor
    ) -> tuple[DPOLossOutput, Tensor]:
        """DPO loss with each pair's higher-scored answer as the chosen one (ties: the first)."""
        pi_c, pi_r = rank_pairs(policy, scores)
        ref_c, ref_r = rank_pairs(reference, scores)
        chosen_scores, rejected_scores = rank_pairs(scores.float(), scores)
        out = dpo_loss(pi_c, pi_r, ref_c, ref_r, self.beta, self.loss_type, self.label_smoothing)
        return out, (chosen_scores - rejected_scores).mean()
