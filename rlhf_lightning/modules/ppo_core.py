"""The PPO algorithm on tensors and models, shared by `PPOModule` and the custom-loop API.

One iteration, given a rollout (queries + sampled responses) and their scores:

1. shape the scores (missing-stop penalty, running scaling / normalisation, clipping);
2. old log-probs and values from the policy (recorded while sampling when the rollout
   carries them: no second policy forward), reference log-probs (no grad);
3. per-token rewards: -kl_coef * KL_t, the score on the last response token;
4. advantages and returns by GAE; advantages whitened over the whole batch;
5. PPO epochs over shuffled minibatches: clipped policy loss + vf_coef * clipped value loss;
6. the KL controller's update from the batch's mean sequence KL.

Conventions where references differ (ALGORITHMS.md §1-2): the score sits on the last real
response token (classic TRL); the policy and value masks are both the response mask; whitening
uses the unbiased variance over the whole batch (classic TRL), not per minibatch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from rlhf_lightning.distributed import (
    all_reduce_sum,
    gather_rows,
    over_global_batch,
    rank_and_world,
)
from rlhf_lightning.functional import (
    AdaptiveKLController,
    FixedKLController,
    RunningMoments,
    entropy_from_logits,
    full_kl,
    gae,
    masked_mean,
    masked_whiten,
    ppo_policy_loss,
    ppo_token_rewards,
    ppo_value_loss,
    token_logprobs,
)
from rlhf_lightning.models.reference import Reference
from rlhf_lightning.rollout import RolloutBatch, position_ids_from_mask


@dataclass
class PPOConfig:
    """PPO hyper-parameters (`ppo.*` in the config).

    Attributes:
        ppo_epochs: passes over each rollout batch.
        num_minibatches: minibatches per pass (the rollout batch size must divide by it).
        gradient_accumulation_steps: minibatches whose gradients add up into one optimizer
            step (each loss is divided by it); must divide num_minibatches.
        clip_eps: policy ratio clip range.
        value_clip: value clip range around the rollout-time values.
        vf_coef: weight of the value loss.
        gamma, lam: GAE discount and trace decay.
        kl_estimator: per-token KL in the reward: k1, abs, mse, k3 of the sampled tokens, or
            full (exact KL over the vocabulary from both models' logits).
        kl_coef: initial (adaptive) or fixed KL coefficient.
        adaptive_kl: Ziegler et al.'s controller toward `kl_target` over `kl_horizon`.
        whiten_rewards: whiten per-token rewards before GAE (keeps their mean).
        max_grad_norm: gradient clipping; None disables.
        ratio_threshold: skip a minibatch whose mean ratio exceeds this (a broken batch).
        target_kl: stop the epochs early when the policy KL exceeds 1.5 x this; None never.
        score_scale / score_norm / score_clip: running scaling (divide by std), normalisation
            (subtract mean too), and clipping of the scores.
        missing_stop_penalty: subtracted from the score of responses that never stopped.
        temperature: sampling temperature; log-probs are computed at the same temperature.
    """

    ppo_epochs: int = 4
    num_minibatches: int = 4
    gradient_accumulation_steps: int = 1
    clip_eps: float = 0.2
    value_clip: float = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    kl_estimator: Literal["k1", "abs", "mse", "k3", "full"] = "k1"
    kl_coef: float = 0.05
    adaptive_kl: bool = False
    kl_target: float = 6.0
    kl_horizon: int = 10000
    whiten_rewards: bool = False
    max_grad_norm: float | None = 1.0
    ratio_threshold: float = 10.0
    target_kl: float | None = None
    score_scale: bool = False
    score_norm: bool = False
    score_clip: float | None = None
    missing_stop_penalty: float | None = None
    temperature: float = 1.0


class Experience(NamedTuple):
    """A scored rollout with everything the PPO epochs need. Shapes: (B, T) or (B, A) or (B,)."""

    input_ids: Tensor
    attention_mask: Tensor
    context_length: int
    response_mask: Tensor
    old_logprobs: Tensor
    old_values: Tensor
    ref_logprobs: Tensor
    rewards: Tensor
    kl: Tensor
    advantages: Tensor
    returns: Tensor
    scores: Tensor

    def select(self, rows: Tensor) -> Experience:
        return Experience(
            *(x[rows] if isinstance(x, Tensor) else x for x in self)  # type: ignore[arg-type]
        )


class PPOCore:
    """PPO steps 1-6 over a policy with a value head and a reference.

    Args:
        policy: a `CausalLMWithValueHead` (forward -> logits, values).
        reference: frozen copy or adapter-off reference (`reference_logits`).
        config: hyper-parameters.
        critic: a separate value model (`ValueModel`, forward -> values (B, T)); None uses the
            policy's own value head.
    """

    def __init__(
        self,
        policy: nn.Module,
        reference: Reference,
        config: PPOConfig,
        critic: nn.Module | None = None,
    ) -> None:
        self.policy = policy
        self.reference = reference
        self.config = config
        self.critic = critic
        if critic is not None and hasattr(policy, "v_head"):
            # The separate critic gives every value; the policy's own head takes no part.
            policy.v_head.requires_grad_(False)
        if config.num_minibatches % config.gradient_accumulation_steps:
            raise ValueError(
                f"ppo.gradient_accumulation_steps={config.gradient_accumulation_steps} does not "
                f"divide ppo.num_minibatches={config.num_minibatches}. Fix: pick a divisor."
            )
        self.kl_controller = (
            AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon)
            if config.adaptive_kl
            else FixedKLController(config.kl_coef)
        )
        self.score_moments = RunningMoments()

    def shape_scores(self, scores: Tensor, contains_stop: Tensor) -> Tensor:
        """Step 1: penalty for responses that never stopped, running scaling, clipping."""
        cfg = self.config
        scores = scores.float()
        if cfg.missing_stop_penalty is not None:
            scores = torch.where(contains_stop, scores, scores - cfg.missing_stop_penalty)
        if cfg.score_scale or cfg.score_norm:
            # Every rank updates with the whole batch: identical running moments everywhere.
            self.score_moments.update(gather_rows(scores)[0])
            std = self.score_moments.std + torch.finfo(scores.dtype).eps
            scores = (scores - self.score_moments.mean) / std if cfg.score_norm else scores / std
        if cfg.score_clip is not None:
            scores = scores.clamp(-cfg.score_clip, cfg.score_clip)
        return scores

    @torch.no_grad()
    def make_experience(self, rollout: RolloutBatch, scores: Tensor) -> Experience:
        """Steps 1-4: shaped scores, old/ref log-probs and values, rewards, advantages."""
        cfg = self.config
        device = rollout.input_ids.device
        scores = self.shape_scores(scores.to(device), rollout.contains_stop)
        ids, mask, ctx = rollout.input_ids, rollout.attention_mask, rollout.context_length
        if self._can_reuse_sampling_logprobs(rollout):
            # Recorded while sampling: the policy forward would only recompute them.
            logits, old_logprobs = None, rollout.policy_logprobs.to(device)
            if self.critic is None:
                old_values = rollout.policy_values.to(device)
            else:
                old_values = self.critic_values(ids, mask, ctx)
        else:
            logits, old_logprobs, old_values = self.forward_response(ids, mask, ctx)
        keep = ids.shape[1] - ctx + 1  # positions ctx-1 .. T-1: the LM head skips the prompt
        ref_logits = self.reference.reference_logits(
            ids, mask, position_ids_from_mask(mask), logits_to_keep=keep
        )[:, :-1]
        ref_logprobs = token_logprobs(ref_logits, ids[:, ctx:], cfg.temperature)
        full = None
        if cfg.kl_estimator == "full":
            full = full_kl(logits.float() / cfg.temperature, ref_logits.float() / cfg.temperature)
        response_mask = rollout.response_mask
        values = torch.where(response_mask, old_values, 0.0)
        estimator = "k1" if cfg.kl_estimator == "full" else cfg.kl_estimator
        kl_coef = self.kl_controller.value
        shaped = ppo_token_rewards(
            old_logprobs, ref_logprobs, response_mask, scores, kl_coef, estimator, full
        )
        rewards = shaped.rewards
        if cfg.whiten_rewards:
            rewards = over_global_batch(_whiten_keep_mean, rewards, response_mask)
        advantages, returns = gae(rewards, values, response_mask, cfg.gamma, cfg.lam)
        advantages = over_global_batch(masked_whiten, advantages, response_mask)
        return Experience(
            input_ids=ids,
            attention_mask=mask,
            context_length=ctx,
            response_mask=response_mask,
            old_logprobs=old_logprobs,
            old_values=values,
            ref_logprobs=ref_logprobs,
            rewards=rewards,
            kl=shaped.kl,
            advantages=advantages,
            returns=returns,
            scores=scores,
        )

    def minibatches(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[Tensor]:
        """Row indices of each minibatch of each epoch (a fresh permutation per epoch)."""
        cfg = self.config
        if batch_size % cfg.num_minibatches:
            raise ValueError(
                f"rollout batch of {batch_size} does not split into ppo.num_minibatches="
                f"{cfg.num_minibatches}. Fix: make the batch size a multiple of it."
            )
        size = batch_size // cfg.num_minibatches
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(batch_size, generator=generator)
            yield from order.split(size)

    def _can_reuse_sampling_logprobs(self, rollout: RolloutBatch) -> bool:
        """Old log-probs (and values) can come from sampling when nothing needs a policy forward.

        The shared value head's values must have been recorded too (`record_values`), and the
        exact KL needs the policy's logits, which sampling does not keep.
        """
        values_known = self.critic is not None or rollout.policy_values is not None
        return (
            rollout.policy_logprobs is not None
            and values_known
            and self.config.kl_estimator != "full"
        )

    @property
    def records_values_while_sampling(self) -> bool:
        """Whether rollouts should record the shared value head's values (`record_values`)."""
        return self.critic is None and self.config.kl_estimator != "full"

    def critic_values(self, ids: Tensor, mask: Tensor, context_length: int) -> Tensor:
        """The separate critic's value of each response position. Shape (B, A), fp32."""
        assert self.critic is not None
        positions = position_ids_from_mask(mask)
        values = self.critic(input_ids=ids, attention_mask=mask, position_ids=positions)
        return values[:, context_length - 1 : -1].float()

    def forward_response(
        self, ids: Tensor, mask: Tensor, context_length: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One policy forward (and a critic forward when separate) over query + response.

        Returns:
            (logits (B, A, V), log-probs of the response tokens at the sampling temperature
            (B, A), values (B, A)); position t of each scores response token t.
        """
        positions = position_ids_from_mask(mask)
        keep = ids.shape[1] - context_length + 1
        out = self.policy(
            input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep
        )
        logits = out.logits[:, :-1]
        logprobs = token_logprobs(logits, ids[:, context_length:], self.config.temperature)
        if self.critic is None:
            values = out.values[:, context_length - 1 : -1]
        else:
            values = self.critic_values(ids, mask, context_length)
        return logits, logprobs, values.float()

    def minibatch_loss(self, exp: Experience) -> tuple[Tensor, dict[str, Tensor]]:
        """Step 5 for one minibatch: the loss to backpropagate and detached statistics."""
        cfg = self.config
        ids, mask, ctx = exp.input_ids, exp.attention_mask, exp.context_length
        out = self.policy(
            input_ids=ids,
            attention_mask=mask,
            position_ids=position_ids_from_mask(mask),
            logits_to_keep=ids.shape[1] - ctx + 1,
        )
        logits = out.logits[:, :-1]
        logprobs = token_logprobs(logits, ids[:, ctx:], cfg.temperature)
        if self.critic is None:
            values = out.values[:, ctx - 1 : -1]
        else:
            values = self.critic_values(ids, mask, ctx)
        m = exp.response_mask
        policy = ppo_policy_loss(logprobs, exp.old_logprobs, exp.advantages, m, cfg.clip_eps)
        value = ppo_value_loss(values, exp.old_values, exp.returns, m, cfg.value_clip)
        # Accumulated minibatches add up to one step: each contributes its share.
        loss = (policy.loss + cfg.vf_coef * value.loss) / cfg.gradient_accumulation_steps
        skipped = policy.ratio_mean > cfg.ratio_threshold
        if skipped:  # a broken minibatch: no update from it (classic TRL ratio_threshold)
            loss = loss * 0.0
        with torch.no_grad():
            scaled = logits.float()  # no copy for fp32 logits
            scaled = scaled if cfg.temperature == 1.0 else scaled / cfg.temperature
            entropy = masked_mean(entropy_from_logits(scaled), m)
            explained = _explained_variance(values, exp.returns, m)
        stats = {
            "train/policy_loss": policy.loss.detach(),
            "train/value_loss": value.loss.detach(),
            "train/loss": loss.detach(),
            "train/clipfrac": policy.clipfrac,
            "train/value_clipfrac": value.clipfrac,
            "train/approx_kl": policy.approx_kl,
            "train/policy_kl": policy.policy_kl,
            "train/ratio": policy.ratio_mean,
            "train/entropy": entropy,
            "train/value_explained_var": explained,
            "train/skipped_minibatch": skipped.float(),
        }
        return loss, stats

    def optimise(
        self,
        exp: Experience,
        backward: Callable[[Tensor], None],
        step: Callable[[], None],
        generator: torch.Generator | None = None,
    ) -> list[dict[str, Tensor]]:
        """Step 5: PPO epochs; `backward(loss)` and `step()` come from the caller (Lightning's
        manual optimisation, or plain torch in the custom-loop API)."""
        all_stats = []
        per_epoch = self.config.num_minibatches
        accumulate = self.config.gradient_accumulation_steps
        for i, rows in enumerate(self.minibatches(exp.input_ids.shape[0], generator)):
            loss, stats = self.minibatch_loss(exp.select(rows))
            backward(loss)
            if (i + 1) % accumulate == 0:
                step()
            all_stats.append(stats)
            end_of_epoch = (i + 1) % per_epoch == 0
            target = self.config.target_kl
            if (
                end_of_epoch
                and target is not None
                and _mean_over_ranks(stats["train/policy_kl"]) > 1.5 * target
            ):
                break  # early stop (classic TRL): the policy moved too far from the rollout
        return all_stats

    def update_kl_controller(self, exp: Experience) -> Tensor:
        """Step 6: feed the mean per-sequence KL (sum over tokens) to the controller."""
        sequence_kl = (
            (exp.old_logprobs - exp.ref_logprobs).masked_fill(~exp.response_mask, 0.0).sum(1)
        )
        sequence_kl = gather_rows(sequence_kl)[0]  # the controller sees the whole batch
        mean_kl = sequence_kl.mean()
        self.kl_controller.update(float(mean_kl), sequence_kl.shape[0])
        return mean_kl

    def state_dict(self) -> dict:
        return {
            "kl_controller": self.kl_controller.state_dict(),
            "score_moments": self.score_moments.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.kl_controller.load_state_dict(state["kl_controller"])
        self.score_moments.load_state_dict(state["score_moments"])


def _whiten_keep_mean(x: Tensor, mask: Tensor) -> Tensor:
    return masked_whiten(x, mask, keep_mean=True)


def _mean_over_ranks(x: Tensor) -> float:
    """The mean of a per-rank scalar over ranks: decisions every rank must take alike."""
    return float(all_reduce_sum(x.detach().float().reshape(1))) / rank_and_world()[1]


def iteration_metrics(
    rollout: RolloutBatch,
    scores: Tensor,
    stats: list[dict[str, Tensor]],
    mean_kl: Tensor,
    kl_coef: float,
    elapsed: float,
) -> dict[str, Tensor]:
    """The per-iteration metrics (DESIGN.md names): rollout statistics + minibatch means."""
    scores = scores.float()
    lengths = rollout.response_mask.sum(1).float()
    metrics = {
        "rollout/reward_mean": scores.mean(),
        "rollout/reward_std": scores.std() if scores.numel() > 1 else torch.tensor(0.0),
        "rollout/kl": mean_kl,
        "rollout/response_length": lengths.mean(),
        "rollout/eos_rate": rollout.contains_stop.float().mean(),
        "rollout/distinct_2": torch.tensor(
            distinct_n(rollout.response_ids, rollout.response_mask, 2)
        ),
        "kl_coef": torch.tensor(kl_coef),
        "perf/samples_per_s": torch.tensor(len(rollout) / max(elapsed, 1e-9)),
        "perf/tokens_per_s": torch.tensor(float(rollout.attention_mask.sum()) / max(elapsed, 1e-9)),
    }
    for key in stats[0] if stats else ():
        metrics[key] = torch.stack([s[key].float() for s in stats]).nanmean()
    return {k: v.detach().float().cpu() for k, v in metrics.items()}


def distinct_n(ids: Tensor, mask: Tensor, n: int = 2) -> float:
    """Distinct n-grams / all n-grams over the real tokens of a batch (1.0: no repetition).

    A collapse of the policy onto a few phrases shows up here before it shows in the reward.

    Args:
        ids: Token ids. Shape (B, A).
        mask: True at real tokens. Shape (B, A).
    """
    grams = [
        tuple(row[i : i + n])
        for row in (r[m].tolist() for r, m in zip(ids, mask, strict=True))
        for i in range(len(row) - n + 1)
    ]
    return len(set(grams)) / len(grams) if grams else 0.0


def _explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    """1 - Var(returns - values) / Var(returns) over real tokens (1 is a perfect critic)."""
    if int(mask.sum()) < 2:
        return torch.tensor(float("nan"))
    var_returns = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    residual = returns - values
    var_residual = masked_mean((residual - masked_mean(residual, mask)) ** 2, mask)
    return 1.0 - var_residual / var_returns.clamp_min(1e-8)
