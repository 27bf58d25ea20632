"""Training losses: SFT, pairwise reward model, PPO, DPO, GRPO, RLOO.

Each loss returns a NamedTuple whose first field is the differentiable scalar loss and whose
other fields are detached statistics for logging. Inputs that are constants of the objective
(old log-probabilities, advantages, returns, reference log-probabilities) are detached here, so a
caller cannot leak gradient into them by accident.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from rlhf_lightning.functional.kl import kl_penalty
from rlhf_lightning.functional.logprobs import shifted_token_logprobs
from rlhf_lightning.functional.masked import masked_mean, masked_sum


class SFTLossOutput(NamedTuple):
    loss: Tensor
    """Scalar: mean negative log-likelihood over the target tokens."""
    num_tokens: Tensor
    """Scalar long: how many tokens the mean ran over (weight for cross-batch averaging)."""


class PairwiseLossOutput(NamedTuple):
    loss: Tensor
    """Scalar Bradley-Terry loss (plus the centering term when asked)."""
    accuracy: Tensor
    """Fraction of pairs with ``r_chosen > r_rejected`` (ties count as wrong)."""
    margin_mean: Tensor
    """Mean of ``r_chosen - r_rejected``."""
    tie_rate: Tensor
    """Fraction of pairs with ``r_chosen == r_rejected`` (TRL's accuracy drops these)."""


class PolicyLossOutput(NamedTuple):
    loss: Tensor
    """Scalar clipped surrogate loss."""
    clipfrac: Tensor
    """Fraction of tokens where the clipped branch is the active one."""
    approx_kl: Tensor
    """``0.5 · mean((logp - old_logp)²)``."""
    policy_kl: Tensor
    """``mean(old_logp - logp)``, the quantity TRL's early stopping compares with target_kl."""
    ratio_mean: Tensor
    """Mean importance ratio; TRL skips the minibatch when it exceeds ``ratio_threshold``."""


class ValueLossOutput(NamedTuple):
    loss: Tensor
    """Scalar clipped value loss (already including the 0.5 factor, not ``vf_coef``)."""
    clipfrac: Tensor
    """Fraction of tokens where the clipped prediction gives the larger error."""


class DPOLossOutput(NamedTuple):
    loss: Tensor
    """Scalar DPO loss, mean over pairs."""
    chosen_rewards: Tensor
    """``β (π_c - ref_c)`` per pair. Shape (B,)."""
    rejected_rewards: Tensor
    """``β (π_r - ref_r)`` per pair. Shape (B,)."""
    accuracy: Tensor
    """Fraction of pairs with ``chosen_rewards > rejected_rewards``."""
    margin: Tensor
    """Mean of ``chosen_rewards - rejected_rewards``."""


class SequenceLossOutput(NamedTuple):
    loss: Tensor
    """Scalar clipped sequence-level surrogate loss."""
    clipfrac: Tensor
    """Fraction of sequences where the clipped branch is the active one."""
    ratio_mean: Tensor
    """Mean sequence importance ratio."""


def sft_loss(logits: Tensor, input_ids: Tensor, loss_mask: Tensor) -> SFTLossOutput:
    """Next-token cross-entropy over the target tokens, token-weighted.

    ``loss_mask[b, t]`` True means token t is a training target; it is predicted by the logits at
    t-1, so the mask used is ``loss_mask[:, 1:]`` (ALGORITHMS.md §5.1). A mask at t = 0 is
    ignored: the first token has no prefix.

    Args:
        logits: Model output. Shape (B, T, V).
        input_ids: Token ids. Shape (B, T).
        loss_mask: Bool, True = target token (e.g. response, not prompt or pad). Shape (B, T).

    Returns:
        :class:`SFTLossOutput`.

    Raises:
        ValueError: If no token is a target.
    """
    target_mask = loss_mask[:, 1:]
    if logits.dtype in (torch.float32, torch.float64):
        # Fused log-softmax + NLL: the same numbers as log_softmax + gather, with a cheaper
        # backward (one (B, T, V) gradient pass instead of two; ~25% of the loss's time).
        shifted = logits[:, :-1]
        nll = F.cross_entropy(
            shifted.reshape(-1, shifted.shape[-1]), input_ids[:, 1:].reshape(-1), reduction="none"
        ).view(target_mask.shape)
    else:  # half precision: the row-wise fp32 upcast of shifted_token_logprobs
        nll = -shifted_token_logprobs(logits, input_ids)
    return SFTLossOutput(masked_mean(nll, target_mask), target_mask.sum().detach())


def pairwise_loss(
    r_chosen: Tensor,
    r_rejected: Tensor,
    margin: Tensor | None = None,
    center_coef: float | None = None,
) -> PairwiseLossOutput:
    """Bradley-Terry reward-model loss ``-log σ(r_c - r_r - margin)`` (ALGORITHMS.md §3).

    With ``center_coef`` c, adds ``c · mean((r_c + r_r)²)`` (TRL ``center_rewards_coefficient``,
    Eisenstein et al. 2023) to keep the rewards centred on 0.

    Args:
        r_chosen: Reward of the preferred completion. Shape (B,).
        r_rejected: Reward of the other completion. Shape (B,).
        margin: Optional required gap per pair. Shape (B,).
        center_coef: Optional weight of the centering term.

    Returns:
        :class:`PairwiseLossOutput`.
    """
    gap = r_chosen - r_rejected
    logits = gap if margin is None else gap - margin.detach()
    loss = -F.logsigmoid(logits).mean()
    if center_coef is not None:
        loss = loss + center_coef * (r_chosen + r_rejected).square().mean()
    gap = gap.detach()
    return PairwiseLossOutput(
        loss=loss,
        accuracy=(gap > 0).float().mean(),
        margin_mean=gap.mean(),
        tie_rate=(gap == 0).float().mean(),
    )


def ppo_policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_eps: float = 0.2,
) -> PolicyLossOutput:
    """PPO clipped surrogate (Schulman et al. 2017), token-level, as TRL ``loss()``.

    ``ratio = exp(logp - old_logp)``; ``loss = masked_mean(max(-A·ratio, -A·clip(ratio, 1-ε,
    1+ε)))`` (ALGORITHMS.md §1.2 step 7). The ``ratio_threshold`` skip is left to the caller,
    which gets ``ratio_mean``.

    Args:
        logp: Current log-probabilities of the sampled tokens. Shape (B, A).
        old_logp: Log-probabilities at rollout time. Shape (B, A).
        advantages: Per-token advantages (usually whitened). Shape (B, A).
        mask: Bool, True = response token. Shape (B, A).
        clip_eps: ε of the ratio clip.

    Returns:
        :class:`PolicyLossOutput`.
    """
    old_logp, advantages = old_logp.detach(), advantages.detach()
    # Zero the log-ratio on padding so exp() cannot overflow there and poison the gradient.
    log_ratio = torch.where(mask, logp - old_logp, 0.0)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    log_ratio = log_ratio.detach()
    return PolicyLossOutput(
        loss=loss,
        clipfrac=masked_mean((clipped > unclipped).float(), mask).detach(),
        approx_kl=0.5 * masked_mean(log_ratio.square(), mask),
        policy_kl=masked_mean(-log_ratio, mask),
        ratio_mean=masked_mean(ratio.detach(), mask),
    )


def ppo_value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    clip: float = 0.2,
) -> ValueLossOutput:
    """Clipped value loss ``0.5 · masked_mean(max((V-R)², (V_clip-R)²))``.

    ``V_clip = clamp(V, V_old - clip, V_old + clip)`` (ALGORITHMS.md §1.2 step 7). Multiply by
    ``vf_coef`` outside.

    Args:
        values: Current value predictions. Shape (B, A).
        old_values: Value predictions at rollout time. Shape (B, A).
        returns: GAE returns. Shape (B, A).
        mask: Bool, True = token with a value target. Shape (B, A).
        clip: Half-width of the clip around ``old_values`` (TRL ``cliprange_value``).

    Returns:
        :class:`ValueLossOutput`.
    """
    old_values, returns = old_values.detach(), returns.detach()
    clipped_values = torch.clamp(values, old_values - clip, old_values + clip)
    unclipped_error = (values - returns).square()
    clipped_error = (clipped_values - returns).square()
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), mask)
    clipfrac = masked_mean((clipped_error > unclipped_error).float(), mask).detach()
    return ValueLossOutput(loss=loss, clipfrac=clipfrac)


def dpo_loss(
    pi_c: Tensor,
    pi_r: Tensor,
    ref_c: Tensor,
    ref_r: Tensor,
    beta: float,
    loss_type: Literal["sigmoid", "hinge", "ipo"] = "sigmoid",
    label_smoothing: float = 0.0,
) -> DPOLossOutput:
    """Direct preference optimisation loss family (ALGORITHMS.md §4).

    ``logits = (π_c - π_r) - (ref_c - ref_r)``, then per pair:

    - ``"sigmoid"`` (Rafailov et al. 2023): ``-log σ(β·logits)``; with label smoothing ls
      (cDPO) ``-(1-ls)·log σ(β·logits) - ls·log σ(-β·logits)``.
    - ``"hinge"`` (SLiC): ``relu(1 - β·logits)``.
    - ``"ipo"`` (Azar et al. 2023): ``(logits - 1/(2β))²``. IPO expects **length-averaged**
      log-probabilities: pass each sequence log-prob divided by its completion length.

    Args:
        pi_c: Policy sequence log-prob of the chosen completion (a sum over tokens). Shape (B,).
        pi_r: Policy sequence log-prob of the rejected completion. Shape (B,).
        ref_c: Reference sequence log-prob of the chosen completion. Shape (B,).
        ref_r: Reference sequence log-prob of the rejected completion. Shape (B,).
        beta: β, strength of the implicit KL constraint.
        loss_type: ``"sigmoid"``, ``"hinge"`` or ``"ipo"``.
        label_smoothing: Probability that a label is flipped, in [0, 0.5); sigmoid only.

    Returns:
        :class:`DPOLossOutput`.

    Raises:
        ValueError: On an unknown loss type, or label smoothing with a non-sigmoid loss.
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    if label_smoothing and loss_type != "sigmoid":
        raise ValueError(f"label_smoothing only applies to loss_type='sigmoid', not {loss_type!r}")
    ref_c, ref_r = ref_c.detach(), ref_r.detach()
    chosen_logratio = pi_c - ref_c
    rejected_logratio = pi_r - ref_r
    logits = chosen_logratio - rejected_logratio
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * logits) * (1.0 - label_smoothing)
        if label_smoothing:
            losses = losses - F.logsigmoid(-beta * logits) * label_smoothing
    elif loss_type == "hinge":
        losses = torch.relu(1.0 - beta * logits)
    elif loss_type == "ipo":
        losses = (logits - 1.0 / (2.0 * beta)).square()
    else:
        raise ValueError(f"unknown loss_type {loss_type!r}; expected 'sigmoid', 'hinge' or 'ipo'")
    chosen_rewards = beta * chosen_logratio.detach()
    rejected_rewards = beta * rejected_logratio.detach()
    return DPOLossOutput(
        loss=losses.mean(),
        chosen_rewards=chosen_rewards,
        rejected_rewards=rejected_rewards,
        accuracy=(chosen_rewards > rejected_rewards).float().mean(),
        margin=(chosen_rewards - rejected_rewards).mean(),
    )


def grpo_token_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    ref_logp: Tensor | None,
    mask: Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    beta: float = 0.0,
) -> Tensor:
    """GRPO per-token loss ``-min(ρA, clip(ρ, 1-ε_low, 1+ε_high)A) + β·k3`` (ALGORITHMS.md §4).

    The KL to the reference is the k3 estimator and sits in the loss, not in the reward.
    ``eps_high > eps_low`` is DAPO's clip-higher (0.28 suggested). Reduce the result with
    :func:`aggregate_loss`.

    Args:
        logp: Current log-probabilities (already temperature-scaled). Shape (B, A).
        old_logp: Rollout log-probabilities; pass ``logp.detach()`` when
            ``num_iterations == 1`` (ρ ≡ 1). Shape (B, A).
        advantages: One advantage per completion. Shape (B,).
        ref_logp: Reference log-probabilities, or None when ``beta == 0``. Shape (B, A).
        mask: Bool, True = completion token. Shape (B, A).
        eps_low: Lower clip ε.
        eps_high: Upper clip ε.
        beta: Weight of the k3 KL term.

    Returns:
        Per-token losses, 0 outside the mask. Shape (B, A).

    Raises:
        ValueError: If ``beta != 0`` and ``ref_logp`` is None, or the shapes are not (B, A) and
            (B,).
    """
    if logp.ndim != 2 or advantages.shape != logp.shape[:1]:
        raise ValueError(
            f"need logp (B, A) and one advantage per row (B,), got {tuple(logp.shape)} and "
            f"{tuple(advantages.shape)}"
        )
    old_logp, advantages = old_logp.detach(), advantages.detach().unsqueeze(-1)
    log_ratio = torch.where(mask, logp - old_logp, 0.0)
    ratio = torch.exp(log_ratio)
    clipped_ratio = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    per_token = -torch.minimum(ratio * advantages, clipped_ratio * advantages)
    if beta != 0.0:
        if ref_logp is None:
            raise ValueError(f"beta={beta} needs ref_logp for the KL term")
        ref_logp = torch.where(mask, ref_logp.detach(), logp.detach())
        per_token = per_token + beta * kl_penalty(logp, ref_logp, "k3")
    return torch.where(mask, per_token, 0.0)


def aggregate_loss(
    per_token: Tensor,
    mask: Tensor,
    kind: Literal["grpo", "bnpo", "dr_grpo", "dapo"],
    max_completion_length: int | None = None,
    num_items: float | Tensor | None = None,
) -> Tensor:
    """Reduce per-token losses to a scalar, as GRPO's ``loss_type`` variants (ALGORITHMS.md §4).

    With M the mask:

    - ``"grpo"``: ``mean_b(Σ_t L·M / Σ_t M)``, each sequence weighs the same.
    - ``"bnpo"``: ``Σ L·M / Σ M`` over the local batch, each token weighs the same.
    - ``"dr_grpo"``: ``Σ L·M / (B · max_completion_length)`` (Dr. GRPO, no length bias).
    - ``"dapo"``: ``Σ L·M / num_items``, where ``num_items`` is the global token count of the
      whole generation batch divided by the number of processes (TRL ``num_items_in_batch``).

    A row with an empty mask (e.g. ``mask_truncated_completions``) contributes 0 instead of
    raising: counts are clamped to >= 1 as in TRL. Division by gradient-accumulation steps is
    the caller's job.

    Args:
        per_token: Per-token losses. Shape (B, A).
        mask: Bool, True = completion token. Shape (B, A).
        kind: Aggregation rule.
        max_completion_length: Needed by ``"dr_grpo"``.
        num_items: Needed by ``"dapo"``; for one process without accumulation, ``mask.sum()``.

    Returns:
        Scalar loss.

    Raises:
        ValueError: On an unknown kind or a missing ``max_completion_length`` / ``num_items``.
    """
    if kind == "grpo":
        per_sequence = masked_sum(per_token, mask, dim=-1) / mask.sum(dim=-1).clamp(min=1)
        return per_sequence.mean()
    total = masked_sum(per_token, mask)
    if kind == "bnpo":
        return total / mask.sum().clamp(min=1)
    if kind == "dr_grpo":
        if max_completion_length is None:
            raise ValueError("kind='dr_grpo' needs max_completion_length")
        return total / (per_token.shape[0] * max_completion_length)
    if kind == "dapo":
        if num_items is None:
            raise ValueError(
                "kind='dapo' needs num_items, the global completion-token count per process "
                "(mask.sum() for a single process without gradient accumulation)"
            )
        return total / num_items
    raise ValueError(f"unknown kind {kind!r}; expected 'grpo', 'bnpo', 'dr_grpo' or 'dapo'")


def rloo_sequence_loss(
    seq_logp: Tensor,
    old_seq_logp: Tensor,
    advantages: Tensor,
    clip_eps: float = 0.2,
) -> SequenceLossOutput:
    """RLOO clipped surrogate at the sequence level (ALGORITHMS.md §4, TRL ``rloo_trainer.py``).

    ``ρ = exp(Σ_t logp·M - old_seq_logp)``; ``loss = -mean(min(ρA, clip(ρ, 1-ε, 1+ε)A))``.

    Args:
        seq_logp: Current sequence log-probabilities (see ``sequence_logprobs``). Shape (B,).
        old_seq_logp: Sequence log-probabilities at rollout time. Shape (B,).
        advantages: Leave-one-out advantages. Shape (B,).
        clip_eps: ε of the ratio clip.

    Returns:
        :class:`SequenceLossOutput`.
    """
    old_seq_logp, advantages = old_seq_logp.detach(), advantages.detach()
    ratio = torch.exp(seq_logp - old_seq_logp)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
    return SequenceLossOutput(
        loss=-torch.minimum(unclipped, clipped).mean(),
        clipfrac=(clipped < unclipped).float().mean().detach(),
        ratio_mean=ratio.detach().mean(),
    )
