"""The online-RL algorithm on tensors and models, shared by the Lightning stage and the custom
loop API (``PPOTrainer``): a scored rollout in, optimizer updates out.

One iteration, given a rollout (prompt-major groups of ``group_size`` responses) and its scores:

1. shape the scores (length terms, missing-stop penalty, running scaling / normalisation,
   clipping) and, with dynamic sampling, leave groups whose scores are all equal out of the
   loss;
2. old log-probs and values (recorded while sampling when the rollout carries them: no second
   policy forward; an engine's log-probs, see ``Experience.old_from_sampler``) and reference
   log-probs (no grad);
3. the KL placement turns scores into token and sequence rewards;
4. the advantage estimator turns those into advantages (and returns), over the global batch;
5. ``epochs`` passes over shuffled minibatches: policy loss (+ the KL term when it sits in the
   loss), aggregated, plus the critic's value loss;
6. the KL controller's update from the batch's mean sequence KL.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from rlhf_lightning.distributed import all_reduce_sum, gather_rows, over_global_rows, rank_and_world
from rlhf_lightning.errors import ConfigError
from rlhf_lightning.functional import (
    AdaptiveKLController,
    AdvantageInputs,
    AggregationContext,
    FixedKLController,
    explained_variance,
    full_kl,
    logprob_gap,
    masked_mean_or,
    place_turn_rewards,
    ppo_value_loss,
    sequence_kl,
    truncated_importance_weights,
)
from rlhf_lightning.models.reference import Reference
from rlhf_lightning.modules.online.algorithm import RLAlgorithm
from rlhf_lightning.modules.online.shaping import ScoreShaper
from rlhf_lightning.rollout import RolloutBatch, critic_values, packing_error, score_tokens


class Experience(NamedTuple):
    """A scored rollout with everything the passes need. Shapes (B, T), (B, A) or (B,)."""

    input_ids: Tensor
    attention_mask: Tensor
    context_length: int
    response_mask: Tensor  # the tokens the policy sampled (a multi-turn rollout's action mask)
    loss_mask: Tensor  # the response mask, minus never-stopped responses with mask_truncated
    # and rows of uninformative groups with dynamic_sampling
    kept: Tensor  # (B,) False on rows dynamic sampling dropped
    old_logprobs: Tensor
    ref_logprobs: Tensor | None
    old_values: Tensor | None
    advantages: Tensor  # (B, A) per token, or (B,) per response
    returns: Tensor | None
    scores: Tensor  # shaped
    sequence_kl: Tensor  # k1 estimate of each response's KL to the reference (0 without one)
    sampler_logprobs: Tensor | None = None  # an inference engine's, when it sampled
    # The engine's log-probs are the old log-probs (no recomputing forward): the sampler-trainer
    # gap is then measured on the first minibatch, whose forward still runs the sampling policy.
    old_from_sampler: bool = False

    def select(self, rows: Tensor) -> Experience:
        return Experience(
            *(x[rows] if isinstance(x, Tensor) else x for x in self)  # type: ignore[arg-type]
        )


class OnlineRLCore:
    """Steps 1-6 over a policy, an optional reference and an optional separate critic.

    Args:
        policy: a causal LM, or a ``CausalLMWithValueHead`` when the critic is its value head.
        reference: the frozen reference; None when the algorithm holds none (``kl_coef`` 0).
        algorithm: the composed algorithm.
        temperature: the sampling temperature; every log-prob is computed at it.
        max_new_tokens: the response budget (Dr. GRPO's constant).
        critic: a separate value model (``ValueModel``); None uses the policy's value head if
            it has one.
        packing: every policy, reference and critic forward runs padding-free (the real tokens
            packed into fewer rows, ``functional/packing.py``): the same numbers as the padded
            forward, so every loss and its normalisation is unchanged.
    """

    def __init__(
        self,
        policy: nn.Module,
        reference: Reference | None,
        algorithm: RLAlgorithm,
        temperature: float = 1.0,
        max_new_tokens: int = 32,
        critic: nn.Module | None = None,
        packing: bool = False,
    ) -> None:
        self.policy = policy
        self.packing = packing
        self._packing_checked = False
        self.reference = reference
        self.algorithm = algorithm
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        self.critic = critic
        self.value_head = critic is None and hasattr(policy, "v_head")
        if critic is not None and hasattr(policy, "v_head"):
            # The separate critic gives every value; the policy's own head takes no part.
            policy.v_head.requires_grad_(False)
        if algorithm.needs_reference and reference is None:
            raise ValueError("algorithm.kl_coef > 0 needs a reference model.")
        self.kl_controller = (
            AdaptiveKLController(algorithm.kl_coef, algorithm.kl_target, algorithm.kl_horizon)
            if algorithm.adaptive_kl
            else FixedKLController(algorithm.kl_coef)
        )
        self.shaper = ScoreShaper(
            algorithm.shaping,  # type: ignore[arg-type]
            max_new_tokens,
            algorithm.group_size,
            algorithm.dynamic_sampling,
        )

    @property
    def has_critic(self) -> bool:
        return self.critic is not None or self.value_head

    @property
    def records_values_while_sampling(self) -> bool:
        """Whether rollouts should record the shared value head's values (`record_values`)."""
        return self.value_head and not self.algorithm.kl.needs_logits

    @torch.no_grad()
    def make_experience(self, rollout: RolloutBatch, scores: Tensor) -> Experience:
        """Steps 1-4: shaped scores, old/ref log-probs and values, rewards, advantages."""
        algo = self.algorithm
        ids, mask, ctx = rollout.input_ids, rollout.attention_mask, rollout.context_length
        self._check_packing(ids, mask, ctx)
        # The tokens the policy sampled: a multi-turn rollout's environment messages are
        # attended to but are no decisions (no loss, no KL, no value).
        response_mask = rollout.policy_token_mask
        scores = self.shaper(scores.to(ids.device), rollout.contains_stop, response_mask.sum(1))
        logits = None
        reused = self._can_reuse_sampling_logprobs(rollout)
        if reused:
            # Recorded while sampling: the policy forward would only recompute them.
            old_logprobs = rollout.policy_logprobs.to(ids.device)  # type: ignore[union-attr]
            values = rollout.policy_values if self.value_head else None
        else:
            scored = self._score_policy(
                ids, mask, ctx, response_mask, keep_logits=algo.kl.needs_logits
            )
            old_logprobs, values, logits = scored.logprobs, scored.values, scored.logits
        if self.critic is not None:
            values = critic_values(self.critic, ids, mask, ctx, packed=self.packing)
        if values is not None:
            values = torch.where(response_mask, values.to(ids.device), 0.0)
        ref_logprobs, full = None, None
        if self.reference is not None:
            ref = score_tokens(
                self.reference, ids, mask, ctx, temperature=self.temperature,
                keep_logits=algo.kl.needs_logits, packed=self.packing, only=response_mask,
            )  # fmt: skip
            ref_logprobs = ref.logprobs
            if algo.kl.needs_logits:
                t = self.temperature
                full = full_kl(logits.float() / t, ref.logits.float() / t)  # type: ignore[union-attr]
        kl_coef = self.kl_controller.value
        rewards = algo.kl.rewards(scores, old_logprobs, ref_logprobs, response_mask, kl_coef, full)
        token_rewards = rewards.token_rewards
        if rollout.turn_rewards is not None:  # each turn's reward on the turn that earned it
            turn_rewards = rollout.turn_rewards.to(ids.device)
            token_rewards = place_turn_rewards(token_rewards, turn_rewards, response_mask)
        inputs = AdvantageInputs(
            rewards.sequence_rewards, token_rewards, values, response_mask, algo.group_size
        )
        advantages = over_global_rows(algo.advantage, inputs)
        loss_mask = response_mask
        if algo.mask_truncated:
            loss_mask = response_mask & rollout.contains_stop[:, None]
        kept = self.shaper.informative_rows(scores)
        loss_mask = loss_mask & kept[:, None]
        return Experience(
            input_ids=ids,
            attention_mask=mask,
            context_length=ctx,
            response_mask=response_mask,
            loss_mask=loss_mask,
            kept=kept,
            old_logprobs=old_logprobs,
            ref_logprobs=ref_logprobs,
            old_values=values,
            advantages=advantages.advantages,
            returns=advantages.returns,
            scores=scores,
            sequence_kl=(
                sequence_kl(old_logprobs, ref_logprobs, response_mask)
                if ref_logprobs is not None
                else torch.zeros_like(scores)
            ),
            sampler_logprobs=None if rollout.logprobs is None else rollout.logprobs.to(ids.device),
            old_from_sampler=reused and rollout.logprobs is not None,
        )

    def _check_packing(self, ids: Tensor, mask: Tensor, ctx: int) -> None:
        """Once: packed sequences must not see each other in this model (``packing_error``)."""
        if not self.packing or self._packing_checked or ids.shape[0] < 2:
            return
        error = packing_error(self.policy, ids, mask, ctx)
        fp32 = next(self.policy.parameters()).dtype == torch.float32
        if error > (1e-3 if fp32 else 5e-2):
            raise ConfigError(
                f"stage.packing=true: {type(self.policy).__name__} scores two packed sequences "
                f"{error:.2g} nats away from the padded forward, so its attention does not "
                "separate them by their position ids. Fix: stage.packing=false."
            )
        self._packing_checked = True

    def _can_reuse_sampling_logprobs(self, rollout: RolloutBatch) -> bool:
        """Old log-probs (and the value head's values) can come from sampling when nothing else
        needs a policy forward: the exact KL needs the policy's logits, which sampling drops,
        and ``importance_cap`` weighs the trainer's own old log-probs against an engine's
        (``rollout.logprobs``, set only when an engine sampled), so it needs them recomputed."""
        values_known = not self.value_head or rollout.policy_values is not None
        corrects_engine = self.algorithm.importance_cap is not None and rollout.logprobs is not None
        return (
            rollout.policy_logprobs is not None
            and values_known
            and not self.algorithm.kl.needs_logits
            and not corrects_engine
        )

    def _score_policy(self, ids: Tensor, mask: Tensor, ctx: int, only: Tensor, **kwargs: bool):
        # The LM head only where a sampled token is scored (`only`): every other response
        # position is padding or, in a multi-turn episode, the environment's (most of it).
        return score_tokens(
            self.policy, ids, mask, ctx, temperature=self.temperature, values=self.value_head,
            packed=self.packing, only=only, **kwargs,
        )  # fmt: skip

    def minibatch_loss(
        self, exp: Experience, context: AggregationContext, first: bool = False
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Step 5 for one minibatch: the loss to backpropagate and detached statistics.

        ``first``: no update has been made since the rollout was scored, so this forward is
        the old policy's; with the engine's log-probs as the old ones it measures
        ``rollout/logprob_gap`` (NaN on the other minibatches: their mean is this one's).
        """
        algo = self.algorithm
        ids, mask, ctx, m = exp.input_ids, exp.attention_mask, exp.context_length, exp.loss_mask
        scored = self._score_policy(ids, mask, ctx, exp.response_mask, entropy=algo.log_entropy)
        logprobs = scored.logprobs
        gap = None
        if exp.old_from_sampler and exp.sampler_logprobs is not None:
            gap = torch.tensor(float("nan"), device=logprobs.device)
            if first and bool(exp.response_mask.any()):
                gap = logprob_gap(logprobs.detach(), exp.sampler_logprobs, exp.response_mask)
        policy = algo.policy_loss(logprobs, exp.old_logprobs, exp.advantages, m)
        losses = policy.losses
        importance = None
        if algo.importance_cap is not None and exp.sampler_logprobs is not None:
            # The sampler's distribution is not quite the trainer's: truncated importance
            # sampling reweights each token's loss by min(pi_old / pi_sampler, cap).
            importance = truncated_importance_weights(
                exp.old_logprobs, exp.sampler_logprobs, m, algo.importance_cap
            )
            if losses.ndim != 2:
                raise ValueError(
                    "algorithm.importance_cap reweights tokens, but this policy loss is per "
                    "sequence. Fix: importance_cap=null, or a token-level policy loss."
                )
            losses = losses * importance.weights
        kl_term = algo.kl.loss(logprobs, exp.ref_logprobs, m, self.kl_controller.value)
        if kl_term is not None:
            if losses.ndim != 2:
                raise ValueError(
                    "the KL term in the loss is per token, but this policy loss is per "
                    "sequence. Fix: kl=in_reward, or a token-level policy loss."
                )
            losses = torch.where(m, losses + kl_term, 0.0)
        policy_loss = algo.aggregation(losses, m, context)
        loss = policy_loss
        stats = {
            "train/policy_loss": policy_loss.detach(),
            "train/clipfrac": policy.clipfrac,
            "train/approx_kl": policy.approx_kl,
            "train/policy_kl": policy.policy_kl,
            "train/ratio": policy.ratio_mean,
        }
        if algo.value_loss is not None:
            values = (
                scored.values
                if self.critic is None
                else critic_values(self.critic, ids, mask, ctx, packed=self.packing)
            )
            value = ppo_value_loss(values, exp.old_values, exp.returns, m, algo.value_loss.clip)  # type: ignore[arg-type, union-attr]
            loss = policy_loss + algo.value_loss.coef * value.loss  # type: ignore[union-attr]
            with torch.no_grad():
                explained = explained_variance(values, exp.returns, m)  # type: ignore[arg-type]
            stats |= {
                "train/value_loss": value.loss.detach(),
                "train/value_clipfrac": value.clipfrac,
                "train/value_explained_var": explained,
            }
        # Accumulated minibatches add up to one step: each contributes its share.
        loss = loss / algo.gradient_accumulation_steps
        if algo.ratio_threshold is not None:
            skipped = policy.ratio_mean > algo.ratio_threshold
            # A broken minibatch: no update from it (classic TRL ratio_threshold). A multiply,
            # not an `if`, so deciding needs no host read.
            loss = loss * (~skipped).to(loss.dtype)
            stats["train/skipped_minibatch"] = skipped.float()
        if importance is not None:
            stats["train/importance_clipfrac"] = importance.clipfrac
        if gap is not None:
            stats["rollout/logprob_gap"] = gap
        if scored.entropy is not None:
            stats["train/entropy"] = masked_mean_or(scored.entropy, m)
        stats["train/loss"] = loss.detach()
        return loss, stats

    def optimise(
        self,
        exp: Experience,
        backward: Callable[[Tensor], None],
        step: Callable[[], None],
        generator: torch.Generator | None = None,
    ) -> list[dict[str, Tensor]]:
        """Step 5: ``epochs`` passes over shuffled minibatches; ``backward(loss)`` and ``step()``
        come from the caller (Lightning's manual optimisation, or plain torch)."""
        algo = self.algorithm
        n = exp.input_ids.shape[0]
        if algo.dynamic_sampling and not bool(all_reduce_sum(exp.kept.sum())):
            return []  # no group on any process carries a signal: no update from this rollout
        if n % algo.num_minibatches:
            raise ValueError(
                f"a rollout of {n} responses does not split into algorithm.num_minibatches="
                f"{algo.num_minibatches}. Fix: make the batch (x group_size) a multiple of it."
            )
        # A token mean over the whole generation batch (DAPO): each minibatch is its own
        # optimizer step, so it divides by its share of the batch's token count; with data
        # parallelism each rank divides by its share of the global count, so the gradient DDP
        # averages is that of the whole batch.
        _, world = rank_and_world()
        num_items = float(all_reduce_sum(exp.loss_mask.sum()).clamp_min(1)) / world
        context = AggregationContext(num_items / algo.num_minibatches, self.max_new_tokens)
        all_stats: list[dict[str, Tensor]] = []
        done = 0
        for _ in range(algo.epochs):
            for rows in torch.randperm(n, generator=generator).split(n // algo.num_minibatches):
                rows = trained_rows(rows, exp.kept)
                loss, stats = self.minibatch_loss(exp.select(rows), context, first=done == 0)
                backward(loss)
                done += 1
                if done % algo.gradient_accumulation_steps == 0:
                    step()
                all_stats.append(stats)
            if algo.target_kl is not None and _mean_over_ranks(stats["train/policy_kl"]) > (
                1.5 * algo.target_kl
            ):
                break  # early stop (classic TRL): the policy moved too far from the rollout
        return all_stats

    def update_kl_controller(self, exp: Experience) -> Tensor:
        """Step 6: feed the batch's mean sequence KL to the controller; returns that mean."""
        sequence_kl = gather_rows(exp.sequence_kl)[0]  # the controller sees the whole batch
        mean_kl = sequence_kl.mean()
        self.kl_controller.update(float(mean_kl), sequence_kl.shape[0])
        return mean_kl

    def state_dict(self) -> dict:
        return {
            "kl_controller": self.kl_controller.state_dict(),
            "score_moments": self.shaper.moments.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.kl_controller.load_state_dict(state["kl_controller"])
        self.shaper.moments.load_state_dict(state["score_moments"])


def trained_rows(rows: Tensor, kept: Tensor) -> Tensor:
    """The rows of one minibatch that go through the forward and backward: those dynamic
    sampling kept. Dropped rows have an empty loss mask and send no gradient, so leaving them
    out saves their passes (about 40% of GRPO's rows on the arithmetic recipe) and makes every
    aggregation average over the informative rows, as a batch of only those would. A minibatch
    with none kept keeps its rows: its zero loss still reaches every parameter, so each process
    takes part in the same gradient reductions.

    Args:
        rows: Indices into the batch. Shape (M,).
        kept: Bool, False on dropped rows. Shape (B,).

    Returns:
        Indices. Shape (M',), M' <= M.
    """
    mine = rows[kept[rows]]
    return mine if mine.numel() else rows


def _mean_over_ranks(x: Tensor) -> float:
    """The mean of a per-rank scalar over ranks: decisions every rank must take alike."""
    return float(all_reduce_sum(x.detach().float().reshape(1))) / rank_and_world()[1]
