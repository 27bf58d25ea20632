"""GRPO and RLOO on tensors and models: several samples per prompt, a baseline from the group.

One iteration, given prompts (each repeated `group_size` times, prompt-major):

1. rollout and scores;
2. old log-probs from the policy and reference log-probs (no grad);
3. advantages: GRPO normalises each group's scores; RLOO subtracts the leave-one-out mean of
   the KL-penalised scores (sequence-level KL, k1);
4. `num_iterations` passes over minibatches: GRPO's clipped token loss (+ beta * k3 to the
   reference) aggregated as grpo/bnpo/dr_grpo/dapo; RLOO's clipped sequence-level loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from rlhf_lightning.distributed import all_reduce_sum, over_global_batch, rank_and_world
from rlhf_lightning.functional import (
    aggregate_loss,
    group_advantages,
    grpo_token_loss,
    masked_mean,
    position_ids_from_mask,
    rloo_advantages,
    rloo_sequence_loss,
    token_logprobs,
)
from rlhf_lightning.models.logits import causal_lm_logits
from rlhf_lightning.models.reference import Reference
from rlhf_lightning.rollout import RolloutBatch


@dataclass
class GroupRLConfig:
    """`stage.*` settings of GRPO and RLOO.

    Attributes:
        algorithm: `grpo` or `rloo`.
        group_size: samples per prompt (GRPO's G, RLOO's k); at least 2.
        num_iterations: optimisation passes over each rollout (GRPO's mu).
        num_minibatches: minibatches per pass; the rollout must split into them evenly.
        clip_eps_low / clip_eps_high: ratio clip range (RLOO uses the low one both ways).
        beta: KL weight; GRPO puts k3 in the loss (0 holds no reference), RLOO subtracts
            beta * sequence KL from the score.
        scale_rewards: GRPO advantage scaling: group, batch or none (Dr. GRPO).
        loss_aggregation: GRPO loss reduction: grpo, bnpo, dr_grpo or dapo.
        mask_truncated: drop completions that never stopped from the loss.
        normalize_advantages: RLOO: whiten the advantages over the batch.
        max_grad_norm: gradient clipping; None disables.
        temperature: sampling temperature, also applied to the log-probs.
        max_new_tokens: completion budget (dr_grpo divides by it).
    """

    algorithm: Literal["grpo", "rloo"] = "grpo"
    group_size: int = 4
    num_iterations: int = 1
    num_minibatches: int = 1
    clip_eps_low: float = 0.2
    clip_eps_high: float = 0.2
    beta: float = 0.04
    scale_rewards: Literal["group", "batch", "none"] = "group"
    loss_aggregation: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = "dapo"
    mask_truncated: bool = False
    normalize_advantages: bool = False
    max_grad_norm: float | None = 1.0
    temperature: float = 1.0
    max_new_tokens: int = 32


class GroupExperience(NamedTuple):
    """A scored group rollout. Shapes: (N, T), (N, A) or (N,) with N = prompts x group_size."""

    input_ids: Tensor
    attention_mask: Tensor
    context_length: int
    loss_mask: Tensor
    old_logprobs: Tensor
    ref_logprobs: Tensor | None
    advantages: Tensor
    sequence_kl: Tensor

    def select(self, rows: Tensor) -> GroupExperience:
        return GroupExperience(*(x[rows] if isinstance(x, Tensor) else x for x in self))  # type: ignore[arg-type]


class GroupCore:
    """GRPO / RLOO steps 2-4 over a causal LM policy and an optional reference."""

    def __init__(
        self, policy: nn.Module, reference: Reference | None, config: GroupRLConfig
    ) -> None:
        if config.group_size < 2:
            raise ValueError(
                "stage.group_size must be at least 2: the baseline comes from the group."
            )
        if config.beta > 0 and reference is None:
            raise ValueError("stage.beta > 0 needs a reference model.")
        self.policy = policy
        self.reference = reference
        self.config = config

    def response_logprobs(
        self,
        model_logits: Callable[[Tensor, Tensor, int], Tensor],
        ids: Tensor,
        mask: Tensor,
        ctx: int,
    ) -> Tensor:
        # Logits at positions ctx-1 .. T-1 only: the LM head skips the prompt.
        logits = model_logits(ids, mask, ids.shape[1] - ctx + 1)[:, :-1]
        return token_logprobs(logits, ids[:, ctx:], self.config.temperature)

    def policy_logits(self, ids: Tensor, mask: Tensor, logits_to_keep: int = 0) -> Tensor:
        return causal_lm_logits(
            self.policy,
            logits_to_keep,
            input_ids=ids,
            attention_mask=mask,
            position_ids=position_ids_from_mask(mask),
            use_cache=False,  # a training forward: no KV cache to fill
        )

    @torch.no_grad()
    def make_experience(self, rollout: RolloutBatch, scores: Tensor) -> GroupExperience:
        """Steps 2-3: old/ref log-probs, the loss mask and group-relative advantages."""
        cfg = self.config
        ids, mask, ctx = rollout.input_ids, rollout.attention_mask, rollout.context_length
        if rollout.policy_logprobs is not None:  # recorded while sampling: no forward needed
            old = rollout.policy_logprobs.to(ids.device)
        else:
            old = self.response_logprobs(self.policy_logits, ids, mask, ctx)
        ref = None
        if self.reference is not None:
            ref = self.response_logprobs(
                lambda i, m, k: self.reference.reference_logits(
                    i, m, position_ids_from_mask(m), logits_to_keep=k
                ),
                ids,
                mask,
                ctx,
            )
        response_mask = rollout.response_mask
        sequence_kl = torch.zeros_like(scores)
        if ref is not None:
            sequence_kl = torch.where(response_mask, old - ref, 0.0).sum(1)  # k1, sequence level
        if cfg.algorithm == "grpo":
            # Groups never span ranks (each rank samples whole groups); a batch-wide scale
            # is taken over every rank's rows.
            advantages = over_global_batch(
                lambda x: group_advantages(x, cfg.group_size, cfg.scale_rewards), scores
            )
        else:
            penalised = scores - cfg.beta * sequence_kl
            advantages = over_global_batch(
                lambda x: rloo_advantages(x, cfg.group_size, cfg.normalize_advantages), penalised
            )
        loss_mask = response_mask
        if cfg.mask_truncated:
            loss_mask = response_mask & rollout.contains_stop[:, None]
        return GroupExperience(ids, mask, ctx, loss_mask, old, ref, advantages, sequence_kl)

    def minibatch_loss(
        self, exp: GroupExperience, num_items: float
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Step 4 for one minibatch."""
        cfg = self.config
        logp = self.response_logprobs(
            self.policy_logits, exp.input_ids, exp.attention_mask, exp.context_length
        )
        m = exp.loss_mask
        if cfg.algorithm == "grpo":
            per_token = grpo_token_loss(
                logp,
                exp.old_logprobs,
                exp.advantages,
                exp.ref_logprobs if cfg.beta > 0 else None,
                m,
                cfg.clip_eps_low,
                cfg.clip_eps_high,
                cfg.beta,
            )
            loss = aggregate_loss(per_token, m, cfg.loss_aggregation, cfg.max_new_tokens, num_items)
            ratio = torch.exp(torch.where(m, logp - exp.old_logprobs, 0.0))
            clipped = ((ratio < 1 - cfg.clip_eps_low) | (ratio > 1 + cfg.clip_eps_high)) & m
            clipfrac = clipped.sum() / m.sum().clamp_min(1)
            ratio_mean = masked_mean(ratio, m) if m.any() else torch.tensor(1.0)
        else:
            seq = torch.where(m, logp, 0.0).sum(1)
            old_seq = torch.where(m, exp.old_logprobs, 0.0).sum(1)
            out = rloo_sequence_loss(seq, old_seq, exp.advantages, cfg.clip_eps_low)
            loss, clipfrac, ratio_mean = out.loss, out.clipfrac, out.ratio_mean
        stats = {
            "train/loss": loss.detach(),
            "train/clipfrac": clipfrac.detach(),
            "train/ratio": ratio_mean.detach(),
        }
        return loss, stats

    def optimise(
        self,
        exp: GroupExperience,
        backward: Callable[[Tensor], None],
        step: Callable[[], None],
        generator: torch.Generator | None = None,
    ) -> list[dict[str, Tensor]]:
        """Step 4: `num_iterations` passes over shuffled minibatches, one optimizer step each."""
        cfg = self.config
        n = exp.input_ids.shape[0]
        if n % cfg.num_minibatches:
            raise ValueError(
                f"a rollout of {n} completions does not split into {cfg.num_minibatches} minibatches."
            )
        # dapo normalises by the tokens of the whole generation batch (ALGORITHMS.md §4); each
        # minibatch is its own optimizer step here, so it takes its share of that count.
        # Data parallel: each rank divides by its share of the global count, so the gradient
        # DDP averages is the one of the whole batch.
        _, world = rank_and_world()
        num_items = float(all_reduce_sum(exp.loss_mask.sum()).clamp_min(1)) / world
        all_stats = []
        for _ in range(cfg.num_iterations):
            for rows in torch.randperm(n, generator=generator).split(n // cfg.num_minibatches):
                loss, stats = self.minibatch_loss(exp.select(rows), num_items / cfg.num_minibatches)
                backward(loss)
                step()
                all_stats.append(stats)
        return all_stats
